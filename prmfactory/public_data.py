"""``prmfactory import``: public PRM datasets into TRL's stepwise layout, which ``train-prm --data`` reads as is.

Each dataset's labels are mapped as the reference conversion does, and every record that cannot be
mapped goes to ``rejects.jsonl`` with its reason instead of into the rows (openr #85: converted labels
that did not match their steps):

* ``math-shepherd`` (Wang et al. 2024, arXiv:2312.08935), as TRL's ``examples/datasets/math_shepherd.py``
  (huggingface/trl at 87421be): ``input`` ends each step with the tag ``ки``; ``label`` is the same text
  with each tag replaced by ``+`` (good) or ``-`` (bad); the problem is the text before ``Step 1:``.
  TRL special-cases a dozen records whose problem holds a tag and falls back to splitting at a ``?``;
  here those are rejected (``tag_in_problem``, ``no_step_1``) rather than guessed at.
* ``prm800k`` (Lightman et al. 2023, arXiv:2305.20050), as TRL's ``examples/datasets/prm800k.py``
  (at 9057793): the chosen completion of each step extends the path (a human completion counts as
  correct); every other rated completion of a step ends a row of its own; a rating of 1 is correct,
  −1 wrong, 0 (neutral) wrong as in TRL unless ``neutral_is_correct``.
* ``processbench`` (Zheng et al. 2024, arXiv:2412.06559): the steps before ``label`` are correct, the
  step at ``label`` wrong; the steps after it carry no label in ProcessBench and are cut off (as filter
  cuts a row after its first error); ``label`` −1: every step correct.
* ``prmbench`` (Song et al. 2025, arXiv:2501.03124): the samples ``eval prmbench`` scores (the modified
  process, and the original one of each ``redundency`` record), a step wrong when ``error_steps`` names
  it. A record whose ``error_steps`` name a step it does not have is rejected.

Written by hand: the reference conversions are scripts, not a library.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

from prmfactory.errors import UsageError

SHEPHERD_TAG = "ки"
STEP_ONE = re.compile(r"step 1:", re.IGNORECASE)
REPORT_FILE = "import.json"
REJECTS_FILE = "rejects.jsonl"
LOG_FILE = "log.txt"
ROWS_PER_SHARD = 100_000
SHARD_FILE = re.compile(r"part-\d{5}\.parquet")


class Rejected(ValueError):
    """A record (or one row of it) that cannot be mapped: ``reason`` is a slug, the message says why."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class Candidate:
    """One stepwise row before provenance is added."""

    prompt: str
    completions: list[str]
    labels: list[bool]
    source_id: Optional[str] = None
    subset: Optional[str] = None


Mapped = list["Candidate | Rejected"]


def _text_field(record: dict[str, Any], name: str) -> str:
    value = record.get(name)
    if not isinstance(value, str):
        raise Rejected("missing_field", f"field {name!r}: missing or not a string")
    return value


def math_shepherd(record: dict[str, Any], options: dict[str, Any]) -> Mapped:
    text, label = _text_field(record, "input"), _text_field(record, "label")
    pieces = text.split(SHEPHERD_TAG)
    if len(pieces) < 2:
        raise Rejected("no_tags", f"field 'input': no step tag {SHEPHERD_TAG!r}")
    verdicts = re.fullmatch("([+-])".join(re.escape(piece) for piece in pieces), label, flags=re.DOTALL)
    if verdicts is None:
        raise Rejected("label_mismatch", f"field 'label': not the input with each {SHEPHERD_TAG!r} replaced by + or -")
    if pieces[-1].strip():
        raise Rejected("untagged_step", f"field 'input': text after the last tag: {pieces[-1].strip()[:60]!r}")
    first = STEP_ONE.search(pieces[0])
    if first is None:
        reason = "tag_in_problem" if any(STEP_ONE.search(p) for p in pieces[1:]) else "no_step_1"
        raise Rejected(reason, "field 'input': " + ("a step tag inside the problem, before 'Step 1:'"
                                                    if reason == "tag_in_problem" else "no 'Step 1:' before the first tag"))
    steps = [pieces[0][first.start():].strip()] + [p.strip() for p in pieces[1:-1]]
    if not all(steps):
        raise Rejected("empty_step", "field 'input': an empty step between two tags")
    task = record.get("task")
    return [Candidate(pieces[0][:first.start()].strip(), steps, [v == "+" for v in verdicts.groups()],
                      subset=task if isinstance(task, str) else None)]


