"""The PRMBench protocol (Song et al. 2025, "PRMBench: A Fine-grained and Challenging Benchmark for
Process-Level Reward Models", arXiv:2501.03124), as its evaluation script computes it
(ssmisya/PRMBench at a1ae4ea, ``mr_eval/tasks/prmtest_classified/task.py``).

Samples: each record's ``modified_process`` (erroneous steps in ``error_steps``, 1-based) under the id
``{classification}_{idx}``, and, from the ``redundency`` records, the untouched ``original_process``
as a ``correct_{idx}`` sample (every step right). A step is predicted valid when its score is above
the threshold (``>``, as the script does). Per category and overall (over every category but
``correct``): a confusion matrix with *valid* as the positive class, F1 on valid steps, F1 on
erroneous steps (negative F1), **PRMScore** = ½ F1 + ½ negative F1 (PRMBench's headline, as its
figure and table notebooks compute it), step accuracies and first-error accuracy. Where the
script writes −1 for a ratio with a zero denominator this writes null (and a null PRMScore), and
an F1 of 0 where precision and recall are both 0. Unscored steps (cut off by the PRM's length
limit) are left out, as the script leaves out steps past the labels a model returned; an
``error_steps`` entry past the last step (some records have one) matches no step, as in the
script, and the samples with one are counted.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Mapping, Optional, Sequence

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from prmfactory.config import format_validation_error
from prmfactory.errors import UsageError

CORRECT = "correct"
CORRECT_FROM = "redundency"  # PRMBench's spelling; its script takes the correct samples from these records
STEP_NUMBER = re.compile(r"^(Step\s*\d+\.\s*|\d+\.\s*)", re.IGNORECASE)


def strip_step_number(step: str) -> str:
    """A step without its "3. " / "Step 3." prefix, as PRMBench's model wrappers give steps to a PRM."""
    return STEP_NUMBER.sub("", step.strip())


class PRMBenchRecord(BaseModel):
    """The fields of a PRMBench record that the protocol reads (others are kept in the file, not here)."""

    model_config = ConfigDict(extra="ignore", strict=True)

    idx: str = Field(min_length=1)
    classification: str = Field(min_length=1)
    modified_question: str
    modified_process: list[str] = Field(min_length=1)
    error_steps: list[int]
    original_question: Optional[str] = None
    original_process: Optional[list[str]] = None


@dataclass(frozen=True)
class Sample:
    """One scored solution: its steps (numbers stripped) and which are wrong (0-based)."""

    id: str
    classification: str
    question: str
    steps: list[str]
    error_steps: frozenset[int]
    where: str
    steps_out_of_range: int = 0  # error_steps naming no step of the process (the script never matches them)


