"""The ProcessBench protocol (Zheng et al. 2024, "ProcessBench: Identifying Process Errors in
Mathematical Reasoning", arXiv:2412.06559) — one implementation for every evaluator.

A record has ``id``, ``problem``, ``steps`` and ``label`` (index of the first wrong step, −1 when
every step is right). A prediction is such an index. Per split: accuracy on the erroneous
records (prediction == label), accuracy on the correct ones (prediction == −1), and their
harmonic mean (F1); ``average_f1`` is the mean F1 over the splits.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Annotated, Any, Iterator, Mapping, Optional, Sequence, Union

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from prmfactory.config import format_validation_error
from prmfactory.errors import UsageError
from prmfactory.prm.rewards import first_below


class ProcessBenchRecord(BaseModel):
    """One ProcessBench record (Zheng et al. 2024): the solution's steps and the index of its first wrong
    step (−1: none). Extra fields (``generator``, ``final_answer_correct``) are kept."""

    model_config = ConfigDict(extra="allow", strict=True)

    id: Union[str, int]
    problem: Optional[str] = None
    steps: list[Annotated[str, Field(min_length=1)]] = Field(min_length=1)
    label: Optional[int] = None

    @model_validator(mode="after")
    def _label_is_a_step(self) -> "ProcessBenchRecord":
        if self.label is not None and not -1 <= self.label < len(self.steps):
            raise ValueError(f"label {self.label} is not -1 or a step index (0-{len(self.steps) - 1})")
        return self


def json_records(file: Path, on_error=None, data: bytes | None = None) -> Iterator[tuple[str, Any]]:
    """``(where, raw record)`` from a JSON array or a JSON Lines file (``on_error``: see ``jsonl_records``),
    read once (``data``: its bytes, when the caller has them)."""
    from prmfactory.inputs import jsonl_records, read_input_bytes

    data = read_input_bytes(file) if data is None else data
    if not data.lstrip()[:1] == b"[":
        yield from jsonl_records(file, on_error, data)
        return
    try:
        records = json.loads(data.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise UsageError(f"{file}: not valid UTF-8 (byte offset {exc.start})") from exc
    except json.JSONDecodeError as exc:
        raise UsageError(f"{file}:{exc.lineno}: invalid JSON: {exc.msg} at column {exc.colno}") from exc
    except RecursionError as exc:
        raise UsageError(f"{file}: JSON nested too deeply") from exc
    for index, record in enumerate(records):
        yield f"{file}: record {index}", record


def load_splits(path: Path) -> dict[str, list[dict[str, Any]]]:
    """ProcessBench files (a JSON array or JSON Lines each), one split per file named by its stem.

    Every record is checked (``ProcessBenchRecord``); ids are unique over all splits; a split is
    labelled in every record or in none (then only predictions can be written).
    """
    files = sorted(p for p in path.iterdir() if p.suffix in (".json", ".jsonl")) if path.is_dir() else [path]
    if not files:
        raise UsageError(f"{path}: no .json or .jsonl files")
    splits: dict[str, list[dict[str, Any]]] = {}
    first_seen: dict[Any, str] = {}
    for file in files:
        records = []
        for where, raw in json_records(file):
            if not isinstance(raw, dict):
                raise UsageError(f"{where}: expected a JSON object, got {type(raw).__name__}")
            try:
                record = ProcessBenchRecord.model_validate(raw).model_dump()
            except ValidationError as exc:
                raise UsageError(format_validation_error(exc, where, ProcessBenchRecord)) from exc
            if record["id"] in first_seen:
                raise UsageError(f"{where}: field 'id': duplicate id {record['id']!r} (first in {first_seen[record['id']]})")
            first_seen[record["id"]] = where
            records.append(record)
        if not records:
            raise UsageError(f"{file}: no records (an empty split would count as F1 0 in the average); remove the "
                             "file or give it records")
        labelled = sum(r["label"] is not None for r in records)
        if 0 < labelled < len(records):
            unlabelled = next(i for i, r in enumerate(records) if r["label"] is None)
            raise UsageError(f"{file}: record {unlabelled}: field 'label': missing, while {labelled} other records "
                             "have one (label every record, or none)")
        splits[file.stem] = records
    return splits


def is_labelled(splits: Mapping[str, Sequence[dict[str, Any]]]) -> bool:
    return all(r["label"] is not None for records in splits.values() for r in records)


def split_metrics(labels: Sequence[int], predictions: Sequence[int]) -> dict[str, float]:
    erroneous = [p == l for l, p in zip(labels, predictions) if l != -1]
    correct = [p == -1 for l, p in zip(labels, predictions) if l == -1]
    acc_err = sum(erroneous) / len(erroneous) if erroneous else 0.0
    acc_cor = sum(correct) / len(correct) if correct else 0.0
    f1 = 2 * acc_err * acc_cor / (acc_err + acc_cor) if acc_err + acc_cor else 0.0
    return {"acc_err": round(acc_err, 4), "acc_cor": round(acc_cor, 4), "f1": round(f1, 4), "n": len(labels)}


def metrics(splits: Mapping[str, Sequence[dict[str, Any]]], predictions: Mapping[str, int]) -> dict[str, Any]:
    """Per-split metrics and their average F1; a record without a prediction is an error."""
    result: dict[str, Any] = {"splits": {}}
    for name, records in splits.items():
        if any(r.get("label") is None for r in records):
            raise UsageError(f"split {name}: the records have no labels; there is nothing to score against")
        missing = [r["id"] for r in records if r["id"] not in predictions]
        if missing:
            raise UsageError(f"split {name}: no prediction for {len(missing)} record(s), e.g. {missing[0]!r}")
        result["splits"][name] = split_metrics([r["label"] for r in records], [predictions[r["id"]] for r in records])
    result["average_f1"] = round(sum(s["f1"] for s in result["splits"].values()) / len(result["splits"]), 4)
    return result


class PredictionRecord(BaseModel):
    """A line of a predictions file: a score per step (finite, 0-1; ``null`` for a step the PRM could not
    score, e.g. cut off by its length limit, which is never the first error), or the predicted first
    wrong step. With both, the scores decide (the threshold applies to them)."""

    model_config = ConfigDict(extra="allow", strict=True, allow_inf_nan=False)

    id: Union[str, int]
    prediction: Optional[int] = None
    step_scores: Optional[list[Optional[Annotated[float, Field(ge=0, le=1)]]]] = None

    @model_validator(mode="after")
    def _one_of_them(self) -> "PredictionRecord":
        if self.prediction is None and self.step_scores is None:
            raise ValueError("give 'step_scores' or 'prediction'")
        return self


def read_predictions(path: Path, splits: Mapping[str, Sequence[dict[str, Any]]], threshold: float = 0.5
                     ) -> dict[Any, int]:
    """``{id: prediction}`` from JSONL lines of ``{id, prediction}`` or ``{id, step_scores}``, checked
    against the records they predict: known ids, each once, a prediction that is −1 or a step, one
    score per step."""
    from prmfactory.inputs import jsonl_records

    steps = {r["id"]: len(r["steps"]) for records in splits.values() for r in records}
    predictions: dict[Any, int] = {}
    for where, raw in jsonl_records(path):
        try:
            record = PredictionRecord.model_validate(raw)
        except ValidationError as exc:
            raise UsageError(format_validation_error(exc, where, PredictionRecord)) from exc
        if record.id not in steps:
            raise UsageError(f"{where}: field 'id': {record.id!r} is not a record of the data")
        if record.id in predictions:
            raise UsageError(f"{where}: field 'id': a second prediction for {record.id!r}")
        count = steps[record.id]
        if record.step_scores is not None:
            if len(record.step_scores) != count:
                raise UsageError(f"{where}: field 'step_scores': {len(record.step_scores)} scores for {count} steps")
            predictions[record.id] = first_below(record.step_scores, threshold)
        elif not -1 <= record.prediction < count:
            raise UsageError(f"{where}: field 'prediction': {record.prediction} is not -1 or a step index "
                             f"(0-{count - 1})")
        else:
            predictions[record.id] = record.prediction
    return predictions


THRESHOLDS = tuple(round(0.05 * i, 2) for i in range(1, 20))


def calibrate_threshold(splits: Mapping[str, Sequence[dict[str, Any]]], predictions: Path,
                        on: str | None = None) -> tuple[float, float]:
    """The threshold (of :data:`THRESHOLDS`) with the best average F1 on ``splits`` (or on split ``on`` of
    them) and that F1; the scores come from ``predictions`` (``step_scores`` lines).

    What it is chosen on must be a dev set, never what is reported: ProcessBench picks a scalar PRM's
    threshold on one split and reports the others with it. Ties go to the threshold nearest 0.5.
    """
    chosen = {on: splits[on]} if on is not None else splits
    scored = {t: metrics(chosen, read_predictions(predictions, splits, t))["average_f1"] for t in THRESHOLDS}
    best = max(THRESHOLDS, key=lambda t: (scored[t], -abs(t - 0.5)))
    return best, scored[best]


def check_calibration_split(splits: Mapping[str, Sequence[dict[str, Any]]], on: str) -> None:
    """``on`` must name a split of the data and leave at least one other to report."""
    if on not in splits:
        raise UsageError(f"--calibrate-on {on}: not a split of the data (splits: {', '.join(splits)})")
    if len(splits) < 2:
        raise UsageError(f"--calibrate-on {on}: the data has no other split to report with the chosen threshold")
    labels = [r.get("label") for r in splits[on]]
    for kind, present in (("erroneous", any(l is not None and l != -1 for l in labels)),
                          ("correct", any(l == -1 for l in labels))):
        if not present:
            raise UsageError(f"--calibrate-on {on}: the split has no {kind} samples, so every threshold scores the same "
                             "F1 there and none can be chosen; calibrate on a split that has both")


def calibrated_metrics(splits: Mapping[str, Sequence[dict[str, Any]]], predictions: Path, on: str) -> dict[str, Any]:
    """ProcessBench's protocol for a scalar PRM: the threshold chosen on split ``on``, the other splits reported."""
    check_calibration_split(splits, on)
    threshold, f1 = calibrate_threshold(splits, predictions, on)
    reported = {name: records for name, records in splits.items() if name != on}
    result = metrics(reported, read_predictions(predictions, splits, threshold))
    return {**result, "threshold": threshold, "calibration": {"split": on, "average_f1": f1,
                                                              "candidates": list(THRESHOLDS)}}


