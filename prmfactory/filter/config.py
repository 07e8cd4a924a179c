"""``FilterConfig``: the filter stage's settings (light to import: the CLI builds its options from it)."""

from __future__ import annotations

from typing import Literal, Optional

from pydantic import Field

from prmfactory.config import StageConfig, runtime_field
from prmfactory.filter.rules import HybridWeights


class FilterConfig(StageConfig):
    """``prmfactory filter``: the label rule and the filters, in the order they run."""

    rule: Literal["mc", "consensus", "hybrid", "rpe", "grounded"] = Field(
        "grounded", description="Label rule. Default `grounded`: the tool's verdict "
                                "where verify has one, Monte-Carlo elsewhere (the same as `mc` on a run without "
                                "verify); the most accurate rule against the toy oracle (label F1 0.96 against 0.35 "
                                "for `mc` in the demo; BENCHMARKS.md, \"Label quality\").")
    hybrid_weights: dict[str, float] = Field(
        default_factory=lambda: dict(vars(HybridWeights())),
        description="hybrid: weights of the mc, judge, tool and outcome signals.")
    rpe_epsilon: float = Field(0.8, gt=0, description="rpe: least MC(s_t)/MC(s_t-1) of a correct step.")
    dedupe: bool = Field(True, description="Keep one row per identical step sequence of a question.")
    drop_after_first_error: bool = Field(True, description="Cut every row after its first wrong step.")
    min_rollouts: Optional[int] = Field(None, ge=1, description="Drop rows with an estimate resting on fewer rollouts.")
    min_step_length: Optional[int] = Field(None, ge=1, description="Drop rows with a step shorter than this (characters).")
    max_steps: Optional[int] = Field(None, ge=1, description="Drop rows with more steps than this.")
    balance: bool = Field(False, description="Keep as many all-correct rows as rows with an error.")
    quiet: bool = runtime_field(False, "No progress output.")
