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

import logging

from prmfactory.answers import AnswerChecker, extract_answer
from prmfactory.progress import stage_progress
from prmfactory.rows import VerdictsRow
from prmfactory.stages import Stage, StageContext, StageReport
from prmfactory.verify.config import VerifyConfig
from prmfactory.verify.check import CORRECT, INCORRECT, UNVERIFIABLE, ClaimVerdict, StepVerdict, StepVerifier
from prmfactory.verify.grounding import given_before_each, with_grounding

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


class VerifyStage(Stage, name="verify", config=VerifyConfig, reads=("problems", "nodes"), requires=("problems", "nodes"),
                  writes=("verdicts",)):
    """nodes -> verdicts, resumable by question."""

    def run(self, ctx: StageContext) -> StageReport:
        run, config, report = ctx.run, ctx.config, ctx.report
        references = run.lookup("problems", "question_id", "answer")
        problems = run.lookup("problems", "question_id", "problem") if config.check_grounding else {}
        done = run.committed_ids("verdicts")
        by_question = {qid: [r for r in rows if r["steps"]] for qid, rows in
                       run.rows_by_question("nodes", ["node_id", "steps", "complete"], skip=done).items()}
        report.rows_in, report.skipped_done, report.already_done = len(by_question), len(done), not by_question
        counts = {CORRECT: 0, INCORRECT: 0, UNVERIFIABLE: 0}
        cache: dict[str, StepVerdict] = {}
        with StepVerifier(config.seconds_per_claim) as verifier, AnswerChecker(config.answer_timeout_s) as checker, \
                stage_progress("verify", len(by_question), quiet=config.quiet) as progress:
            buffer = ctx.buffer(["verdicts"], config.questions_per_shard)
            for question_id, rows in by_question.items():
                targets = [(row["node_id"], index, row["steps"]) for row in rows
                           for index in (range(len(row["steps"])) if row["complete"] else [len(row["steps"]) - 1])]
                new_steps = sorted({steps[index] for _, index, steps in targets} - set(cache))
                cache.update(zip(new_steps, verifier.verify(new_steps)))
                verdict_rows: list[VerdictsRow] = []
                given = {row["node_id"]: given_before_each(problems[question_id], row["steps"])
                         for row in rows} if config.check_grounding else {}
                for node_id, index, steps in targets:
                    step, verdict = steps[index], cache[steps[index]]
                    if config.check_grounding:
                        verdict = with_grounding(verdict, given[node_id][index])
                    if config.check_final_answers:
                        verdict = _with_final_answer(verdict, step, references[question_id], checker)
                    counts[verdict.verdict] += 1
                    verdict_rows.append({"question_id": question_id, "node_id": node_id, "step_index": index,
                                         "verdict": verdict.verdict, "claims": verdict.claim_rows()})
                buffer.add({"verdicts": verdict_rows})
                progress.advance(**counts)
            buffer.flush()
            report.counts.update(counts, claim_timeouts=verifier.timeouts)
        return report
