"""``VerifyConfig``: the verify stage's settings (light to import: the CLI builds its options from it)."""

from __future__ import annotations

from pydantic import Field

from prmfactory.config import ClusterConfig, StageConfig, cluster_field, runtime_field


class VerifyConfig(StageConfig):
    """``prmfactory verify``."""

    check_final_answers: bool = Field(True, description="Check a step's \\boxed{} answer against the reference (math-verify).")
    check_grounding: bool = Field(True, description="A correct computation on a number that neither the problem nor an "
                                                    "earlier step gives is unverifiable (ungrounded), not correct.")
    seconds_per_claim: float = runtime_field(1.0, "Wall-clock limit per claim, enforced in a worker process.", gt=0)
    answer_timeout_s: float = runtime_field(5.0, "Wall-clock limit of one final-answer check.", gt=0)
    questions_per_shard: int = runtime_field(64, "Questions per committed shard.", ge=1)
    questions_per_task: int = runtime_field(8, "Questions one worker verifies per task (with --ray-address).", ge=1)
    quiet: bool = runtime_field(False, "No progress bars.")
    cluster: ClusterConfig = cluster_field()
