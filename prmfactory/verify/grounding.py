"""Grounding: is a correct computation about the problem's quantities, or about numbers it made up?

Exact arithmetic proves ``30 * 2 = 60`` right, not that 2 is the right factor: a step that doubles
where the problem triples, or starts from a value no earlier step reached, computes correctly on
a wrong quantity. Measured on the toy domain, such steps are the whole of the remaining errors
behind a ``correct`` verdict (BENCHMARKS.md, "Label quality"). So a claim the checker found
correct keeps that verdict only if every number on its left side is *given*: it appears in the
problem, in an earlier step of the same solution, or as a number word of either ("twice",
"tripled", "half", "a dozen"). Otherwise the claim is ``unverifiable`` (kind ``ungrounded``): the
tool no longer vouches for the step, and the label rule falls back on the other signals
(GroundedPRM, Zhang et al. 2025, grounds labels in tool checks; this extends the check from the
arithmetic to where its inputs come from). A step's own text never grounds its operands: "the
number is doubled, so 30 * 2 = 60" says 2 itself.

Hand-written: no library checks the provenance of a solution's numbers. It is a text scan, no
sympy and no evaluation, so it runs in the stage process.
"""

from __future__ import annotations

import re
from fractions import Fraction
from typing import Sequence

from prmfactory.verify.check import CORRECT, UNVERIFIABLE, ClaimVerdict, StepVerdict, step_verdict
from prmfactory.verify.claims import normalise

# Number words of everyday problem text, as the value an operand would take.
NUMBER_WORDS = {
    "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8, "nine": 9, "ten": 10,
    "eleven": 11, "twelve": 12, "twenty": 20, "thirty": 30, "fifty": 50, "hundred": 100, "thousand": 1000,
    "once": 1, "twice": 2, "double": 2, "doubled": 2, "doubles": 2, "doubling": 2, "thrice": 3, "triple": 3,
    "tripled": 3, "triples": 3, "tripling": 3, "quadruple": 4, "quadrupled": 4, "quadruples": 4, "half": 2,
    "halves": 2, "halved": 2, "third": 3, "thirds": 3, "quarter": 4, "quarters": 4, "dozen": 12, "dozens": 12,
    "percent": 100, "pair": 2, "pairs": 2,
}
FRACTION_WORDS = {"half", "halves", "halved", "third", "thirds", "quarter", "quarters"}  # also as 1/n: "30 * 0.5"
# Numbers a computation may use without anyone stating them.
ALWAYS_GIVEN = frozenset({Fraction(0), Fraction(1)})
GROUNDED_KINDS = ("arithmetic", "approximate")  # correct claims whose operands are checked
_NUMBER = re.compile(r"(?<![\w.])\d+(?:\.\d+)?|(?<![\w\d])\.\d+")
_WORD = re.compile(r"[a-zA-Z]+")
_PERCENT = re.compile(r"(?<![\w.])(\d+(?:\.\d+)?)\s*(?:%|percent\b)")
_RELATION = re.compile(r"\s[=≈]\s")


def numbers_in(text: str) -> set[Fraction]:
    """Every number written in ``text`` (digits after normalisation, and number words)."""
    plain = normalise(text)
    found = {Fraction(n) for n in _NUMBER.findall(plain)}
    for word in (w.lower() for w in _WORD.findall(plain)):
        if word in NUMBER_WORDS:
            found.add(Fraction(NUMBER_WORDS[word]))
            if word in FRACTION_WORDS:
                found.add(Fraction(1, NUMBER_WORDS[word]))
    if "%" in plain or "percent" in plain.lower():
        found |= {Fraction(n) / 100 for n in _PERCENT.findall(plain)} | {Fraction(100)}
    return found


def given_before_each(problem: str, steps: Sequence[str]) -> list[set[Fraction]]:
    """For each step, the numbers it may compute with: the problem's, and those of the steps before it."""
    given = set(ALWAYS_GIVEN) | numbers_in(problem)
    result = []
    for step in steps:
        result.append(given)
        given = given | numbers_in(step)
    return result


def ungrounded_operand(claim: ClaimVerdict, given: set[Fraction]) -> Fraction | None:
    """The first number on the claim's left side that is not given, if any."""
    left = _RELATION.split(claim.text, maxsplit=1)[0]
    return next((value for value in (Fraction(n) for n in _NUMBER.findall(left)) if value not in given), None)


def with_grounding(verdict: StepVerdict, given: set[Fraction]) -> StepVerdict:
    """``verdict`` with each correct computation on a number not given made ``ungrounded`` (unverifiable)."""
    claims = []
    for claim in verdict.claims:
        missing = ungrounded_operand(claim, given) if claim.verdict == CORRECT and claim.kind in GROUNDED_KINDS else None
        claims.append(claim if missing is None else ClaimVerdict(
            claim.text, "ungrounded", UNVERIFIABLE, claim.value_found, f"{missing} is in neither the problem nor an earlier step"))
    return StepVerdict(step_verdict(claims), tuple(claims))