def _rating(completion: Any, options: dict[str, Any], what: str) -> bool:
    rating = completion.get("rating") if isinstance(completion, dict) else None
    if type(rating) is not int or rating not in (-1, 0, 1):
        raise Rejected("bad_rating", f"{what}: rating {rating!r} is not -1, 0 or 1")
    return rating == 1 or (rating == 0 and options.get("neutral_is_correct", False))


def _completion_text(completion: Any, what: str) -> str:
    text = completion.get("text") if isinstance(completion, dict) else None
    if not isinstance(text, str) or not text.strip():
        raise Rejected("empty_step", f"{what}: no text")
    return text


def prm800k(record: dict[str, Any], options: dict[str, Any]) -> Mapped:
    question = record.get("question") if isinstance(record.get("question"), dict) else {}
    prompt = _text_field(question, "problem")
    label = record.get("label")
    steps = label.get("steps") if isinstance(label, dict) else None
    if not isinstance(steps, list):
        raise Rejected("missing_field", "field 'label.steps': missing or not a list")
    mapped: Mapped = []
    path: list[str] = []
    labels: list[bool] = []
    for number, step in enumerate(steps):
        where = f"field 'label.steps.{number}'"
        if not isinstance(step, dict):
            raise Rejected("missing_field", f"{where}: not an object")
        completions, chosen, human = step.get("completions"), step.get("chosen_completion"), step.get("human_completion")
        if completions is None and chosen is None and human is None:
            break  # TRL's "happens sometimes": the labeller stopped here
        completions = [] if completions is None else completions
        if not isinstance(completions, list):
            raise Rejected("missing_field", f"{where}.completions: not a list (a {type(completions).__name__})")
        if chosen is not None and (type(chosen) is not int or not 0 <= chosen < len(completions)):
            raise Rejected("bad_chosen_completion", f"{where}: chosen_completion {chosen!r} is not one of its "
                                                    f"{len(completions)} completions")
        for index, completion in enumerate(completions):
            if index == chosen:
                continue
            try:  # another completion of this step ends a row of its own
                mapped.append(Candidate(prompt, path + [_completion_text(completion, f"{where}.completions.{index}")],
                                        labels + [_rating(completion, options, f"{where}.completions.{index}")],
                                        subset="alternative"))
            except Rejected as exc:
                mapped.append(exc)
        if chosen is not None:
            path.append(_completion_text(completions[chosen], f"{where}.completions.{chosen}"))
            labels.append(_rating(completions[chosen], options, f"{where}.completions.{chosen}"))
        elif human is not None:
            path.append(_completion_text(human, f"{where}.human_completion"))
            labels.append(True)
        else:
            break
    if not path:
        raise Rejected("no_steps", "field 'label.steps': no chosen or human completion")
    return mapped + [Candidate(prompt, path, labels, subset="chosen")]


def processbench(record: dict[str, Any], options: dict[str, Any]) -> Mapped:
    from pydantic import ValidationError

    from prmfactory.config import format_validation_error
    from prmfactory.eval.processbench import ProcessBenchRecord

    try:
        checked = ProcessBenchRecord.model_validate(record)
    except ValidationError as exc:
        raise Rejected("invalid_record", format_validation_error(exc, "record", ProcessBenchRecord)) from exc
    if checked.problem is None or checked.label is None:
        raise Rejected("missing_field", f"field {'problem' if checked.problem is None else 'label'!r}: missing")
    if str(checked.id) in options["seen"]:
        raise Rejected("duplicate", f"field 'id': {checked.id!r} already imported (the first record with it is kept)")
    options["seen"].add(str(checked.id))
    first_error = checked.label if checked.label != -1 else len(checked.steps)
    steps = checked.steps[:first_error + 1]
    return [Candidate(checked.problem, steps, [index < first_error for index in range(len(steps))],
                      source_id=str(checked.id), subset=options["split"])]


def prmbench(record: dict[str, Any], options: dict[str, Any]) -> Mapped:
    from prmfactory.eval.prmbench import BadRecord, record_samples

    try:
        samples = record_samples(record, "record")
    except BadRecord as exc:
        raise Rejected(exc.reason, str(exc)) from exc
    mapped: Mapped = []
    for sample in samples:
        if sample.steps_out_of_range:
            raise Rejected("error_step_out_of_range", f"field 'error_steps': names a step past the last of "
                                                      f"{len(sample.steps)} (error_steps are 1-based)")
        if sample.id in options["seen"]:
            mapped.append(Rejected("duplicate", f"sample {sample.id!r} already imported (PRMBench keeps the first)"))
            continue
        options["seen"].add(sample.id)
        mapped.append(Candidate(sample.question, sample.steps,
                                [index not in sample.error_steps for index in range(len(sample.steps))],
                                source_id=sample.id, subset=sample.classification))
    return mapped


