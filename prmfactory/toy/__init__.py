"""The offline toy domain: arithmetic word problems with exact ground truth, a tiny policy and judge.

The trained models are committed in ``models/`` so the demo and the tests never wait for
training; ``prmfactory toy build --retrain`` reproduces them from ``pipelines/toy_build.yaml``.
"""

from __future__ import annotations

from prmfactory.resources import MODEL_ALIASES, resolve_model
from prmfactory.resources import TOY_MODELS_DIR as MODELS_DIR

__all__ = ["MODELS_DIR", "MODEL_ALIASES", "resolve_model"]
