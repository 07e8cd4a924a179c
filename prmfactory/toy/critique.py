"""Critique transcripts and corrupted solutions for training the toy judge.

The judge's prompt is ``prmfactory/judge/prompts/toy_critic.txt`` (a compact ProcessBench-style
critic prompt: numbered steps, answer the first wrong index in ``\\boxed{}``, −1 if none). Its
target text copies each step's equation up to the first wrong one, judges it, then gives the index::

    [0] 29 + 15 = 44 ok
    [1] 44 + 13 = 58 wrong: 57
    \\boxed{1}

Each line copies the step's own equation, so judging it needs one addition or comparison, not a
recomputation of the whole problem.
"""

from __future__ import annotations

import random
import re

from prmfactory.judge.render import TOY_TEMPLATE, render
from prmfactory.toy.oracle import _EQUATION, _SYMBOLS, first_error
from prmfactory.toy.problems import ToyProblem, apply, equation


def judge_prompt(problem: str, steps: list[str]) -> str:
    """The toy judge's prompt: the same template the judge stage renders for ``--judge toy-judge``."""
    return render(TOY_TEMPLATE.read_text(encoding="utf-8"), problem, steps)


def _line(problem: ToyProblem, index: int, step: str, wrong: bool) -> str:
    """The judge's line for one step: the step's own equation copied, then ok, or wrong and why."""
    values, operations = problem.values, problem.operations
    if index > len(operations):
        return f"[{index}] extra step: wrong"
    if index == len(operations):
        boxed = re.findall(r"\\boxed\{\s*(-?\d+)\s*\}", step)
        stated = boxed[-1] if boxed else "none"
        return f"[{index}] answer {stated} " + (f"wrong: {problem.answer}" if wrong else "ok")
    found = _EQUATION.findall(step)
    if len(found) != 1:
        return f"[{index}] no equation: wrong" if wrong else f"[{index}] ok"
    a, op, b, c = found[0]
    op = _SYMBOLS.get(op, op)
    copied = f"[{index}] {a} {op} {b} = {c}"
    if not wrong:
        return f"{copied} ok"
    operation = operations[index]
    if (int(a), op, int(b)) in {(values[index], operation.op, operation.operand),
                                (operation.operand, operation.op, values[index])}:
        return f"{copied} wrong: {apply(op, int(a), int(b))}"
    return f"{copied} wrong: expected {equation(values[index], operation.op, operation.operand, values[index + 1])}"


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