ON_TOO_LONG = ("truncate", "skip", "error")


def score_splits(prm, splits: Mapping[str, Sequence[dict[str, Any]]], output: Path, threshold: float = 0.5,
                 *, quiet: bool = False, on_too_long: str = "truncate"
                 ) -> tuple[dict[str, list[dict[str, Any]]], dict[Any, int], dict[str, Any]]:
    """Score every record with a PRM; write ``predictions.jsonl`` (id, split, step_scores, prediction).

    A step past the PRM's context (``max_length`` tokens) gets no score. ``on_too_long`` says what
    happens to a solution with such steps: ``truncate`` scores what fits (an unscored step is never the
    first error), ``skip`` leaves the solution out of the metrics (listed in ``skipped.jsonl``), ``error``
    stops at the first one. Returns the splits the metrics are computed on, the predictions, and what was
    not scored (:func:`unscored_summary`)."""
    from prmfactory.fileio import atomic_write_text
    from prmfactory.prm import score_with_progress

    if on_too_long not in ON_TOO_LONG:
        raise UsageError(f"--on-too-long: expected one of {', '.join(ON_TOO_LONG)}, got {on_too_long!r}")
    records = [(name, r) for name, split in splits.items() for r in split]
    for name, record in records:
        if not isinstance(record.get("problem"), str):
            raise UsageError(f"split {name}: record {record['id']!r}: field 'problem': missing or not a string")
    scores = score_with_progress(prm, [(r["problem"], r["steps"]) for _, r in records], quiet=quiet)
    unscored = unscored_summary(splits, [(r["id"], s) for (_, r), s in zip(records, scores)], prm.meta.max_length)
    cut = {record["id"] for (_, record), step_scores in zip(records, scores) if any(map(math.isnan, step_scores))}
    if cut and on_too_long == "error":
        first = next(record["id"] for _, record in records if record["id"] in cut)
        raise UsageError(f"{len(cut)} solutions (e.g. {first!r}) are longer than the PRM's context "
                         f"({prm.meta.max_length} tokens): {unscored['steps']} of {unscored['total_steps']} steps "
                         "could not be scored; --on-too-long truncate scores what fits, skip leaves them out")
    kept = {name: [r for r in split if on_too_long != "skip" or r["id"] not in cut] for name, split in splits.items()}
    empty = [name for name, split in kept.items() if not split]
    if empty:
        raise UsageError(f"split {empty[0]}: every solution is longer than the PRM's context ({prm.meta.max_length} "
                         "tokens), so --on-too-long skip leaves nothing to score; use --on-too-long truncate")
    lines, predictions, skipped = [], {}, []
    for (name, record), step_scores in zip(records, scores):
        if on_too_long == "skip" and record["id"] in cut:
            skipped.append(json.dumps({"id": record["id"], "split": name, "reason": "too_long",
                                       "unscored_steps": sum(map(math.isnan, step_scores))}))
            continue
        predictions[record["id"]] = first_below(step_scores, threshold)
        lines.append(json.dumps({"id": record["id"], "split": name,
                                 "step_scores": [None if math.isnan(s) else s for s in step_scores],
                                 "prediction": predictions[record["id"]]}))
    output.mkdir(parents=True, exist_ok=True)
    atomic_write_text(output / "predictions.jsonl", "\n".join(lines) + "\n")
    if skipped:
        atomic_write_text(output / "skipped.jsonl", "\n".join(skipped) + "\n")
    return kept, predictions, {**unscored, "on_too_long": on_too_long, "solutions_skipped": len(skipped)}


