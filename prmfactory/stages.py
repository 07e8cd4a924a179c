"""One stage protocol, one registry and one runner (DESIGN.md §3.1, §3.13).

A stage declares its name, its config model, the datasets it reads (``requires``: those it cannot
run without) and writes, and ``run(ctx) -> StageReport``. :func:`execute` owns everything around
it, once for all stages: the writer lock, the log, the checksum and lineage checks, ``--force``
(the stage's outputs *and everything downstream of it* are discarded — set aside until the new
outputs are committed, given back if the stage fails first — and the report says what), the
report file and the timing.

Lineage: every shard a stage commits through ``ctx`` records the input shards it was computed
from. Before a stage runs, its own outputs whose inputs have changed are dropped and recomputed —
only the affected questions for a stage keyed by question, everything for a whole-run stage — and
an input that is itself stale stops the stage with a one-line error naming the stage to rerun.
"""

from __future__ import annotations

import asyncio
import importlib
import logging
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Mapping, Sequence

from pydantic import BaseModel, ConfigDict, Field
from rich.markup import escape

from prmfactory.bookkeeping import begin_stage, record_cluster, stage_log, write_report
from prmfactory.config import StageConfig
from prmfactory.errors import UsageError, rerun_command
from prmfactory.progress import console
from prmfactory.store import Lineage, Run, config_sha256

if TYPE_CHECKING:
    from prmfactory.work import StageWork, Unit

LOG = logging.getLogger("prmfactory")


class StageReport(BaseModel):
    """What one run of a stage did; stored as ``reports/<stage>.json`` (a PRM folder's for train-prm)."""

    model_config = ConfigDict(extra="forbid")

    stage: str
    rows_in: int = Field(0, description="Units the stage considered this time (problems, questions, solutions, rows).")
    rows_out: int = Field(0, description="Rows committed this time.")
    skipped_done: int = Field(0, description="Questions already committed before this run (resume).")
    dropped: dict[str, int] = Field(default_factory=dict, description="Units not turned into output, per reason slug.")
    counts: dict[str, int] = Field(default_factory=dict, description="Stage-specific counters.")
    discarded: dict[str, int] = Field(default_factory=dict,
                                      description="Shards discarded before running, per dataset (--force or stale).")
    details: dict[str, Any] = Field(default_factory=dict, description="Stage-specific results (filter steps, training).")
    engine: dict[str, Any] = Field(default_factory=dict, description="Engine metrics, for stages that generate.")
    already_done: bool = Field(False, description="Nothing was left to do.")
    seconds: float = 0.0


@dataclass(frozen=True)
class StageInput:
    """The file a stage reads from outside the run (mcts's problems)."""

    path: Path
    format: str = "auto"
    skip_invalid: bool = False


@dataclass
class StageContext:
    """Everything a stage's ``run`` may use: the run, its config, the log, and commits with lineage."""

    stage: "Stage"
    run: Run
    config: Any
    force: bool = False
    source: StageInput | None = None
    log: logging.Logger = LOG
    prepared: Any = None
    report: StageReport = field(init=False)

    def __post_init__(self):
        self.report = StageReport(stage=self.stage.name)

    @property
    def lineage(self) -> Lineage:
        return Lineage(self.stage.name, tuple(self.stage.reads), config_sha256(self.config.output_affecting()),
                       whole_run=self.stage.whole_run)

    def commit(self, rows_by_dataset: Mapping[str, Any]) -> dict[str, int]:
        committed = self.run.commit(rows_by_dataset, self.lineage)
        self.report.rows_out += sum(n for dataset, n in committed.items() if dataset != "rejected")
        return committed

    def do_units(self, work: "StageWork", units: Sequence["Unit"], every: int, *, done: set[str]) -> None:
        """Do ``units`` of ``work`` — in this process, or over Ray workers when the config names a cluster.

        Only this process commits (``every`` questions per shard, through :meth:`commit`); ``done``
        are the questions committed already. Counters, engine metrics and (on Ray) the cluster and
        worker losses land in the report.
        """
        from prmfactory.progress import stage_progress
        from prmfactory.work import UnitCommitter, run_units

        cluster = getattr(self.config, "cluster", None)
        questions = sum(len(unit.question_ids) for unit in units)
        with stage_progress(work.label, questions, quiet=self.config.quiet) as progress:
            committer = UnitCommitter(self.commit, work, every, done, progress)
            if cluster is None or cluster.ray_address is None:
                summary = asyncio.run(run_units(work, units, committer))
                self.report.engine.update(summary.engine)
                self.report.counts.update(committer.counts, **summary.counts)
            else:
                from prmfactory.cluster import RayPool

                with RayPool(cluster, work) as pool:
                    record_cluster(self.run, self.stage.name, pool.description)
                    self.report.details["cluster"] = pool.description
                    pool.run(units, committer)
                self.report.engine.update(pool.engine_metrics)
                self.report.counts.update(committer.counts, **pool.counts)
        if committer.duplicates:
            self.report.counts["duplicate_results_dropped"] = committer.duplicates
        if committer.failed:  # given up on after max_attempts lost workers (mcts records them `failed`)
            self.report.counts["given_up"] = len(committer.failed)
            self.report.details["given_up"] = committer.failed[:100]


