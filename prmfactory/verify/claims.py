"""Extraction of checkable claims from a step's text.

A step is normalised (LaTeX delimiters and operators, currency, thousands separators, unit
words, annotations in parentheses) and scanned for ``=`` and ``≈``. Each relation yields a
:class:`Claim` between the expression that ends just before it and the one that starts just
after it. An expression stops at a *boundary*: another relation, punctuation, or a word.

Being conservative is the point — a claim is only extracted when both sides are complete:
a side whose neighbouring word could be part of it ("1/3 **of** 18 = 6", "sin(30) = 0.5",
"the sum of 3 **and** 4 = 7") is dropped, and so is a relation between different units
("1 hour = 60 minutes", "3 dozen = 36"). The sentence of each claim is kept so the checker can
tell a claim being rejected ("9 + 3 = 12, which does not work") from one being asserted.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

# Words that join numbers into a larger expression: a side next to one of them is incomplete.
OPERATOR_WORDS = {
    "of", "times", "plus", "minus", "by", "per", "divided", "multiplied", "and", "less", "more", "over", "than",
    "half", "twice", "double", "triple", "quarter", "third", "percent", "each", "squared", "cubed", "sum",
    "product", "difference", "quotient", "from", "to", "into", "out", "remainder", "mod", "modulo", "choose",
    "factorial", "root", "power", "dozen", "hundred", "thousand", "million", "billion", "pairs", "pair", "score",
    "gross",
}
# Multiplier units: a quantity in them is not the bare number ("3 dozen = 36").
MULTIPLIER_UNITS = {"dozen", "dozens", "hundred", "hundreds", "thousand", "thousands", "million", "millions",
                    "billion", "billions", "k", "score", "pair", "pairs", "half", "halves", "gross", "percent"}
APPROXIMATE_WORDS = re.compile(r"\b(about|approximately|approx|roughly|around|nearly|rounded|rounding|estimate)\b",
                               re.IGNORECASE)
_LATEX_SPACES = re.compile(r"\\[,;:! ]|\\quad|\\qquad|~")
_TOKEN = re.compile(
    r"(?P<number>\d+(?:\.\d+)?|\.\d+)|(?P<command>\\[a-zA-Z]+)|(?P<word>[a-zA-Z]{2,})|(?P<letter>[a-zA-Z])"
    r"|(?P<relation>≈|=)|(?P<op>\*\*|[-+*/^!%])|(?P<open>[({\[])|(?P<close>[)}\]])|(?P<newline>\s*\n\s*)"
    r"|(?P<space>\s+)|(?P<other>.)")
# Words right after a claimed value that make it something else than the value of the left side:
# "= 6 full rotations with 90 left", "= 1 with a remainder of 77", "= 4 times ...".
_UNCLEAN_AFTER = {"with", "remainder", "remainders", "r", "rem", "full", "whole", "complete", "times", "of",
                  "plus", "minus", "less", "more", "squared", "cubed", "over", "divided", "multiplied", "left", "rest"}
# Words after which a bare number starts a claim ("because 187 = 13 * 14") rather than ends a label.
_ASSERTING_WORDS = {"because", "since", "so", "thus", "hence", "therefore", "then", "that", "get", "gives", "have",
                    "has", "is", "are", "was", "were", "yields", "becomes", "obtain", "see", "note"}
_REMAINDER = re.compile(
    r"(?P<a>(?<![\w.])\d+)\s*(?:/|divided by)\s*(?P<b>\d+)\s*(?:=|is|equals)\s*(?P<q>\d+)\s*,?\s*"
    r"(?:with\s+)?(?:a\s+)?(?:remainder|rem\.?|R|r)\s*(?:of\s+)?(?P<r>\d+)(?!\.?\d)")
_EXPRESSION_COMMANDS = {"\\frac", "\\dfrac", "\\tfrac", "\\sqrt", "\\binom", "\\pi", "\\times", "\\cdot", "\\div"}


@dataclass(frozen=True)
class Claim:
    """``left <relation> right`` as written (normalised), with the sentence it stands in."""

    left: str
    right: str
    approximate: bool
    sentence: str
    units: tuple[frozenset, frozenset] = field(default=(frozenset(), frozenset()))
    lead: str = ""  # the text between the previous claim and this one ("" in a chain a = b = c)

    @property
    def text(self) -> str:
        return f"{self.left} {'≈' if self.approximate else '='} {self.right}"


def normalise(text: str) -> str:
    """Plain-text arithmetic from a step: LaTeX operators, currency and separators rewritten."""
    text = text.replace("\\left", "").replace("\\right", "").replace("\\displaystyle", "")
    text = re.sub(r"\\\\\s*&\s*(=|\\approx)", r" \1", text)  # an aligned chain: "a &= b \\\\ &= c" is a = b = c
    text = re.sub(r"\\(?:begin|end)\{[a-zA-Z*]+\}", "\n", text)
    text = _LATEX_SPACES.sub(" ", text)
    text = re.sub(r"\\(?:\(|\))", " ", text)
    text = re.sub(r"\\(?:\[|\])|\\\\", "\n", text)  # display math and line breaks separate formulas
    text = text.replace("&", " ")
    text = re.sub(r"\\text(?:bf|rm|it)?\{([^{}]*)\}", r" \1 ", text)
    text = re.sub(r"\\boxed\{([^{}]*)\}", r"\1", text)
    text = re.sub(r"\^\s*\{?\\circ\}?|°", "", text)
    # annotations, "10 (last night) + 45", but not a product or a power: 2(ab)^2
    text = re.sub(r"(?<![\w)])\(\s*[a-zA-Z]{2,}[a-zA-Z'-]*(?:\s+[a-zA-Z'-]+)*\s*\)(?!\s*\^)", " ", text)
    text = text.replace("\\%", "%").replace("\\$", " ").replace("$", " ")
    text = text.replace("\\approx", "≈").replace("\\neq", "≠").replace("\\ne ", "≠ ")
    for sign, replacement in (("×", "*"), ("·", "*"), ("∙", "*"), ("⋅", "*"), ("÷", "/"), ("−", "-"), ("–", "-"),
                              ("\\times", "*"), ("\\cdot", "*"), ("\\div", "/"), ("\\dfrac", "\\frac"),
                              ("\\tfrac", "\\frac")):
        text = text.replace(sign, f" {replacement} " if replacement in "*/" else replacement)
    text = re.sub(r"(?<=\d)[ \t]*[xX][ \t]*(?=\d)", " * ", text)  # 3 x 4 as a product
    text = text.replace("√", "\\sqrt").replace("²", "^2").replace("³", "^3")
    text = re.sub(r"(?<![\d.])(\d{1,3})((?:,\d{3})+)(?![\d,])", lambda m: m.group(1) + m.group(2).replace(",", ""), text)
    return text


@dataclass
class _Tok:
    kind: str
    text: str
    start: int

    @property
    def end(self) -> int:
        return self.start + len(self.text)


def _joins(before: _Tok, after: _Tok) -> bool:
    """Whether two math tokens, in text order, belong to one expression.

    Two numbers side by side ("310 310 + 190", a line break between formulas) do not; nor does
    a number before a fraction ("3\\frac{4}{5}" is a mixed number), nor implicit multiplication
    across a space ("441 (-20)^2").
    """
    ends_value = before.kind in ("number", "close", "letter") or before.text in ("!", "%")
    if ends_value and after.kind in ("number", "letter") and not (before.kind == "number" and after.kind == "letter"
                                                                  and before.end == after.start):
        return False
    if ends_value and after.kind == "open" and before.end != after.start:
        return False
    return not (before.kind == "number" and after.kind == "command" and after.text == "\\frac")


def _tokens(text: str) -> list[_Tok]:
    return [_Tok(m.lastgroup, m.group(), m.start()) for m in _TOKEN.finditer(text) if m.lastgroup != "space"]


def _is_math(token: _Tok) -> bool:
    return token.kind in ("number", "letter", "op", "open", "close") or (
        token.kind == "command" and token.text in _EXPRESSION_COMMANDS)


def _sentence(text: str, position: int) -> str:
    start = max(text.rfind(". ", 0, position), text.rfind("\n", 0, position), -1) + 1
    ends = [i for i in (text.find(". ", position), text.find("\n", position)) if i != -1]
    return text[start:min(ends) if ends else len(text)].strip()


def _unit_run(tokens: list[_Tok], low: int, high: int) -> bool:
    """Whether the words ``tokens[low..high]`` are units inside an expression ("3 plates *", "6 / plate")."""
    before = tokens[low - 1] if low > 0 else None
    after = tokens[high + 1] if high + 1 < len(tokens) else None
    if before is None or (before.kind == "number" and before.end == tokens[low].start):
        return False  # "2cp^2": a name glued to a number is part of the expression, not a unit
    if before.kind in ("number", "close") and after is not None and after.kind in ("op", "relation"):
        return True
    return before.text == "/" and low >= 2 and tokens[low - 2].kind in ("number", "close")


def _balanced(tokens: list[_Tok]) -> bool:
    depth = 0
    for token in tokens:
        depth += 1 if token.kind == "open" else -1 if token.kind == "close" else 0
        if depth < 0:
            return False
    return depth == 0


def _side(tokens: list[_Tok], index: int, step: int) -> tuple[str, frozenset, bool, int] | None:
    """The expression next to the relation at ``index``, walking ``step`` (-1 left, +1 right).

    Returns (the expression without its unit words, the unit words met, whether its outer
    boundary is clean, its outer offset in the text), or None when there is no expression.
    """
    kept: list[_Tok] = []
    units: set[str] = set()
    position = index + step
    while 0 <= position < len(tokens):
        token = tokens[position]
        if _is_math(token):
            if kept and not (_joins(token, kept[-1]) if step == -1 else _joins(kept[-1], token)):
                break
            kept.append(token)
            position += step
            continue
        if token.kind != "word":
            break
        far = position
        while 0 <= far + step < len(tokens) and tokens[far + step].kind == "word":
            far += step
        low, high = min(position, far), max(position, far)
        if not _unit_run(tokens, low, high) or (not kept and tokens[low - 1].text != "/"):
            break  # a word right before the relation labels the left side ("8 boxes = 8 * 20"): no claim
        units.update(t.text.lower() for t in tokens[low:high + 1])
        if tokens[low - 1].text == "/":  # "6 / plate": drop the per-unit division too
            if step == 1 and kept[-1] is tokens[low - 1]:
                kept.pop()
            elif step == -1:
                position = low - 2
                continue
        position = far + step
    boundary = tokens[position] if 0 <= position < len(tokens) else None
    glued = bool(kept) and boundary is not None and (
        boundary.start == kept[-1].end if step == 1 else boundary.end == kept[-1].start)
    if step == -1:
        kept.reverse()
    if kept and step == -1 and kept[0].text == "-" and len(kept) > 1 and kept[0].end < kept[1].start and (
            boundary is None or boundary.kind == "newline"):
        kept = kept[1:]  # a bullet: "- 2 * 3 = 6"
    if not kept or not _balanced(kept) or (kept[-1].kind == "op" and kept[-1].text not in "!%"):
        return None
    if kept[0].kind == "op" and (kept[0].text != "-" or (boundary is not None and boundary.kind in (
            "number", "close", "letter", "word"))):
        return None  # a binary operator whose left operand is cut off
    clean = _clean_boundary(tokens, position, kept, step, glued, units)
    text = "".join((" " if i and kept[i - 1].end != t.start else "") + t.text for i, t in enumerate(kept))
    return text, frozenset(units), clean, kept[0].start if step == -1 else kept[-1].end


def _clean_boundary(tokens: list[_Tok], position: int, kept: list[_Tok], step: int, glued: bool,
                    units: set[str]) -> bool:
    """Whether the token that ended a side leaves the side complete; trailing unit words go into ``units``."""
    boundary = tokens[position] if 0 <= position < len(tokens) else None
    if boundary is None or boundary.kind in ("relation", "newline"):
        return True
    if boundary.kind == "word":
        word = boundary.text.lower()
        if glued:
            return False  # a name glued to the expression: 68AC, (lw + ...)
        if step == -1:
            if len(kept) == 1 and kept[0].kind == "number" and word not in _ASSERTING_WORDS:
                return False  # "Multiples of 3 or 5 = 100 + 60": a bare number after a word belongs to a label
            function_call = tokens[position + 1].kind == "open" and boundary.end == tokens[position + 1].start
            return word not in OPERATOR_WORDS and not function_call  # not "of 18", not sin(30)
        following = tokens[position + 1:position + 3]
        if word in _UNCLEAN_AFTER or (following and following[0].kind == "open"):
            return False
        if word == "and" and following and (following[0].text == "\\frac" or [t.text for t in following][1:] == ["/"]):
            return False  # "= 3 and 1/2": a mixed number in words
        if kept[-1].kind in ("number", "close"):
            units.add(word)  # "= 800 gallons"
        return True
    if boundary.kind == "command":
        return False  # \\sin, \\log, \\ldots, \\overline ...: part of something this parser does not read
    if boundary.kind == "other":
        following = tokens[position + step] if 0 <= position + step < len(tokens) else None
        return boundary.text not in "_'|<>^." or (boundary.text == "." and step == 1 and (
            following is None or following.start > boundary.end and following.kind not in ("number", "command")))
    return boundary.kind not in ("number", "letter", "open", "close", "op")  # stopped by _joins: it may continue


def _remainder_claims(text: str) -> list[Claim]:
    """``a ÷ b = q with a remainder of r`` read as the claim ``a = b * q + r``."""
    return [Claim(m["a"], f"{m['b']} * {m['q']} + {m['r']}", False, _sentence(text, m.start()))
            for m in _REMAINDER.finditer(text) if text[:m.start()].rstrip()[-1:] not in tuple("+-*/^(")]


def extract(step: str) -> list[Claim]:
    """Every claim of ``step`` whose two sides are complete expressions, then its division remainders."""
    text = normalise(step)
    tokens = _tokens(text)
    claims = []
    previous_end = 0
    for index, token in enumerate(tokens):
        if token.kind != "relation":
            continue
        left, right = _side(tokens, index, -1), _side(tokens, index, 1)
        if left is None or right is None or not (left[2] and right[2]):
            continue
        left_text, l_units, _, start = left
        right_text, r_units, _, end = right
        if (l_units | r_units) & MULTIPLIER_UNITS:
            continue
        stems = lambda units: {u.rstrip("s") for u in units}  # noqa: E731
        if l_units and r_units and not stems(r_units) <= stems(l_units):
            continue
        sentence = _sentence(text, token.start)
        approximate = token.text == "≈" or bool(APPROXIMATE_WORDS.search(sentence))
        claims.append(Claim(left_text, right_text, approximate, sentence, (l_units, r_units),
                            text[previous_end:start].strip() if start >= previous_end else ""))
        previous_end = end
    return claims + _remainder_claims(text)
