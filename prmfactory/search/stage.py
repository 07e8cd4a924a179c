"""The mcts stage: problems -> nodes + questions, many questions in flight over one async engine.

Input: ``--input`` JSONL (see prmfactory.inputs). Output datasets: ``problems`` (the input
rows), ``nodes`` (one row per estimated step prefix) and ``questions`` (exactly one summary per
question — the resume ledger). Questions already summarised are skipped on a rerun; a question
whose search raises is recorded as ``failed`` with the reason, while a dead or unreachable
engine stops the stage (nothing of an unfinished question is committed). A problem whose text
or answer differs from the one committed under its id is refused: its search would be stale.

Reproducibility: the search's own choices are seeded, and so is the engine (once; per-request
seeds crash the CPU engine). Rollouts are reproducible only when the engine batches requests the
same way, i.e. not across runs with concurrency > 1; the rollouts actually drawn are stored.
"""

from __future__ import annotations

import contextlib
import json
import logging
import random
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable

from prmfactory.answers import AnswerChecker
from prmfactory.engines import check_engine_config
from prmfactory.engines.base import Engine, EngineFailure, SamplingSpec, chat_messages
from prmfactory.errors import UsageError
from prmfactory.inputs import InputIssue, load_problems
from prmfactory.models import require_model
from prmfactory.rows import QuestionsRow
from prmfactory.search.config import MctsConfig
from prmfactory.search.montecarlo import search_mc
from prmfactory.search.omegaprm import OmegaParams, search_omegaprm
from prmfactory.search.outcome import SearchOutcome
from prmfactory.search.rollouts import QuestionContext
from prmfactory.stages import Stage, StageContext, StageInput, StageReport
from prmfactory.steps import Segmenter
from prmfactory.store import Run
from prmfactory.work import StageWork, Unit, UnitCommitter, UnitResult, WorkSummary, run_units

LOG = logging.getLogger("prmfactory")
REJECTS_FILE = "rejects.jsonl"


async def _search(context: QuestionContext, config: MctsConfig, rng: random.Random) -> SearchOutcome:
    if config.strategy == "mc":
        return await search_mc(context, num_solutions=config.num_solutions, rollouts=config.rollouts)
    params = OmegaParams(rollouts=config.rollouts, budget=config.budget, c_puct=config.c_puct, alpha=config.alpha,
                         beta=config.beta, length_scale=config.length_scale)
    return await search_omegaprm(context, params, rng)


def _summary(question_id: str, config: MctsConfig, outcome: SearchOutcome | None, context: QuestionContext | None,
             reason: str | None) -> QuestionsRow:
    return {"question_id": question_id, "status": outcome.status if outcome else "failed",
            "reason": outcome.reason if outcome else reason, "strategy": config.strategy,
            "num_nodes": len(outcome.tree.nodes) if outcome else 0,
            "num_rollouts": context.rollouts_made if context else 0,
            "generated_tokens": context.generated_tokens if context else 0,
            "initial_accuracy": outcome.initial_accuracy if outcome else None}


class SearchWork(StageWork):
    """Searches whole questions over one engine and answer checker: a unit is one problem.

    ``opener`` opens the engine (default: :func:`prmfactory.engines.open_engine` as it is when the
    work is made, so a Ray worker opens what the driver would). A question whose search raises is
    recorded ``failed`` with the reason; a dead engine (:class:`EngineFailure`) is raised, never
    recorded.
    """

    label = "mcts"
    datasets = ("nodes", "questions")
    counters = ("searched", "prefiltered_all_correct", "prefiltered_all_wrong", "failed")

    def __init__(self, config: MctsConfig, opener: Callable[..., Any] | None = None):
        from prmfactory import engines

        self.config, self.opener = config, opener or engines.open_engine
        self.label = f"mcts ({config.strategy})"
        self.units_in_flight, self.engine = config.concurrency, config.engine

    async def open(self) -> None:
        config = self.config
        self._metrics: dict[str, Any] = {}
        self._stack = contextlib.AsyncExitStack()
        self._checker = self._stack.enter_context(AnswerChecker(config.answer_timeout_s))
        self._engine = await self._stack.enter_async_context(self.opener(config.policy, config.engine, config.seed,
                                                                    self._metrics))
        self._segmenter = Segmenter(config.segmentation)
        self._sampling = SamplingSpec(temperature=config.temperature, top_p=config.top_p,
                                      max_tokens=config.max_new_tokens)

    async def process(self, problem: dict[str, Any]) -> UnitResult:
        config, qid = self.config, problem["question_id"]
        context = QuestionContext(qid, problem["answer"], chat_messages(problem["problem"], config.system_prompt),
                                  self._engine, self._checker, self._segmenter, self._sampling)
        outcome, reason = None, None
        try:
            outcome = await _search(context, config, random.Random(f"{config.seed}:{qid}"))
        except EngineFailure:
            raise
        except Exception as exc:  # one question's failure is recorded, never fatal to the others
            reason = f"{type(exc).__name__}: {exc}"[:500]
            LOG.warning("question %s failed: %s", qid, reason)
        rows = {"questions": [_summary(qid, config, outcome, context, reason)],
                "nodes": outcome.tree.rows(qid, config.strategy, config.segmentation) if outcome else []}
        return UnitResult(rows, {outcome.status if outcome else "failed": 1})

    async def close(self) -> WorkSummary:
        timeouts = self._checker.timeouts
        await self._stack.aclose()
        return WorkSummary({"answer_check_timeouts": timeouts}, self._metrics)

    def failed_rows(self, unit: Unit, reason: str) -> dict[str, list[dict[str, Any]]]:
        return {"questions": [_summary(qid, self.config, None, None, reason) for qid in unit.question_ids]}