def unscored_summary(splits: Mapping[str, Sequence[dict[str, Any]]], scored: Sequence[tuple[Any, Sequence[float]]],
                     max_length: int) -> dict[str, Any]:
    """What a PRM could not score, overall and per split: steps past its context, solutions with such steps
    (``solutions``), and solutions without a single scored step (``solutions_without_a_score``)."""
    by_id = dict(scored)
    summary: dict[str, Any] = {"reason": f"past the PRM's context ({max_length} tokens)", "max_length": max_length,
                               "splits": {}}
    for name, records in splits.items():
        rows = [by_id[r["id"]] for r in records]
        summary["splits"][name] = {
            "steps": sum(math.isnan(v) for row in rows for v in row), "total_steps": sum(map(len, rows)),
            "solutions": sum(any(map(math.isnan, row)) for row in rows), "total_solutions": len(rows),
            "solutions_without_a_score": sum(bool(row) and all(map(math.isnan, row)) for row in rows)}
    for key in ("steps", "total_steps", "solutions", "total_solutions", "solutions_without_a_score"):
        summary[key] = sum(split[key] for split in summary["splits"].values())
    return summary


def unscored_line(result: Mapping[str, Any]) -> str:
    """One sentence on what the PRM could not score, for the terminal and metrics.md ('' when it scored all)."""
    unscored = result.get("unscored")
    if not unscored or not unscored["steps"]:
        return ""
    share = unscored["steps"] / max(unscored["total_steps"], 1)
    how = {"truncate": "scored on what fits (an unscored step is never the first error)",
           "skip": f"left out of the metrics ({unscored['solutions_skipped']} solutions, in skipped.jsonl)"}
    return (f"Not scored: {unscored['steps']:,} of {unscored['total_steps']:,} steps ({share:.1%}) {unscored['reason']}, "
            f"in {unscored['solutions']:,} of {unscored['total_solutions']:,} solutions "
            f"({unscored['solutions_without_a_score']:,} without a single scored step); those solutions are "
            f"{how[unscored['on_too_long']]}. --on-too-long chooses.")


