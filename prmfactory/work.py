"""A stage's work as units — one question, or a batch of questions — done the same way in this process or on Ray.

A stage describes its work as a :class:`StageWork`: a picklable object that opens what it needs
(an engine inside the event loop that uses it, an answer checker), turns one unit's payload into
rows, and closes with its counters and engine metrics. :func:`run_units` does every unit over one
such object in this process; :class:`prmfactory.cluster.RayPool` does them over a pool of Ray
workers, each holding its own copy. Either way the rows come back to one :class:`UnitCommitter`
on the driver, the run's only writer (DESIGN.md §3.12): it commits through the run's ledger,
whole questions at a time, and drops — and counts — rows of a question already committed, since
Ray runs a task at least once.
"""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence

from prmfactory.engines.base import run_all

if TYPE_CHECKING:
    from prmfactory.config import EngineConfig
    from prmfactory.progress import StageProgress


@dataclass
class Unit:
    """Work on ``question_ids``, described by ``payload``; ``attempts`` counts workers lost while doing it."""

    question_ids: tuple[str, ...]
    payload: Any
    attempts: int = 0


@dataclass
class UnitResult:
    """A finished unit: its rows per dataset (every row names its question) and counter increments."""

    rows: dict[str, list[dict[str, Any]]]
    counts: dict[str, int] = field(default_factory=dict)


@dataclass
class WorkSummary:
    """What a worker reports when it closes: stage counters and its engine's metrics."""

    counts: dict[str, int] = field(default_factory=dict)
    engine: dict[str, Any] = field(default_factory=dict)


class StageWork(ABC):
    """One stage's work on a unit; built on the driver, pickled to each worker before :meth:`open`.

    ``datasets``: what results hold (committed together); ``units_in_flight``: units one worker
    works on at once (questions in flight keep an engine's batch full); ``engine``: the engine
    config, for stages that generate (a Ray worker then gets the engine's GPUs).
    """

    label: str
    datasets: tuple[str, ...]
    counters: tuple[str, ...] = ()
    units_in_flight: int = 1
    engine: "EngineConfig | None" = None

    @abstractmethod
    async def open(self) -> None:
        """Acquire what :meth:`process` uses, inside the event loop that will call it."""

    @abstractmethod
    async def process(self, payload: Any) -> UnitResult:
        """The rows of one unit."""

    @abstractmethod
    async def close(self) -> WorkSummary:
        """Release everything :meth:`open` acquired; the worker's counters and engine metrics."""

    def failed_rows(self, unit: Unit, reason: str) -> dict[str, list[dict[str, Any]]]:
        """Rows that record a unit given up on after its workers kept dying (none: it stays to do on a rerun)."""
        return {}


class CommitBuffer:
    """Collects a stage's rows question by question and commits them every ``every`` questions.

    A question's rows (for all datasets) are added in one call, so a commit never splits a
    question: the resume ledger stays exact. ``commit`` is :meth:`prmfactory.store.Run.commit` or a stage
    context's commit (which adds lineage and counts).
    """

    def __init__(self, commit: Callable[[Mapping[str, Sequence[Mapping[str, Any]]]], Any], datasets: Sequence[str],
                 every: int):
        self.commit, self.datasets, self.every = commit, tuple(datasets), every
        self._rows: dict[str, list[Mapping[str, Any]]] = {d: [] for d in self.datasets}
        self._questions = 0

    def add(self, rows_by_dataset: Mapping[str, Sequence[Mapping[str, Any]]], questions: int = 1) -> None:
        """Add the rows of ``questions`` whole questions."""
        for dataset, rows in rows_by_dataset.items():
            self._rows[dataset].extend(rows)
        self._questions += questions
        if self._questions >= self.every:
            self.flush()

    def flush(self) -> None:
        if self._questions:
            self.commit(self._rows)
            self._rows = {d: [] for d in self.datasets}
            self._questions = 0


