"""The generation-backend interface every engine implements (DESIGN.md §3.7).

A stage builds :class:`Prompt` objects (chat messages plus the assistant text already written,
e.g. a step prefix) and awaits :meth:`Engine.generate` for ``n`` samples; many prompts are in
flight at once so the backend can batch them. Engines are created by name from ``ENGINES``.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Awaitable, Iterable, Protocol

from prmfactory.errors import PrmfactoryError

DEFAULT_SYSTEM_PROMPT = "Please reason step by step, and put your final answer within \\boxed{}."


class EngineFailure(PrmfactoryError):
    """The engine itself is dead or unreachable: no further request can succeed, so a stage stops
    (nothing of an unfinished question is committed) instead of recording questions as failed."""


@dataclass(frozen=True)
class Message:
    role: str
    content: str


@dataclass(frozen=True)
class Prompt:
    """Chat messages, then ``prefix``: assistant text the completion must continue."""

    messages: tuple[Message, ...]
    prefix: str = ""


@dataclass(frozen=True)
class SamplingSpec:
    n: int = 1
    temperature: float = 1.0
    top_p: float = 1.0
    max_tokens: int = 512
    stop: tuple[str, ...] = ()

    @property
    def distinct_samples(self) -> int:
        """Samples worth requesting: greedy decoding (temperature 0) gives one answer however many are asked."""
        return 1 if self.temperature == 0 else self.n


def replicate(completions: list["Completion"], spec: SamplingSpec) -> list["Completion"]:
    """``spec.n`` completions from the distinct ones (greedy: the one completion, ``n`` times)."""
    return completions if len(completions) == spec.n else completions * spec.n


@dataclass(frozen=True)
class Completion:
    text: str
    num_tokens: int
    finish_reason: str | None


@dataclass
class EngineStats:
    """Counters every engine keeps: requests, sequences, tokens and time-weighted occupancy."""

    requests: int = 0
    sequences: int = 0
    generated_tokens: int = 0
    _in_flight: int = 0
    _last_change: float = field(default_factory=time.monotonic)
    _started: float = field(default_factory=time.monotonic)
    _busy_seconds: float = 0.0
    _sequence_seconds: float = 0.0

    def _tick(self) -> None:
        now = time.monotonic()
        elapsed = now - self._last_change
        if self._in_flight:
            self._busy_seconds += elapsed
            self._sequence_seconds += elapsed * self._in_flight
        self._last_change = now

    def begin(self, sequences: int) -> None:
        self._tick()
        self._in_flight += sequences

    def end(self, sequences: int, tokens: int) -> None:
        self._tick()
        self._in_flight -= sequences
        self.requests += 1
        self.sequences += sequences
        self.generated_tokens += tokens

    def summary(self) -> dict[str, float]:
        self._tick()
        wall = max(time.monotonic() - self._started, 1e-9)
        return {
            "requests": self.requests,
            "sequences": self.sequences,
            "generated_tokens": self.generated_tokens,
            "wall_seconds": round(wall, 2),
            "tokens_per_second": round(self.generated_tokens / wall, 1),
            "busy_fraction": round(self._busy_seconds / wall, 3),
            "mean_sequences_in_flight": round(self._sequence_seconds / wall, 2),
        }


class Engine(Protocol):
    """A generation backend."""

    model: str

    async def generate(self, prompt: Prompt, spec: SamplingSpec) -> list[Completion]:
        """``spec.n`` completions of ``prompt``."""
        ...

    def metrics(self) -> dict[str, float]:
        """Throughput, occupancy and (where the backend exposes it) prefix-cache hit rate."""
        ...

    async def close(self) -> None:
        ...


def chat_messages(problem: str, system_prompt: str | None) -> tuple[Message, ...]:
    """The messages that pose ``problem`` (with the system prompt when one is set)."""
    system = (Message("system", system_prompt),) if system_prompt else ()
    return system + (Message("user", problem),)


def prompt_token_ids(tokenizer, prompt: Prompt) -> list[int]:
    """Token ids of a prompt: the chat template with the generation prompt, then the prefix's own tokens.

    Models without a chat template get the messages joined by blank lines (with the tokenizer's
    special tokens). The prefix is tokenized separately so it continues exactly after the template.
    """
    messages = [{"role": m.role, "content": m.content} for m in prompt.messages]
    if tokenizer.chat_template:
        ids = list(tokenizer.apply_chat_template(messages, tokenize=True, add_generation_prompt=True,
                                                 return_dict=False))
    else:
        ids = tokenizer.encode("\n\n".join(m["content"] for m in messages) + "\n\n", add_special_tokens=True)
    return ids + (tokenizer.encode(prompt.prefix, add_special_tokens=False) if prompt.prefix else [])


async def run_all(coroutines: Iterable[Awaitable[None]]) -> None:
    """Await every coroutine concurrently; if one raises, cancel the rest and re-raise.

    Stages run a coroutine per question over one engine; a fatal error (the engine died, the
    server is gone) must stop them all instead of leaving requests in flight.
    """
    tasks = [asyncio.ensure_future(c) for c in coroutines]
    try:
        await asyncio.gather(*tasks)
    except BaseException:
        for task in tasks:
            task.cancel()
        raise
