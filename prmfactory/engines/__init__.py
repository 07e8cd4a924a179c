"""Generation backends behind one async interface, chosen by name."""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable

from prmfactory.engines.base import Engine

if TYPE_CHECKING:
    from prmfactory.config import EngineConfig


def _vllm(**kwargs) -> Engine:
    from prmfactory.engines.vllm import VllmEngine

    return VllmEngine(**kwargs)


def _openai(**kwargs) -> Engine:
    from prmfactory.engines.openai import OpenAIEngine

    return OpenAIEngine(**kwargs)


ENGINES: dict[str, Callable[..., Engine]] = {"vllm": _vllm, "openai": _openai}


def create_engine(model: str, config: "EngineConfig", seed: int) -> Engine:
    """The backend ``config.backend`` serving ``model`` (``toy`` / ``toy-judge`` resolve to the toy models)."""
    from prmfactory.toy import resolve_model

    return ENGINES[config.backend](model=resolve_model(model), seed=seed, **config.model_dump(exclude={"backend"}))
