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
* **rewrite chains** ``A = B = C`` (also ``align`` environments): once ``A = B`` is proved an
  identity, a later link that changes a rational expression is an incorrect rewrite.
* **derivations** between equations in one variable that the words between them call a
  derivation ("combine like terms", "factoring", "⇒"): incorrect when the roots are neither kept,
  narrowed nor widened.
* **complex numbers** where the step writes them (``3 + 4i``, ``i^2``), **remainders**
  (``a ÷ b = q remainder r`` is ``a = b·q + r``).

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
MAX_TRANSFORM_DEGREE = 8
MAX_DERIVATION_GAP = 80
_REJECTION = re.compile(
    r"\b(not|no|isn't|doesn't|don't|cannot|can't|false|incorrect|wrong|invalid|impossible|contradiction|if|suppose|"
    r"assume|assuming|test|testing|try|trying|check|checking|instead|but|mistake|error|should|would|could)\b|≠|\?|"
    r"n't\b", re.IGNORECASE)
# A leading condition with no relation in it ("If Sam had 70 loaves, then ..."): the claim after it is asserted.
_CONDITION = re.compile(r"^\s*(?:if|since|given|assuming|suppose)\b[^,=≈]*,\s*", re.IGNORECASE)
_DECIMALS = re.compile(r"(\d+)\.(\d+)")
# Words between two equations that say the second is derived from the first, and words that say
# they are separate cases or conditions instead.
_DERIVES = re.compile(r"simplif|combin|collect|rearrang|factor|becomes|gives|giving|yields|we get|we have|subtract|divid|multiply|"
                      r"expand|\\Rightarrow|\\implies|⇒|→|=>", re.IGNORECASE)
_CASES = re.compile(r"\b(or|and|case|cases|either|other|another|also|second|roots?|factors?|solutions?|zeros?|numerator|denominator)\b",
                    re.IGNORECASE)
_IMAGINARY = re.compile(r"\di\b|\bi\s*\^\s*\{?2\b")


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
    return max((len(decimals) for _, decimals in _DECIMALS.findall(text)), default=0)


def _rounding(text: str) -> float:
    """Relative error that rounding the decimals shown in ``text`` may cause ("0.33x = 2" after "x/3 = 2")."""
    return sum(0.5 * 10.0 ** -len(d) / max(float(f"{i}.{d}"), 1e-9) for i, d in _DECIMALS.findall(text))


def _show(value: sympy.Expr) -> str:
    if value.is_Rational and value.q != 1:
        return f"{value} (= {sympy.N(value, 12)})"
    return str(value)[:200]


def _has_radical(*expressions: sympy.Expr) -> bool:
    """Whether a power with a non-integer exponent (a root) appears in any of ``expressions``."""
    return any(isinstance(node, sympy.Pow) and not node.exp.is_Integer
               for expression in expressions for node in sympy.preorder_traversal(expression))


def _exact_complex(claim: Claim, left: sympy.Expr, right: sympy.Expr) -> bool:
    """Whether a mismatch between non-real values is exact: no decimals, no approximation, no radicals
    (``\\sqrt[3]{-8}`` is -2 to the writer and a complex principal root to sympy)."""
    return not (_has_radical(left, right) or claim.approximate or _decimals(claim.left) or _decimals(claim.right))


def _arithmetic(claim: Claim, left: sympy.Expr, right: sympy.Expr) -> ClaimVerdict:
    found, claimed = _show(left), _show(right)
    if sympy.simplify(left - right) == 0:
        return ClaimVerdict(claim.text, "arithmetic", CORRECT, found, claimed)
    if not (left.is_real and right.is_real):
        exact = _exact_complex(claim, left, right)
        return ClaimVerdict(claim.text, "arithmetic", INCORRECT if exact else UNVERIFIABLE, found, claimed)
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