class BadRecord(ValueError):
    """A record the protocol cannot use: ``reason`` is a slug, the message says which field and why."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


def record_samples(raw: Any, where: str) -> list[Sample]:
    """The samples of one record (its modified process; and its original one for a ``redundency`` record)."""
    if not isinstance(raw, dict):
        raise BadRecord("not_an_object", f"expected a JSON object, got {type(raw).__name__}")
    try:
        record = PRMBenchRecord.model_validate(raw)
    except ValidationError as exc:
        raise BadRecord("invalid_record", format_validation_error(exc, where, PRMBenchRecord)) from exc
    count = len(record.modified_process)
    inside = frozenset(step - 1 for step in record.error_steps if 1 <= step <= count)
    samples = [Sample(f"{record.classification}_{record.idx}", record.classification, record.modified_question,
                      [strip_step_number(s) for s in record.modified_process], inside, where,
                      len(set(record.error_steps)) - len(inside))]
    if record.classification == CORRECT_FROM:
        if not record.original_process or record.original_question is None:
            raise BadRecord("invalid_record", f"{where}: field 'original_process': a {CORRECT_FROM} record needs its "
                                              "original question and process (the correct sample)")
        samples.append(Sample(f"{CORRECT}_{record.idx}", CORRECT, record.original_question,
                              [strip_step_number(s) for s in record.original_process], frozenset(), where))
    return samples


def data_files(paths: Sequence[Path]) -> list[Path]:
    """The JSON Lines files of ``paths`` (files, or folders of ``*.jsonl``), in name order per folder.

    A folder gives its test files: PRMBench's files named ``*_train_*`` are its training split, left out
    (with a notice) unless named as files, so a benchmark number is never computed on training data."""
    from prmfactory.progress import console

    files: list[Path] = []
    for path in paths:
        found = sorted(path.glob("*.jsonl")) if path.is_dir() else [path]
        if not found:
            raise UsageError(f"{path}: no .jsonl files")
        if path.is_dir():
            train = [f for f in found if "_train_" in f.name]
            found = [f for f in found if f not in train] or train
            if train and found is not train:
                console.print(f"note: {path}: {len(train)} training files (*_train_*) left out; name them as files "
                              "to score them too", highlight=False, soft_wrap=True)
        files += found
    return files


def load_samples(paths: Sequence[Path]) -> list[Sample]:
    """Every sample of the PRMBench files; a bad record is a one-line error; a sample id seen before is
    skipped, as PRMBench's loader skips it."""
    from prmfactory.inputs import jsonl_records

    samples: dict[str, Sample] = {}
    for file in data_files(paths):
        for where, raw in jsonl_records(file):
            try:
                found = record_samples(raw, where)
            except BadRecord as exc:
                raise UsageError(str(exc) if str(exc).startswith(where) else f"{where}: {exc}") from exc
            for sample in found:
                samples.setdefault(sample.id, sample)
    return list(samples.values())


class PredictionLine(BaseModel):
    """A line of a PRMBench predictions file: per step a score in [0, 1] (null: not scored), or a validity label."""

    model_config = ConfigDict(extra="allow", strict=True, allow_inf_nan=False)

    idx: str
    step_scores: Optional[list[Optional[Annotated[float, Field(ge=0, le=1)]]]] = None
    step_labels: Optional[list[Optional[bool]]] = None


def _labels_from(line: PredictionLine, threshold: float) -> list[Optional[bool]]:
    if line.step_scores is not None:
        return [None if s is None else s > threshold for s in line.step_scores]
    return list(line.step_labels or [])


def read_predictions(path: Path, samples: Sequence[Sample], threshold: float = 0.5) -> dict[str, list[Optional[bool]]]:
    """``{sample id: per-step validity}`` from ``{idx, step_scores}`` or ``{idx, step_labels}`` lines, checked
    against the samples: known ids, one line each, one entry per step, every sample predicted."""
    from prmfactory.inputs import jsonl_records

    steps = {s.id: len(s.steps) for s in samples}
    labels: dict[str, list[Optional[bool]]] = {}
    for where, raw in jsonl_records(path):
        try:
            line = PredictionLine.model_validate(raw)
        except ValidationError as exc:
            raise UsageError(format_validation_error(exc, where, PredictionLine)) from exc
        if (line.step_scores is None) == (line.step_labels is None):
            raise UsageError(f"{where}: give exactly one of 'step_scores' or 'step_labels'")
        if line.idx not in steps:
            raise UsageError(f"{where}: field 'idx': {line.idx!r} is not a sample of the data "
                             f"(sample ids are CLASSIFICATION_IDX, e.g. circular_prm_test_p1_0)")
        if line.idx in labels:
            raise UsageError(f"{where}: field 'idx': a second prediction for {line.idx!r}")
        given = _labels_from(line, threshold)
        if len(given) != steps[line.idx]:
            field = "step_scores" if line.step_scores is not None else "step_labels"
            raise UsageError(f"{where}: field {field!r}: {len(given)} entries for {steps[line.idx]} steps")
        labels[line.idx] = given
    missing = [s.id for s in samples if s.id not in labels]
    if missing:
        raise UsageError(f"{path}: no prediction for {len(missing)} sample(s), e.g. {missing[0]!r}")
    return labels


def _ratio(numerator: int, denominator: int) -> Optional[float]:
    return numerator / denominator if denominator else None