@dataclass(frozen=True)
class Importer:
    map: Callable[[dict[str, Any], dict[str, Any]], Mapped]
    segmentation: str
    suffixes: tuple[str, ...]


IMPORTERS = {
    "math-shepherd": Importer(math_shepherd, "line", (".jsonl",)),  # one "Step k: ..." line per step
    "prm800k": Importer(prm800k, "blank_line", (".jsonl",)),
    "processbench": Importer(processbench, "blank_line", (".json", ".jsonl")),
    "prmbench": Importer(prmbench, "blank_line", (".jsonl",)),
}


def _input_files(path: Path, importer: Importer, include: str | None = None) -> list[Path]:
    """``path`` itself, or its files with the dataset's suffixes (whose names match ``include``, a glob)."""
    if not path.is_dir():
        if include is not None:
            raise UsageError(f"--include {include!r}: selects files of a folder, but --input {path} is a file")
        return [path]
    files = sorted(p for p in path.iterdir() if p.suffix in importer.suffixes and fnmatch.fnmatch(p.name, include or "*"))
    if not files:
        raise UsageError(f"{path}: no {' or '.join(importer.suffixes)} files"
                         + (f" whose names match {include!r}" if include else ""))
    return files


def _line_number(where: str) -> int:
    """The 1-based line of a ``file:N`` location, or record number of a ``file: record N`` one."""
    line = re.search(r":(\d+)$", where)
    return int(line.group(1)) if line else int(where.rsplit(" ", 1)[1]) + 1


