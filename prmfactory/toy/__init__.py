"""The offline toy domain: arithmetic word problems with exact ground truth, a tiny policy and judge.

The trained models are committed in ``models/`` so the demo and the tests never wait for
training; ``prmfactory toy build --retrain`` reproduces them from ``pipelines/toy_build.yaml``.
"""

from __future__ import annotations

from pathlib import Path

MODELS_DIR = Path(__file__).resolve().parent / "models"
MODEL_ALIASES = {"toy": MODELS_DIR / "policy", "toy-judge": MODELS_DIR / "judge"}


def resolve_model(name: str) -> str:
    """Map the names ``toy`` and ``toy-judge`` to the committed models; other names pass through."""
    path = MODEL_ALIASES.get(name)
    return str(path) if path is not None else name
