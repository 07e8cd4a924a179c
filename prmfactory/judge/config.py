"""``JudgeConfig``: the judge stage's settings (light to import: the CLI builds its options from it)."""

from __future__ import annotations

from typing import Literal, Optional

from pydantic import Field

from prmfactory.config import ClusterConfig, EngineConfig, StageConfig, cluster_field, runtime_field
from prmfactory.errors import UsageError
from prmfactory.judge.render import DEFAULT_TEMPLATES, SHIPPED_TEMPLATES, TOY_TEMPLATE


class JudgeConfig(StageConfig):
    """``prmfactory judge``."""

    judge: str = Field(description="Judge model: a model id, a local path, or `toy-judge`.")
    mode: Literal["critic", "per_step"] = Field("critic", description="Prompt and answer format.")
    template: Optional[str] = Field(None, description="Prompt template: a file, or a shipped one by name (critic, "
                                                      "per_step, short_critic, toy_critic); default: the mode's.")
    votes: int = Field(1, ge=1, description="Samples per solution; the majority first-error index wins.")
    temperature: float = Field(0.7, ge=0, description="Sampling temperature (votes > 1 need it above 0).")
    max_new_tokens: int = Field(1024, ge=1, description="Longest judge output in tokens.")
    engine: EngineConfig = Field(default_factory=EngineConfig, description="Generation backend.")
    cluster: ClusterConfig = cluster_field()
    seed: int = Field(0, description="Seeds the engine.")
    concurrency: int = runtime_field(64, "Solutions judged at once.", ge=1)
    commit_every: int = runtime_field(16, "Questions per committed shard.", ge=1)
    quiet: bool = runtime_field(False, "No progress bars.")

    def template_text(self) -> str:
        if self.template:
            path = SHIPPED_TEMPLATES.get(self.template, self.template)
        elif self.judge == "toy-judge":
            path = TOY_TEMPLATE
        else:
            path = DEFAULT_TEMPLATES[self.mode]
        try:
            with open(path, encoding="utf-8") as handle:
                return handle.read()
        except OSError as exc:
            raise UsageError(f"{path}: cannot read the judge template: {exc.strerror}") from exc
