"""DynamoDB expressions for the in-memory table: parse once, evaluate on attribute-value items.

Just enough of DynamoDB's expression language for what ``CallStore`` and ``FailureRecorder``
send, with DynamoDB's semantics (so the fake answers as the table does, without moto's cost):

* conditions: ``AND``, ``OR``, ``NOT``, parentheses, ``attribute_exists(p)``,
  ``attribute_not_exists(p)`` and the comparisons ``= <> < <= > >=`` between paths and
  ``:values``; a path is ``#name`` or a nested map path ``#a.#b``. A missing attribute
  compares unequal to everything (so ``#a <> :v`` holds when ``#a`` is absent);
* updates: ``SET`` (``p = operand``, ``if_not_exists(p, operand)``, ``operand + operand`` and
  ``-`` on numbers; every right-hand side reads the item as it was *before* the update) and
  ``REMOVE`` (absent attributes are fine);
* projections: ``#a, #b``.

Placeholders are checked as DynamoDB checks them: one used but not defined, or defined but
unused by every expression of the request, is a ``ValidationException`` (raised here as
:class:`ExpressionError`).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from decimal import Decimal
from functools import lru_cache
from typing import Any

Item = Mapping[str, Any]
Path = tuple[str, ...]  # placeholders, e.g. ("#failure", "#fingerprint")
Names = Mapping[str, str]
Values = Mapping[str, Any]
Eval = Callable[[Item, Names, Values], Any]
Test = Callable[[Item, Names, Values], bool]

_TOKEN = re.compile(r"\s*(#\w+|:\w+|<>|<=|>=|[=<>()+,.\-]|[A-Za-z_]\w*)")
_COMPARATORS = {
    "=": lambda a, b: a == b,
    "<>": lambda a, b: a != b,
    "<": lambda a, b: a < b,
    "<=": lambda a, b: a <= b,
    ">": lambda a, b: a > b,
    ">=": lambda a, b: a >= b,
}


class ExpressionError(ValueError):
    """An expression DynamoDB would refuse (``ValidationException``)."""


def _tokens(expression: str) -> list[str]:
    tokens, position = [], 0
    text = expression.rstrip()
    while position < len(text):
        match = _TOKEN.match(text, position)
        if match is None:
            raise ExpressionError(f"invalid expression near {text[position:][:20]!r}")
        tokens.append(match.group(1))
        position = match.end()
    return tokens


class _Parser:
    def __init__(self, expression: str) -> None:
        self.tokens = _tokens(expression)
        self.index = 0
        self.names: set[str] = set()
        self.values: set[str] = set()

    def peek(self) -> str | None:
        return self.tokens[self.index] if self.index < len(self.tokens) else None

    def take(self, expected: str | None = None) -> str:
        token = self.peek()
        if token is None or (expected is not None and token.upper() != expected):
            raise ExpressionError(f"expected {expected or 'a token'}, found {token!r}")
        self.index += 1
        return token

    def keyword(self, word: str) -> bool:
        token = self.peek()
        if token is not None and token.upper() == word:
            self.index += 1
            return True
        return False

    def done(self) -> None:
        if self.peek() is not None:
            raise ExpressionError(f"unexpected {self.peek()!r}")

    # -- operands --------------------------------------------------------------------------

    def path(self) -> Path:
        parts = [self.name()]
        while self.peek() == ".":
            self.take(".")
            parts.append(self.name())
        return tuple(parts)

    def name(self) -> str:
        token = self.take()
        if not token.startswith("#"):
            raise ExpressionError(f"expected a #name, found {token!r}")
        self.names.add(token)
        return token

    def operand(self) -> Eval:
        token = self.peek()
        if token is not None and token.startswith(":"):
            self.take()
            self.values.add(token)
            return lambda _item, _names, values: values[token]
        if token is not None and token.lower() == "if_not_exists":
            self.take()
            self.take("(")
            path = self.path()
            self.take(",")
            default = self.value()
            self.take(")")

            def if_not_exists(item: Item, names: Names, values: Values) -> Any:
                found = resolve(item, path, names)
                return default(item, names, values) if found is None else found

            return if_not_exists
        path = self.path()
        return lambda item, names, _values: resolve(item, path, names)

    def value(self) -> Eval:
        left = self.operand()
        if self.peek() not in ("+", "-"):
            return left
        sign = 1 if self.take() == "+" else -1
        right = self.operand()

        def arithmetic(item: Item, names: Names, values: Values) -> Any:
            a, b = left(item, names, values), right(item, names, values)
            if a is None or b is None or "N" not in a or "N" not in b:
                raise ExpressionError("an operand in the update expression has the wrong type")
            return {"N": str(Decimal(a["N"]) + sign * Decimal(b["N"]))}

        return arithmetic

    # -- conditions ------------------------------------------------------------------------

    def condition(self) -> Test:
        terms = [self.conjunction()]
        while self.keyword("OR"):
            terms.append(self.conjunction())
        if len(terms) == 1:
            return terms[0]
        return lambda item, names, values: any(t(item, names, values) for t in terms)

    def conjunction(self) -> Test:
        terms = [self.negation()]
        while self.keyword("AND"):
            terms.append(self.negation())
        if len(terms) == 1:
            return terms[0]
        return lambda item, names, values: all(t(item, names, values) for t in terms)

    def negation(self) -> Test:
        if self.keyword("NOT"):
            inner = self.negation()
            return lambda item, names, values: not inner(item, names, values)
        return self.primary()

    def primary(self) -> Test:
        lexeme = self.peek()
        if lexeme == "(":
            self.take("(")
            inner = self.condition()
            self.take(")")
            return inner
        if lexeme is not None and lexeme.lower() in ("attribute_exists", "attribute_not_exists"):
            self.take()
            self.take("(")
            path = self.path()
            self.take(")")
            wanted = lexeme.lower() == "attribute_exists"
            return lambda item, names, _values: (resolve(item, path, names) is not None) is wanted
        left = self.operand()
        comparator = self.take()
        if comparator not in _COMPARATORS:
            raise ExpressionError(f"expected a comparator, found {comparator!r}")
        right = self.operand()
        compare = _COMPARATORS[comparator]

        def comparison(item: Item, names: Names, values: Values) -> bool:
            a, b = left(item, names, values), right(item, names, values)
            if a is None or b is None:
                return comparator == "<>"  # a missing attribute equals nothing
            ka, kb = _comparable(a), _comparable(b)
            if ka[0] != kb[0]:
                return comparator == "<>"
            if comparator not in ("=", "<>") and ka[0] not in ("N", "S", "B"):
                return False
            return bool(compare(ka[1], kb[1]))

        return comparison


def _comparable(value: Mapping[str, Any]) -> tuple[str, Any]:
    (kind, raw), *_ = value.items()
    if kind == "N":
        return kind, Decimal(raw)
    return kind, raw


def resolve(item: Item, path: Path, names: Mapping[str, str]) -> Any:
    """The attribute value at ``path`` (placeholders) in ``item``, or None when absent."""
    current: Any = item
    for depth, placeholder in enumerate(path):
        if depth:
            if not isinstance(current, Mapping) or "M" not in current:
                return None
            current = current["M"]
        current = current.get(names[placeholder])
        if current is None:
            return None
    return current


class Condition:
    def __init__(self, expression: str) -> None:
        parser = _Parser(expression)
        self._test = parser.condition()
        parser.done()
        self.names, self.values = frozenset(parser.names), frozenset(parser.values)

    def holds(self, item: Item, names: Names, values: Values) -> bool:
        return self._test(item, names, values)


class Update:
    def __init__(self, expression: str) -> None:
        parser = _Parser(expression)
        self.sets: list[tuple[str, Callable[..., Any]]] = []
        self.removals: list[str] = []
        seen = False
        while parser.peek() is not None:
            seen = True
            if parser.keyword("SET"):
                while True:
                    target = self._top_level(parser.path())
                    parser.take("=")
                    self.sets.append((target, parser.value()))
                    if parser.peek() != ",":
                        break
                    parser.take(",")
            elif parser.keyword("REMOVE"):
                while True:
                    self.removals.append(self._top_level(parser.path()))
                    if parser.peek() != ",":
                        break
                    parser.take(",")
            else:
                raise ExpressionError(f"expected SET or REMOVE, found {parser.peek()!r}")
        if not seen:
            raise ExpressionError("empty update expression")
        self.names, self.values = frozenset(parser.names), frozenset(parser.values)

    @staticmethod
    def _top_level(path: Path) -> str:
        if len(path) != 1:
            raise ExpressionError("nested update paths are not supported by the fake")
        return path[0]

    def apply(self, item: Item, names: Names, values: Values) -> dict[str, Any]:
        """The item after the update (a new dict; ``item`` is not changed)."""
        assigned = {names[target]: value(item, names, values) for target, value in self.sets}
        updated = dict(item)
        updated.update(assigned)
        for target in self.removals:
            updated.pop(names[target], None)
        return updated


def projection(expression: str) -> tuple[Path, ...]:
    parser = _Parser(expression)
    paths = [parser.path()]
    while parser.peek() == ",":
        parser.take(",")
        paths.append(parser.path())
    parser.done()
    return tuple(paths)


@lru_cache(maxsize=256)
def condition(expression: str) -> Condition:
    return Condition(expression)


@lru_cache(maxsize=256)
def update(expression: str) -> Update:
    return Update(expression)


@lru_cache(maxsize=256)
def cached_projection(expression: str) -> tuple[Path, ...]:
    return projection(expression)


def check_placeholders(
    used_names: Iterable[str],
    used_values: Iterable[str],
    names: Mapping[str, str],
    values: Mapping[str, Any],
) -> None:
    """DynamoDB's rule: every placeholder used is defined, and every one defined is used."""
    used_n, used_v = set(used_names), set(used_values)
    if undefined := sorted((used_n - names.keys()) | (used_v - values.keys())):
        raise ExpressionError(f"An expression attribute name or value is undefined: {undefined}")
    if unused := sorted((names.keys() - used_n) | (values.keys() - used_v)):
        raise ExpressionError(f"Value provided in ExpressionAttribute* unused: {unused}")
