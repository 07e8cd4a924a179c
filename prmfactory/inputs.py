"""Reading and validating ``--input`` files: math.jsonl, GSM8K and MATH shapes.

Shapes (``--format``, or detected from the first object in the file):

* ``prmfactory``: ``{"id"?: str|int, "problem": str, "answer": str|number}``;
* ``gsm8k``: ``{"question": str, "answer": "...rationale...\\n#### 18"}``;
* ``math``: ``{"problem", "answer", "solution"?, "subject"?, "level"?, "unique_id"?, ...}``.

Every problem is checked line by line; each bad line yields one :class:`InputIssue` naming
``file:line`` and the field. JSON parsing is the standard library's (the one place this is
hand-written is the line-level checks no JSON library does: BOM, size, blank and truncated lines).
"""

from __future__ import annotations

import hashlib
import json
import math
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Literal

from prmfactory.errors import UsageError
from prmfactory.rows import ProblemsRow

InputFormat = Literal["auto", "prmfactory", "gsm8k", "math"]
FORMATS = ("auto", "prmfactory", "gsm8k", "math")
MAX_LINE_BYTES = 1 << 20
MAX_ID_CHARS = 256
MAX_REPORTED_ERRORS = 20
_MATH_KEYS = {"solution", "subject", "level", "unique_id"}


@dataclass(frozen=True)
class InputIssue:
    """One rejected input line."""

    source: str
    field: str
    message: str
    raw: str

    def __str__(self) -> str:
        return f"{self.source}: field {self.field!r}: {self.message}" if self.field else f"{self.source}: {self.message}"


class InputFileError(UsageError):
    """The input has invalid lines and ``--skip-invalid`` was not given."""

    def __init__(self, issues: list[InputIssue], total: int):
        self.issues = issues
        shown = "\n".join(str(i) for i in issues[:MAX_REPORTED_ERRORS])
        more = f"\n... and {total - MAX_REPORTED_ERRORS} more" if total > MAX_REPORTED_ERRORS else ""
        super().__init__(f"{shown}{more}\n{total} invalid line(s); fix them or pass --skip-invalid")


def derive_id(problem: str) -> str:
    """Stable id for a problem without one: a hash of its text."""
    return "sha256:" + hashlib.sha256(problem.encode("utf-8")).hexdigest()[:16]


def _no_constant(name: str) -> Any:
    raise json.JSONDecodeError(f"{name} is not JSON (numbers must be finite)", name, 0)


def strict_json(text: str) -> Any:
    """``json.loads`` without Python's extensions: NaN, Infinity and -Infinity are errors, not floats."""
    return json.loads(text, parse_constant=_no_constant)


def read_input_bytes(path: Path) -> bytes:
    """A file's bytes, read once (a fifo or ``/dev/stdin`` can be read only once); a one-line error if unreadable."""
    try:
        return path.read_bytes()
    except OSError as exc:
        raise UsageError(f"{path}: cannot read: {exc.strerror}") from exc


def jsonl_records(path: Path, on_error: Callable[[str, str], None] | None = None, data: bytes | None = None
                  ) -> Iterator[tuple[str, dict[str, Any]]]:
    """``(file:line, object)`` for each non-blank line of a JSON Lines file of objects.

    For the small record files the other commands read (solutions, predictions); ``--input`` has
    the stricter line-by-line checks of :func:`read_problems`. A bad line is a UsageError, or, with
    ``on_error``, is passed to it as ``(file:line, message)`` and skipped (``import`` keeps rejects).
    ``data``: the file's bytes when the caller has read them already.
    """
    raw_lines = (read_input_bytes(path) if data is None else data).splitlines()
    for number, raw in enumerate(raw_lines, start=1):
        where = f"{path}:{number}"
        try:
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise UsageError(f"{where}: not valid UTF-8 (byte 0x{raw[exc.start]:02x} at column {exc.start + 1})") from exc
            if not line.strip():
                continue
            try:
                record = strict_json(line)
            except json.JSONDecodeError as exc:
                raise UsageError(f"{where}: invalid JSON: {exc.msg} at column {exc.colno}") from exc
            except RecursionError as exc:
                raise UsageError(f"{where}: JSON nested too deeply") from exc
            if not isinstance(record, dict):
                raise UsageError(f"{where}: expected a JSON object, got {type(record).__name__}")
        except UsageError as exc:
            if on_error is None:
                raise
            on_error(where, str(exc))
            continue
        yield where, record


def detect_format(obj: dict[str, Any]) -> str:
    if "question" in obj and "problem" not in obj:
        return "gsm8k"
    if _MATH_KEYS & set(obj):
        return "math"
    return "prmfactory"


class _FieldError(Exception):
    def __init__(self, field: str, message: str):
        super().__init__(message)
        self.field = field


def _text(obj: dict[str, Any], key: str, *, numbers: bool = False) -> str:
    if key not in obj:
        raise _FieldError(key, "missing")
    value = obj[key]
    if numbers and isinstance(value, (int, float)) and not isinstance(value, bool):
        if not math.isfinite(value):
            raise _FieldError(key, f"not a finite number ({value})")
        value = str(value)
    if not isinstance(value, str):
        raise _FieldError(key, f"expected a string, got {type(value).__name__}")
    if not value.strip():
        raise _FieldError(key, "empty")
    return value