def evaluate_prm(prm_path: Path, data: Path, output: Path, *, threshold: float = 0.5, backend: str = "transformers",
                 dtype: str = "float32", quiet: bool = False, calibrate_on: str | None = None,
                 prm_format: str = "auto", force: bool = False, on_too_long: str = "truncate") -> dict[str, Any]:
    """Score ProcessBench files with a PRM; write predictions and metrics; record them in its card.

    ``output`` must be new, empty or (with ``force``) an earlier output of this evaluation
    (:mod:`prmfactory.eval.output`); it is written whole or not at all.

    With ``calibrate_on`` the threshold is chosen on that split, the others are reported with it, and
    the PRM folder keeps it (``prm.json``), so ``serve`` and the RL adapters flag first errors with it.
    A PRM of a public format (``prm_format``) has no ``prm.json``: its folder is left as it is.
    """
    from prmfactory.eval.output import eval_output
    from prmfactory.prm import PRM

    splits = load_splits(data)
    if calibrate_on is not None:
        check_calibration_split(splits, calibrate_on)
    with eval_output(output, "processbench", force=force) as folder:
        prm = PRM.from_pretrained(prm_path, backend=backend, dtype=dtype, format=prm_format)
        try:
            scored, predictions, unscored = score_splits(prm, splits, folder, threshold, quiet=quiet,
                                                         on_too_long=on_too_long)
        finally:
            prm.close()
        result = _prm_metrics(prm_path, prm.format, data, scored, predictions, folder, calibrate_on)
        result.setdefault("threshold", threshold)
        result["unscored"] = unscored
        write_results(result, folder, f"ProcessBench: {prm_path.name} ({prm.format})")
    return result


