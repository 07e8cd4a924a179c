"""``TrainPrmConfig``: how train-prm trains (light to import: the CLI builds its options from it)."""

from __future__ import annotations

from typing import Any, Literal, Optional

from pydantic import Field, ValidationInfo, field_validator

from prmfactory.config import StageConfig, runtime_field
from prmfactory.prm.heads import check_head, load_head
from prmfactory.steps import SegmentationName


class TrainPrmConfig(StageConfig):
    """How train-prm trains; defaults suit the toy domain on a CPU (raise them for 7B models)."""

    kind: Literal["discriminative", "generative"] = Field("discriminative", description="Token-classification head or critique generator.")
    base: str = Field("toy", description="Base model id or local path (`toy` for the toy policy).")
    head: str = Field(
        "token", description="Discriminative head (prmfactory/prm/heads/): `token` trains the whole model with a "
                             "classifier read at each step's separator; `probe` keeps the base frozen and trains a "
                             "probe on its hidden states and token log-likelihoods, pooled over each step.")
    soft_labels: bool = Field(False, description="Discriminative: BCE on the MC value (`soft_labels`) instead of hard labels.")
    last_step_only: bool = Field(False, description="Discriminative: train on the last kept step's label only.")
    segmentation: Optional[SegmentationName] = Field(
        None, description="Step separator of rows that do not record one (plain stepwise Parquet); "
                          "default: the rows' own `segmentation`, else blank_line.")
    mix: dict[str, float] = Field(
        default_factory=dict, description="More training data, mixed into --data: a run folder or Parquet shards -> "
                                          "weight (each row taken weight times: 0.5 a seeded half, 2 twice); "
                                          "the card records every source and its counts.")
    max_length: int = Field(512, ge=16, description="Longest tokenized example; whole steps beyond it are dropped and counted.")
    learning_rate: float = Field(3e-4, gt=0, description="Peak learning rate (cosine schedule, 5% warm-up).")
    epochs: float = Field(2.0, gt=0, description="Passes over the data (ignored when max_steps > 0).")
    max_steps: int = Field(-1, description="Optimizer steps; -1 trains for `epochs`.")
    batch_size: int = Field(16, ge=1, description="Examples per optimizer step.")
    lora_r: int = Field(0, ge=0, description="LoRA rank (peft); 0 trains all weights.")
    lora_alpha: int = Field(16, ge=1, description="LoRA scaling numerator.")
    seed: int = Field(0, description="Seed of initialisation and data order.")
    training_args: dict[str, Any] = Field(default_factory=dict, description="Further transformers TrainingArguments, passed as is.")
    threads: Optional[int] = runtime_field(None, "torch threads (default: torch's choice).", ge=1)
    quiet: bool = runtime_field(False, "No progress bar.")

    @field_validator("head")
    @classmethod
    def _registered_discriminative_head(cls, head: str, info: ValidationInfo) -> str:
        check_head(head)
        if head != "token" and info.data.get("kind") != "discriminative":
            raise ValueError(f"{head!r} is a discriminative head; a generative PRM has none")
        return head

    @field_validator("mix")
    @classmethod
    def _positive_weights(cls, mix: dict[str, float]) -> dict[str, float]:
        for path, weight in mix.items():
            if not weight > 0:
                raise ValueError(f"{path}: weight {weight}: must be above 0 (leave a source out to drop it)")
        return mix

    @field_validator("lora_r")
    @classmethod
    def _head_takes_adapters(cls, lora_r: int, info: ValidationInfo) -> int:
        head = info.data.get("head")
        if lora_r and head and not load_head(head).adapters:
            raise ValueError(f"the {head} head keeps the base frozen; lora_r must be 0")
        return lora_r
