"""Discriminative PRM training: any registered head, read at each step separator.

Written here because stable TRL no longer has a process-supervision trainer (PRMTrainer was
removed after TRL 1.13), and its ``int()`` cast of labels made soft labels impossible. The config
and trainer keep TRL's shape: a dataclass over ``TrainingArguments`` and a ``Trainer`` subclass that
accepts TRL's stepwise format ``{prompt, completions, labels}`` as is.

The model and its loss are the head's (:mod:`prmfactory.prm.heads`: ``token`` trains a classifier
read at each step's separator, ``probe`` a probe on a frozen base); the tokenisation is
:mod:`prmfactory.prm.encoding`'s, the one every scorer reads, with hard or soft targets.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from transformers import Trainer, TrainingArguments

from prmfactory.prm.encoding import StepEncoder
from prmfactory.prm.heads import load_head
from prmfactory.prm.scoring import PadCollator


@dataclass
class PRMConfig(TrainingArguments):
    """``TrainingArguments`` plus the data layout of a discriminative PRM."""

    max_length: int = field(default=1024, metadata={"help": "Longest tokenized solution; whole steps beyond it are dropped and counted."})
    step_separator: str = field(default="\n\n", metadata={"help": "Text after each step; its last token carries the step's label."})
    soft_labels: bool = field(default=False, metadata={"help": "Train on the `soft_labels` column (MC values) instead of `labels`."})
    train_on_last_step_only: bool = field(default=False, metadata={"help": "Use only the last kept step's label."})
    head: str = field(default="token", metadata={"help": "A head of prmfactory.prm.heads.HEADS: its model's output and loss."})


def tokenize_stepwise(dataset, encoder: StepEncoder, *, soft_labels: bool, last_step_only: bool):
    """TRL stepwise rows → ``input_ids`` and per-token targets; returns the dataset and truncation counts."""
    column = "soft_labels" if soft_labels else "labels"
    if column not in dataset.column_names:
        raise ValueError(f"the training data has no {column!r} column")
    counts = {"rows": len(dataset), "rows_truncated": 0, "rows_dropped_too_long": 0, "steps_dropped": 0}
    rows: dict[str, list[Any]] = {"input_ids": [], "labels": [], "prompt_length": [], "label_positions": []}
    for prompt, completions, targets in zip(dataset["prompt"], dataset["completions"], dataset[column]):
        encoded = encoder.encode(prompt, completions)
        counts["steps_dropped"] += encoded.steps_total - encoded.steps_kept
        if not encoded.steps_kept:
            counts["rows_dropped_too_long"] += 1
            continue
        counts["rows_truncated"] += encoded.truncated
        rows["input_ids"].append(encoded.input_ids)
        rows["prompt_length"].append(encoded.prompt_length)
        rows["label_positions"].append(encoded.label_positions)
        rows["labels"].append(encoder.labelled(encoded, [float(t) for t in targets], last_step_only))
    from datasets import Dataset

    return Dataset.from_dict(rows), counts


class PRMTrainer(Trainer):
    """Trains a discriminative PRM (any registered head) on TRL's stepwise format (hard or soft labels)."""

    def __init__(self, model, args: PRMConfig, train_dataset, processing_class, **kwargs):
        encoder = StepEncoder(processing_class, args.step_separator, args.max_length)
        tokenized, self.data_counts = tokenize_stepwise(train_dataset, encoder, soft_labels=args.soft_labels,
                                                        last_step_only=args.train_on_last_step_only)
        if not len(tokenized):
            raise ValueError(f"no training row fits in max_length={args.max_length}")
        pad_id = processing_class.pad_token_id if processing_class.pad_token_id is not None else processing_class.eos_token_id
        self.head = load_head(args.head)
        super().__init__(model=model, args=args, train_dataset=tokenized, processing_class=processing_class,
                         data_collator=PadCollator(pad_id), **kwargs)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        labels, prompt_lengths, positions = inputs.pop("labels"), inputs.pop("prompt_length"), inputs.pop("label_positions")
        outputs = model(**inputs)
        loss = self.head.loss(outputs.logits, labels, prompt_lengths, positions)
        return (loss, outputs) if return_outputs else loss
