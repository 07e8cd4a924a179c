"""The verify stage: tool-grounded verdicts for every step of a run.

As a stage (``prmfactory verify --run RUN``) it reads ``nodes`` (and ``problems`` for the
reference answers) and writes ``verdicts``: for a complete solution one row per step, for any
other node one row for its last step (the step its MC value is about); a step that states a
final answer in ``\\boxed{}`` also gets a ``final_answer`` claim checked with math-verify against
the reference. A correct computation on a number that neither the problem nor an earlier step
gives is made ``ungrounded`` (:mod:`prmfactory.verify.grounding`). The standalone ProcessBench verifier is ``prmfactory.eval.verify_processbench``.

Its job in the factory is a high-precision negative signal (GroundedPRM, Zhang et al. 2025): a
step it calls incorrect is wrong, so the filter may overrule a Monte-Carlo estimate.
"""

from __future__ import annotations

import contextlib
import logging
from typing import Any

from prmfactory.answers import AnswerChecker, extract_answer
from prmfactory.rows import VerdictsRow
from prmfactory.stages import Stage, StageContext, StageReport
from prmfactory.verify.config import VerifyConfig
from prmfactory.verify.check import CORRECT, INCORRECT, UNVERIFIABLE, ClaimVerdict, StepVerdict, StepVerifier
from prmfactory.verify.grounding import given_before_each, with_grounding
from prmfactory.work import StageWork, Unit, UnitResult, WorkSummary

LOG = logging.getLogger("prmfactory")


def _with_final_answer(verdict: StepVerdict, step: str, reference: str, checker: AnswerChecker) -> StepVerdict:
    answer = extract_answer(step)
    if answer is None:
        return verdict
    correct = checker.check(reference, [step])[0].correct
    claim = ClaimVerdict(f"\\boxed{{{answer}}}", "final_answer", CORRECT if correct else INCORRECT, reference, answer)
    claims = verdict.claims + (claim,)
    overall = INCORRECT if INCORRECT in {c.verdict for c in claims} else CORRECT if correct or verdict.verdict == CORRECT \
        else UNVERIFIABLE
    return StepVerdict(overall, claims)


class VerifyWork(StageWork):
    """Verifies the steps of a batch of questions: a unit is ``[(question_id, reference, problem, nodes), ...]``.

    CPU work in killable worker processes (one step verifier, one answer checker per worker); a
    step seen before in this worker is verified once.
    """

    label = "verify"
    datasets = ("verdicts",)
    counters = (CORRECT, INCORRECT, UNVERIFIABLE)

    def __init__(self, config: VerifyConfig):
        self.config = config

    async def open(self) -> None:
        self._stack = contextlib.ExitStack()
        self._verifier = self._stack.enter_context(StepVerifier(self.config.seconds_per_claim))
        self._checker = self._stack.enter_context(AnswerChecker(self.config.answer_timeout_s))
        self._cache: dict[str, StepVerdict] = {}

    def _question(self, question_id: str, reference: str, problem: str | None, rows: list[dict[str, Any]],
                  counts: dict[str, int]) -> list[VerdictsRow]:
        config = self.config
        targets = [(row["node_id"], index, row["steps"]) for row in rows
                   for index in (range(len(row["steps"])) if row["complete"] else [len(row["steps"]) - 1])]
        new_steps = sorted({steps[index] for _, index, steps in targets} - set(self._cache))
        self._cache.update(zip(new_steps, self._verifier.verify(new_steps)))
        given = {row["node_id"]: given_before_each(problem, row["steps"]) for row in rows} if problem is not None else {}
        verdict_rows: list[VerdictsRow] = []
        for node_id, index, steps in targets:
            step, verdict = steps[index], self._cache[steps[index]]
            if problem is not None:
                verdict = with_grounding(verdict, given[node_id][index])
            if config.check_final_answers:
                verdict = _with_final_answer(verdict, step, reference, self._checker)
            counts[verdict.verdict] += 1
            verdict_rows.append({"question_id": question_id, "node_id": node_id, "step_index": index,
                                 "verdict": verdict.verdict, "claims": verdict.claim_rows()})
        return verdict_rows

    async def process(self, batch: list[tuple[str, str, str | None, list[dict[str, Any]]]]) -> UnitResult:
        counts = {CORRECT: 0, INCORRECT: 0, UNVERIFIABLE: 0}
        rows = [row for question in batch for row in self._question(*question, counts)]
        return UnitResult({"verdicts": rows}, counts)

    async def close(self) -> WorkSummary:
        timeouts = self._verifier.timeouts
        self._stack.close()
        return WorkSummary({"claim_timeouts": timeouts})


class VerifyStage(Stage, name="verify", config=VerifyConfig, reads=("problems", "nodes"), requires=("problems", "nodes"),
                  writes=("verdicts",)):
    """nodes -> verdicts, resumable by question."""

    def run(self, ctx: StageContext) -> StageReport:
        run, config, report = ctx.run, ctx.config, ctx.report
        references = run.lookup("problems", "question_id", "answer")
        problems = run.lookup("problems", "question_id", "problem") if config.check_grounding else {}
        done = run.committed_ids("verdicts")
        questions = [(qid, references[qid], problems.get(qid), [r for r in rows if r["steps"]]) for qid, rows in
                     run.rows_by_question("nodes", ["node_id", "steps", "complete"], skip=done).items()]
        report.rows_in, report.skipped_done, report.already_done = len(questions), len(done), not questions
        if questions:
            size = min(config.questions_per_task, config.questions_per_shard)  # a shard never holds more
            units = [Unit(tuple(q[0] for q in questions[i:i + size]), questions[i:i + size])
                     for i in range(0, len(questions), size)]
            ctx.do_units(VerifyWork(config), units, config.questions_per_shard, done=done)
        return report
