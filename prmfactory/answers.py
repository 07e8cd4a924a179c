"""Final-answer extraction and equivalence (math-verify), time-bounded in a worker process.

The answer of a completion is the content of its last ``\\boxed{...}`` (brace-balanced); a completion
without one falls back to the free-text forms real instruct models write instead: GSM8K's final
``#### 18`` line, then the last "the answer is: 18" (MetaMath's format, which SmolLM2 and many small
models learnt). math-verify extracts and normalises but does not hand back the raw string, so this
scan is hand-written.
Equivalence with the reference is math-verify's ``verify`` on both strings parsed as LaTeX —
never a substring test. Model output is untrusted, so parsing and verification run in a
separate process with a wall-clock limit per answer; a check that runs over it is killed and
counts as not equivalent (DESIGN.md §3.6: no ``signal.alarm``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Sequence

from prmfactory.sandbox import BoundedWorker, WorkerClient

MAX_ANSWER_CHARS = 1000
_BOXED = "\\boxed"


def boxed_contents(text: str) -> list[str]:
    """The contents of every closed ``\\boxed{...}`` in ``text``, left to right (brace-balanced)."""
    contents, start = [], text.find(_BOXED)
    while start != -1:
        position = start + len(_BOXED)
        while position < len(text) and text[position] == " ":
            position += 1
        if position < len(text) and text[position] == "{":
            depth = 0
            for cursor in range(position, len(text)):
                depth += {"{": 1, "}": -1}.get(text[cursor], 0)
                if depth == 0:
                    contents.append(text[position + 1:cursor].strip()[:MAX_ANSWER_CHARS])
                    break
        start = text.find(_BOXED, position)
    return contents


def extract_boxed(text: str) -> str | None:
    """Content of the last closed ``\\boxed{...}`` in ``text``, or None when there is none (or it is empty)."""
    contents = boxed_contents(text)
    return contents[-1] or None if contents else None


_GSM8K_FINAL = re.compile(r"(?m)^\s*####\s*(\S[^\n]*?)\s*$")
_ANSWER_IS = re.compile(r"(?i)\banswer\s+is\s*[:：]?\s*\$?([^\s:：$][^\n$]*?)\$?\s*(?:\.(?=\s|$)|\n|$)")


def extract_answer(text: str) -> str | None:
    """The final answer a completion states: its last ``\\boxed{}``, else a ``####`` line, else "the answer is X"."""
    boxed = extract_boxed(text)
    if boxed is not None:
        return boxed
    for pattern in (_GSM8K_FINAL, _ANSWER_IS):
        found = pattern.findall(text)
        if found and found[-1].strip():
            # an unclosed box ("the answer is \boxed{12", cut off) is no answer, as without the fallback
            return None if _BOXED in found[-1] else found[-1].strip()[:MAX_ANSWER_CHARS]
    return None


def _warm_up() -> None:
    """Worker-side: import math-verify once, outside any time limit; its timeouts are ours to enforce."""
    import logging

    import math_verify  # noqa: F401

    logging.getLogger("math_verify").setLevel(logging.ERROR)


def _equivalent(pairs: list[tuple[str, str]]) -> list[bool]:
    """Worker-side: math-verify on each (reference, candidate); timeouts are the parent's job."""
    from math_verify import parse, verify

    results = []
    for reference, candidate in pairs:  # one (reference, candidate) pair per item
        gold = parse(f"${reference}$", parsing_timeout=None)
        guess = parse(f"${candidate}$", parsing_timeout=None)
        results.append(bool(gold and guess and verify(gold, guess, timeout_seconds=None)))
    return results


@dataclass(frozen=True)
class AnswerCheck:
    answer: str | None
    correct: bool


class AnswerChecker(WorkerClient):
    """Checks completions against reference answers in a killable worker process, with a cache."""

    def __init__(self, timeout_s: float = 5.0):
        self._worker = BoundedWorker(_equivalent, timeout_s=timeout_s, warm_up=_warm_up)
        self._cache: dict[tuple[str, str], bool] = {}

    def check(self, reference: str, completions: Sequence[str]) -> list[AnswerCheck]:
        """The extracted answer of each completion and whether it is equivalent to ``reference``."""
        answers = [extract_answer(text) for text in completions]
        todo = sorted({(reference, a) for a in answers if a is not None and (reference, a) not in self._cache})
        results = self._worker.map(todo)
        self._cache.update((pair, result is True) for pair, result in zip(todo, results))
        return [AnswerCheck(a, a is not None and self._cache[(reference, a)]) for a in answers]
