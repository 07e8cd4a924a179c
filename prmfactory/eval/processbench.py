"""The ProcessBench protocol (Zheng et al. 2024, "ProcessBench: Identifying Process Errors in
Mathematical Reasoning", arXiv:2412.06559) — one implementation for every evaluator.

A record has ``id``, ``problem``, ``steps`` and ``label`` (index of the first wrong step, −1 when
every step is right). A prediction is such an index. Per split: accuracy on the erroneous
records (prediction == label), accuracy on the correct ones (prediction == −1), and their
harmonic mean (F1); ``average_f1`` is the mean F1 over the splits.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping, Sequence

from prmfactory.errors import UsageError
from prmfactory.prm import first_below


def load_splits(path: Path) -> dict[str, list[dict[str, Any]]]:
    """ProcessBench files (a JSON array or JSON Lines each), one split per file named by its stem."""
    files = sorted(p for p in path.iterdir() if p.suffix in (".json", ".jsonl")) if path.is_dir() else [path]
    if not files:
        raise UsageError(f"{path}: no .json or .jsonl files")
    splits = {}
    for file in files:
        text = file.read_text(encoding="utf-8")
        try:
            records = json.loads(text) if text.lstrip().startswith("[") else [
                json.loads(line) for line in text.splitlines() if line.strip()]
        except json.JSONDecodeError as exc:
            raise UsageError(f"{file}:{exc.lineno}: invalid JSON: {exc.msg}") from exc
        for index, record in enumerate(records):
            for field, kind in (("id", (str, int)), ("steps", list)):
                if not isinstance(record.get(field), kind):
                    raise UsageError(f"{file}: record {index}: field {field!r}: missing or of the wrong type")
        splits[file.stem] = records
    return splits


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
        missing = [r["id"] for r in records if r["id"] not in predictions]
        if missing:
            raise UsageError(f"split {name}: no prediction for {len(missing)} record(s), e.g. {missing[0]!r}")
        result["splits"][name] = split_metrics([r["label"] for r in records], [predictions[r["id"]] for r in records])
    result["average_f1"] = round(sum(s["f1"] for s in result["splits"].values()) / len(result["splits"]), 4)
    return result


def read_predictions(path: Path, threshold: float = 0.5) -> dict[Any, int]:
    """``{id: prediction}`` from JSONL lines of ``{id, prediction}`` or ``{id, step_scores}``."""
    from prmfactory.inputs import jsonl_records

    predictions: dict[Any, int] = {}
    for where, record in jsonl_records(path):
        if "id" not in record:
            raise UsageError(f"{where}: field 'id': missing")
        if isinstance(record.get("prediction"), int) and not isinstance(record["prediction"], bool):
            predictions[record["id"]] = record["prediction"]
        elif isinstance(record.get("step_scores"), list) and all(
                isinstance(s, (int, float)) and not isinstance(s, bool) for s in record["step_scores"]):
            predictions[record["id"]] = first_below(record["step_scores"], threshold)
        else:
            raise UsageError(f"{where}: field 'prediction' or 'step_scores': missing or of the wrong type")
    return predictions


def score_splits(prm, splits: Mapping[str, Sequence[dict[str, Any]]], output: Path, threshold: float = 0.5,
                 *, quiet: bool = False) -> dict[Any, int]:
    """Score every record with a PRM; write ``predictions.jsonl`` (id, split, step_scores, prediction)."""
    from prmfactory.prm import score_with_progress
    from prmfactory.fileio import atomic_write_text

    records = [(name, r) for name, split in splits.items() for r in split]
    for name, record in records:
        if not isinstance(record.get("problem"), str):
            raise UsageError(f"split {name}: record {record['id']!r}: field 'problem': missing or not a string")
    scores = score_with_progress(prm, [(r["problem"], r["steps"]) for _, r in records], quiet=quiet)
    lines, predictions = [], {}
    for (name, record), step_scores in zip(records, scores):
        predictions[record["id"]] = first_below(step_scores, threshold)
        lines.append(json.dumps({"id": record["id"], "split": name, "step_scores": step_scores,
                                 "prediction": predictions[record["id"]]}))
    output.mkdir(parents=True, exist_ok=True)
    atomic_write_text(output / "predictions.jsonl", "\n".join(lines) + "\n")
    return predictions


def evaluate_prm(prm_path: Path, data: Path, output: Path, *, threshold: float = 0.5, backend: str = "transformers",
                 quiet: bool = False) -> dict[str, Any]:
    """Score ProcessBench files with a trained PRM; write predictions and metrics; record them in its card."""
    from prmfactory.prm import PRM
    from prmfactory.prm_folder import record_eval

    splits = load_splits(data)
    prm = PRM.from_pretrained(prm_path, backend=backend)
    try:
        result = metrics(splits, score_splits(prm, splits, output, threshold, quiet=quiet))
    finally:
        prm.close()
    record_eval(prm_path, f"processbench:{data.name}", {"average_f1": result["average_f1"], **{
        f"{name}_f1": split["f1"] for name, split in result["splits"].items()}})
    write_results(result, output, f"ProcessBench: {prm_path.name}")
    return result


def markdown_table(result: Mapping[str, Any]) -> str:
    lines = ["| split | n | acc_err | acc_cor | F1 |", "|---|---:|---:|---:|---:|"]
    for name, split in result["splits"].items():
        lines.append(f"| {name} | {split['n']} | {split['acc_err']:.3f} | {split['acc_cor']:.3f} | {split['f1']:.3f} |")
    lines.append(f"| **average** | | | | **{result['average_f1']:.3f}** |")
    return "\n".join(lines) + "\n"


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
        axis.set_title(f"{title} (average F1 {result['average_f1']:.3f})", fontsize=9)
        axis.legend(fontsize=7)
