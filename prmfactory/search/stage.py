"""``run_mcts``: problems -> nodes + questions, many questions in flight over one async engine.

Input: ``--input`` JSONL (see prmfactory.inputs). Output datasets: ``problems`` (the input
rows), ``nodes`` (one row per estimated step prefix) and ``questions`` (exactly one summary per
question — the resume ledger). Questions already summarised are skipped on a rerun; a question
whose search raises is recorded as ``failed`` with the reason, while a dead or unreachable
engine stops the stage (nothing of an unfinished question is committed).

Reproducibility: the search's own choices are seeded, and so is the engine (once; per-request
seeds crash the CPU engine). Rollouts are reproducible only when the engine batches requests the
same way, i.e. not across runs with concurrency > 1; the rollouts actually drawn are stored.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from pathlib import Path
from typing import Any

from prmfactory.answers import AnswerChecker
from prmfactory.config import MctsConfig
from prmfactory.engines import open_engine
from prmfactory.engines.base import Engine, SamplingSpec, chat_messages, run_all
from prmfactory.engines.openai import EngineUnavailableError
from prmfactory.inputs import InputFormat, commit_problems, load_problems
from prmfactory.progress import stage_progress
from prmfactory.search.montecarlo import search_mc
from prmfactory.search.omegaprm import OmegaParams, search_omegaprm
from prmfactory.search.outcome import SearchOutcome
from prmfactory.search.rollouts import QuestionContext
from prmfactory.steps import Segmenter
from prmfactory.store import CommitBuffer, Run

OUTPUTS = ("problems", "nodes", "questions")
LOG = logging.getLogger("prmfactory")


async def _search(context: QuestionContext, config: MctsConfig, rng: random.Random) -> SearchOutcome:
    if config.strategy == "mc":
        return await search_mc(context, num_solutions=config.num_solutions, rollouts=config.rollouts)
    params = OmegaParams(rollouts=config.rollouts, budget=config.budget, c_puct=config.c_puct, alpha=config.alpha,
                         beta=config.beta, length_scale=config.length_scale)
    return await search_omegaprm(context, params, rng)


def _summary(question_id: str, config: MctsConfig, outcome: SearchOutcome | None, context: QuestionContext,
             reason: str | None) -> dict[str, Any]:
    return {"question_id": question_id, "status": outcome.status if outcome else "failed",
            "reason": outcome.reason if outcome else reason, "strategy": config.strategy,
            "num_nodes": len(outcome.tree.nodes) if outcome else 0, "num_rollouts": context.rollouts_made,
            "generated_tokens": context.generated_tokens,
            "initial_accuracy": outcome.initial_accuracy if outcome else None}


async def search_questions(run: Run, problems: list[dict[str, Any]], config: MctsConfig, engine: Engine,
                           checker: AnswerChecker) -> dict[str, int]:
    """Search every problem, committing nodes and summaries every ``commit_every`` questions."""
    segmenter = Segmenter(config.segmentation)
    sampling = SamplingSpec(temperature=config.temperature, top_p=config.top_p, max_tokens=config.max_new_tokens)
    slots = asyncio.Semaphore(config.concurrency)
    buffer = CommitBuffer(run, ("nodes", "questions"), config.commit_every)
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
            except EngineUnavailableError:
                raise
            except Exception as exc:  # one question's failure is recorded, never fatal to the others
                if type(exc).__name__ == "EngineDeadError":
                    raise
                reason = f"{type(exc).__name__}: {exc}"[:500]
                LOG.warning("question %s failed: %s", qid, reason)
        buffer.add({"questions": [_summary(qid, config, outcome, context, reason)],
                    "nodes": outcome.tree.rows(qid, config.strategy) if outcome else []})
        counts[outcome.status if outcome else "failed"] += 1
        progress.advance(**{k: v for k, v in counts.items() if v})

    with stage_progress(f"mcts ({config.strategy})", len(problems), quiet=config.quiet) as progress:
        await run_all(one(p) for p in problems)
        buffer.flush()
    return counts


async def _search_with_engine(run: Run, problems: list[dict[str, Any]], config: MctsConfig, checker: AnswerChecker,
                             report: dict[str, Any]) -> None:
    """Create the engine inside the event loop that uses it, search, and always close it."""
    async with open_engine(config.policy, config.engine, config.seed, report) as engine:
        report["statuses"] = await search_questions(run, problems, config, engine, checker)


def run_mcts(run: Run, config: MctsConfig, input_path: Path, *, input_format: InputFormat = "auto",
             skip_invalid: bool = False, force: bool = False) -> dict[str, Any]:
    """The mcts stage; returns (and stores in ``reports/mcts.json``) its counters and engine metrics."""
    started = time.time()
    problems, issues = load_problems(input_path, input_format, skip_invalid=skip_invalid)
    with run.writing(), run.log_to_file("mcts"):
        run.begin_stage("mcts", config, OUTPUTS, force=force)
        problems = commit_problems(run, problems, issues, config.limit)
        done = run.committed_ids("questions")
        todo = [p for p in problems if p["question_id"] not in done]
        LOG.info("mcts: %d problems read (%d rejected), %d already searched, %d to search with %s",
                 len(problems), len(issues), len(problems) - len(todo), len(todo), config.policy)
        report: dict[str, Any] = {"stage": "mcts", "problems": len(problems), "rejected_lines": len(issues),
                                  "skipped_done": len(problems) - len(todo)}
        if todo:
            with AnswerChecker(config.answer_timeout_s) as checker:
                try:
                    asyncio.run(_search_with_engine(run, todo, config, checker, report))
                finally:
                    report["answer_check_timeouts"] = checker.timeouts
        report["wall_seconds"] = round(time.time() - started, 1)
        run.write_report("mcts", report)
        LOG.info("mcts report: %s", report)
    return report
