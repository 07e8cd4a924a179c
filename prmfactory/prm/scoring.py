"""Batched reading of step scores from a model's per-token outputs, shared by every in-process scorer
(our heads and the public formats) and by training's collation, so both pad the same way."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Callable, Sequence

from prmfactory.prm.encoding import IGNORE_INDEX

if TYPE_CHECKING:
    from prmfactory.prm.encoding import EncodedSolution


def nan_padded(scores: list[float], total: int) -> list[float]:
    """A solution's scores with NaN for the steps the length limit cut off."""
    return scores + [math.nan] * (total - len(scores))


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


def class_one_probability(logits, item: "EncodedSolution") -> list[float]:
    """P(class 1) of a two-class token head at the item's label positions (class 1: the step is correct)."""
    import torch

    return torch.softmax(logits[item.label_positions].float(), dim=-1)[:, 1].tolist()


def score_encoded(model, encoded: Sequence["EncodedSolution"], pad_id: int, batch_size: int,
                  read: Callable[[Any, "EncodedSolution"], list[float]]) -> list[list[float]]:
    """Step scores of encoded solutions: right-padded batches of similar length through ``model``;
    ``read(logits_of_one_row, item)`` gives a row's scores for its kept steps (NaN for a step cut
    off by the length limit)."""
    import torch

    # Batches of similar length: padding every batch to its longest item is most of the cost otherwise. An
    # item with no step inside the length limit has nothing to read, so it is not run.
    order = sorted((i for i in range(len(encoded)) if encoded[i].label_positions), key=lambda i: len(encoded[i].input_ids))
    results: list[list[float]] = [nan_padded([], item.steps_total) for item in encoded]
    for start in range(0, len(order), batch_size):
        chunk = order[start:start + batch_size]
        batch = PadCollator(pad_id)([{"input_ids": encoded[i].input_ids} for i in chunk])
        with torch.inference_mode():
            logits = model(**batch).logits
        for row, index in enumerate(chunk):
            item = encoded[index]
            results[index] = nan_padded(read(logits[row], item), item.steps_total)
    return results
