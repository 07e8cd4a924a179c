"""`python -m tests.scripted_cli ARGS`: the real CLI, its engines replaced by slow scripted ones.

``--policy scripted-slow`` is the prompt-seeded scripted policy; any other model is a scripted
judge. Lets a test SIGKILL a stage (or its Ray driver) mid-run without starting a model engine.
"""

from __future__ import annotations

import asyncio
import contextlib

from prmfactory.engines.base import Completion
from tests.scripted_engine import PromptSeededEngine


class SlowJudge:
    model = "slow-scripted-judge"

    async def generate(self, prompt, spec):
        await asyncio.sleep(0.02)
        return [Completion("\\boxed{-1}", 3, "stop") for _ in range(spec.n)]

    def metrics(self):
        return {}

    async def close(self):
        pass


class SlowPolicy(PromptSeededEngine):
    async def generate(self, prompt, spec):
        await asyncio.sleep(0.05)
        return await super().generate(prompt, spec)


@contextlib.asynccontextmanager
async def slow_engines(model, engine_config, seed, metrics):
    yield SlowPolicy(lambda prefix: 0.5, num_steps=4, bad_at=2) if model == "scripted-slow" else SlowJudge()


if __name__ == "__main__":
    import prmfactory.engines
    from prmfactory.cli import main

    prmfactory.engines.open_engine = slow_engines
    main()
