"""Critique transcripts and corrupted solutions for training the toy judge.

The judge's prompt is ``judge_prompt.txt`` beside this file (a compact ProcessBench-style
critic prompt: numbered steps, answer the first wrong index in ``\\boxed{}``, −1 if none). Its
target text recomputes each step up to the first wrong one, then gives the index::

    [0] 29 + 15 = 44 ok
    [1] 44 + 13 = 57, not 58: wrong
    \\boxed{1}
"""

from __future__ import annotations

import random
import re
from pathlib import Path

from prmfactory.toy.oracle import _EQUATION, _SYMBOLS, first_error
from prmfactory.toy.problems import ToyProblem, apply, equation

JUDGE_PROMPT = (Path(__file__).parent / "judge_prompt.txt").read_text(encoding="utf-8")


def numbered(steps: list[str]) -> str:
    return "\n".join(f"[{i}] {step}" for i, step in enumerate(steps))


def judge_prompt(problem: str, steps: list[str]) -> str:
    return JUDGE_PROMPT.replace("{problem}", problem).replace("{numbered_steps}", numbered(steps)).rstrip("\n")


def _line(problem: ToyProblem, index: int, step: str, wrong: bool) -> str:
    values, operations = problem.values, problem.operations
    if index >= len(operations):
        verdict = f"should be {problem.answer}: wrong" if wrong else "ok"
        return f"[{index}] answer {verdict}" if index == len(operations) else f"[{index}] extra step: wrong"
    operation = operations[index]
    expected = equation(values[index], operation.op, operation.operand, values[index + 1])
    found = _EQUATION.findall(step)
    if not wrong:
        return f"[{index}] {expected} ok"
    if len(found) == 1:
        a, op, b, c = found[0]
        op = _SYMBOLS.get(op, op)
        a_, b_, c_ = int(a), int(b), int(c)
        if (a_, op, b_) in {(values[index], operation.op, operation.operand),
                            (operation.operand, operation.op, values[index])}:
            return f"[{index}] {a_} {op} {b_} = {apply(op, a_, b_)}, not {c_}: wrong"
    return f"[{index}] expected {expected}: wrong"


def critique(problem: ToyProblem, steps: list[str]) -> str:
    """The judge's target: one line per step up to the first error, then the boxed index."""
    error = first_error(problem, steps)
    last = len(steps) - 1 if error == -1 else error
    lines = [_line(problem, i, steps[i], i == error) for i in range(last + 1)]
    return "\n".join(lines + [f"\\boxed{{{error}}}"])


def corrupt(problem: ToyProblem, rng: random.Random) -> tuple[ToyProblem, list[str]]:
    """The reference solution with one injected error (or none, a quarter of the time).

    Kinds: a wrong result, a wrong operand, a wrong carried value or a wrong final answer; later
    steps carry the wrong value forward as a policy's would.
    """
    steps = list(problem.reference_steps)
    if rng.random() < 0.25:
        return problem, steps
    operations = problem.operations
    index = rng.randrange(len(operations) + 1)
    if index == len(operations):
        wrong = problem.answer + rng.choice([-3, -2, -1, 1, 2, 3, 10])
        steps[-1] = f"The answer is \\boxed{{{wrong}}}."
        return problem, steps
    values = problem.values
    kind = rng.choice(["result", "operand", "carried"])
    value = values[index]
    for position in range(index, len(operations)):
        operation = operations[position]
        a, b = value, operation.operand
        if position == index and kind == "carried":
            a = value + rng.choice([-2, -1, 1, 2, 10])
        if position == index and kind == "operand":
            b = max(1, b + rng.choice([-2, -1, 1, 2]))
        if operation.op == "/" and (b == 0 or a % b):
            b = operation.operand if a % operation.operand == 0 else 1
        result = apply(operation.op, a, b)
        if position == index and (kind == "result" or (a, b) == (value, operation.operand)):
            result += rng.choice([-2, -1, 1, 2, 10])
        steps[position] = re.sub(r"-?\d+ [+\-*/] -?\d+ = -?\d+", equation(a, operation.op, b, result), steps[position])
        value = result
    steps[-1] = f"The answer is \\boxed{{{value}}}."
    return problem, steps