class Stage(ABC):
    """A stage: declared inputs and outputs, a config model, and ``run``.

    Declared in the class statement: ``class VerifyStage(Stage, name="verify", config=VerifyConfig,
    reads=("problems", "nodes"), requires=("problems", "nodes"), writes=("verdicts",))``.
    ``whole_run``: the outputs depend on all of the inputs, not question by question.
    """

    name: ClassVar[str]
    config_model: ClassVar[type[StageConfig]]
    reads: ClassVar[tuple[str, ...]]
    requires: ClassVar[tuple[str, ...]]
    writes: ClassVar[tuple[str, ...]]
    whole_run: ClassVar[bool]

    def __init_subclass__(cls, *, name: str, config: type[StageConfig], reads: tuple[str, ...] = (),
                          requires: tuple[str, ...] = (), writes: tuple[str, ...] = (), whole_run: bool = False,
                          **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls.name, cls.config_model, cls.whole_run = name, config, whole_run
        cls.reads, cls.requires, cls.writes = tuple(reads), tuple(requires), tuple(writes)

    def prepare(self, ctx: StageContext) -> Any:
        """Read and validate outside inputs before the run is locked or anything is discarded."""
        return None

    def in_pipeline(self, root: Path, source: StageInput | None) -> tuple[Run, StageInput | None]:
        """Where the stage writes and what it reads from outside, as a step of a pipeline on run ``root``."""
        return Run(root), None

    def begin(self, ctx: StageContext) -> None:
        """Check the inputs (checksums, lineage), refuse a conflicting rerun, apply ``--force``, drop stale outputs.

        The inputs are verified before ``--force`` sets anything aside, so a damaged input stops the
        stage with the old outputs untouched.
        """
        run = ctx.run
        run.verify(self.reads)
        run.require_fresh(self.reads)
        for dataset in self.requires:
            if not run.shards(dataset):
                producer = next((s.name for s in all_stages() if dataset in s.writes), "?")
                raise UsageError(f"{run.root}: no {dataset} to read; run `{rerun_command(producer, run.root)}` first")
        ctx.report.discarded.update(begin_stage(run, self.name, ctx.config, self.writes, force=ctx.force,
                                                downstream=downstream_of(self.writes)))
        stale = [s for d in self.writes for s in run.stale_shards(d)]
        if stale and self.whole_run:
            stale = [s for d in self.writes for s in run.shards(d)]
        if stale:
            LOG.warning("%s: %d output shards were computed from inputs that have since changed; recomputing them",
                        self.name, len(stale))
            for shard in stale:
                dataset = shard["file"].split("/")[0]
                ctx.report.discarded[dataset] = ctx.report.discarded.get(dataset, 0) + 1
            run.drop_shards(stale)

    @abstractmethod
    def run(self, ctx: StageContext) -> StageReport:
        """Do the stage's work on ``ctx``; return ``ctx.report`` filled in."""


# name -> (its config model, the stage), as "module:Class", imported on first use; config modules
# are light, so the CLI builds its options from them without importing the stages
REGISTRY: dict[str, tuple[str, str]] = {
    "mcts": ("prmfactory.search.config:MctsConfig", "prmfactory.search.stage:MctsStage"),
    "verify": ("prmfactory.verify.config:VerifyConfig", "prmfactory.verify.stage:VerifyStage"),
    "judge": ("prmfactory.judge.config:JudgeConfig", "prmfactory.judge.stage:JudgeStage"),
    "filter": ("prmfactory.filter.config:FilterConfig", "prmfactory.filter.stage:FilterStage"),
    "train-prm": ("prmfactory.train.config:TrainPrmConfig", "prmfactory.train.stage:TrainPrmStage"),
}


def _load(spec: str) -> Any:
    module, name = spec.split(":")
    return getattr(importlib.import_module(module), name)


def _registered(name: str) -> tuple[str, str]:
    if name not in REGISTRY:
        raise UsageError(f"unknown stage {name!r} (known: {', '.join(REGISTRY)})")
    return REGISTRY[name]


def config_model(name: str) -> type[StageConfig]:
    return _load(_registered(name)[0])


def get_stage(name: str) -> Stage:
    return _load(_registered(name)[1])()


def all_stages() -> list[Stage]:
    return [get_stage(name) for name in REGISTRY]


def downstream_of(datasets: Sequence[str]) -> list[str]:
    """Every dataset computed, directly or not, from ``datasets`` (what ``--force`` discards with them)."""
    found: list[str] = []
    frontier = set(datasets)
    while frontier:
        produced = {d for stage in all_stages() if frontier & set(stage.reads) for d in stage.writes}
        frontier = produced - set(found) - set(datasets)
        found += sorted(frontier)
    return found


def execute(name: str, run: Run, config: StageConfig, *, force: bool = False,
            source: StageInput | None = None) -> StageReport:
    """Run one stage with everything around it: lock, log, lineage, ``--force``, report, timing."""
    stage = get_stage(name)
    if not isinstance(config, stage.config_model):
        raise TypeError(f"stage {name} takes a {stage.config_model.__name__}, got {type(config).__name__}")
    started = time.monotonic()
    ctx = StageContext(stage, run, config, force=force, source=source)
    ctx.prepared = stage.prepare(ctx)
    cluster = getattr(config, "cluster", None)
    if cluster is not None and cluster.ray_address is not None:
        from prmfactory.cluster import check_reachable

        check_reachable(cluster.ray_address)
    with run.writing(), stage_log(run, name) as log:
        ctx.log = log
        for message in run.orphaned:
            log.warning(message)
            console.print(f"[yellow]warning:[/yellow] {escape(message)}", highlight=False, soft_wrap=True)
        try:
            stage.begin(ctx)
            if ctx.report.discarded:
                log.warning("%s: discarded %s", name,
                            ", ".join(f"{d} ({n} shards)" for d, n in ctx.report.discarded.items()))
            report = stage.run(ctx)
        except BaseException:
            if run.restore_aside():
                log.warning("%s failed before committing anything; the outputs --force set aside are back", name)
            raise
        run.drop_aside()
        report.seconds = round(time.monotonic() - started, 1)
        write_report(run, name, report.model_dump(mode="json"))
        log.info("%s report: %s", name, report.model_dump_json(exclude={"details"}))
    return report
