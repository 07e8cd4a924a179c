"""A head that exists only for the tests: one logit per token, read through a sigmoid at each step's separator.

It shows what adding a head takes: this file, and one line in ``prmfactory.prm.heads.HEADS``
(the test adds it with monkeypatch). Nothing else in prmfactory names it.
"""

from __future__ import annotations

from typing import ClassVar

from prmfactory.prm.encoding import IGNORE_INDEX


class LogisticHead:
    name: ClassVar[str] = "logistic"
    backends: ClassVar[tuple[str, ...]] = ("transformers",)
    adapters: ClassVar[bool] = True
    files: ClassVar[tuple[str, ...]] = ()
    card: ClassVar[str] = "one logit per token; a step's score is its sigmoid at the separator after the step."

    def for_training(self, base: str):
        from transformers import AutoModelForTokenClassification

        return AutoModelForTokenClassification.from_pretrained(base, num_labels=1)

    def from_folder(self, path: str, dtype):
        from transformers import AutoModelForTokenClassification

        return AutoModelForTokenClassification.from_pretrained(path, dtype=dtype)

    def loss(self, logits, labels, prompt_lengths=None, label_positions=None):
        import torch

        mask = labels != IGNORE_INDEX
        return torch.nn.functional.binary_cross_entropy_with_logits(logits[..., 0][mask].float(), labels[mask].float())

    def read(self, logits, item) -> list[float]:
        import torch

        return torch.sigmoid(logits[item.label_positions, 0].float()).tolist()
