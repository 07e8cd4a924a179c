"""Discriminative PRM heads, chosen by the name ``prm.json`` and ``train-prm --head`` give.

A head is one class in one module of this package (see :class:`Head`) plus one line in
:data:`HEADS`; the trainer, every scorer and the PRM folder's checks ask it instead of testing
its name. The registry holds import paths, so naming and checking a head imports no torch.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, Sequence

if TYPE_CHECKING:
    from prmfactory.prm.encoding import EncodedSolution

HEADS: dict[str, str] = {
    "token": "prmfactory.prm.heads.token:TokenHead",
    "probe": "prmfactory.prm.heads.probe:ProbeHead",
}


class Head(Protocol):
    """What a discriminative head tells the trainer and the scorers.

    ``logits`` are the model's per-token output (``forward(input_ids, attention_mask).logits``); the
    label positions and step spans come from :mod:`prmfactory.prm.encoding`, shared by both sides.
    """

    name: ClassVar[str]
    backends: ClassVar[tuple[str, ...]]  # scorer backends that can run it (see prmfactory.prm.scorers)
    adapters: ClassVar[bool]  # whether LoRA may train it (False: the base stays frozen)
    files: ClassVar[tuple[str, ...]]  # what a PRM folder holds for it beyond the base model's own files
    card: ClassVar[str]  # how it scores a step, in the PRM's model card

    def for_training(self, base: str) -> Any:
        """The model to train, built on the base model ``base`` (a Hub id or a folder)."""

    def from_folder(self, path: str, dtype: Any) -> Any:
        """The trained model saved in a PRM folder (``save_pretrained`` wrote it)."""

    def loss(self, logits, labels, prompt_lengths, label_positions) -> Any:
        """Training loss against soft targets (``labels``: per token, IGNORE_INDEX where unlabelled)."""

    def read(self, logits, item: "EncodedSolution") -> Sequence[float]:
        """P(step is correct) for each kept step of one encoded solution (one row of ``logits``)."""


def check_head(name: str) -> str:
    """``name`` if a head of that name is registered; else a ValueError naming the known heads."""
    if name not in HEADS:
        raise ValueError(f"unknown head {name!r} (known: {', '.join(HEADS)})")
    return name


def load_head(name: str) -> Head:
    """The registered head ``name``, its module imported now."""
    module, _, cls = HEADS[check_head(name)].partition(":")
    return getattr(import_module(module), cls)()
