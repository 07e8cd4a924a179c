"""The offline toy domain: arithmetic word problems with exact ground truth, a tiny policy and judge.

The trained models are committed in ``models/`` so the demo and the tests never wait for
training; ``prmfactory toy build --retrain`` reproduces them from ``pipelines/toy_build.yaml``.
"""

from __future__ import annotations

from prmfactory.models import TOY_MODELS, TOY_MODELS_DIR

__all__ = ["TOY_MODELS", "TOY_MODELS_DIR"]