async def search_questions(commit: Callable[..., Any], problems: list[dict[str, Any]], config: MctsConfig,
                           engine: Engine) -> dict[str, Any]:
    """Search ``problems`` over ``engine`` in this process, committing through ``commit``; the counters.

    For callers that hold an engine already (benchmarks, tests); the stage goes through
    :meth:`StageContext.do_units`, which also runs on Ray.
    """
    from prmfactory.engines import use_engine
    from prmfactory.progress import StageProgress

    work = SearchWork(config, use_engine(engine))
    committer = UnitCommitter(commit, work, config.commit_every, set(), StageProgress(None, None))
    summary = await run_units(work, [Unit((p["question_id"],), p) for p in problems], committer)
    return {**committer.counts, **summary.counts}


def commit_problems(commit: Callable[..., Any], run: Run, rows: list[dict[str, Any]], issues: list[InputIssue],
                    limit: int | None, source: str) -> list[dict[str, Any]]:
    """Write validated problems (those not yet committed) and the rejects into the run; return the rows to work on.

    Rejected lines go, with their reasons, to ``RUN/rejects.jsonl`` (rewritten whole on each run,
    so reruns do not duplicate it). A problem committed earlier under the same id with another text
    or answer is refused: the searches and labels of that id were computed for the old one.
    """
    rows = rows[:limit] if limit is not None else rows
    committed = {r["question_id"]: r for r in run.read("problems").select(
        ["question_id", "problem", "answer"]).to_pylist()} if run.shards("problems") else {}
    for row in rows:
        old = committed.get(row["question_id"])
        for field in ("problem", "answer"):
            if old is not None and old[field] != row[field]:
                raise UsageError(f"{source}: id {row['question_id']!r}: field {field!r}: differs from the problem "
                                 f"committed in {run.root} under this id; rerun with --force to search the new "
                                 "problems (it discards the run's searches and labels)")
    rejects = "".join(json.dumps(asdict(issue), ensure_ascii=False) + "\n" for issue in issues)
    if issues or run.files.exists(REJECTS_FILE):
        run.write_text(REJECTS_FILE, rejects)
    commit({"problems": [r for r in rows if r["question_id"] not in committed]})
    return rows


class MctsStage(Stage, name="mcts", config=MctsConfig, reads=("problems",), writes=("problems", "nodes", "questions")):
    """problems file -> problems, nodes, questions."""

    def in_pipeline(self, root: Path, source: StageInput | None) -> tuple[Run, StageInput | None]:
        return Run(root), source  # the pipeline's --input

    def prepare(self, ctx: StageContext):
        if ctx.source is None:
            raise UsageError("mcts needs --input PROBLEMS")
        ctx.run.require_run_or_new()
        if ctx.config.engine.backend == "vllm":
            require_model(ctx.config.policy)
        check_engine_config(ctx.config.engine)
        return load_problems(ctx.source.path, ctx.source.format, skip_invalid=ctx.source.skip_invalid)

    def run(self, ctx: StageContext) -> StageReport:
        config, run, report = ctx.config, ctx.run, ctx.report
        problems, issues = ctx.prepared
        problems = commit_problems(ctx.commit, run, problems, issues, config.limit, str(ctx.source.path))
        done = run.committed_ids("questions")
        todo = [p for p in problems if p["question_id"] not in done]
        ctx.log.info("mcts: %d problems read (%d rejected), %d already searched, %d to search with %s",
                     len(problems), len(issues), len(problems) - len(todo), len(todo), config.policy)
        report.rows_in, report.skipped_done = len(problems), len(problems) - len(todo)
        if issues:
            report.dropped["rejected_input_line"] = len(issues)
        report.already_done = not todo
        if todo:
            ctx.do_units(SearchWork(config), [Unit((p["question_id"],), p) for p in todo], config.commit_every,
                         done=done)
        return report
