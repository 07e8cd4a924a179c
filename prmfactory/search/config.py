"""``MctsConfig``: the mcts stage's settings (light to import: the CLI builds its options from it)."""

from __future__ import annotations

from typing import Literal, Optional

from pydantic import Field, model_validator

from prmfactory.config import ClusterConfig, EngineConfig, StageConfig, cluster_field, runtime_field
from prmfactory.engines.base import DEFAULT_SYSTEM_PROMPT
from prmfactory.steps import SegmentationName


class MctsConfig(StageConfig):
    """``prmfactory mcts``: tree search / Monte-Carlo estimation of step-prefix values.

    Defaults of the OmegaPRM search follow the paper (Luo et al. 2024, "Improve Mathematical
    Reasoning in Language Models by Automated Process Supervision") and openr's implementation.
    """

    policy: str = Field(description="Policy model: a model id, a local path, or `toy`.")
    strategy: Literal["omegaprm", "mc"] = Field("omegaprm", description="`omegaprm` (binary-search MCTS) or `mc` (Math-Shepherd).")
    engine: EngineConfig = Field(default_factory=EngineConfig, description="Generation backend.")
    cluster: ClusterConfig = cluster_field()
    system_prompt: Optional[str] = Field(DEFAULT_SYSTEM_PROMPT, description="System message; null for none.")
    segmentation: SegmentationName = Field(
        "blank_line", description="How solutions are split into steps: `blank_line`, `line` or `step_prefix` (recorded so "
                                  "training splits the same way).")
    temperature: float = Field(0.7, ge=0, description="Sampling temperature of rollouts.")
    top_p: float = Field(1.0, gt=0, le=1, description="Nucleus sampling.")
    max_new_tokens: int = Field(1024, ge=1, description="Longest rollout in tokens.")
    rollouts: int = Field(16, ge=1, description="k: rollouts per Monte-Carlo estimate (OmegaPRM k=16).")
    budget: int = Field(200, ge=1, description="OmegaPRM: most rollouts per question, the initial k included.")
    c_puct: float = Field(0.125, description="OmegaPRM exploration constant.")
    alpha: float = Field(0.5, description="OmegaPRM: Q = alpha^(1-MC) * beta^(len/L).")
    beta: float = Field(0.9, description="OmegaPRM length penalty base.")
    length_scale: int = Field(500, ge=1, description="OmegaPRM L, in tokens.")
    num_solutions: int = Field(4, ge=1, description="mc: solutions sampled per question, each estimated step by step.")
    seed: int = Field(0, description="Seeds the engine and the search's tie-breaking.")
    answer_timeout_s: float = runtime_field(5.0, "Wall-clock limit of one answer-equivalence check.", gt=0)
    concurrency: int = runtime_field(64, "Questions searched at once (keeps the engine's batch full).", ge=1)
    commit_every: int = runtime_field(16, "Questions per committed shard.", ge=1)
    limit: Optional[int] = runtime_field(None, "Search at most this many problems.", ge=1)
    quiet: bool = runtime_field(False, "No progress bars.")

    @model_validator(mode="after")
    def _budget_holds_the_first_estimate(self) -> "MctsConfig":
        if self.strategy == "omegaprm" and self.budget < self.rollouts:
            raise ValueError(f"budget ({self.budget}) is below rollouts ({self.rollouts}): OmegaPRM's budget counts "
                             "the first k rollouts too")
        return self
