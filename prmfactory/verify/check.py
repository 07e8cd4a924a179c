"""Exact checks of a step's claims: arithmetic, identities, solutions of equations.

Verdict per claim, from :mod:`prmfactory.verify.claims`:

* **arithmetic** (no variables): exact comparison of the two sides; a side written with ``d``
  decimals, or an approximate claim (≈, "about", "rounded"), gets a tolerance of one unit in
  the last decimal shown; a small mismatch where rounded decimals appear is "unverifiable"
  (it may be carried rounding), never "incorrect".
* **identity** (variables on both sides): ``left - right`` expanded; zero is correct, a nonzero
  constant is an incorrect rewrite, anything else is an equation being set up or solved.
* **solution** ``v = number`` after an equation in ``v`` alone within the same step: substituted
  into that equation.

A claim that would be "incorrect" but stands in a sentence that tests, supposes or rejects it
("if", "not", "≠", "which does not work", a question) is "unverifiable": the step is not asserting
it. The step is incorrect when any claim is, correct when some claim is and none is incorrect,
and unverifiable otherwise.

All of this runs in a :class:`prmfactory.sandbox.BoundedWorker` — see :class:`StepVerifier`.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from typing import Sequence

import sympy

from prmfactory.sandbox import TIMED_OUT, BoundedWorker, WorkerClient
from prmfactory.verify.arith import Unparsable, parse
from prmfactory.verify.claims import Claim, extract

CORRECT, INCORRECT, UNVERIFIABLE = "correct", "incorrect", "unverifiable"
MAX_STEP_CHARS = 20_000
SECONDS_PER_CLAIM = 1.0
MAX_DEGREE = 4
_REJECTION = re.compile(
    r"\b(not|no|isn't|doesn't|don't|cannot|can't|false|incorrect|wrong|invalid|impossible|contradiction|if|suppose|"
    r"assume|assuming|test|testing|try|trying|check|checking|instead|but|mistake|error|should|would|could)\b|≠|\?|"
    r"n't\b", re.IGNORECASE)
_DECIMALS = re.compile(r"\d+\.(\d+)")


@dataclass(frozen=True)
class ClaimVerdict:
    text: str
    kind: str
    verdict: str
    value_found: str | None
    value_claimed: str | None


@dataclass(frozen=True)
class StepVerdict:
    verdict: str
    claims: tuple[ClaimVerdict, ...]

    def claim_rows(self) -> list[dict]:
        return [asdict(c) for c in self.claims]


def _decimals(text: str) -> int:
    found = _DECIMALS.findall(text)
    return max((len(d) for d in found), default=0)


def _show(value: sympy.Expr) -> str:
    if value.is_Rational and value.q != 1:
        return f"{value} (= {sympy.N(value, 12)})"
    return str(value)[:200]


def _arithmetic(claim: Claim, left: sympy.Expr, right: sympy.Expr) -> ClaimVerdict:
    found, claimed = _show(left), _show(right)
    if sympy.simplify(left - right) == 0:
        return ClaimVerdict(claim.text, "arithmetic", CORRECT, found, claimed)
    if not (left.is_real and right.is_real):
        return ClaimVerdict(claim.text, "arithmetic", UNVERIFIABLE, found, claimed)
    shown = _decimals(claim.right)
    difference = abs(float(sympy.N(left - right, 30)))
    scale = max(abs(float(sympy.N(right, 30))), 1e-12)
    tolerance = 10.0 ** -shown if (shown or claim.approximate) else 0.0
    if difference <= tolerance * (1 + 1e-9):
        return ClaimVerdict(claim.text, "approximate", CORRECT, found, claimed)
    rounded_inputs = _decimals(claim.left) > 0 or claim.approximate or shown > 0
    if rounded_inputs and difference / scale <= (0.02 if claim.approximate else 0.005):
        return ClaimVerdict(claim.text, "approximate", UNVERIFIABLE, found, claimed)
    return ClaimVerdict(claim.text, "arithmetic", INCORRECT, found, claimed)


def _polynomial_in(equation: sympy.Expr, symbol: sympy.Symbol) -> bool:
    try:
        return sympy.Poly(equation, symbol).degree() <= MAX_DEGREE
    except sympy.PolynomialError:
        return False


def _solution(claim: Claim, symbol: sympy.Symbol, value: sympy.Expr, equations: list[sympy.Expr]) -> ClaimVerdict:
    """``v = value`` right after an equation in ``v`` alone (in the same sentence): substitute it."""
    for equation in reversed(equations):
        if equation.free_symbols == {symbol} and _polynomial_in(equation, symbol):
            residual = sympy.expand(equation.subs(symbol, value))
            if residual == 0:
                return ClaimVerdict(claim.text, "solution", CORRECT, "0", "0")
            shown = _decimals(claim.right) or _decimals(claim.left)
            if shown or claim.approximate:
                roots = [r for r in sympy.Poly(equation, symbol).nroots(n=15) if abs(sympy.im(r)) < 1e-9]
                if any(abs(float(sympy.re(r)) - float(value)) <= 10.0 ** -shown * (1 + 1e-9) for r in roots):
                    return ClaimVerdict(claim.text, "solution", CORRECT, ", ".join(f"{float(sympy.re(r)):.6g}" for r in roots),
                                        claim.right)
            roots = sympy.Poly(equation, symbol).nroots(n=15)
            shown_roots = ", ".join(f"{complex(r):.6g}".replace("+0j", "").strip("()") for r in roots)
            return ClaimVerdict(claim.text, "solution", INCORRECT, shown_roots or "no root", claim.right)
    return ClaimVerdict(claim.text, "definition", UNVERIFIABLE, None, claim.right)


def _is_quotient(claim: Claim, right: sympy.Expr) -> bool:
    """``a / b = q`` with q the integer part of a/b: a quotient with a remainder elsewhere, not a wrong value."""
    match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", claim.left)
    return bool(match) and right.is_Integer and int(match[2]) != 0 and int(match[1]) // int(match[2]) == right


def _check_claim(claim: Claim, previous: tuple[Claim, sympy.Expr] | None) -> tuple[ClaimVerdict, sympy.Expr | None]:
    """The verdict of one claim, and the equation it states (``left - right``) if it is one."""
    try:
        left, right = parse(claim.left), parse(claim.right)
    except Unparsable as exc:
        return ClaimVerdict(claim.text, "unparsed", UNVERIFIABLE, None, str(exc)), None
    if not left.free_symbols and not right.free_symbols:
        verdict = _arithmetic(claim, left, right)
        if verdict.verdict == INCORRECT and "%" in claim.text:
            unscaled = _arithmetic(claim, parse(claim.left.replace("%", "")), parse(claim.right.replace("%", "")))
            verdict = unscaled if unscaled.verdict != INCORRECT else verdict  # "0.4 * 100 = 40%"
        if verdict.verdict == INCORRECT and _is_quotient(claim, right):
            verdict = ClaimVerdict(claim.text, "quotient", UNVERIFIABLE, verdict.value_found, verdict.value_claimed)
        return verdict, None
    difference = sympy.expand(left - right)
    if isinstance(left, sympy.Symbol) and not right.free_symbols:
        if previous is not None and previous[0].sentence == claim.sentence:
            return _solution(claim, left, right, [previous[1]]), None
        return ClaimVerdict(claim.text, "definition", UNVERIFIABLE, None, claim.right), None
    if difference == 0:
        return ClaimVerdict(claim.text, "identity", CORRECT, "0", "0"), None
    bare = isinstance(left, sympy.Symbol) or isinstance(right, sympy.Symbol)
    if not difference.free_symbols and left.free_symbols and right.free_symbols and not bare:
        return ClaimVerdict(claim.text, "identity", INCORRECT, str(difference), "0"), None
    return ClaimVerdict(claim.text, "equation", UNVERIFIABLE, None, None), difference


def verify_step(step: str) -> StepVerdict:
    """Verdict and evidence for one step (call inside the sandbox: sympy may be slow)."""
    if len(step) > MAX_STEP_CHARS:
        return StepVerdict(UNVERIFIABLE, (ClaimVerdict(step[:80], "too_long", UNVERIFIABLE, None, None),))
    verdicts = []
    previous: tuple[Claim, sympy.Expr] | None = None
    for claim in extract(step):
        try:
            verdict, equation = _check_claim(claim, previous)
        except Exception as exc:  # sympy on odd input: never a crash, never a flag
            verdict, equation = ClaimVerdict(claim.text, "error", UNVERIFIABLE, None,
                                             f"{type(exc).__name__}: {exc}"[:200]), None
        previous = (claim, equation) if equation is not None else None
        if verdict.verdict == INCORRECT and _REJECTION.search(claim.sentence):
            verdict = ClaimVerdict(verdict.text, verdict.kind, UNVERIFIABLE, verdict.value_found,
                                   f"{verdict.value_claimed} (not asserted: tested or rejected)")
        verdicts.append(verdict)
    kinds = {v.verdict for v in verdicts}
    overall = INCORRECT if INCORRECT in kinds else CORRECT if CORRECT in kinds else UNVERIFIABLE
    return StepVerdict(overall, tuple(verdicts))


def _verify_steps(steps: list[str]) -> list[StepVerdict]:
    return [verify_step(step) for step in steps]


def _warm_up() -> None:
    verify_step("1 + 1 = 2")


class StepVerifier(WorkerClient):
    """Verifies steps in a killable worker: at most ``SECONDS_PER_CLAIM`` of wall time per claim."""

    def __init__(self, seconds_per_claim: float = SECONDS_PER_CLAIM):
        self._worker = BoundedWorker(_verify_steps, timeout_s=seconds_per_claim, warm_up=_warm_up)

    def verify(self, steps: Sequence[str]) -> list[StepVerdict]:
        weights = [1 + min(step.count("=") + step.count("≈"), 50) for step in steps]
        results = self._worker.map(list(steps), weights=weights)
        return [StepVerdict(UNVERIFIABLE, (ClaimVerdict(step[:80], "timeout", UNVERIFIABLE, None, None),))
                if result is TIMED_OUT else result for step, result in zip(steps, results)]
