"""Sampling and checking rollouts from a step prefix — what both search strategies share."""

from __future__ import annotations

from dataclasses import dataclass

from prmfactory.answers import AnswerChecker
from prmfactory.engines.base import Engine, Message, Prompt, SamplingSpec
from prmfactory.search.tree import Rollout
from prmfactory.steps import Segmenter


@dataclass
class QuestionContext:
    """One question's view of the engine: samples k rollouts from a prefix and checks their answers."""

    question_id: str
    reference: str
    messages: tuple[Message, ...]
    engine: Engine
    checker: AnswerChecker
    segmenter: Segmenter
    sampling: SamplingSpec
    rollouts_made: int = 0
    generated_tokens: int = 0

    async def rollouts(self, prefix: tuple[str, ...], k: int) -> list[Rollout]:
        spec = SamplingSpec(n=k, temperature=self.sampling.temperature, top_p=self.sampling.top_p,
                            max_tokens=self.sampling.max_tokens)
        completions = await self.engine.generate(Prompt(self.messages, self.segmenter.prefix_text(list(prefix))), spec)
        checks = self.checker.check(self.reference, [c.text for c in completions])
        self.rollouts_made += len(completions)
        self.generated_tokens += sum(c.num_tokens for c in completions)
        return [Rollout(c.text, tuple(self.segmenter.split(c.text)), check.answer, check.correct, c.num_tokens)
                for c, check in zip(completions, checks)]
