"""Ground-truth oracle for toy problems: the exact index of a solution's first wrong step.

The yardstick for benchmarks and tests; no pipeline stage calls it. A step ``i`` before the
last must state the equation of operation ``i`` on the true running value
(``a op b = c``; operands of ``+`` and ``*`` in either order) and no other equation; the step
after the last operation must give ``\\boxed{answer}``; any step beyond it is wrong. A solution
that stops early with every step right has no wrong step (−1); it has no final answer either.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from prmfactory.errors import UsageError
from prmfactory.inputs import jsonl_records
from prmfactory.toy.problems import ToyProblem, parse_problem

_EQUATION = re.compile(r"(-?\d+)\s*([+\-*/×÷x])\s*(-?\d+)\s*=\s*(-?\d+)")
_BOXED = re.compile(r"\\boxed\{\s*(-?\d+)\s*\}")
_SYMBOLS = {"×": "*", "x": "*", "÷": "/"}


def _step_is_right(problem: ToyProblem, values: list[int], index: int, step: str) -> bool:
    operations = problem.operations
    if index < len(operations):
        found = [(int(a), _SYMBOLS.get(op, op), int(b), int(c)) for a, op, b, c in _EQUATION.findall(step)]
        operation = operations[index]
        a, b, c = values[index], operation.operand, values[index + 1]
        accepted = {(a, operation.op, b, c)}
        if operation.op in "+*":
            accepted.add((b, operation.op, a, c))
        return len(found) == 1 and found[0] in accepted and not _BOXED.search(step)
    if index == len(operations):
        boxed = _BOXED.findall(step)
        return len(boxed) == 1 and int(boxed[0]) == problem.answer and not _EQUATION.search(step)
    return False


def first_error(problem: ToyProblem, steps: list[str]) -> int:
    """Index of the first wrong step of ``steps`` (0-based), or −1 when none is wrong."""
    values = problem.values
    for index, step in enumerate(steps):
        if not _step_is_right(problem, values, index, step):
            return index
    return -1


def final_answer_correct(problem: ToyProblem, steps: list[str]) -> bool:
    """Whether the solution ends with the right boxed answer."""
    return bool(steps) and len(_BOXED.findall(steps[-1])) == 1 and int(_BOXED.findall(steps[-1])[0]) == problem.answer


def check_file(path: Path) -> tuple[list[dict[str, Any]], int]:
    """Oracle verdicts for a JSONL file of ``{id, problem, steps}`` (ProcessBench fields).

    Returns one ``{id, first_error}`` per line; a problem that is not a toy problem gets
    ``{id, first_error: null, error: ...}`` rather than a guess. Returns the lines and how many
    were not toy problems. Malformed lines are usage errors naming file:line and field.
    """
    results, foreign = [], 0
    for where, record in jsonl_records(path):
        for field, kind in (("id", (str, int)), ("problem", str), ("steps", list)):
            if not isinstance(record.get(field), kind):
                raise UsageError(f"{where}: field {field!r}: missing or of the wrong type")
        if not all(isinstance(step, str) for step in record["steps"]):
            raise UsageError(f"{where}: field 'steps': expected a list of strings")
        problem = parse_problem(record["problem"])
        if problem is None:
            foreign += 1
            results.append({"id": record["id"], "first_error": None, "error": "not a toy problem"})
        else:
            results.append({"id": record["id"], "first_error": first_error(problem, record["steps"])})
    return results, foreign


def label_accuracy(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """How well step labels (``prompt``, ``completions``, ``labels`` rows) match the oracle.

    ProcessBench-style on the steps each row keeps: the row's predicted first error is its first
    False label (−1 if none), the truth is the oracle's first wrong step; ``acc_err``, ``acc_cor``,
    their harmonic mean ``f1``, plus ``rows`` and ``labels``. Rows that are not toy problems are skipped.
    """
    from prmfactory.eval.processbench import split_metrics

    truth, predicted, labels = [], [], 0
    for row in rows:
        problem = parse_problem(row["prompt"])
        if problem is None:
            continue
        truth.append(first_error(problem, row["completions"]))
        predicted.append(next((i for i, label in enumerate(row["labels"]) if not label), -1))
        labels += len(row["labels"])
    return {"rows": len(truth), "labels": labels, **split_metrics(truth, predicted)}
