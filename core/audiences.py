"""A schedule's audience in the store's terms: the simple, common shapes of an audience
expression translated into conditions the store can answer for every customer at once.

`translate(source, functions)` reads an expression such as
`customer.orders_count > 0 and days_since(customer.last_order_at) >= 90` into a tree of
`Condition`s over customer fields, `customer.attributes.k` values and constants, or None for
anything it does not understand: such an audience is evaluated in the sandbox, customer by
customer, as before. A translated audience must select exactly the customers the sandbox
would, so the tree carries the sandbox's rules: a comparison Python refuses (`None >= 90`,
`'a' < 1`, an attribute that is missing) fails the whole expression, and a failed expression
lets nobody in; `and` and `or` stop at their first operand as Python does.

A condition function takes part by naming its translation (`translated_as`): given the terms
of its arguments, a term of its value or None. `days_since` in the built-in conditions plugin
is one; the core knows none of them by name. The store turns the tree into SQL
(`boomerang.store.audiences`).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from jinja2 import Environment, nodes
from jinja2.exceptions import TemplateSyntaxError
from jinja2.parser import Parser

# The customer's columns an audience can name, by what they hold (see `model.Customer`).
NUMBER_FIELDS = frozenset({"orders_count", "revenue"})
MOMENT_FIELDS = frozenset({"last_order_at", "last_seen_at", "created_at", "updated_at"})
TEXT_FIELDS = frozenset(
    {"email", "phone", "name", "locale", "timezone", "birthday", "gender", "telegram_chat_id", "whatsapp"}
)
_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")  # an attribute key the store's JSON path can name plainly
_INT64 = 2**63
_FLIPPED = {"eq": "eq", "ne": "ne", "lt": "gt", "lteq": "gteq", "gt": "lt", "gteq": "lteq"}
_PARSING = Environment()  # the expression language's syntax; its globals play no part in parsing

F = TypeVar("F", bound=Callable[..., Any])


@dataclass(frozen=True)
class Field:
    """`customer.name`: a column of the customer, of kind `number`, `moment` or `text`."""

    name: str
    kind: str


@dataclass(frozen=True)
class Attribute:
    """`customer.attributes.key`: a JSON value of the customer's attributes, or missing."""

    key: str


@dataclass(frozen=True)
class DaysSince:
    """Whole days from a moment field to now (`(now - moment).days`), None without a moment."""

    moment: Field


@dataclass(frozen=True)
class Constant:
    """A literal: text, a number within 64 bits, a truth value or none."""

    value: str | int | float | bool | None


Value = Field | Attribute | DaysSince | Constant


@dataclass(frozen=True)
class Compare:
    """`left op constant`, `op` one of Jinja's `eq ne lt lteq gt gteq`."""

    op: str
    left: Field | Attribute | DaysSince
    right: Constant


@dataclass(frozen=True)
class Truthy:
    """A value taken as a truth value, as Python's `bool` takes it (a missing one is false)."""

    value: Field | Attribute | DaysSince


@dataclass(frozen=True)
class Always:
    """A constant truth value."""

    value: bool


@dataclass(frozen=True)
class And:
    left: Condition
    right: Condition


@dataclass(frozen=True)
class Or:
    left: Condition
    right: Condition


@dataclass(frozen=True)
class Not:
    condition: Condition


Condition = Compare | Truthy | Always | And | Or | Not


def translated_as(term: Callable[..., Value | None]) -> Callable[[F], F]:
    """Mark a condition function with its translation: `term(*argument_terms)` gives the term
    of the function's value for those arguments, or None where it has none."""

    def mark(function: F) -> F:
        function.audience_term = term  # type: ignore[attr-defined]
        return function

    return mark


def days_since_term(moment: Value) -> DaysSince | None:
    """The term of `days_since(moment)` when `moment` is a moment field of the customer."""
    return DaysSince(moment) if isinstance(moment, Field) and moment.kind == "moment" else None


