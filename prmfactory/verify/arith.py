"""A restricted parser from untrusted math text to exact sympy values — no ``eval``, no ``sympify``.

Hand-written because sympy's ``parse_expr`` evaluates Python and LaTeX parsers accept far more
than a step's arithmetic needs. The grammar (precedence climbing)::

    sum     := product (('+' | '-') product)*
    product := unary (('*' | '/' | implicit) unary)*
    unary   := ('-' | '+') unary | power
    power   := postfix ('^' unary)?                  # right-associative
    postfix := atom ('!' | '%')*
    atom    := number | variable | '(' sum ')' | '{' sum '}' | '[' sum ']'
             | \\frac{sum}{sum} | \\sqrt{sum} | \\sqrt[n]{sum} | \\binom{sum}{sum} | \\pi

Numbers are exact (``0.1`` is 1/10). Every construction is bounded: text length, token count,
nesting depth, exponent size and result size, factorial arguments. Anything outside the grammar
or the bounds raises :class:`Unparsable` — the verifier then says "unverifiable", never
"incorrect".
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import sympy

MAX_TEXT = 400
MAX_TOKENS = 200
MAX_DEPTH = 40
MAX_EXPONENT = 10_000
MAX_RESULT_DIGITS = 2_000
MAX_FACTORIAL = 200
VARIABLE_NAMES = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ") - {"e", "i", "E", "I"}

_TOKEN = re.compile(r"\s*(?:(?P<number>\d+(?:\.\d+)?|\.\d+)|(?P<command>\\[a-zA-Z]+)|(?P<name>[a-zA-Z])"
                    r"|(?P<op>\*\*|[-+*/^()!%{}\[\]]))")


class Unparsable(ValueError):
    """The text is not an expression this parser accepts (or exceeds a bound)."""


@dataclass(frozen=True)
class _Token:
    kind: str
    text: str
    spaced: bool = False  # whitespace before it


def tokenize(text: str) -> list[_Token]:
    if len(text) > MAX_TEXT:
        raise Unparsable("expression too long")
    tokens, position = [], 0
    text = text.rstrip()
    while position < len(text):
        match = _TOKEN.match(text, position)
        if not match:
            raise Unparsable(f"unexpected character {text[position]!r}")
        kind = match.lastgroup
        value = match.group(kind)
        if kind == "op" and value == "**":
            value = "^"
        tokens.append(_Token(kind, value, match.start(kind) > position))
        position = match.end()
        if len(tokens) > MAX_TOKENS:
            raise Unparsable("too many tokens")
    return tokens


def _size_ok(value: sympy.Expr) -> sympy.Expr:
    if value.is_Rational and max(len(str(abs(value.p))), len(str(value.q))) > MAX_RESULT_DIGITS:
        raise Unparsable("number too large")
    return value


class _Parser:
    def __init__(self, tokens: list[_Token], imaginary: bool):
        self.tokens, self.position, self.depth, self.imaginary = tokens, 0, 0, imaginary

    def peek(self) -> _Token | None:
        return self.tokens[self.position] if self.position < len(self.tokens) else None

    def take(self, text: str | None = None) -> _Token:
        token = self.peek()
        if token is None or (text is not None and token.text != text):
            raise Unparsable(f"expected {text or 'a token'}")
        self.position += 1
        return token

    def nested(self, method):
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise Unparsable("nested too deeply")
        try:
            return method()
        finally:
            self.depth -= 1

    def parse(self) -> sympy.Expr:
        value = self.sum()
        if self.peek() is not None:
            raise Unparsable(f"unexpected {self.peek().text!r}")
        return value

    def sum(self) -> sympy.Expr:
        value = self.product()
        while (token := self.peek()) is not None and token.text in "+-" and token.kind == "op":
            self.take()
            right = self.product()
            value = _size_ok(value + right if token.text == "+" else value - right)
        return value

    def _starts_atom(self, token: _Token | None) -> bool:
        if token is None:
            return False
        return token.kind in ("number", "name") or token.text in ("(", "{", "[") or (
            token.kind == "command" and token.text in ("\\frac", "\\dfrac", "\\tfrac", "\\sqrt", "\\binom", "\\pi"))

    def product(self) -> sympy.Expr:
        value = self.unary()
        divided = False
        while True:
            token = self.peek()
            if token is not None and (token.text in ("*", "/") or token.text in ("\\times", "\\cdot", "\\div")):
                self.take()
                divided = divided or token.text in ("/", "\\div")
                right = self.unary()
                if token.text in ("/", "\\div"):
                    if right == 0:
                        raise Unparsable("division by zero")
                    value = value / right
                else:
                    value = value * right
            elif self._starts_atom(token):  # implicit multiplication: 2(3+4), 3x
                if divided:  # 4√3 / 6√3: is it (4√3)/(6√3)? Writers disagree, so do not guess.
                    raise Unparsable("implicit multiplication after a division")
                value = value * self.unary()
            else:
                return value
            _size_ok(value)

    def unary(self) -> sympy.Expr:
        token = self.peek()
        if token is not None and token.text in ("-", "+") and token.kind == "op":
            self.take()
            value = self.nested(self.unary)
            return -value if token.text == "-" else value
        return self.power()

    def power(self) -> sympy.Expr:
        base = self.postfix()
        if (token := self.peek()) is not None and token.text == "^":
            self.take()
            exponent = self.nested(self.unary)
            return _bounded_power(base, exponent)
        return base

    def postfix(self) -> sympy.Expr:
        value = self.atom()
        while (token := self.peek()) is not None and token.text in ("!", "%") and token.kind == "op":
            self.take()
            if token.text == "%":
                value = value / 100
            else:
                if not (value.is_Integer and 0 <= value <= MAX_FACTORIAL):
                    raise Unparsable("factorial argument out of range")
                value = sympy.factorial(value)
        return value

    def group(self, opening: str, closing: str) -> sympy.Expr:
        self.take(opening)
        value = self.nested(self.sum)
        self.take(closing)
        return value

    def atom(self) -> sympy.Expr:
        token = self.peek()
        if token is None:
            raise Unparsable("unexpected end")
        if token.kind == "number":
            self.take()
            return sympy.Rational(token.text) if "." in token.text else sympy.Integer(token.text)
        if token.kind == "name":
            if token.text == "i" and self.imaginary:
                self.take()
                return sympy.I
            if token.text not in VARIABLE_NAMES:
                raise Unparsable(f"ambiguous name {token.text!r}")
            self.take()
            following = self.peek()
            if following is not None and following.text == "(" and not following.spaced:
                raise Unparsable(f"function application {token.text}(...)")
            return sympy.Symbol(token.text)
        pairs = {"(": ")", "{": "}", "[": "]"}
        if token.text in pairs:
            return self.group(token.text, pairs[token.text])
        if token.kind == "command":
            self.take()
            if token.text in ("\\frac", "\\dfrac", "\\tfrac"):
                numerator = self.group("{", "}")
                denominator = self.group("{", "}")
                if denominator == 0:
                    raise Unparsable("division by zero")
                return _size_ok(numerator / denominator)
            if token.text == "\\sqrt":
                index = self.group("[", "]") if (self.peek() and self.peek().text == "[") else sympy.Integer(2)
                following = self.peek()
                if following is not None and following.text in ("{", "("):
                    radicand = self.group(following.text, "}" if following.text == "{" else ")")
                else:
                    radicand = self.nested(self.atom)  # √169, \sqrt3
                return _bounded_power(radicand, 1 / index)
            if token.text == "\\binom":
                n, k = self.group("{", "}"), self.group("{", "}")
                if not (n.is_Integer and k.is_Integer and 0 <= k <= n <= MAX_FACTORIAL):
                    raise Unparsable("binomial out of range")
                return sympy.binomial(n, k)
            if token.text == "\\pi":
                return sympy.pi
        raise Unparsable(f"unexpected {token.text!r}")


def _bounded_power(base: sympy.Expr, exponent: sympy.Expr) -> sympy.Expr:
    if not exponent.is_number:
        if exponent.free_symbols and not base.free_symbols and base.is_number:
            raise Unparsable("variable exponent")
        raise Unparsable("symbolic exponent")
    if exponent.is_Rational and abs(exponent) > MAX_EXPONENT:
        raise Unparsable("exponent too large")
    if base.is_Rational and exponent.is_Integer and base not in (0, 1, -1):
        digits = abs(int(exponent)) * max(len(str(abs(base.p))), len(str(base.q)))
        if digits > MAX_RESULT_DIGITS:
            raise Unparsable("power too large")
    if base == 0 and exponent.is_number and exponent <= 0:
        raise Unparsable("zero to a non-positive power")
    return _size_ok(sympy.Pow(base, exponent))


def parse(text: str, *, imaginary: bool = False) -> sympy.Expr:
    """The exact value (or symbolic expression) of ``text``; raises :class:`Unparsable`.

    ``imaginary``: read ``i`` as the imaginary unit (the caller decides from the step's context).
    """
    tokens = tokenize(text)
    if not tokens:
        raise Unparsable("empty")
    try:
        return _Parser(tokens, imaginary).parse()
    except RecursionError as exc:
        raise Unparsable("nested too deeply") from exc
