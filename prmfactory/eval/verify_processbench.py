"""``prmfactory verify --processbench``: the tool verifier alone on ProcessBench-format files.

Writes ``predictions.jsonl`` and ``metrics.json`` in the format of ``prmfactory eval processbench``
(a solution's prediction is its first step the verifier calls incorrect, −1 if none), plus flag
statistics: how precise the flags are against the labels and how many steps had a checkable claim.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from prmfactory.eval.processbench import is_labelled, load_splits, metrics, write_results
from prmfactory.fileio import atomic_write_text
from prmfactory.progress import stage_progress
from prmfactory.verify.check import INCORRECT, UNVERIFIABLE, StepVerdict, StepVerifier


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


def verify_processbench(path: Path, output: Path, *, seconds_per_claim: float = 1.0, quiet: bool = False,
                        force: bool = False) -> dict[str, Any]:
    """Verify ProcessBench-format files; write predictions.jsonl and metrics.json to ``output`` (new, empty or,
    with ``force``, an earlier output of this command: :mod:`prmfactory.eval.output`)."""
    from prmfactory.eval.output import check_output, eval_output

    started = time.time()
    splits = load_splits(path)
    check_output(output, "verify-processbench", force)
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
    labelled = is_labelled(splits)
    result: dict[str, Any] = metrics(splits, predictions) if labelled else {"note": "no labels: predictions only"}
    if labelled:
        result["flag_statistics"] = {name: flag_statistics(records, predictions, verdicts)
                                     for name, records in splits.items()}
    result["claim_timeouts"] = verifier.timeouts
    result["wall_seconds"] = round(time.time() - started, 1)
    with eval_output(output, "verify-processbench", force=force) as folder:
        atomic_write_text(folder / "predictions.jsonl", "\n".join(lines) + "\n")
        if labelled:
            write_results(result, folder, "prmfactory verify (tool flags) on ProcessBench")
        else:
            atomic_write_text(folder / "metrics.json", json.dumps(result, indent=1))
    return result
