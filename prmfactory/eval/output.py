"""Where an evaluation writes: a folder that is new, empty, or an earlier output of the same evaluation.

``--output`` is typed by hand, so it can name a user's folder, a run, a PRM or the data being
evaluated. An evaluation writes into a folder beside it and swaps it in only when everything is
written, and replaces an earlier output (with ``force``) only when that folder holds nothing but what
the same evaluation writes: its marker file names the evaluation, and every other file is one it
writes. A folder written before the marker existed is recognised by its files and its result's keys.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from prmfactory.errors import UsageError
from prmfactory.fileio import output_folder_names, replace_folder

MARKER = ".prmfactory-eval.json"


@dataclass(frozen=True)
class EvalFiles:
    """What one evaluation writes: every file name, the JSON file holding its result, and keys that result
    always has and never has (how an output written before the marker is recognised)."""

    command: str
    files: frozenset[str]
    result: str
    keys: tuple[str, ...]
    absent: tuple[str, ...] = ()


_METRICS = frozenset({"metrics.json", "metrics.md", "metrics.png", "predictions.jsonl"})
EVALS = {
    "processbench": EvalFiles("prmfactory eval processbench", _METRICS | {"skipped.jsonl"}, "metrics.json",
                              ("splits", "average_f1"), absent=("claim_timeouts",)),
    "prmbench": EvalFiles("prmfactory eval prmbench", _METRICS, "metrics.json", ("categories", "overall")),
    "bon": EvalFiles("prmfactory eval bon", frozenset({"bon.json", "bon.md", "bon.png", "candidates.jsonl"}),
                     "bon.json", ("curves",)),
    "verify-processbench": EvalFiles("prmfactory verify --processbench", _METRICS, "metrics.json",
                                     ("claim_timeouts", "wall_seconds")),
}


def _is_earlier_output(folder: Path, names: list[str], kind: str) -> bool:
    spec = EVALS[kind]
    if MARKER in names:
        try:
            marker = json.loads((folder / MARKER).read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            return False
        return isinstance(marker, dict) and marker.get("eval") == kind and set(names) <= spec.files | {MARKER}
    if not set(names) <= spec.files or spec.result not in names:
        return False
    try:
        result = json.loads((folder / spec.result).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return False
    return isinstance(result, dict) and all(k in result for k in spec.keys) and not set(spec.absent) & set(result)


def check_output(output: Path, kind: str, force: bool) -> bool:
    """Refuse an ``output`` that is not new, empty or an earlier output of ``kind`` (that one only with
    ``force``); True when there is an earlier output to replace."""
    spec = EVALS[kind]
    names = output_folder_names(output)
    if not names:
        return False
    if not _is_earlier_output(output, names, kind):
        raise UsageError(f"--output {output}: not empty and not an earlier `{spec.command}` output (holds "
                         f"{names[0]}); give a new folder")
    if not force:
        raise UsageError(f"--output {output}: holds an earlier `{spec.command}` output; --force replaces it")
    return True


@contextlib.contextmanager
def eval_output(output: Path, kind: str, *, force: bool) -> Iterator[Path]:
    """A folder to write ``kind``'s output into, swapped in for ``output`` when the block ends without an
    error (and thrown away when it fails, leaving ``output`` as it was)."""
    replacing = check_output(output, kind, force)
    output.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{output.name}.{kind}-", dir=output.parent))
    try:
        yield staging
        (staging / MARKER).write_text(json.dumps({"eval": kind}), encoding="utf-8")
        replace_folder(staging, output, replacing)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