def _earlier_import(output: Path) -> list[str] | None:
    """The files an earlier import wrote into ``output`` (its import.json lists its shards), or None if
    ``output`` does not hold one; a file it did not write makes it not one."""
    try:
        report = json.loads((output / REPORT_FILE).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    shards = report.get("shards") if isinstance(report, dict) else None
    if not isinstance(shards, list) or not all(isinstance(n, str) and SHARD_FILE.fullmatch(n) for n in shards):
        return None
    return [REPORT_FILE, REJECTS_FILE, LOG_FILE, *shards]


def _check_output(output: Path, force: bool) -> bool:
    """The output must be new, empty or (with ``force``) an earlier import holding only the files it wrote;
    True when there is an earlier import to replace."""
    from prmfactory.fileio import output_folder_names

    present = output_folder_names(output)
    if not present:
        return False
    written = _earlier_import(output)
    if written is None:
        raise UsageError(f"--output {output}: not empty and not an earlier import (holds {present[0]}); "
                         "give a new folder")
    foreign = [name for name in present if name not in written]
    if foreign:
        raise UsageError(f"--output {output}: holds {foreign[0]}, which the earlier import there did not write; "
                         "move it away or give a new folder")
    if not force:
        raise UsageError(f"--output {output}: holds an earlier import; --force replaces it")
    return True


def import_dataset(source: str, input: Path, output: Path, *, neutral_is_correct: bool = False, force: bool = False,
                   quiet: bool = False, include: str | None = None) -> dict[str, Any]:
    """Map every record of ``input`` (a file, or a folder of them, those matching ``include`` when given)
    and write the rows, rejects and report.

    The files are written beside the output and moved in at the end, so an interrupted import
    leaves the folder as it was."""
    import shutil
    import tempfile

    import pyarrow.parquet as pq

    from prmfactory import schemas
    from prmfactory.eval.processbench import json_records
    from prmfactory.fileio import replace_folder
    from prmfactory.inputs import derive_id, read_input_bytes
    from prmfactory.progress import stage_progress

    if source not in IMPORTERS:
        raise UsageError(f"import: unknown dataset {source!r} (one of {', '.join(IMPORTERS)})")
    importer = IMPORTERS[source]
    files = _input_files(input, importer, include)
    replacing = _check_output(output, force)
    started = time.monotonic()
    rows: list[dict[str, Any]] = []
    rejects: list[dict[str, Any]] = []
    inputs = []
    options: dict[str, Any] = {"neutral_is_correct": neutral_is_correct, "seen": set()}

    def reject(file: Path, where: str, exc: Rejected, source_id: Optional[str] = None) -> None:
        rejects.append({"source_file": str(file), "source_line": _line_number(where), "reason": exc.reason,
                        "message": str(exc), "source_id": source_id})

    # JSON Lines: a record per line, so the bar has a total; a JSON array's records are counted as they come,
    # and so are those of a stream (a fifo, /dev/stdin), which can be read only once
    counted = all(f.suffix != ".json" and f.is_file() for f in files)
    total = sum(_count_lines(f) for f in files) if counted else None
    with stage_progress(f"importing {source}", total, quiet=quiet) as bar:
        for file in files:
            records = 0
            options["split"] = file.stem
            data = read_input_bytes(file)

            def unreadable(where: str, message: str, file: Path = file) -> None:
                reject(file, where, Rejected("unreadable_line", message.split(": ", 1)[-1]))

            for where, raw in json_records(file, unreadable, data):
                records += 1
                try:
                    if not isinstance(raw, dict):
                        raise Rejected("not_an_object", f"expected a JSON object, got {type(raw).__name__}")
                    mapped = importer.map(raw, options)
                except Rejected as exc:
                    mapped = [exc]
                for item in mapped:
                    if isinstance(item, Rejected):
                        own_id = raw.get("idx", raw.get("id")) if isinstance(raw, dict) else None
                        reject(file, where, item, None if own_id is None else str(own_id))
                    else:
                        rows.append({"prompt": item.prompt, "completions": item.completions, "labels": item.labels,
                                     "question_id": derive_id(item.prompt), "segmentation": importer.segmentation, "source": source,
                                     "source_file": str(file), "source_line": _line_number(where),
                                     "source_id": item.source_id, "subset": item.subset})
                bar.advance(1, rows=len(rows), rejected=len(rejects))
            inputs.append({"file": str(file.resolve()), "sha256": hashlib.sha256(data).hexdigest(), "records": records})
    reasons: dict[str, int] = {}
    for item in rejects:
        reasons[item["reason"]] = reasons.get(item["reason"], 0) + 1
    report = {"source": source, "inputs": inputs, "segmentation": importer.segmentation,
              "options": {"neutral_is_correct": neutral_is_correct},
              "rows": len(rows), "steps": sum(len(r["completions"]) for r in rows),
              "positive_steps": sum(sum(r["labels"]) for r in rows), "rejected": len(rejects),
              "rejected_by_reason": dict(sorted(reasons.items(), key=lambda kv: -kv[1])),
              "shards": [], "seconds": None}
    first = rejects[0]["message"] if rejects else "the input has no records"
    failed = f"{input}: no row could be imported as {source} ({len(rejects)} rejected; first: {first}); "
    if not rows and replacing:  # nothing replaces the earlier import: it stays as it was
        raise UsageError(failed + f"the earlier import in {output} is kept as it was")
    output.parent.mkdir(parents=True, exist_ok=True)
    partial = Path(tempfile.mkdtemp(prefix=f".{output.name}.import-", dir=output.parent))
    try:
        schema = schemas.load("imported_steps")
        for number, start in enumerate(range(0, len(rows), ROWS_PER_SHARD)):
            name = f"part-{number:05d}.parquet"
            pq.write_table(schema.table(rows[start:start + ROWS_PER_SHARD]), partial / name)
            report["shards"].append(name)
        (partial / REJECTS_FILE).write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rejects),
                                            encoding="utf-8")
        report["seconds"] = round(time.monotonic() - started, 2)
        (partial / REPORT_FILE).write_text(json.dumps(report, indent=1), encoding="utf-8")
        (partial / LOG_FILE).write_text(_log(report), encoding="utf-8")
        replace_folder(partial, output, replacing)
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    if not rows:
        raise UsageError(failed + f"see {output / REJECTS_FILE}")
    return report


def _count_lines(file: Path) -> int:
    with open(file, "rb") as handle:
        return sum(block.count(b"\n") for block in iter(lambda: handle.read(1 << 20), b""))


def _log(report: dict[str, Any]) -> str:
    lines = [f"import {report['source']}: {report['rows']} rows ({report['steps']} steps, "
             f"{report['positive_steps']} labelled correct), {report['rejected']} rejected"]
    lines += [f"  rejected as {reason}: {count}" for reason, count in report["rejected_by_reason"].items()]
    lines += [f"  input {i['file']} ({i['records']} records, sha256 {i['sha256']})" for i in report["inputs"]]
    return "\n".join(lines) + "\n"
