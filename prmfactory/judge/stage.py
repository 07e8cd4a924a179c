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
import logging
from typing import Any

from prmfactory.engines.base import Engine, Message, Prompt, SamplingSpec, run_all
from prmfactory.errors import PromptTooLong
from prmfactory.judge.config import JudgeConfig
from prmfactory.judge.parse import PARSERS, majority
from prmfactory.judge.render import render
from prmfactory.fileio import sha256_text
from prmfactory.progress import stage_progress
from prmfactory.models import require_model
from prmfactory.rows import JudgementsRow
from prmfactory.stages import Stage, StageContext, StageReport
from prmfactory.store import CommitBuffer

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


async def judge_questions(commit, solutions: dict[str, list[dict[str, Any]]], problems: dict[str, str],
                          config: JudgeConfig, engine: Engine) -> dict[str, int]:
    """Judge every solution, committing through ``commit`` every ``commit_every`` questions."""
    template = config.template_text()
    spec = SamplingSpec(n=config.votes, temperature=config.temperature, max_tokens=config.max_new_tokens)
    slots = asyncio.Semaphore(config.concurrency)
    buffer = CommitBuffer(commit, ["judgements"], config.commit_every)
    counts = {"solutions": 0, "flagged": 0, "malformed_outputs": 0, "too_long": 0}

    async def judge_one(question_id: str, node: dict[str, Any]) -> dict[str, Any]:
        prompt = Prompt((Message("user", render(template, problems[question_id], node["steps"])),))
        async with slots:
            try:
                completions, too_long = await engine.generate(prompt, spec), False
            except PromptTooLong as exc:  # a long solution gets no votes; the stage goes on
                LOG.warning("%s node %s not judged: %s", question_id, node["node_id"], exc)
                counts["too_long"] += 1
                completions, too_long = [], True
        return judgement_row(question_id, node["node_id"], config, [c.text for c in completions], len(node["steps"]),
                             too_long=too_long)

    async def question(question_id: str, nodes: list[dict[str, Any]]) -> None:
        rows = await asyncio.gather(*(judge_one(question_id, node) for node in nodes))
        buffer.add({"judgements": rows})
        counts["solutions"] += len(rows)
        counts["flagged"] += sum(r["first_error"] not in (None, -1) for r in rows)
        counts["malformed_outputs"] += sum(r["malformed"] for r in rows)
        progress.advance(**counts)

    with stage_progress(f"judge ({config.mode})", len(solutions), quiet=config.quiet) as progress:
        await run_all(question(q, nodes) for q, nodes in solutions.items())
        buffer.flush()
    return counts


class JudgeStage(Stage, name="judge", config=JudgeConfig, reads=("problems", "nodes"), requires=("problems", "nodes"),
                 writes=("judgements",)):
    """nodes (complete solutions) -> judgements, resumable by question."""

    def prepare(self, ctx: StageContext) -> str:
        if ctx.config.engine.backend == "vllm":
            require_model(ctx.config.judge)
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
            ctx.generate_with(ctx.config.judge, lambda engine: judge_questions(ctx.commit, solutions, problems,
                                                                               ctx.config, engine))
        return report
