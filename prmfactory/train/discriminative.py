"""Discriminative PRM: a token-classification head read at each step separator.

Written here because stable TRL no longer has a process-supervision trainer (PRMTrainer was
removed after TRL 1.13), and its ``int()`` cast of labels made soft labels impossible. The config
and trainer keep TRL's shape: a dataclass over ``TrainingArguments`` and a ``Trainer`` subclass that
accepts TRL's stepwise format ``{prompt, completions, labels}`` as is.

Loss: cross-entropy against a soft target at each labelled position, ``-(t log p1 + (1-t) log p0)``.
With hard labels (t ∈ {0, 1}) this is ordinary cross-entropy; with soft labels (t = the MC value)
it is the BCE of the Math-Shepherd / OmegaPRM soft-label recipe. The score of a step is the
softmax probability of class 1 at its label position (the Qwen2.5-Math-PRM convention). With the
``probe`` head (:mod:`prmfactory.likelihood_probe`) the same targets train the probe's pooled step
logits instead, by BCE; only the probe's weights change.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from transformers import Trainer, TrainingArguments

from prmfactory.train.formats import IGNORE_INDEX, StepEncoder, step_spans


@dataclass
class PRMConfig(TrainingArguments):
    """``TrainingArguments`` plus the data layout of a discriminative PRM."""

    max_length: int = field(default=1024, metadata={"help": "Longest tokenized solution; whole steps beyond it are dropped and counted."})
    step_separator: str = field(default="\n\n", metadata={"help": "Text after each step; its last token carries the step's label."})
    soft_labels: bool = field(default=False, metadata={"help": "Train on the `soft_labels` column (MC values) instead of `labels`."})
    train_on_last_step_only: bool = field(default=False, metadata={"help": "Use only the last kept step's label."})
    head: str = field(default="token", metadata={"help": "`token` (classifier at each separator) or `probe` (frozen base, pooled probe)."})


def step_loss(logits, labels):
    """Soft-target cross-entropy over the labelled positions (labels are floats, IGNORE_INDEX elsewhere)."""
    import torch

    mask = labels != IGNORE_INDEX
    log_probs = torch.log_softmax(logits[mask].float(), dim=-1)
    target = labels[mask].float()
    return -(target * log_probs[:, 1] + (1 - target) * log_probs[:, 0]).mean()


def probe_loss(margins, labels, prompt_lengths, label_positions):
    """BCE of the probe's step logits against the soft targets of the labelled steps; a step's tokens
    are :func:`~prmfactory.train.formats.step_spans` of all its row's steps (``label_positions``,
    padded with −1), so training on the last step only pools that step alone, as scoring does."""
    import torch

    from prmfactory.likelihood_probe import step_logits

    logits, targets = [], []
    for row, start in enumerate(prompt_lengths.tolist()):
        positions = [p for p in label_positions[row].tolist() if p >= 0]
        labelled = [(span, p) for span, p in zip(step_spans(start, positions), positions) if labels[row, p] != IGNORE_INDEX]
        if labelled:
            logits.append(step_logits(margins[row], [span for span, _ in labelled]))
            targets.append(labels[row, [p for _, p in labelled]].float())
    return torch.nn.functional.binary_cross_entropy_with_logits(torch.cat(logits), torch.cat(targets))


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


class PadCollator:
    """Right-pads ``input_ids`` (pad id), ``labels`` (IGNORE_INDEX) and ``label_positions`` (−1), builds
    the attention mask and passes ``prompt_length`` on (the last two are the probe's step spans)."""

    def __init__(self, pad_id: int):
        self.pad_id = pad_id

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, Any]:
        import torch

        width = max(len(f["input_ids"]) for f in features)
        ids = [f["input_ids"] + [self.pad_id] * (width - len(f["input_ids"])) for f in features]
        mask = [[1] * len(f["input_ids"]) + [0] * (width - len(f["input_ids"])) for f in features]
        batch = {"input_ids": torch.tensor(ids), "attention_mask": torch.tensor(mask)}
        if "labels" in features[0]:
            batch["labels"] = torch.tensor([f["labels"] + [float(IGNORE_INDEX)] * (width - len(f["labels"]))
                                            for f in features])
        if "prompt_length" in features[0]:
            steps = max(len(f["label_positions"]) for f in features)
            batch["prompt_length"] = torch.tensor([f["prompt_length"] for f in features])
            batch["label_positions"] = torch.tensor([f["label_positions"] + [-1] * (steps - len(f["label_positions"]))
                                                     for f in features])
        return batch


class PRMTrainer(Trainer):
    """Trains a discriminative PRM (token head, or the probe on a frozen base) on TRL's stepwise format
    (hard or soft labels)."""

    def __init__(self, model, args: PRMConfig, train_dataset, processing_class, **kwargs):
        encoder = StepEncoder(processing_class, args.step_separator, args.max_length)
        tokenized, self.data_counts = tokenize_stepwise(train_dataset, encoder, soft_labels=args.soft_labels,
                                                        last_step_only=args.train_on_last_step_only)
        if not len(tokenized):
            raise ValueError(f"no training row fits in max_length={args.max_length}")
        pad_id = processing_class.pad_token_id if processing_class.pad_token_id is not None else processing_class.eos_token_id
        super().__init__(model=model, args=args, train_dataset=tokenized, processing_class=processing_class,
                         data_collator=PadCollator(pad_id), **kwargs)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        labels, prompt_lengths, positions = inputs.pop("labels"), inputs.pop("prompt_length"), inputs.pop("label_positions")
        outputs = model(**inputs)
        if self.args.head == "probe":
            loss = probe_loss(outputs.logits, labels, prompt_lengths, positions)
        else:
            loss = step_loss(outputs.logits, labels)
        return (loss, outputs) if return_outputs else loss
