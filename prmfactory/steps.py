"""Step segmentation and joining — the one place the step separator lives.

A run records its separator (in the mcts config) so that training and inference split and
join steps exactly as the search did.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

# blank_line: steps are paragraphs (PRM800K / Qwen-Math style); line: every non-empty line is a step
# (what small instruct models such as SmolLM2 write, Math-Shepherd's "one step per line");
# step_prefix: "Step k:" headers.
SegmentationName = Literal["blank_line", "line", "step_prefix"]
_STEP_PREFIX = re.compile(r"(?m)^\s*Step\s+\d+\s*[:.]\s*")
_BLANK_LINE = re.compile(r"\n[ \t]*\n")
_NEWLINE = re.compile(r"\n")


@dataclass(frozen=True)
class Segmenter:
    """Splits a solution into steps and joins steps back into text."""

    name: SegmentationName = "blank_line"

    @property
    def separator(self) -> str:
        """Text placed between steps when joining (and the stop string for one-step generation)."""
        return "\n" if self.name == "line" else "\n\n"

    def spans(self, text: str) -> list[tuple[int, int]]:
        """``(start, end)`` character offsets of each non-empty step of ``text``, whitespace excluded:
        where a step's reward lands on the policy's tokens, whatever tokenizer the PRM has."""
        boundary = {"blank_line": _BLANK_LINE, "line": _NEWLINE, "step_prefix": _STEP_PREFIX}[self.name]
        cuts = [0] + [c for m in boundary.finditer(text) for c in (m.start(), m.end())] + [len(text)]
        spans = []
        for start, end in zip(cuts[::2], cuts[1::2]):
            piece = text[start:end]
            if piece.strip():
                lead = len(piece) - len(piece.lstrip())
                spans.append((start + lead, start + len(piece.rstrip())))
        return spans

    def split(self, text: str) -> list[str]:
        """Non-empty steps of ``text``, stripped of the separator and surrounding whitespace."""
        return [text[start:end] for start, end in self.spans(text)]

    def join(self, steps: list[str]) -> str:
        if self.name != "step_prefix":
            return self.separator.join(steps)
        return self.separator.join(f"Step {i + 1}: {s}" for i, s in enumerate(steps))

    def prefix_text(self, steps: list[str]) -> str:
        """Text of a step prefix ready for continuation: the joined steps plus a separator."""
        if not steps:
            return ""
        return self.join(steps) + self.separator + (f"Step {len(steps) + 1}: " if self.name == "step_prefix" else "")