def _polynomial_in(equation: sympy.Expr, symbol: sympy.Symbol, max_degree: int = MAX_DEGREE) -> bool:
    try:
        return 0 < sympy.Poly(equation, symbol).degree() <= max_degree
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
            return ClaimVerdict(claim.text, "solution", INCORRECT, _roots_text(equation, symbol), claim.right)
    return ClaimVerdict(claim.text, "definition", UNVERIFIABLE, None, claim.right)


def _roots_text(equation: sympy.Expr, symbol: sympy.Symbol, roots: list | None = None) -> str:
    """The roots of ``equation`` for the evidence (``roots`` when the caller has computed them)."""
    roots = sympy.Poly(equation, symbol).nroots(n=15) if roots is None else roots
    return ", ".join(f"{complex(r):.6g}".replace("+0j", "").strip("()") for r in roots) or "no root"


def _roots_within(inner: sympy.Poly, outer: sympy.Poly) -> bool:
    """Every root of ``inner`` is a root of ``outer`` (exact: the square-free part of inner divides outer)."""
    return outer.rem(inner.sqf_part()).is_zero


def _transform(claim: Claim, equation: sympy.Expr, before: tuple[Claim, sympy.Expr]) -> ClaimVerdict | None:
    """An equation in one variable that the text derives from the equation right before it.

    "0.99B + 1.01B + B = 4500. Combine like terms: 3.01B = 4500": the words between the two say
    the second follows from the first. Valid moves keep the roots, narrow them (dividing out a
    factor) or widen them (squaring), so the claim is incorrect only when its roots are neither
    within nor around the earlier equation's. Cases ("x + 1 = 0 or x + 2 = 0") are not derivations.
    """
    (symbol,) = equation.free_symbols
    earlier_claim, earlier = before
    lead = claim.lead
    if earlier.free_symbols != {symbol} or not _DERIVES.search(lead) or _CASES.search(lead) or (
            len(lead) > MAX_DERIVATION_GAP or "=" in lead or "≈" in lead):  # a relation read as no claim in between
        return None
    if not (_polynomial_in(equation, symbol, MAX_TRANSFORM_DEGREE) and _polynomial_in(earlier, symbol, MAX_TRANSFORM_DEGREE)):
        return None
    new, old = sympy.Poly(equation, symbol), sympy.Poly(earlier, symbol)
    if not all(p.domain.is_QQ or p.domain.is_ZZ for p in (new, old)):
        return None
    if _roots_within(new, old) or _roots_within(old, new):
        return None
    new_roots, old_roots = new.nroots(n=15), old.nroots(n=15)
    tolerance = _rounding(claim.text)
    if tolerance and any(abs(r - s) <= tolerance * max(abs(r), abs(s)) for r in new_roots for s in old_roots):
        return None
    return ClaimVerdict(claim.text, "transform", INCORRECT, _roots_text(equation, symbol, new_roots),
                        f"roots of {earlier_claim.text}: {_roots_text(earlier, symbol, old_roots)}")


def _wrong_rewrite(claim: Claim, left: sympy.Expr, right: sympy.Expr, difference: sympy.Expr) -> bool:
    """A link of a rewrite chain (``A = B = C`` after ``A = B`` was proved) that changes the expression.

    Only plain rational expressions in the same variables on both sides: a radical (sign
    conventions), a decimal (rounding) or a new variable (a substitution) leaves it unverifiable.
    """
    if left.free_symbols != right.free_symbols or _decimals(claim.text) or _has_radical(difference):
        return False
    return (sympy.cancel(difference) if _rational_function(difference) else difference) != 0


def _rational_function(expression: sympy.Expr) -> bool:
    """Whether a variable stands in a denominator (only then can ``cancel`` find a zero ``expand`` missed)."""
    return any(isinstance(node, sympy.Pow) and node.exp.is_negative and node.base.free_symbols
               for node in sympy.preorder_traversal(expression))


def _is_quotient(claim: Claim, right: sympy.Expr) -> bool:
    """``a / b = q`` with q the integer part of a/b: a quotient with a remainder elsewhere, not a wrong value."""
    match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", claim.left)
    return bool(match) and right.is_Integer and int(match[2]) != 0 and int(match[1]) // int(match[2]) == right


