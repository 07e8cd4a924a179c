"""Parsing judge outputs — untrusted text — into first-error votes, and the majority over votes.

A malformed output is a ``None`` vote, counted and kept with its raw text, never an exception.
"""

from __future__ import annotations

import re
from collections import Counter
from typing import Sequence

from prmfactory.answers import boxed_contents

_INTEGER = re.compile(r"\s*(-?\d+)\s*")
# "The first mistake is (in) (the incorrect) step 2": how small instruct models (SmolLM2) answer the
# short critic prompt when they leave out the box.
_FIRST_MISTAKE = re.compile(r"(?i)\bfirst\s+(?:mistake|error)\s+is\s+(?:in\s+)?(?:[a-z]+\s+){0,2}?"
                            r"(?:step|paragraph)\s*\[?(\d+)\]?")
_STEP_VERDICT = re.compile(r"Step\s+(\d+)\s*:\s*\\boxed\{\s*(correct|incorrect)\s*\}", re.IGNORECASE)


def parse_critic(text: str, num_steps: int) -> int | None:
    """The first-error index in the output's ``\\boxed{}`` (−1: none), or None when malformed.

    Without a box, "the first mistake is step N" counts as N. Malformed: neither, a box that is not
    an integer, an index outside [−1, num_steps − 1], or several boxes that disagree.
    """
    values = set(boxed_contents(text))
    if not values:
        stated = _FIRST_MISTAKE.search(text)
        values = {stated.group(1)} if stated else set()
    if len(values) != 1:
        return None
    match = _INTEGER.fullmatch(values.pop())
    if not match:
        return None
    index = int(match.group(1))
    return index if -1 <= index < num_steps else None


def parse_per_step(text: str, num_steps: int) -> int | None:
    """The first step judged incorrect (−1: all correct), or None unless every step got exactly one verdict."""
    verdicts: dict[int, str] = {}
    for index, verdict in _STEP_VERDICT.findall(text):
        index = int(index)
        if index in verdicts and verdicts[index] != verdict.lower():
            return None
        verdicts[index] = verdict.lower()
    if sorted(verdicts) != list(range(num_steps)):
        return None
    return next((i for i in range(num_steps) if verdicts[i] == "incorrect"), -1)


PARSERS = {"critic": parse_critic, "per_step": parse_per_step}


def majority(votes: Sequence[int | None]) -> tuple[int | None, int]:
    """The most frequent well-formed vote and its count; a tie goes to the earliest error (−1 last)."""
    counts = Counter(v for v in votes if v is not None)
    if not counts:
        return None, 0
    best = max(counts.values())
    tied = [v for v, c in counts.items() if c == best]
    winner = min(tied, key=lambda v: (v == -1, v))
    return winner, best
