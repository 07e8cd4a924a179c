"""The verify stage: tool-grounded verdicts for every step, as a run stage or on ProcessBench files.

As a stage (``prmfactory verify --run RUN``) it reads ``nodes`` (and ``problems`` for the
reference answers) and writes ``verdicts``: for a complete solution one row per step, for any
other node one row for its last step (the step its MC value is about); a step that states a
final answer in ``\\boxed{}`` also gets a ``final_answer`` claim checked with math-verify against
the reference. Standalone
(``--processbench FILE_OR_DIR --output DIR``) it writes ``predictions.jsonl`` and ``metrics.json``
in the format of ``prmfactory eval processbench``, plus flag statistics.

Its job in the factory is a high-precision negative signal (GroundedPRM, Zhang et al. 2025): a
step it calls incorrect is wrong, so the filter may overrule a Monte-Carlo estimate.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

from pydantic import Field

from prmfactory.answers import AnswerChecker, extract_boxed
from prmfactory.config import StageConfig, runtime_field
from prmfactory.errors import UsageError
from prmfactory.eval.processbench import load_splits, metrics, write_results
from prmfactory.progress import stage_progress
from prmfactory.store import CommitBuffer, Run, atomic_write_text
from prmfactory.verify.check import CORRECT, INCORRECT, UNVERIFIABLE, ClaimVerdict, StepVerdict, StepVerifier

LOG = logging.getLogger("prmfactory")


class VerifyConfig(StageConfig):
    """``prmfactory verify``."""

    check_final_answers: bool = Field(True, description="Check a step's \\boxed{} answer against the reference (math-verify).")
    seconds_per_claim: float = runtime_field(1.0, "Wall-clock limit per claim, enforced in a worker process.")
    answer_timeout_s: float = runtime_field(5.0, "Wall-clock limit of one final-answer check.")
    questions_per_shard: int = runtime_field(64, "Questions per committed shard.")
    quiet: bool = runtime_field(False, "No progress bars.")


def _with_final_answer(verdict: StepVerdict, step: str, reference: str, checker: AnswerChecker) -> StepVerdict:
    answer = extract_boxed(step)
    if answer is None:
        return verdict
    correct = checker.check(reference, [step])[0].correct
    claim = ClaimVerdict(f"\\boxed{{{answer}}}", "final_answer", CORRECT if correct else INCORRECT, reference, answer)
    claims = verdict.claims + (claim,)
    overall = INCORRECT if INCORRECT in {c.verdict for c in claims} else CORRECT if correct or verdict.verdict == CORRECT \
        else UNVERIFIABLE
    return StepVerdict(overall, claims)


def run_verify(run: Run, config: VerifyConfig, *, force: bool = False) -> dict[str, Any]:
    """nodes -> verdicts, resumable by question."""
    started = time.time()
    with run.writing(), run.log_to_file("verify"):
        run.begin_stage("verify", config, ["verdicts"], force=force)
        if not run.shards("nodes"):
            raise UsageError(f"{run.root}: no nodes to verify; run `prmfactory mcts` first")
        references = run.lookup("problems", "question_id", "answer")
        done = run.committed_ids("verdicts")
        by_question = {qid: [r for r in rows if r["steps"]] for qid, rows in
                       run.rows_by_question("nodes", ["node_id", "steps", "complete"], skip=done).items()}
        counts = {CORRECT: 0, INCORRECT: 0, UNVERIFIABLE: 0}
        cache: dict[str, StepVerdict] = {}
        with StepVerifier(config.seconds_per_claim) as verifier, AnswerChecker(config.answer_timeout_s) as checker, \
                stage_progress("verify", len(by_question), quiet=config.quiet) as progress:
            buffer = CommitBuffer(run, ["verdicts"], config.questions_per_shard)
            for question_id, rows in by_question.items():
                targets = [(row["node_id"], index, row["steps"][index]) for row in rows
                           for index in (range(len(row["steps"])) if row["complete"] else [len(row["steps"]) - 1])]
                new_steps = sorted({step for _, _, step in targets} - set(cache))
                cache.update(zip(new_steps, verifier.verify(new_steps)))
                verdict_rows = []
                for node_id, index, step in targets:
                    verdict = cache[step]
                    if config.check_final_answers:
                        verdict = _with_final_answer(verdict, step, references[question_id], checker)
                    counts[verdict.verdict] += 1
                    verdict_rows.append({"question_id": question_id, "node_id": node_id, "step_index": index,
                                         "verdict": verdict.verdict, "claims": verdict.claim_rows()})
                buffer.add({"verdicts": verdict_rows})
                progress.advance(**counts)
            buffer.flush()
            timeouts = verifier.timeouts
        report = {"stage": "verify", "questions": len(by_question), "skipped_done": len(done),
                  "verdicts": counts, "claim_timeouts": timeouts, "wall_seconds": round(time.time() - started, 1)}
        run.write_report("verify", report)
        LOG.info("verify report: %s", report)
    return report


def flag_statistics(records: list[dict[str, Any]], predictions: dict[Any, int],
                    verdicts: dict[Any, list[StepVerdict]]) -> dict[str, Any]:
    """How precise the flags are against the labels, and how many steps had a checkable claim."""
    flags = [(predictions[r["id"]], r["label"]) for r in records if predictions[r["id"]] != -1]
    steps = [v for r in records for v in verdicts[r["id"]]]
    checkable = sum(any(c.verdict != UNVERIFIABLE for c in v.claims) for v in steps)
    return {
        "flags": len(flags),
        "flags_on_correct_solutions": sum(label == -1 for _, label in flags),
        "flags_at_first_error": sum(p == label for p, label in flags),
        "flags_at_or_after_first_error": sum(label != -1 and p >= label for p, label in flags),
        "flags_before_first_error": sum(label != -1 and p < label for p, label in flags),
        "steps": len(steps),
        "coverage": round(checkable / len(steps), 4) if steps else 0.0,
    }


def verify_processbench(path: Path, output: Path, *, seconds_per_claim: float = 1.0, quiet: bool = False
                        ) -> dict[str, Any]:
    """Verify ProcessBench-format files; write predictions.jsonl and metrics.json to ``output``."""
    started = time.time()
    splits = load_splits(path)
    predictions: dict[Any, int] = {}
    verdicts: dict[Any, list[StepVerdict]] = {}
    lines: list[str] = []
    total = sum(len(records) for records in splits.values())
    with StepVerifier(seconds_per_claim) as verifier, stage_progress("verify", total, quiet=quiet) as progress:
        for name, records in splits.items():
            for record in records:
                steps = [str(s) for s in record["steps"]]
                found = verifier.verify(steps)
                prediction = next((i for i, v in enumerate(found) if v.verdict == INCORRECT), -1)
                predictions[record["id"]], verdicts[record["id"]] = prediction, found
                lines.append(json.dumps({"id": record["id"], "split": name, "prediction": prediction,
                                         "step_verdicts": [{"verdict": v.verdict, "claims": v.claim_rows()}
                                                           for v in found]}, ensure_ascii=False))
                progress.advance()
    labelled = all("label" in r for records in splits.values() for r in records)
    result: dict[str, Any] = metrics(splits, predictions) if labelled else {"note": "no labels: predictions only"}
    if labelled:
        result["flag_statistics"] = {name: flag_statistics(records, predictions, verdicts)
                                     for name, records in splits.items()}
    result["claim_timeouts"] = verifier.timeouts
    result["wall_seconds"] = round(time.time() - started, 1)
    output.mkdir(parents=True, exist_ok=True)
    atomic_write_text(output / "predictions.jsonl", "\n".join(lines) + "\n")
    if labelled:
        write_results(result, output, "prmfactory verify (tool flags) on ProcessBench")
    else:
        atomic_write_text(output / "metrics.json", json.dumps(result, indent=1))
    return result