def _problem_row(obj: dict[str, Any], fmt: str, source: str) -> ProblemsRow:
    """Map one input object to a ``problems`` row; raises _FieldError on bad fields."""
    used: set[str]
    if fmt == "gsm8k":
        problem = _text(obj, "question")
        rationale = _text(obj, "answer")
        if "####" not in rationale:
            raise _FieldError("answer", "GSM8K answer lacks the '#### <final answer>' line")
        solution, answer = (part.strip() for part in rationale.rsplit("####", 1))
        if not answer:
            raise _FieldError("answer", "empty final answer after '####'")
        used = {"question", "answer", "id"}
        subject, level = None, None
    else:
        problem = _text(obj, "problem")
        answer = _text(obj, "answer", numbers=True).strip()
        solution = obj.get("solution")
        if solution is not None and not isinstance(solution, str):
            raise _FieldError("solution", f"expected a string, got {type(solution).__name__}")
        subject, level = obj.get("subject"), obj.get("level")
        if subject is not None and not isinstance(subject, str):
            raise _FieldError("subject", f"expected a string, got {type(subject).__name__}")
        if level is not None and (isinstance(level, bool) or not isinstance(level, int)):
            raise _FieldError("level", f"expected an integer, got {type(level).__name__}")
        used = {"problem", "answer", "id", "solution", "subject", "level"}
    raw_id = obj.get("id", obj.get("unique_id") if fmt == "math" else None)
    if raw_id is None:
        question_id = derive_id(problem)
    elif isinstance(raw_id, bool) or not isinstance(raw_id, (str, int)):
        raise _FieldError("id", f"expected a string or integer, got {type(raw_id).__name__}")
    elif not str(raw_id).strip():
        raise _FieldError("id", "empty")
    elif len(str(raw_id)) > MAX_ID_CHARS:
        raise _FieldError("id", f"longer than {MAX_ID_CHARS} characters")
    elif any(unicodedata.category(c).startswith("C") for c in str(raw_id)):
        raise _FieldError("id", "contains a control character (newline, tab, NUL, ...)")
    else:
        question_id = str(raw_id)
    extra = {k: v for k, v in obj.items() if k not in used}
    return {
        "question_id": question_id,
        "problem": problem,
        "answer": answer,
        "source": source,
        "input_format": fmt,
        "reference_solution": solution or None,
        "subject": subject,
        "level": level,
        "extra_json": json.dumps(extra, ensure_ascii=False, sort_keys=True) if extra else None,
    }


def _lines(path: Path) -> Iterator[tuple[int, bytes, bool]]:
    """(line number, raw bytes without the newline, whether a newline ended it)."""
    with open(path, "rb") as handle:
        for number, raw in enumerate(handle, start=1):
            ended = raw.endswith(b"\n")
            yield number, raw.rstrip(b"\r\n") if ended else raw, ended


def read_problems(path: Path, fmt: InputFormat = "auto") -> tuple[list[dict[str, Any]], list[InputIssue]]:
    """Parse ``path`` into ``problems`` rows and the issues of every bad line."""
    if not path.is_file():
        raise UsageError(f"{path}: input file not found")
    rows: list[dict[str, Any]] = []
    issues: list[InputIssue] = []
    first_line_of: dict[str, int] = {}
    detected = None if fmt == "auto" else fmt
    for number, raw, ended in _lines(path):
        source = f"{path}:{number}"
        preview = raw[:200].decode("utf-8", errors="replace")

        def reject(field: str, message: str) -> None:
            issues.append(InputIssue(source, field, message, preview))

        if len(raw) > MAX_LINE_BYTES:
            reject("", f"line is {len(raw)} bytes, over the {MAX_LINE_BYTES}-byte limit")
            continue
        if number == 1 and raw.startswith(b"\xef\xbb\xbf"):
            reject("", "file starts with a UTF-8 byte-order mark (BOM); save it as plain UTF-8")
            continue
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            reject("", f"not valid UTF-8 (byte 0x{raw[exc.start]:02x} at column {exc.start + 1})")
            continue
        if not text.strip():
            reject("", "blank line")
            continue
        try:
            obj = strict_json(text)
        except json.JSONDecodeError as exc:
            if not ended:
                reject("", f"truncated last line (no newline at end, invalid JSON: {exc.msg})")
            else:
                reject("", f"invalid JSON: {exc.msg} at column {exc.colno}")
            continue
        if not isinstance(obj, dict):
            reject("", f"expected a JSON object, got {type(obj).__name__}")
            continue
        detected = detected or detect_format(obj)
        try:
            row = _problem_row(obj, detected, source)
        except _FieldError as exc:
            reject(exc.field, str(exc))
            continue
        qid = row["question_id"]
        if qid in first_line_of:
            reject("id", f"duplicate id {qid!r} (first seen on line {first_line_of[qid]})")
            continue
        first_line_of[qid] = number
        rows.append(row)
    return rows, issues


def load_problems(path: Path, fmt: InputFormat, *, skip_invalid: bool) -> tuple[list[dict[str, Any]], list[InputIssue]]:
    """Read and validate ``path``; any bad line stops everything (before any work) unless ``skip_invalid``."""
    rows, issues = read_problems(path, fmt)
    if issues and not skip_invalid:
        raise InputFileError(issues, len(issues))
    if not rows:
        raise UsageError(f"{path}: no valid problems")
    return rows, issues
