"""Generation backends behind one async interface, chosen by name."""

from __future__ import annotations

from typing import Callable

from prmfactory.engines.base import Engine


def _vllm(**kwargs) -> Engine:
    from prmfactory.engines.vllm import VllmEngine

    return VllmEngine(**kwargs)


def _openai(**kwargs) -> Engine:
    from prmfactory.engines.openai import OpenAIEngine

    return OpenAIEngine(**kwargs)


ENGINES: dict[str, Callable[..., Engine]] = {"vllm": _vllm, "openai": _openai}
