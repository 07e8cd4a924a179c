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

import asyncio
import json
import logging
import random
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable

from prmfactory.answers import AnswerChecker
from prmfactory.engines.base import Engine, EngineFailure, SamplingSpec, chat_messages, run_all
from prmfactory.errors import UsageError
from prmfactory.fileio import atomic_write_text
from prmfactory.inputs import InputIssue, load_problems
from prmfactory.progress import stage_progress
from prmfactory.models import require_model
from prmfactory.rows import QuestionsRow
from prmfactory.search.config import MctsConfig
from prmfactory.search.montecarlo import search_mc
from prmfactory.search.omegaprm import OmegaParams, search_omegaprm
from prmfactory.search.outcome import SearchOutcome
from prmfactory.search.rollouts import QuestionContext
from prmfactory.stages import Stage, StageContext, StageInput, StageReport
from prmfactory.steps import Segmenter
from prmfactory.store import CommitBuffer, Run

LOG = logging.getLogger("prmfactory")
REJECTS_FILE = "rejects.jsonl"




async def _search(context: QuestionContext, config: MctsConfig, rng: random.Random) -> SearchOutcome:
    if config.strategy == "mc":
        return await search_mc(context, num_solutions=config.num_solutions, rollouts=config.rollouts)
    params = OmegaParams(rollouts=config.rollouts, budget=config.budget, c_puct=config.c_puct, alpha=config.alpha,
                         beta=config.beta, length_scale=config.length_scale)
    return await search_omegaprm(context, params, rng)


def _summary(question_id: str, config: MctsConfig, outcome: SearchOutcome | None, context: QuestionContext,
             reason: str | None) -> QuestionsRow:
    return {"question_id": question_id, "status": outcome.status if outcome else "failed",
            "reason": outcome.reason if outcome else reason, "strategy": config.strategy,
            "num_nodes": len(outcome.tree.nodes) if outcome else 0, "num_rollouts": context.rollouts_made,
            "generated_tokens": context.generated_tokens,
            "initial_accuracy": outcome.initial_accuracy if outcome else None}


async def search_questions(commit: Callable[..., Any], problems: list[dict[str, Any]], config: MctsConfig,
                           engine: Engine, checker: AnswerChecker) -> dict[str, int]:
    """Search every problem, committing nodes and summaries every ``commit_every`` questions through ``commit``."""
    segmenter = Segmenter(config.segmentation)
    sampling = SamplingSpec(temperature=config.temperature, top_p=config.top_p, max_tokens=config.max_new_tokens)
    slots = asyncio.Semaphore(config.concurrency)
    buffer = CommitBuffer(commit, ("nodes", "questions"), config.commit_every)
    counts = {"searched": 0, "prefiltered_all_correct": 0, "prefiltered_all_wrong": 0, "failed": 0}

    async def one(problem: dict[str, Any]) -> None:
        qid = problem["question_id"]
        context = QuestionContext(qid, problem["answer"], chat_messages(problem["problem"], config.system_prompt),
                                  engine, checker, segmenter, sampling)
        rng = random.Random(f"{config.seed}:{qid}")
        outcome, reason = None, None
        async with slots:
            try:
                outcome = await _search(context, config, rng)
            except EngineFailure:
                raise
            except Exception as exc:  # one question's failure is recorded, never fatal to the others
                reason = f"{type(exc).__name__}: {exc}"[:500]
                LOG.warning("question %s failed: %s", qid, reason)
        buffer.add({"questions": [_summary(qid, config, outcome, context, reason)],
                    "nodes": outcome.tree.rows(qid, config.strategy, config.segmentation) if outcome else []})
        counts[outcome.status if outcome else "failed"] += 1
        progress.advance(**{k: v for k, v in counts.items() if v})

    with stage_progress(f"mcts ({config.strategy})", len(problems), quiet=config.quiet) as progress:
        await run_all(one(p) for p in problems)
        buffer.flush()
    return counts


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
    if issues or (run.root / REJECTS_FILE).exists():
        atomic_write_text(run.root / REJECTS_FILE, rejects)
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
            with AnswerChecker(config.answer_timeout_s) as checker:
                try:
                    ctx.generate_with(config.policy, lambda engine: search_questions(ctx.commit, todo, config, engine,
                                                                                      checker))
                finally:
                    report.counts["answer_check_timeouts"] = checker.timeouts
        return report