def _prm_metrics(prm_path: Path, prm_format: str, data: Path, splits: Mapping[str, Sequence[dict[str, Any]]],
                 predictions: Mapping[Any, int], folder: Path, calibrate_on: str | None) -> dict[str, Any]:
    """The metrics of a scored PRM; with ``calibrate_on`` its threshold chosen there and kept in its prm.json,
    and the result recorded in its card (a prmfactory PRM; a public-format folder is left as it is)."""
    from prmfactory.prm.folder import PRMMeta, record_eval
    from prmfactory.prm.public import OWN_FORMAT

    own = prm_format == OWN_FORMAT
    if calibrate_on is not None:
        result = calibrated_metrics(splits, folder / "predictions.jsonl", calibrate_on)
        if own:
            meta = PRMMeta.load(prm_path)
            meta.threshold = result["threshold"]
            meta.threshold_calibration = {"data": str(data), **result["calibration"]}
            meta.save(prm_path)
    else:
        result = metrics(splits, predictions)
    if own:
        record_eval(prm_path, f"processbench:{data.name}", {"average_f1": result["average_f1"], **{
            f"{name}_f1": split["f1"] for name, split in result["splits"].items()},
            **({"threshold": result["threshold"]} if calibrate_on is not None else {})})
    result["prm_format"] = prm_format
    return result


def markdown_table(result: Mapping[str, Any]) -> str:
    lines = ["| split | n | acc_err | acc_cor | F1 |", "|---|---:|---:|---:|---:|"]
    for name, split in result["splits"].items():
        lines.append(f"| {name} | {split['n']} | {split['acc_err']:.3f} | {split['acc_cor']:.3f} | {split['f1']:.3f} |")
    lines.append(f"| **average** | | | | **{result['average_f1']:.3f}** |")
    note = unscored_line(result)
    return "\n".join(lines) + "\n" + (f"\n{note}\n" if note else "")


def write_results(result: Mapping[str, Any], output: Path, title: str) -> None:
    """metrics.json, metrics.md and metrics.png (accuracy on erroneous / correct samples and F1 per split)."""
    from prmfactory.eval.plots import figure, write_json_and_markdown

    write_json_and_markdown(output, "metrics", result, f"# {title}\n\n" + markdown_table(result))
    names = list(result["splits"])
    with figure(output / "metrics.png", (max(4, 1.6 * len(names)), 3.2)) as axis:
        width = 0.27
        for offset, key in enumerate(("acc_err", "acc_cor", "f1")):
            axis.bar([i + (offset - 1) * width for i in range(len(names))], [result["splits"][n][key] for n in names],
                     width, label=key)
        axis.set_xticks(range(len(names)), names)
        axis.set_ylim(0, 1)
        at = f" at threshold {result['threshold']}" if result.get("threshold") is not None else ""
        axis.set_title(f"{title}: average F1 {result['average_f1']:.3f}{at}", fontsize=9)
        axis.legend(fontsize=7)


def parse_threshold(threshold: str, calibrate_on: Optional[str]) -> Optional[float]:
    """``--threshold`` as a number, or None for ``auto`` (which needs ``--calibrate-on``)."""
    if threshold == "auto":
        if calibrate_on is None:
            raise UsageError("--threshold auto needs --calibrate-on SPLIT (the split the threshold is chosen on)")
        return None
    if calibrate_on is not None:
        raise UsageError("--calibrate-on goes with --threshold auto")
    try:
        value = float(threshold)
    except ValueError:
        value = math.nan
    if not 0.0 <= value <= 1.0:
        raise UsageError(f"--threshold: expected a number in [0, 1] or auto, got {threshold!r}")
    return value