def translate(source: str, functions: Mapping[str, Callable[..., Any]]) -> Condition | None:
    """The audience expression `source` as a condition, or None where it has a shape this
    module does not know (the sandbox then evaluates it customer by customer).

    `functions` are the expression language's condition functions by name; only those marked
    with `translated_as` can be translated.
    """
    try:
        parser = Parser(_PARSING, source, state="variable")
        node = parser.parse_expression()
        if not parser.stream.eos:
            return None
    except TemplateSyntaxError:
        return None
    return _Translator(functions).condition(node)


class _Translator:
    def __init__(self, functions: Mapping[str, Callable[..., Any]]):
        self.functions = functions

    def condition(self, node: nodes.Node) -> Condition | None:
        if isinstance(node, nodes.And | nodes.Or):
            left, right = self.condition(node.left), self.condition(node.right)
            if left is None or right is None:
                return None
            return And(left, right) if isinstance(node, nodes.And) else Or(left, right)
        if isinstance(node, nodes.Not):
            inner = self.condition(node.node)
            return None if inner is None else Not(inner)
        if isinstance(node, nodes.Compare):
            return self.compare(node)
        value = self.value(node)
        if isinstance(value, Constant):
            return Always(bool(value.value))
        return None if value is None else Truthy(value)

    def compare(self, node: nodes.Compare) -> Compare | None:
        if len(node.ops) != 1 or node.ops[0].op not in _FLIPPED:
            return None  # a chain (`0 < x < 9`), `in`, `not in`
        op = node.ops[0].op
        left, right = self.value(node.expr), self.value(node.ops[0].expr)
        if isinstance(left, Constant) and not isinstance(right, Constant | None):
            left, right, op = right, left, _FLIPPED[op]
        if left is None or isinstance(left, Constant) or not isinstance(right, Constant):
            return None
        if isinstance(left, Field) and left.kind == "moment" and op not in ("eq", "ne"):
            return None  # a datetime ordered: against what, the store's text cannot say
        return Compare(op, left, right)

    def value(self, node: nodes.Node) -> Value | None:
        if isinstance(node, nodes.Const):
            return _constant(node.value)
        if isinstance(node, nodes.Neg) and isinstance(node.node, nodes.Const):
            number = node.node.value
            if isinstance(number, int | float) and not isinstance(number, bool):
                return _constant(-number)
            return None
        if isinstance(node, nodes.Call):
            return self.call(node)
        path = _path(node)
        if path is None or path[0] != "customer":
            return None
        if len(path) == 2:
            name = path[1]
            for kind, names in (("number", NUMBER_FIELDS), ("moment", MOMENT_FIELDS), ("text", TEXT_FIELDS)):
                if name in names:
                    return Field(name, kind)
        if len(path) == 3 and path[1] == "attributes" and _KEY.match(path[2]):
            return Attribute(path[2])
        return None

    def call(self, node: nodes.Call) -> Value | None:
        if node.kwargs or node.dyn_args or node.dyn_kwargs or not isinstance(node.node, nodes.Name):
            return None
        function = self.functions.get(node.node.name)
        term = getattr(function, "audience_term", None)
        if term is None:
            return None
        arguments = [self.value(argument) for argument in node.args]
        if any(argument is None for argument in arguments):
            return None
        try:
            return term(*arguments)
        except TypeError:  # called with the wrong number of arguments: the sandbox says so
            return None


def _path(node: nodes.Node) -> list[str] | None:
    """`customer.attributes.k` (or `customer['attributes']['k']`) as its names, else None."""
    names: list[str] = []
    while True:
        if isinstance(node, nodes.Getattr):
            names.append(node.attr)
            node = node.node
        elif isinstance(node, nodes.Getitem) and isinstance(getattr(node.arg, "value", None), str):
            names.append(node.arg.value)
            node = node.node
        elif isinstance(node, nodes.Name):
            names.append(node.name)
            return names[::-1]
        else:
            return None


def _constant(value: Any) -> Constant | None:
    """A literal the store can compare exactly, else None."""
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return Constant(value)
    if isinstance(value, int):
        return Constant(value) if -_INT64 <= value < _INT64 else None
    if isinstance(value, float):
        return Constant(value) if math.isfinite(value) else None
    return None
