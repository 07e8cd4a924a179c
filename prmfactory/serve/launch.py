"""``prmfactory serve``: check the settings, load the PRM, say where it listens, run uvicorn."""

from __future__ import annotations

from pathlib import Path
from typing import Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from prmfactory.errors import UsageError
from prmfactory.serve.app import Aggregate

LOOPBACK = ("127.0.0.1", "localhost", "::1")


class ServeConfig(BaseModel):
    """How the server runs; checked whole before the PRM loads (a bad setting costs no model load)."""

    model_config = ConfigDict(extra="forbid")

    prm: Path
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=1, le=65535)
    api_key: Optional[str] = None
    aggregate: Aggregate = "min"
    backend: Literal["transformers", "vllm"] = "transformers"
    prm_format: str = "auto"
    max_batch: int = Field(64, ge=1)
    max_body_mb: float = Field(4.0, gt=0, description="must be above 0")
    max_items: int = Field(1024, ge=1)
    max_steps: int = Field(512, ge=1)
    threshold: Optional[float] = Field(None, ge=0.0, le=1.0)
    policy_template: Optional[str] = None
    question_from: Literal["prompt", "label"] = "prompt"
    quiet: bool = False

    @field_validator("api_key")
    @classmethod
    def _not_blank(cls, key: Optional[str]) -> Optional[str]:
        if key is not None and not key.strip():
            raise ValueError("empty; give a key, or leave it unset for a loopback-only server")
        return key

    @classmethod
    def from_flags(cls, **flags) -> "ServeConfig":
        """The config from the command's flags; a bad one is a one-line error naming its flag."""
        try:
            return cls(**flags)
        except ValidationError as exc:
            first = exc.errors()[0]
            flag = "--" + str(first["loc"][0]).replace("_", "-")
            reason = first["msg"].removeprefix("Value error, ")
            if first["type"] == "greater_than":
                reason = f"must be above {first['ctx']['gt']}, got {first['input']}"
            raise UsageError(f"{flag}: {reason}") from exc

    @property
    def url(self) -> str:
        return f"http://{'[' + self.host + ']' if ':' in self.host else self.host}:{self.port}"


def serve(config: ServeConfig) -> None:
    """Serve ``config.prm`` until interrupted, printing where and (unless quiet) one line per request."""
    import uvicorn

    from prmfactory.prm import PRM
    from prmfactory.progress import console
    from prmfactory.serve.app import create_app
    from prmfactory.serve.openrlhf import OpenRLHFQueries

    if config.host not in LOOPBACK and not config.api_key:
        console.print(f"[yellow]warning:[/yellow] serving on {config.host} without --api-key: anyone who reaches it "
                      "can use it")
    openrlhf = OpenRLHFQueries(config.policy_template, config.question_from)
    prm = PRM.from_pretrained(config.prm, backend=config.backend, format=config.prm_format)
    app = create_app(prm, api_key=config.api_key, max_body_bytes=int(config.max_body_mb * 1e6),
                     max_batch=config.max_batch, reward_aggregate=config.aggregate, threshold=config.threshold,
                     openrlhf=openrlhf, max_items=config.max_items, max_steps=config.max_steps)
    threshold = prm.threshold if config.threshold is None else config.threshold
    console.print(f"serving {config.prm} ({prm.format}, first-error threshold {threshold}) on {config.url}: "
                  "POST /v1/prm/score, POST /get_reward, GET /v1/models, GET /health"
                  f"{' (bearer token required)' if config.api_key else ''}", highlight=False, soft_wrap=True)
    uvicorn.run(app, host=config.host, port=config.port, log_level="warning" if config.quiet else "info",
                access_log=not config.quiet)
