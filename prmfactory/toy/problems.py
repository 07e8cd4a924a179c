"""Toy arithmetic word problems with exact ground truth.

A problem is a start quantity followed by 2–6 dependent operations (+, −, ×, ÷ with exact
integer results), each worded by one of several templates. The reference solution restates
one operation per step ("Ann buys 14 more, so Ann has 23 + 14 = 37."), steps separated by a
blank line, and ends with ``The answer is \\boxed{N}.``

Everything is a pure function of the seed. Train and test problems are disjoint by
construction: a problem belongs to the split given by a hash of its text, and the generator
keeps only those of the requested split.
"""

from __future__ import annotations

import hashlib
import random
import re
from dataclasses import dataclass
from typing import Literal

Split = Literal["train", "test"]
Op = Literal["+", "-", "*", "/"]

NAMES = ("Ann", "Bob", "Cara", "Dan", "Eve", "Finn", "Gus", "Hana", "Ivy", "Jack", "Kim", "Leo",
         "Mia", "Ned", "Omar", "Pia", "Quinn", "Rosa", "Sam", "Tara")
ITEMS = ("apples", "books", "coins", "marbles", "stickers", "pencils", "shells", "cards", "eggs",
         "stamps", "beads", "cookies", "buttons", "rocks", "toys", "cups")
MAX_START = 99
MAX_OPERAND = 30
MAX_VALUE = 99
TEST_FRACTION = 0.2

# Wordings: (sentence of the problem, clause of the reference step). {n} the person, {k} the
# operand, {it} the item. Multiplication and division use the words for their factor.
_ADD = (("{n} buys {k} more {it}.", "{n} buys {k} more"),
        ("{n} finds {k} more {it}.", "{n} finds {k} more"),
        ("Then {n} gets {k} more {it} from a friend.", "{n} gets {k} more"),
        ("{n} wins {k} {it} in a game.", "{n} wins {k}"))
_SUB = (("{n} gives away {k} {it}.", "{n} gives away {k}"),
        ("{n} loses {k} {it}.", "{n} loses {k}"),
        ("Then {n} sells {k} {it}.", "{n} sells {k}"),
        ("{n} uses {k} of the {it}.", "{n} uses {k}"))
_MUL = (("{n} {times} the number of {it}.", "{n} {times} them"),
        ("Then the number of {it} that {n} has is {times_adj}.", "the number is {times_adj}"))
_DIV = (("{n} splits the {it} equally into {k} boxes and keeps one box.", "{n} keeps one box of {k}"),
        ("{n} shares the {it} equally with {others} and keeps one share.", "{n} keeps one share of {k}"))
_TIMES = {2: ("doubles", "doubled"), 3: ("triples", "tripled")}
_OTHERS = {2: "1 friend", 3: "2 friends", 4: "3 friends", 5: "4 friends"}
_QUESTIONS = ("How many {it} does {n} have now?", "How many {it} does {n} have in the end?",
              "How many {it} are left with {n}?")
_WORDINGS: dict[str, tuple[tuple[str, str], ...]] = {"+": _ADD, "-": _SUB, "*": _MUL, "/": _DIV}


@dataclass(frozen=True)
class Operation:
    op: Op
    operand: int
    wording: int


@dataclass(frozen=True)
class ToyProblem:
    """A toy problem and everything the oracle needs to judge a solution to it."""

    name: str
    item: str
    start: int
    operations: tuple[Operation, ...]
    question: int

    @property
    def values(self) -> list[int]:
        """Running quantity: the start, then the value after each operation."""
        values = [self.start]
        for operation in self.operations:
            values.append(apply(operation.op, values[-1], operation.operand))
        return values

    @property
    def answer(self) -> int:
        return self.values[-1]

    @property
    def text(self) -> str:
        sentences = [f"{self.name} has {self.start} {self.item}."]
        for operation in self.operations:
            template = _WORDINGS[operation.op][operation.wording][0]
            sentences.append(_fill(template, self, operation))
        sentences.append(_QUESTIONS[self.question].format(n=self.name, it=self.item))
        return " ".join(sentences)

    @property
    def reference_steps(self) -> list[str]:
        steps, values = [], self.values
        for index, operation in enumerate(self.operations):
            clause = _fill(_WORDINGS[operation.op][operation.wording][1], self, operation)
            steps.append(f"{clause[0].upper()}{clause[1:]}, so {self.name} has "
                         f"{equation(values[index], operation.op, operation.operand, values[index + 1])}.")
        steps.append(f"The answer is \\boxed{{{self.answer}}}.")
        return steps

    @property
    def split(self) -> Split:
        return split_of(self.text)


