"""Generation backends behind one async interface, chosen by name."""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Any, AsyncIterator, Callable

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
    from prmfactory.models import resolve_model

    return ENGINES[config.backend](model=resolve_model(model), seed=seed, **config.backend_options())


def check_engine_config(config: "EngineConfig") -> None:
    """Refuse, before any engine starts (and on the driver, not in each worker), options the backend cannot take."""
    if config.backend == "vllm" and config.engine_args:
        from prmfactory.engines.vllm import check_engine_args

        check_engine_args(config.engine_args)


@contextlib.asynccontextmanager
async def open_engine(model: str, config: "EngineConfig", seed: int, metrics: dict[str, Any]) -> AsyncIterator[Engine]:
    """An engine for the duration of a stage; its metrics go into ``metrics`` and it is always closed.

    Create it inside the event loop that uses it (the async engine binds to its loop).
    """
    engine = create_engine(model, config, seed)
    try:
        yield engine
    finally:
        metrics.update(engine.metrics())
        await engine.close()


def use_engine(engine: Engine) -> Callable[..., Any]:
    """An opener (like :func:`open_engine`) that hands out an engine the caller already holds and closes."""

    @contextlib.asynccontextmanager
    async def opener(model: str, config: "EngineConfig", seed: int, metrics: dict[str, Any]) -> AsyncIterator[Engine]:
        try:
            yield engine
        finally:
            metrics.update(engine.metrics())

    return opener