class UnitCommitter:
    """The driver's side of the work: commits units' rows, whole questions at a time, each question once.

    ``done`` holds the questions already committed (the ledger); rows of those questions that come
    back again are dropped and counted in ``duplicates``. Commits go through a :class:`CommitBuffer`
    every ``every`` questions.
    """

    def __init__(self, commit: Callable[[Mapping[str, Sequence[Mapping[str, Any]]]], Any], work: StageWork,
                 every: int, done: set[str], progress: "StageProgress"):
        self.buffer = CommitBuffer(commit, work.datasets, every)
        self.done, self.progress = set(done), progress
        self.counts = {name: 0 for name in work.counters}
        self.duplicates = 0
        self.failed: list[str] = []

    def accept(self, unit: Unit, result: UnitResult) -> None:
        """Take a finished unit's rows, leaving out questions committed already."""
        fresh = [qid for qid in unit.question_ids if qid not in self.done]
        self.duplicates += len(unit.question_ids) - len(fresh)
        if not fresh:
            return
        if len(fresh) < len(unit.question_ids):
            keep = set(fresh)
            rows = {d: [r for r in rs if r["question_id"] in keep] for d, rs in result.rows.items()}
        else:
            rows = result.rows
        self.buffer.add(rows, questions=len(fresh))
        self.done.update(fresh)
        for name, value in result.counts.items():
            self.counts[name] = self.counts.get(name, 0) + value
        self.progress.advance(len(fresh), **{k: v for k, v in self.counts.items() if v})

    def give_up(self, unit: Unit, rows: dict[str, list[dict[str, Any]]]) -> None:
        """Record a unit whose workers kept dying: its ``rows`` (if the stage records failures) are committed."""
        self.failed += [qid for qid in unit.question_ids if qid not in self.done]
        if any(rows.values()):
            self.accept(unit, UnitResult(rows, {"failed": len(unit.question_ids)}))
        else:
            self.progress.advance(len(unit.question_ids))

    def flush(self) -> None:
        self.buffer.flush()


async def run_units(work: StageWork, units: Sequence[Unit], committer: UnitCommitter) -> WorkSummary:
    """Do every unit in this process over one opened ``work``, ``work.units_in_flight`` at a time.

    A unit that raises stops all of them (the single-process contract: a dead engine stops the
    stage, and nothing of an unfinished question is committed).
    """
    slots = asyncio.Semaphore(work.units_in_flight)

    async def one(unit: Unit) -> None:
        async with slots:
            result = await work.process(unit.payload)
        committer.accept(unit, result)

    await work.open()
    try:
        await run_all(one(unit) for unit in units)
        committer.flush()
    finally:
        summary = await work.close()
    return summary


def merge_engine_metrics(metrics: Sequence[Mapping[str, Any]], wall_seconds: float) -> dict[str, Any]:
    """Several workers' engine metrics as one: totals summed, rates over the driver's wall time, each kept."""
    metrics = [m for m in metrics if m]
    if not metrics:
        return {}
    if len(metrics) == 1:
        return dict(metrics[0])
    total = {key: sum(m.get(key, 0) for m in metrics) for key in ("requests", "sequences", "generated_tokens",
                                                                   "prefix_cache_queries")}
    hits = sum(m.get("prefix_cache_hit_rate", 0) * m.get("prefix_cache_queries", 0) for m in metrics)
    wall = max(wall_seconds, 1e-9)
    return {**total, "wall_seconds": round(wall, 2), "tokens_per_second": round(total["generated_tokens"] / wall, 1),
            "busy_fraction": round(sum(m.get("busy_fraction", 0) for m in metrics) / len(metrics), 3),
            "mean_sequences_in_flight": round(sum(m.get("mean_sequences_in_flight", 0) for m in metrics), 2),
            "prefix_cache_hit_rate": round(hits / total["prefix_cache_queries"], 4) if total["prefix_cache_queries"]
            else 0.0, "workers": list(metrics)}


def merge_counts(summaries: Sequence[WorkSummary]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for summary in summaries:
        for name, value in summary.counts.items():
            counts[name] = counts.get(name, 0) + value
    return counts
