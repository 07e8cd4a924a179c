"""A scripted generation backend for testing search logic: success probabilities are known exactly.

The domain: the right solution is steps ``T0 .. T{n-1}`` then ``\\boxed{42}``. A prefix that
contains a step starting with ``BAD`` never succeeds; any other prefix succeeds with the
probability ``success(prefix_steps)``. A failing rollout replaces the step at absolute index
``bad_at`` (or the next step when the prefix is already past it) with ``BAD k`` and answers 0.
"""

from __future__ import annotations

import random
import zlib
from typing import Callable

from prmfactory.engines.base import Completion, EngineStats, Prompt, SamplingSpec

ANSWER = "42"


class ScriptedEngine:
    model = "scripted"

    def __init__(self, success: Callable[[list[str]], float], *, num_steps: int = 6, bad_at: int = 3, seed: int = 0):
        self.success, self.num_steps, self.bad_at = success, num_steps, bad_at
        self.rng = random.Random(seed)
        self.calls: list[tuple[tuple[str, ...], int]] = []
        self.stats = EngineStats()

    def _continuation(self, prefix: list[str]) -> str:
        start = len(prefix)
        ok = not any(s.startswith("BAD") for s in prefix) and self.rng.random() < self.success(prefix)
        steps = [f"T{i}" for i in range(start, self.num_steps)]
        if ok:
            return "\n\n".join(steps + [f"The answer is \\boxed{{{ANSWER}}}."])
        if not any(s.startswith("BAD") for s in prefix) and steps:
            position = max(self.bad_at, start) - start
            position = min(position, len(steps) - 1)
            steps[position] = f"BAD {start + position}"
        return "\n\n".join(steps + ["The answer is \\boxed{0}."])

    async def generate(self, prompt: Prompt, spec: SamplingSpec) -> list[Completion]:
        prefix = [s for s in prompt.prefix.split("\n\n") if s]
        self.calls.append((tuple(prefix), spec.n))
        texts = [self._continuation(prefix) for _ in range(spec.n)]
        self.stats.begin(spec.n)
        self.stats.end(spec.n, sum(len(t.split()) for t in texts))
        return [Completion(t, len(t.split()), "stop") for t in texts]

    def metrics(self) -> dict[str, float]:
        return self.stats.summary()

    async def close(self) -> None:
        pass


class PromptSeededEngine(ScriptedEngine):
    """The scripted policy with its randomness drawn from each prompt: a prompt gets the same completions
    wherever and in whatever order it is asked (so a search on Ray workers equals one in process)."""

    async def generate(self, prompt: Prompt, spec: SamplingSpec) -> list[Completion]:
        text = "\n".join(m.content for m in prompt.messages) + "\x00" + prompt.prefix
        self.rng = random.Random(zlib.crc32(text.encode()))
        return await super().generate(prompt, spec)
