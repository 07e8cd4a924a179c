"""The judge stage: an LLM grades every complete solution of a run, with majority votes.

Input: ``nodes`` (the complete solutions: ``complete`` is true) and ``problems``. Output:
``judgements``, one row per judged solution: every vote, the raw text of every sample, the
majority first-error index and how many outputs were malformed.

Modes (Zheng et al. 2024, ProcessBench; Zhang et al. 2025, Qwen2.5-Math-PRM consensus filtering):

* ``critic``: numbered paragraphs, the answer is the index of the first wrong one in
  ``\\boxed{}`` (−1: none) — ``prompts/critic.txt``;
* ``per_step``: a ``\\boxed{correct}`` or ``\\boxed{incorrect}`` line per step — ``prompts/per_step.txt``.

``--template FILE`` replaces the prompt. ``--judge toy-judge`` uses the toy judge's own template.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any, Callable

from rich.markup import escape

from prmfactory.engines import check_engine_config
from prmfactory.engines.base import Message, Prompt, SamplingSpec
from prmfactory.errors import PromptTooLong
from prmfactory.judge.config import JudgeConfig
from prmfactory.judge.parse import PARSERS, majority
from prmfactory.judge.render import render
from prmfactory.fileio import sha256_text
from prmfactory.models import require_model
from prmfactory.progress import console
from prmfactory.rows import JudgementsRow
from prmfactory.stages import Stage, StageContext, StageReport
from prmfactory.work import StageWork, Unit, UnitResult, WorkSummary

LOG = logging.getLogger("prmfactory")


def judgement_row(question_id: str, node_id: str, config: JudgeConfig, outputs: list[str], num_steps: int,
                  *, too_long: bool = False) -> JudgementsRow:
    """A ``judgements`` row from the raw outputs of one solution's samples."""
    votes = [PARSERS[config.mode](text, num_steps) for text in outputs]
    first_error, count = majority(votes)
    status = "too_long" if too_long else "malformed" if first_error is None else "ok"
    return {"question_id": question_id, "node_id": node_id, "status": status, "mode": config.mode,
            "judge_model": config.judge, "votes": votes, "first_error": first_error, "majority_votes": count,
            "malformed": sum(v is None for v in votes), "raw_outputs": outputs}


class JudgeWork(StageWork):
    """Judges every complete solution of a question over one engine: a unit is one question.

    The payload is ``(question_id, problem, solutions)``; ``concurrency`` solutions are judged at once.
    ``template`` is the prompt's text, read on the driver (a worker may not see the driver's files).
    """

    label = "judge"
    datasets = ("judgements",)
    counters = ("solutions", "flagged", "malformed_outputs", "too_long")

    def __init__(self, config: JudgeConfig, template: str, opener: Callable[..., Any] | None = None):
        from prmfactory import engines

        self.config, self.template, self.opener = config, template, opener or engines.open_engine
        self.label = f"judge ({config.mode})"
        self.units_in_flight, self.engine = config.concurrency, config.engine

    async def open(self) -> None:
        config = self.config
        self._metrics: dict[str, Any] = {}
        self._spec = SamplingSpec(n=config.votes, temperature=config.temperature, max_tokens=config.max_new_tokens)
        self._slots = asyncio.Semaphore(config.concurrency)
        self._stack = contextlib.AsyncExitStack()
        self._engine = await self._stack.enter_async_context(self.opener(config.judge, config.engine, config.seed,
                                                                    self._metrics))

    async def _judge(self, question_id: str, problem: str, node: dict[str, Any]) -> JudgementsRow:
        prompt = Prompt((Message("user", render(self.template, problem, node["steps"])),))
        async with self._slots:
            try:
                completions, too_long = await self._engine.generate(prompt, self._spec), False
            except PromptTooLong as exc:  # a long solution gets no votes; the stage goes on
                LOG.warning("%s node %s not judged: %s", question_id, node["node_id"], exc)
                completions, too_long = [], True
        return judgement_row(question_id, node["node_id"], self.config, [c.text for c in completions],
                             len(node["steps"]), too_long=too_long)

    async def process(self, payload: tuple[str, str, list[dict[str, Any]]]) -> UnitResult:
        question_id, problem, nodes = payload
        rows = list(await asyncio.gather(*(self._judge(question_id, problem, node) for node in nodes)))
        return UnitResult({"judgements": rows}, {
            "solutions": len(rows), "flagged": sum(r["first_error"] not in (None, -1) for r in rows),
            "malformed_outputs": sum(r["malformed"] for r in rows),
            "too_long": sum(r["status"] == "too_long" for r in rows)})

    async def close(self) -> WorkSummary:
        await self._stack.aclose()
        return WorkSummary({}, self._metrics)


MALFORMED_WARNING = 0.2  # above this share of unparsable judge outputs the run says so


def judge_units(solutions: dict[str, list[dict[str, Any]]], problems: dict[str, str]) -> list[Unit]:
    """One unit per question: its problem and complete solutions."""
    return [Unit((qid,), (qid, problems[qid], nodes)) for qid, nodes in solutions.items()]


class JudgeStage(Stage, name="judge", config=JudgeConfig, reads=("problems", "nodes"), requires=("problems", "nodes"),
                 writes=("judgements",)):
    """nodes (complete solutions) -> judgements, resumable by question."""

    def prepare(self, ctx: StageContext) -> str:
        if ctx.config.engine.backend == "vllm":
            require_model(ctx.config.judge)
        check_engine_config(ctx.config.engine)
        return ctx.config.template_text()

    def run(self, ctx: StageContext) -> StageReport:
        run, report = ctx.run, ctx.report
        problems = run.lookup("problems", "question_id", "problem")
        done = run.committed_ids("judgements")
        solutions = {}
        for qid, rows in run.rows_by_question("nodes", ["node_id", "steps", "complete"], skip=done).items():
            complete = [r for r in rows if r["complete"] and r["steps"]]
            if complete:
                solutions[qid] = complete
        report.rows_in, report.skipped_done, report.already_done = len(solutions), len(done), not solutions
        report.details["template_sha256"] = sha256_text(ctx.prepared)
        if solutions:
            ctx.do_units(JudgeWork(ctx.config, ctx.prepared), judge_units(solutions, problems), ctx.config.commit_every,
                         done=done)
        outputs = report.counts.get("solutions", 0) * ctx.config.votes
        malformed = report.counts.get("malformed_outputs", 0)
        if outputs and malformed / outputs > MALFORMED_WARNING:
            warning = (f"judge: {malformed} of {outputs} outputs ({malformed / outputs:.0%}) held no verdict the parser "
                       "could read; those votes are missing (raw text kept in judgements.raw_outputs)")
            ctx.log.warning(warning)
            console.print(f"[yellow]warning:[/yellow] {escape(warning)}", highlight=False, soft_wrap=True)
        return report
