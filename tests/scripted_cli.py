"""`python -m tests.scripted_cli ARGS`: the real CLI, with judge's engine replaced by a slow scripted judge.

Lets a test SIGKILL the judge stage mid-run without starting a model engine.
"""

from __future__ import annotations

import asyncio
import contextlib

from prmfactory.engines.base import Completion


class SlowJudge:
    model = "slow-scripted-judge"

    async def generate(self, prompt, spec):
        await asyncio.sleep(0.02)
        return [Completion("\\boxed{-1}", 3, "stop") for _ in range(spec.n)]

    def metrics(self):
        return {}

    async def close(self):
        pass


@contextlib.asynccontextmanager
async def slow_judge(model, engine_config, seed, metrics):
    yield SlowJudge()


if __name__ == "__main__":
    import prmfactory.engines
    from prmfactory.cli import main

    prmfactory.engines.open_engine = slow_judge
    main()