def apply(op: str, a: int, b: int) -> int:
    return {"+": a + b, "-": a - b, "*": a * b, "/": a // b}[op]


def equation(a: int, op: str, b: int, result: int) -> str:
    return f"{a} {op} {b} = {result}"


def _fill(template: str, problem: ToyProblem, operation: Operation) -> str:
    k = operation.operand
    times, times_adj = _TIMES.get(k, ("", ""))
    return template.format(n=problem.name, it=problem.item, k=k, times=times, times_adj=times_adj,
                           others=_OTHERS.get(k, ""))


def split_of(text: str) -> Split:
    """The split a problem text belongs to, fixed by its hash so no test text is ever trained on."""
    bucket = int(hashlib.sha256(text.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF
    return "test" if bucket < TEST_FRACTION else "train"


def _random_problem(rng: random.Random) -> ToyProblem:
    value = rng.randint(2, MAX_START)
    start = value
    operations = []
    for _ in range(rng.randint(2, 6)):
        choices: list[tuple[Op, int]] = []
        choices += [("+", k) for k in range(1, MAX_OPERAND + 1) if value + k <= MAX_VALUE]
        choices += [("-", k) for k in range(1, min(MAX_OPERAND, value - 1) + 1)]
        choices += [("*", k) for k in (2, 3) if value * k <= MAX_VALUE]
        choices += [("/", k) for k in (2, 3, 4, 5) if value % k == 0 and value // k >= 1]
        by_op: dict[str, list[tuple[Op, int]]] = {}
        for op, k in choices:
            by_op.setdefault(op, []).append((op, k))
        op, k = rng.choice(by_op[rng.choice(sorted(by_op))])
        operations.append(Operation(op, k, rng.randrange(len(_WORDINGS[op]))))
        value = apply(op, value, k)
    return ToyProblem(rng.choice(NAMES), rng.choice(ITEMS), start, tuple(operations), rng.randrange(len(_QUESTIONS)))


def generate(n: int, split: Split, seed: int) -> list[ToyProblem]:
    """``n`` distinct problems of ``split``, a pure function of (n, split, seed)."""
    rng = random.Random(f"prmfactory-toy:{seed}")
    problems: list[ToyProblem] = []
    seen: set[str] = set()
    while len(problems) < n:
        problem = _random_problem(rng)
        if problem.split == split and problem.text not in seen:
            seen.add(problem.text)
            problems.append(problem)
    return problems


def to_input_row(problem: ToyProblem) -> dict:
    """The problem as a line of ``mcts --input`` (prmfactory shape)."""
    return {"id": "toy-" + hashlib.sha256(problem.text.encode()).hexdigest()[:12],
            "problem": problem.text, "answer": str(problem.answer)}


# ----- parsing a problem text back (the oracle judges problems given only as text) -------------
def _template_regex(template: str) -> str:
    pattern = re.escape(template)
    for field, group in (("n", r"(?P<n>[A-Z][a-z]+)"), ("it", r"(?P<it>[a-z]+)"), ("k", r"(?P<k>\d+)"),
                         ("times", r"(?P<times>doubles|triples)"), ("times_adj", r"(?P<times_adj>doubled|tripled)"),
                         ("others", r"(?P<others>\d friends?)")):
        pattern = pattern.replace(re.escape("{" + field + "}"), group)
    return pattern


_SENTENCE_PATTERNS = [(op, index, re.compile(_template_regex(wording[0])))
                      for op, wordings in _WORDINGS.items() for index, wording in enumerate(wordings)]
_START = re.compile(r"(?P<n>[A-Z][a-z]+) has (?P<k>\d+) (?P<it>[a-z]+)\. ")
_QUESTION_PATTERNS = [re.compile(_template_regex(q)) for q in _QUESTIONS]


def parse_problem(text: str) -> ToyProblem | None:
    """Rebuild a :class:`ToyProblem` from its text, or None when the text is not a toy problem."""
    start = _START.match(text)
    if not start:
        return None
    name, item, position = start["n"], start["it"], start.end()
    operations = []
    while True:
        for op, index, pattern in _SENTENCE_PATTERNS:
            match = pattern.match(text, position)
            if match and match.groupdict().get("n", name) == name and match.groupdict().get("it", item) == item:
                operand = _operand(op, match)
                operations.append(Operation(op, operand, index))
                position = match.end() + 1
                break
        else:
            break
    for index, pattern in enumerate(_QUESTION_PATTERNS):
        match = pattern.fullmatch(text, position)
        if match and match["n"] == name and match["it"] == item and 2 <= len(operations) <= 6:
            problem = ToyProblem(name, item, int(start["k"]), tuple(operations), index)
            return problem if problem.text == text and _exact(problem) else None
    return None


def _operand(op: str, match: re.Match) -> int:
    groups = match.groupdict()
    if groups.get("times"):
        return 2 if groups["times"] == "doubles" else 3
    if groups.get("times_adj"):
        return 2 if groups["times_adj"] == "doubled" else 3
    if groups.get("others"):
        return int(groups["others"].split()[0]) + 1
    return int(groups["k"])


def _exact(problem: ToyProblem) -> bool:
    """Every division exact and every value non-negative, as the generator guarantees."""
    value = problem.start
    for operation in problem.operations:
        if operation.op == "/" and (operation.operand == 0 or value % operation.operand):
            return False
        value = apply(operation.op, value, operation.operand)
        if value < 0:
            return False
    return True
