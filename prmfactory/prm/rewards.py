"""From step scores to what a consumer reads: the predicted first error and one reward per solution.

Light on purpose (no torch): the HTTP client, the evaluations and the RL adapters use it without a model.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Sequence

Item = tuple[str, Sequence[str]]
"""One solution to score: (problem, steps)."""

AGGREGATIONS: dict[str, Callable[[list[float]], float]] = {
    "min": min, "last": lambda s: s[-1], "prod": math.prod, "mean": lambda s: sum(s) / len(s)}


def aggregate(scores: Sequence[float], how: str) -> float:
    """One solution score from its step scores: ``min``, ``last``, ``prod`` or ``mean`` (NaN steps skipped; none → 0)."""
    known = [s for s in scores if not math.isnan(s)]
    if not known:
        return 0.0
    return AGGREGATIONS[how](known)


@dataclass(frozen=True)
class StepReward:
    """What a consumer of the PRM gets per solution: step scores, predicted first error, one reward."""

    step_scores: list[float]
    first_error: int
    reward: float


def first_below(scores: Sequence[float | None], threshold: float = 0.5) -> int:
    """The ProcessBench prediction from step scores: the first step scored below the threshold, else −1.

    An unscored step (None, or NaN: cut off by the length limit) is never the first error."""
    return next((i for i, score in enumerate(scores) if score is not None and score < threshold), -1)


def step_reward(scores: Sequence[float], how: str = "min", threshold: float = 0.5) -> StepReward:
    """Step scores → the ProcessBench first error (first score below ``threshold``) and the aggregate reward."""
    return StepReward(list(scores), first_below(scores, threshold), aggregate(scores, how))
