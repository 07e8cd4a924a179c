"""The one tokenisation of (problem, steps) for PRMs — used by training and by every scorer.

Layout (TRL's stepwise layout, with the problem posed through the model's chat template)::

    <chat template: user = problem, generation prompt> step_0 SEP step_1 SEP ... step_n SEP
                                                              ^label        ^label       ^label

Each step and each separator is tokenized on its own and the ids are concatenated, so a step's
label sits on the last token of the separator that follows it, whatever the step contains
(a separator inside a step, or an empty step, cannot move it). Truncation keeps whole steps only:
a kept step always keeps its label, and the steps that did not fit are reported.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from prmfactory.engines.base import Prompt, chat_messages, prompt_token_ids

IGNORE_INDEX = -100


@dataclass(frozen=True)
class EncodedSolution:
    """Token ids of one solution and where each kept step's score is read."""

    input_ids: list[int]
    label_positions: list[int]
    steps_total: int
    prompt_length: int = 0  # where the first step begins

    @property
    def step_spans(self) -> list[tuple[int, int]]:
        return step_spans(self.prompt_length, self.label_positions)

    @property
    def steps_kept(self) -> int:
        return len(self.label_positions)

    @property
    def truncated(self) -> bool:
        return self.steps_kept < self.steps_total


def step_spans(prompt_length: int, label_positions: Sequence[int]) -> list[tuple[int, int]]:
    """Each kept step's tokens, ``[start, end)``: its text and the separator after it (the first step
    starts where the prompt ends, each later one after the label position of the step before)."""
    starts = [prompt_length] + [p + 1 for p in label_positions[:-1]]
    return list(zip(starts, [p + 1 for p in label_positions]))


class StepEncoder:
    """Turns (problem, steps) into token ids and per-step label positions for one tokenizer."""

    def __init__(self, tokenizer, separator: str = "\n\n", max_length: int = 1024):
        self.tokenizer = tokenizer
        self.separator = separator
        self.max_length = max_length
        self.separator_ids = tokenizer.encode(separator, add_special_tokens=False)
        if not self.separator_ids:
            raise ValueError(f"the tokenizer encodes the step separator {separator!r} to no tokens")

    def encode(self, problem: str, steps: Sequence[str]) -> EncodedSolution:
        ids = prompt_token_ids(self.tokenizer, Prompt(chat_messages(problem, None)))
        prompt_length = len(ids)
        positions: list[int] = []
        if len(ids) < self.max_length:
            for step in steps:
                piece = self.tokenizer.encode(step, add_special_tokens=False) + self.separator_ids
                if len(ids) + len(piece) > self.max_length:
                    break
                ids += piece
                positions.append(len(ids) - 1)
        return EncodedSolution(ids if positions else ids[: self.max_length], positions, len(steps), prompt_length)

    def labelled(self, encoded: EncodedSolution, targets: Sequence[float], last_step_only: bool = False) -> list[float]:
        """Per-token targets: the step's target at its label position, IGNORE_INDEX elsewhere."""
        labels = [float(IGNORE_INDEX)] * len(encoded.input_ids)
        kept = list(zip(encoded.label_positions, targets))
        for position, target in kept[-1:] if last_step_only else kept:
            labels[position] = float(target)
        return labels


VERDICT_WORDS = {True: "correct", False: "incorrect"}
CRITIQUE_INSTRUCTION = "Check each step of the solution: verify it, then answer \\boxed{correct} or \\boxed{incorrect}."


def critique_prompt(problem: str) -> str:
    """The generative PRM's question; the steps come one at a time in its answer."""
    return f"{CRITIQUE_INSTRUCTION}\n\nProblem: {problem}"


class CritiqueEncoder:
    """Generative PRM transcripts, tokenized piece by piece like :class:`StepEncoder`::

        <chat template: user = critique_prompt> [0] step_0\nCheck: <verification> \\boxed{ correct}\n [1] step_1 ...

    Each step is written right before its check, so the check reads the step next to it instead of
    copying it from a numbered list in the prompt (a tiny model cannot). The steps are given, not
    learnt: the loss covers the checks and verdicts only. The score of step k is P(correct) against
    P(incorrect) at the token after step k's ``\\boxed{``; training and scoring build the same
    pieces, so the verdict sits at the same place.
    """

    def __init__(self, tokenizer, max_length: int = 1024):
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.boxed_ids = self._ids("\\boxed{")
        self.verdict_ids = {label: self._ids(word + "}\n") for label, word in VERDICT_WORDS.items()}
        if self.verdict_ids[True][0] == self.verdict_ids[False][0]:
            raise ValueError("the tokenizer starts 'correct' and 'incorrect' with the same token; "
                             "a generative PRM cannot read P(correct) from it")

    def _ids(self, text: str) -> list[int]:
        return self.tokenizer.encode(text, add_special_tokens=False)

    def prompt_ids(self, problem: str) -> list[int]:
        return prompt_token_ids(self.tokenizer, Prompt(chat_messages(critique_prompt(problem), None)))

    def step_ids(self, index: int, step: str) -> list[int]:
        """Step ``index`` as the transcript gives it, up to where its check begins."""
        return self._ids(f"[{index}] {step}\nCheck: ")

    def verdict_token(self, label: bool) -> int:
        """The token whose probability at the verdict position scores a step."""
        return self.verdict_ids[label][0]

    def encode(self, problem: str, steps: Sequence[str], verifications: Sequence[str],
               labels: Sequence[bool]) -> tuple[list[int], list[int], int]:
        """Token ids, completion mask (1 on checks and verdicts) and how many steps fit in max_length."""
        ids = self.prompt_ids(problem)
        mask, kept = [0] * len(ids), 0
        for index, (step, verification, label) in enumerate(zip(steps, verifications, labels)):
            given = self.step_ids(index, step)
            learnt = self._ids(verification + " ") + self.boxed_ids + self.verdict_ids[label]
            if len(ids) + len(given) + len(learnt) > self.max_length:
                break
            ids += given + learnt
            mask += [0] * len(given) + [1] * len(learnt)
            kept += 1
        return ids, mask, kept
