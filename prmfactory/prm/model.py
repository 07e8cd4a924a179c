"""``PRM.from_pretrained(path).score(problem, steps)``: step scores from a model train-prm saved.

A PRM folder holds the model, its tokenizer, ``prm.json`` (kind, head, step segmentation, max length,
lineage) and a model card (:mod:`prmfactory.prm.folder`); it is run by a scorer chosen by kind and
backend (:mod:`prmfactory.prm.scorers`). Public PRM folders (Qwen2.5-Math-PRM, Math-Shepherd,
RLHFlow) are scored with their own conventions by :mod:`prmfactory.prm.public` behind the same
class (``format=``).
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

from prmfactory.errors import UsageError
from prmfactory.prm.folder import PRMMeta, require_model_files
from prmfactory.prm.rewards import Item, StepReward, step_reward
from prmfactory.prm.scorers import check_dtype, scorer_for
from prmfactory.steps import Segmenter

if TYPE_CHECKING:
    from prmfactory.credit import ScoredSteps


_LOADING = threading.RLock()  # transformers' loading patches global state (meta-device init): one load at a time


class PRM:
    """A trained process reward model: one score in [0, 1] per step (P(step is correct)).

    Safe to call from many threads (RL frameworks score rewards from thread pools): loads are
    serialised process-wide and each PRM's scoring under its own lock, since a fast tokenizer used
    from two threads at once fails ("Already borrowed"). For concurrent throughput, serve it:
    ``prmfactory serve`` batches concurrent requests into one model call.
    """

    def __init__(self, path: Path, meta: PRMMeta, scorer, format: str = "prmfactory"):
        self.path, self.meta, self.scorer, self.format = path, meta, scorer, format
        self.segmenter = Segmenter(meta.segmentation)
        self._scoring = threading.Lock()

    @classmethod
    def from_pretrained(cls, path: str | Path, backend: str = "transformers", format: str = "auto",
                        **options) -> "PRM":
        """A PRM folder of ``format`` (:data:`prmfactory.prm.public.PRM_FORMATS`; ``auto`` detects it)."""
        with _LOADING:
            return cls._load(Path(path), backend, format, **options)

    @classmethod
    def _load(cls, path: Path, backend: str, format: str, **options) -> "PRM":
        from prmfactory.prm.public import OWN_FORMAT, PUBLIC_SCORERS, resolve_format

        format = resolve_format(path, format)
        if format != OWN_FORMAT:
            if backend != "transformers":
                raise UsageError(f"a {format} PRM is scored with backend transformers, not {backend!r}")
            check_dtype(options.get("dtype", "float32"))
            scorer = PUBLIC_SCORERS[format](path, **options)
            return cls(path, scorer.meta, scorer, format)
        meta = PRMMeta.load(path)
        require_model_files(path, meta)
        return cls(path, meta, scorer_for(path, meta, backend, **options))

    def score(self, problem: str, steps: Sequence[str]) -> list[float]:
        return self.score_batch([(problem, steps)])[0]

    def score_batch(self, items: Sequence[Item]) -> list[list[float]]:
        with self._scoring:
            return self.scorer.score_batch(items)

    def close(self) -> None:
        """Release the scorer's engine, if it runs one."""
        if hasattr(self.scorer, "close"):
            self.scorer.close()

    @property
    def threshold(self) -> float:
        """The score below which a step is the first error: calibrated on a dev split if it was, else 0.5."""
        return self.meta.threshold if self.meta.threshold is not None else 0.5

    def split(self, response: str) -> list[str]:
        """A response split into steps with the separator the PRM was trained with."""
        return self.segmenter.split(response)

    def scored_steps(self, prompts: Sequence[str], responses: Sequence[str]) -> list["ScoredSteps"]:
        """Each response's steps as character spans (the PRM's segmentation) with their scores: what
        step-level credit needs to put a step's reward on the policy's own tokens."""
        from prmfactory.credit import ScoredSteps

        spans = [self.segmenter.spans(r) for r in responses]
        scores = self.score_batch([(p, [r[a:b] for a, b in s]) for p, r, s in zip(prompts, responses, spans)])
        return [ScoredSteps(s, list(v)) for s, v in zip(spans, scores)]

    def rewards(self, prompts: Sequence[str], responses: Sequence[str], how: str = "min") -> list[StepReward]:
        """One :class:`StepReward` per (prompt, response): the response split into steps, scored, aggregated."""
        scores = self.score_batch([(p, self.split(r)) for p, r in zip(prompts, responses)])
        return [step_reward(s, how, self.threshold) for s in scores]


def score_with_progress(prm: PRM, items: Sequence[Item], *, quiet: bool = False, chunk: int = 64) -> list[list[float]]:
    """``prm.score_batch`` over many solutions, in chunks of similar length, with a progress bar."""
    from prmfactory.progress import stage_progress

    order = sorted(range(len(items)), key=lambda i: len(items[i][0]) + sum(map(len, items[i][1])))
    scores: list[list[float]] = [[] for _ in items]
    with stage_progress("scoring steps", len(items), quiet=quiet) as bar:
        for start in range(0, len(order), chunk):
            indices = order[start:start + chunk]
            for index, result in zip(indices, prm.score_batch([items[i] for i in indices])):
                scores[index] = result
            bar.advance(len(indices))
    return scores