def _f1(precision: Optional[float], recall: Optional[float]) -> Optional[float]:
    if precision is None or recall is None:
        return None
    return 2 * precision * recall / (precision + recall) if precision + recall else 0.0


@dataclass
class Tally:
    """Confusion counts (valid steps positive) and the per-step and first-error hits of one group."""

    tp: int = 0
    fp: int = 0
    tn: int = 0
    fn: int = 0
    first_error_hits: int = 0
    first_errors: int = 0
    samples: int = 0

    def add(self, sample: Sample, labels: Sequence[Optional[bool]]) -> None:
        self.samples += 1
        first_error = min(sample.error_steps) if sample.error_steps else None
        for index, valid in enumerate(labels):
            if valid is None:
                continue
            if index in sample.error_steps:
                self.fp += valid
                self.tn += not valid
            else:
                self.tp += valid
                self.fn += not valid
            if index == first_error:
                self.first_errors += 1
                self.first_error_hits += not valid

    def metrics(self) -> dict[str, Any]:
        precision, recall = _ratio(self.tp, self.tp + self.fp), _ratio(self.tp, self.tp + self.fn)
        negative_precision, negative_recall = _ratio(self.tn, self.tn + self.fn), _ratio(self.tn, self.tn + self.fp)
        f1, negative_f1 = _f1(precision, recall), _f1(negative_precision, negative_recall)
        values = {
            "samples": self.samples, "steps": self.tp + self.fp + self.tn + self.fn,
            "prm_score": None if f1 is None or negative_f1 is None else 0.5 * f1 + 0.5 * negative_f1,
            "f1": f1, "negative_f1": negative_f1, "precision": precision, "recall": recall,
            "negative_precision": negative_precision, "negative_recall": negative_recall,
            "correct_step_acc": recall, "wrong_step_acc": negative_recall,
            "total_step_acc": _ratio(self.tp + self.tn, self.tp + self.fp + self.tn + self.fn),
            "first_error_acc": _ratio(self.first_error_hits, self.first_errors),
            "confusion": {"TP": self.tp, "FP": self.fp, "TN": self.tn, "FN": self.fn},
        }
        return {k: round(v, 4) if isinstance(v, float) else v for k, v in values.items()}


def prmbench_metrics(samples: Sequence[Sample], labels: Mapping[str, Sequence[Optional[bool]]]) -> dict[str, Any]:
    """Per-category metrics and the overall ones (every category but ``correct``, as PRMBench's script)."""
    categories: dict[str, Tally] = {}
    overall = Tally()
    for sample in samples:
        categories.setdefault(sample.classification, Tally()).add(sample, labels[sample.id])
        if sample.classification != CORRECT:
            overall.add(sample, labels[sample.id])
    unscored = sum(label is None for sample in samples for label in labels[sample.id])
    return {"overall": overall.metrics(), "categories": {name: categories[name].metrics() for name in sorted(categories)},
            "unscored_steps": unscored,
            "samples_with_error_steps_out_of_range": sum(s.steps_out_of_range > 0 for s in samples)}


def score_samples(prm, samples: Sequence[Sample], output: Path, *, quiet: bool = False) -> Path:
    """Score every sample with a PRM; write ``predictions.jsonl`` (idx, classification, step_scores)."""
    from prmfactory.fileio import atomic_write_text
    from prmfactory.prm import score_with_progress

    scores = score_with_progress(prm, [(s.question, s.steps) for s in samples], quiet=quiet)
    lines = [json.dumps({"idx": s.id, "classification": s.classification,
                         "step_scores": [None if math.isnan(v) else v for v in step_scores]})
             for s, step_scores in zip(samples, scores)]
    output.mkdir(parents=True, exist_ok=True)
    atomic_write_text(output / "predictions.jsonl", "\n".join(lines) + "\n")
    return output / "predictions.jsonl"


