"""The ``token`` head: a two-class classifier on every token, read at each step's separator.

Loss: cross-entropy against a soft target at each labelled position, ``-(t log p1 + (1-t) log p0)``.
With hard labels (t ∈ {0, 1}) this is ordinary cross-entropy; with soft labels (t = the MC value)
it is the BCE of the Math-Shepherd / OmegaPRM soft-label recipe (Wang et al. 2024, arXiv:2312.08935;
Luo et al. 2024, arXiv:2406.06592). The score of a step is the softmax probability of class 1 at
its label position (the Qwen2.5-Math-PRM convention). The whole model trains (or LoRA on it).
"""

from __future__ import annotations

from typing import ClassVar

from prmfactory.prm.encoding import IGNORE_INDEX
from prmfactory.prm.scoring import class_one_probability


class TokenHead:
    name: ClassVar[str] = "token"
    backends: ClassVar[tuple[str, ...]] = ("transformers", "vllm")
    adapters: ClassVar[bool] = True
    files: ClassVar[tuple[str, ...]] = ()
    card: ClassVar[str] = ("the score is the softmax probability of class 1 at the last token of the separator after "
                           "each step (token classification, 2 labels); the model also loads in vLLM's pooling "
                           "runner (`token_classify`).")

    def for_training(self, base: str):
        from transformers import AutoModelForTokenClassification

        return AutoModelForTokenClassification.from_pretrained(base, num_labels=2)

    def from_folder(self, path: str, dtype):
        from transformers import AutoModelForTokenClassification

        return AutoModelForTokenClassification.from_pretrained(path, dtype=dtype)

    def loss(self, logits, labels, prompt_lengths=None, label_positions=None):
        """Soft-target cross-entropy over the labelled positions (labels are floats, IGNORE_INDEX elsewhere)."""
        import torch

        mask = labels != IGNORE_INDEX
        log_probs = torch.log_softmax(logits[mask].float(), dim=-1)
        target = labels[mask].float()
        return -(target * log_probs[:, 1] + (1 - target) * log_probs[:, 0]).mean()

    read = staticmethod(class_one_probability)
