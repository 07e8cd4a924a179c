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
import hashlib
import logging
import time
from typing import Any, Literal, Optional

from pydantic import Field

from prmfactory.config import EngineConfig, StageConfig, runtime_field
from prmfactory.engines import open_engine
from prmfactory.engines.base import Engine, Message, Prompt, SamplingSpec, run_all
from prmfactory.errors import PromptTooLong, UsageError
from prmfactory.judge.parse import PARSERS, majority
from prmfactory.judge.render import DEFAULT_TEMPLATES, TOY_TEMPLATE, render
from prmfactory.progress import stage_progress
from prmfactory.store import CommitBuffer, Run

LOG = logging.getLogger("prmfactory")


class JudgeConfig(StageConfig):
    """``prmfactory judge``."""

    judge: str = Field(description="Judge model: a model id, a local path, or `toy-judge`.")
    mode: Literal["critic", "per_step"] = Field("critic", description="Prompt and answer format.")
    template: Optional[str] = Field(None, description="Prompt template file; default: the mode's shipped template.")
    votes: int = Field(1, ge=1, description="Samples per solution; the majority first-error index wins.")
    temperature: float = Field(0.7, ge=0, description="Sampling temperature (votes > 1 need it above 0).")
    max_new_tokens: int = Field(1024, ge=1, description="Longest judge output in tokens.")
    engine: EngineConfig = Field(default_factory=EngineConfig, description="Generation backend.")
    seed: int = Field(0, description="Seeds the engine.")
    concurrency: int = runtime_field(64, "Solutions judged at once.")
    commit_every: int = runtime_field(16, "Questions per committed shard.")
    quiet: bool = runtime_field(False, "No progress bars.")

    def template_text(self) -> str:
        if self.template:
            path = self.template
        elif self.judge == "toy-judge":
            path = TOY_TEMPLATE
        else:
            path = DEFAULT_TEMPLATES[self.mode]
        try:
            with open(path, encoding="utf-8") as handle:
                return handle.read()
        except OSError as exc:
            raise UsageError(f"{path}: cannot read the judge template: {exc.strerror}") from exc


def judgement_row(question_id: str, node_id: str, config: JudgeConfig, outputs: list[str], num_steps: int
                  ) -> dict[str, Any]:
    """A ``judgements`` row from the raw outputs of one solution's samples."""
    votes = [PARSERS[config.mode](text, num_steps) for text in outputs]
    first_error, count = majority(votes)
    return {"question_id": question_id, "node_id": node_id, "mode": config.mode, "judge_model": config.judge,
            "votes": votes, "first_error": first_error, "majority_votes": count,
            "malformed": sum(v is None for v in votes), "raw_outputs": outputs}


async def judge_questions(run: Run, solutions: dict[str, list[dict[str, Any]]], problems: dict[str, str],
                          config: JudgeConfig, engine: Engine) -> dict[str, int]:
    template = config.template_text()
    spec = SamplingSpec(n=config.votes, temperature=config.temperature, max_tokens=config.max_new_tokens)
    slots = asyncio.Semaphore(config.concurrency)
    buffer = CommitBuffer(run, ["judgements"], config.commit_every)
    counts = {"solutions": 0, "flagged": 0, "malformed_outputs": 0, "too_long": 0}

    async def judge_one(question_id: str, node: dict[str, Any]) -> dict[str, Any]:
        prompt = Prompt((Message("user", render(template, problems[question_id], node["steps"])),))
        async with slots:
            try:
                completions = await engine.generate(prompt, spec)
            except PromptTooLong as exc:  # a long solution gets no votes; the stage goes on
                LOG.warning("%s node %s not judged: %s", question_id, node["node_id"], exc)
                counts["too_long"] += 1
                completions = []
        return judgement_row(question_id, node["node_id"], config, [c.text for c in completions], len(node["steps"]))

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


async def _judge_with_engine(run, solutions, problems, config, report) -> None:
    async with open_engine(config.judge, config.engine, config.seed, report) as engine:
        report["counts"] = await judge_questions(run, solutions, problems, config, engine)


def run_judge(run: Run, config: JudgeConfig, *, force: bool = False) -> dict[str, Any]:
    """nodes (complete solutions) -> judgements, resumable by question."""
    started = time.time()
    template = config.template_text()
    with run.writing(), run.log_to_file("judge"):
        run.begin_stage("judge", config, ["judgements"], force=force)
        if not run.shards("nodes"):
            raise UsageError(f"{run.root}: no nodes to judge; run `prmfactory mcts` first")
        problems = run.lookup("problems", "question_id", "problem")
        done = run.committed_ids("judgements")
        solutions = {}
        for qid, rows in run.rows_by_question("nodes", ["node_id", "steps", "complete"], skip=done).items():
            complete = [r for r in rows if r["complete"] and r["steps"]]
            if complete:
                solutions[qid] = complete
        report: dict[str, Any] = {"stage": "judge", "questions": len(solutions), "skipped_done": len(done),
                                  "template_sha256": hashlib.sha256(template.encode()).hexdigest()}
        if solutions:
            asyncio.run(_judge_with_engine(run, solutions, problems, config, report))
        report["wall_seconds"] = round(time.time() - started, 1)
        run.write_report("judge", report)
        LOG.info("judge report: %s", report)
    return report