def evaluate(data: Sequence[Path], output: Path, *, prm_path: Path | None = None, predictions: Path | None = None,
             threshold: float = 0.5, backend: str = "transformers", dtype: str = "float32", prm_format: str = "auto",
             quiet: bool = False, force: bool = False) -> dict[str, Any]:
    """PRMBench on a PRM (scored here, predictions written) or on a predictions file; metrics written
    (``output``: new, empty or, with ``force``, an earlier PRMBench output; :mod:`prmfactory.eval.output`);
    the headline numbers recorded in the PRM's card when it is a prmfactory PRM."""
    from prmfactory.eval.output import eval_output

    samples = load_samples(data)
    title = f"PRMBench: {(prm_path or predictions).name}"
    prm = None
    with eval_output(output, "prmbench", force=force) as folder:
        if prm_path is not None:
            from prmfactory.prm import PRM

            prm = PRM.from_pretrained(prm_path, backend=backend, dtype=dtype, format=prm_format)
            try:
                predictions = score_samples(prm, samples, folder, quiet=quiet)
            finally:
                prm.close()
        result = {**prmbench_metrics(samples, read_predictions(predictions, samples, threshold)),
                  "threshold": threshold, "data": [str(p) for p in data]}
        if prm is not None:
            from prmfactory.prm.folder import record_eval
            from prmfactory.prm.public import OWN_FORMAT

            result["prm_format"] = prm.format
            if prm.format == OWN_FORMAT:
                record_eval(prm_path, f"prmbench:{data[0].name}", {"prm_score": result["overall"]["prm_score"], **{
                    f"{name}_prm_score": c["prm_score"] for name, c in result["categories"].items()}})
        write_results(result, folder, title)
    return result


def _cell(value: Any) -> str:
    return "–" if value is None else f"{value:.3f}" if isinstance(value, float) else str(value)


def _empty_reason(metrics: Mapping[str, Any]) -> str | None:
    """Why a row has an undefined cell: the class a metric divides by is empty there."""
    confusion = metrics["confusion"]
    if not metrics["steps"]:
        return "no scored step"
    if confusion["TP"] + confusion["FP"] == 0:
        return "the PRM marks no step valid (every step scored at or below the threshold), so F1 is undefined"
    if confusion["TN"] + confusion["FN"] == 0:
        return "the PRM marks no step erroneous, so negative F1 is undefined"
    if metrics["first_error_acc"] is None:
        return "no sample with an error step, so first-error accuracy is undefined"
    return None


def markdown_table(result: Mapping[str, Any]) -> str:
    lines = ["| category | samples | steps | F1 | negative F1 | PRMScore | first-error acc |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    reasons = []
    for name, m in [*result["categories"].items(), ("**overall**", result["overall"])]:
        lines.append(f"| {name} | {m['samples']} | {m['steps']} | {_cell(m['f1'])} | {_cell(m['negative_f1'])} | "
                     f"{_cell(m['prm_score'])} | {_cell(m['first_error_acc'])} |")
        reason = _empty_reason(m) if None in (m["f1"], m["negative_f1"], m["first_error_acc"]) else None
        if reason:
            reasons.append(f"{name.strip('*')}: {reason}")
    notes = ["", "–: " + "; ".join(reasons) + "."] if reasons else []
    return "\n".join(lines + notes) + "\n"


def write_results(result: Mapping[str, Any], output: Path, title: str) -> None:
    """metrics.json, metrics.md and metrics.png (PRMScore per category)."""
    from prmfactory.eval.plots import figure, write_json_and_markdown

    write_json_and_markdown(output, "metrics", result, f"# {title}\n\n" + markdown_table(result))
    names = [n for n, m in result["categories"].items() if m["prm_score"] is not None]
    with figure(output / "metrics.png", (max(4, 0.9 * len(names) + 1), 3.2)) as axis:
        axis.bar(range(len(names)), [result["categories"][n]["prm_score"] for n in names])
        axis.set_xticks(range(len(names)), names, rotation=30, ha="right", fontsize=7)
        axis.set_ylim(0, 1)
        overall = result["overall"]["prm_score"]
        axis.set_title(f"{title} (PRMScore {_cell(overall)})", fontsize=9)
