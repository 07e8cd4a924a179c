"""Sampling N solutions per problem from a policy, split into steps and checked against the reference.

Shared by Best-of-N evaluation and the toy domain's ProcessBench-style test sets.
"""

from __future__ import annotations

import asyncio
from dataclasses import asdict, dataclass
from typing import Any, Sequence

from prmfactory.steps import Segmenter


@dataclass
class Candidate:
    """One sampled solution: its steps, extracted answer and correctness (math-verify)."""

    text: str
    steps: list[str]
    answer: str | None
    correct: bool

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


async def _sample(problems, policy, engine_config, spec, seed, quiet):
    from prmfactory.engines import open_engine
    from prmfactory.engines.base import DEFAULT_SYSTEM_PROMPT, Prompt, chat_messages, run_all
    from prmfactory.progress import stage_progress

    texts: list[list[str]] = [[] for _ in problems]
    metrics: dict[str, Any] = {}
    async with open_engine(policy, engine_config, seed, metrics) as engine:
        with stage_progress("sampling solutions", len(problems), quiet=quiet) as bar:
            async def one(index: int) -> None:
                outputs = await engine.generate(Prompt(chat_messages(problems[index]["problem"], DEFAULT_SYSTEM_PROMPT)), spec)
                texts[index] = [c.text for c in outputs]
                bar.advance()

            await run_all(one(i) for i in range(len(problems)))
    return texts, metrics


def sample_candidates(problems: Sequence[dict[str, Any]], *, policy: str, samples: int, temperature: float,
                      max_tokens: int, seed: int, segmentation: str = "blank_line", engine_config=None,
                      quiet: bool = False) -> tuple[list[list[Candidate]], dict[str, Any]]:
    """``samples`` candidates per problem (rows with ``problem`` and ``answer``) and the engine's metrics."""
    from prmfactory.answers import AnswerChecker
    from prmfactory.config import EngineConfig
    from prmfactory.engines.base import SamplingSpec

    segmenter = Segmenter(segmentation)
    spec = SamplingSpec(n=samples, temperature=temperature, max_tokens=max_tokens)
    texts, engine = asyncio.run(_sample(problems, policy, engine_config or EngineConfig(), spec, seed, quiet))
    with AnswerChecker() as checker:
        candidates = []
        for problem, outputs in zip(problems, texts):
            checks = checker.check(problem["answer"], outputs)
            candidates.append([Candidate(text, segmenter.split(text), check.answer, check.correct)
                               for text, check in zip(outputs, checks)])
    return candidates, engine