@dataclass
class _StepContext:
    """What the earlier claims of a step tell a later one."""

    imaginary: bool  # the step writes complex numbers (3 + 4i, i^2): read i as the imaginary unit
    previous: tuple[Claim, ClaimVerdict] | None = None
    previous_equation: tuple[Claim, sympy.Expr] | None = None  # (claim, left - right) if the previous claim is one

    def continues_identity(self, claim: Claim) -> bool:
        """Whether ``claim`` extends a chain ``A = B = C`` whose last link is a proved identity."""
        if self.previous is None:
            return False
        before, verdict = self.previous
        return (verdict.kind, verdict.verdict) == ("identity", CORRECT) and before.right == claim.left and (
            before.sentence == claim.sentence)


def _check_claim(claim: Claim, context: _StepContext) -> tuple[ClaimVerdict, sympy.Expr | None]:
    """The verdict of one claim, and the equation it states (``left - right``) if it is one."""
    try:
        left, right = parse(claim.left, imaginary=context.imaginary), parse(claim.right, imaginary=context.imaginary)
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
        before = context.previous_equation
        if before is not None and before[0].sentence == claim.sentence:
            return _solution(claim, left, right, [before[1]]), None
        return ClaimVerdict(claim.text, "definition", UNVERIFIABLE, None, claim.right), None
    if difference == 0 or (_rational_function(difference) and sympy.cancel(difference) == 0):
        return ClaimVerdict(claim.text, "identity", CORRECT, "0", "0"), None
    bare = isinstance(left, sympy.Symbol) or isinstance(right, sympy.Symbol)
    if left.free_symbols and right.free_symbols and not bare and (not difference.free_symbols or (
            context.continues_identity(claim) and _wrong_rewrite(claim, left, right, difference))):
        return ClaimVerdict(claim.text, "identity", INCORRECT, str(difference)[:200], "0"), None
    if len(difference.free_symbols) == 1 and context.previous_equation is not None:
        transform = _transform(claim, difference, context.previous_equation)
        if transform is not None:
            return transform, difference
    return ClaimVerdict(claim.text, "equation", UNVERIFIABLE, None, None), difference


def verify_step(step: str) -> StepVerdict:
    """Verdict and evidence for one step (call inside the sandbox: sympy may be slow)."""
    if len(step) > MAX_STEP_CHARS:
        return StepVerdict(UNVERIFIABLE, (ClaimVerdict(step[:80], "too_long", UNVERIFIABLE, None, None),))
    verdicts = []
    context = _StepContext(imaginary=bool(_IMAGINARY.search(step)))
    for claim in extract(step):
        try:
            verdict, equation = _check_claim(claim, context)
        except Exception as exc:  # sympy on odd input: never a crash, never a flag
            verdict, equation = ClaimVerdict(claim.text, "error", UNVERIFIABLE, None,
                                             f"{type(exc).__name__}: {exc}"[:200]), None
        context.previous, context.previous_equation = (claim, verdict), (claim, equation) if equation is not None else None
        if verdict.verdict == INCORRECT and _REJECTION.search(_CONDITION.sub("", claim.sentence, count=1)):
            verdict = ClaimVerdict(verdict.text, verdict.kind, UNVERIFIABLE, verdict.value_found,
                                   f"{verdict.value_claimed} (not asserted: tested or rejected)")
        verdicts.append(verdict)
    return StepVerdict(step_verdict(verdicts), tuple(verdicts))


def step_verdict(claims: Sequence[ClaimVerdict]) -> str:
    """A step's verdict from its claims': incorrect if any is; unverifiable if a computation is
    ungrounded (:mod:`prmfactory.verify.grounding`: the tool cannot vouch for the step); correct if
    some claim is; unverifiable otherwise."""
    kinds = {c.verdict for c in claims}
    if INCORRECT in kinds:
        return INCORRECT
    if any(c.kind == "ungrounded" for c in claims):
        return UNVERIFIABLE
    return CORRECT if CORRECT in kinds else UNVERIFIABLE


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
