"""A translated audience (`boomerang.audiences`) as an SQL condition on the `customers` table.

Each condition becomes two SQL expressions that are never NULL: whether the sandbox would
fail on it (a comparison Python refuses) and, where it does not fail, whether it holds. The
audience is the customers for whom the whole expression does not fail and holds, exactly
what `Expression.test` answers customer by customer. Stored moments are `to_iso`'s fixed-width
UTC text, so they compare as text; `days_since(x) >= n` becomes a comparison of `x` with the
moment `n` days before now.
"""

from __future__ import annotations

import math
from datetime import datetime, timedelta

from boomerang.audiences import Always, And, Attribute, Compare, Condition, DaysSince, Field, Not, Or, Truthy
from boomerang.clock import to_iso

_SQL_OPS = {"eq": "=", "ne": "!=", "lt": "<", "lteq": "<=", "gt": ">", "gteq": ">="}
_NUMERIC_JSON = "('integer', 'real', 'true', 'false')"
_BEFORE_EVERYTHING, _AFTER_EVERYTHING = "", "~"  # below and above every stored moment, as text
TRUE, FALSE = "1", "0"


def audience_where(condition: Condition, now: datetime) -> tuple[str, dict[str, object]]:
    """The SQL condition on `customers` selecting the audience at `now`, and its named
    parameters (named, because one part may appear in the text more than once)."""
    sql = _Sql(now)
    fails, holds = sql.condition(condition)
    return f"(NOT {fails} AND {holds})", sql.params


class _Sql:
    def __init__(self, now: datetime):
        self.now = now
        self.params: dict[str, object] = {}

    def param(self, value: object) -> str:
        name = f"audience_{len(self.params)}"
        self.params[name] = value
        return f":{name}"

    def condition(self, condition: Condition) -> tuple[str, str]:
        """(fails, holds) for a condition, each an SQL expression that is 0 or 1."""
        if isinstance(condition, Always):
            return FALSE, TRUE if condition.value else FALSE
        if isinstance(condition, Not):
            fails, holds = self.condition(condition.condition)
            return fails, f"(NOT {holds})"
        if isinstance(condition, And | Or):
            left_fails, left_holds = self.condition(condition.left)
            right_fails, right_holds = self.condition(condition.right)
            # The right side is evaluated only if the left one holds (`and`), or does not (`or`).
            if isinstance(condition, And):
                fails = f"({left_fails} OR ({left_holds} AND {right_fails}))"
                return fails, f"({left_holds} AND {right_holds})"
            fails = f"({left_fails} OR (NOT {left_holds} AND {right_fails}))"
            return fails, f"({left_holds} OR {right_holds})"
        if isinstance(condition, Truthy):
            return FALSE, self.truthy(condition.value)
        if condition.op == "ne":  # Python's != is the negation of == for every value here
            fails, holds = self.compare(Compare("eq", condition.left, condition.right))
            return fails, f"(NOT {holds})"
        return self.compare(condition)

    def compare(self, compare: Compare) -> tuple[str, str]:
        left, constant, op = compare.left, compare.right.value, compare.op
        number = isinstance(constant, int | float)  # a bool is a number in Python's comparisons
        if isinstance(left, DaysSince):
            return self.days_since(left.moment.name, op, constant)
        if isinstance(left, Attribute):
            return self.attribute(left.key, op, constant)
        column = f"[{left.name}]"
        if left.kind == "number":  # never NULL: the store keeps a number there
            if number:
                return FALSE, f"coalesce({column} {_SQL_OPS[op]} {self.param(constant)}, 0)"
            return (TRUE, FALSE) if op != "eq" else (FALSE, FALSE)
        if op != "eq":  # text ordered (`translate` lets no moment through here)
            if isinstance(constant, str):
                return f"({column} IS NULL)", f"coalesce({column} {_SQL_OPS[op]} {self.param(constant)}, 0)"
            return TRUE, FALSE
        if constant is None:
            return FALSE, f"({column} IS NULL)"
        if left.kind == "text" and isinstance(constant, str):
            return FALSE, f"({column} IS {self.param(constant)})"
        return FALSE, FALSE  # a moment or text never equals a number, nor a moment a text

    def days_since(self, column: str, op: str, constant: object) -> tuple[str, str]:
        column = f"[{column}]"
        if op == "eq":
            if constant is None:
                return FALSE, f"({column} IS NULL)"
            if not isinstance(constant, int | float) or constant != math.floor(constant):
                return FALSE, FALSE
            days = int(constant)
            on_the_day = f"{self.at_least(column, days)} AND NOT {self.at_least(column, days + 1)}"
            return FALSE, f"({column} IS NOT NULL AND {on_the_day})"
        if not isinstance(constant, int | float):
            return TRUE, FALSE  # an int or None against text or None: Python refuses
        fails = f"({column} IS NULL)"
        if op == "gteq":
            return fails, self.at_least(column, math.ceil(constant))
        if op == "gt":
            return fails, self.at_least(column, math.floor(constant) + 1)
        if op == "lt":
            return fails, f"(NOT {self.at_least(column, math.ceil(constant))})"
        return fails, f"(NOT {self.at_least(column, math.floor(constant) + 1)})"  # lteq

    def at_least(self, column: str, days: int) -> str:
        """`(now - column).days >= days` for a moment that is there (0 where it is NULL)."""
        try:
            boundary = to_iso(self.now - timedelta(days=days))
        except OverflowError:
            boundary = _BEFORE_EVERYTHING if days > 0 else _AFTER_EVERYTHING
        return f"coalesce({column} <= {self.param(boundary)}, 0)"

    def attribute(self, key: str, op: str, constant: object) -> tuple[str, str]:
        kind, value = self.json(key)
        if op == "eq":
            if constant is None:
                return FALSE, f"coalesce({kind} = 'null', 0)"
            if isinstance(constant, str):
                return FALSE, f"coalesce({kind} = 'text' AND {value} = {self.param(constant)}, 0)"
            return FALSE, f"coalesce({kind} IN {_NUMERIC_JSON} AND {value} = {self.param(constant)}, 0)"
        if constant is None:
            return TRUE, FALSE
        kinds = "('text')" if isinstance(constant, str) else _NUMERIC_JSON
        fails = f"NOT coalesce({kind} IN {kinds}, 0)"
        return fails, f"coalesce({value} {_SQL_OPS[op]} {self.param(constant)}, 0)"

    def json(self, key: str) -> tuple[str, str]:
        """The JSON type (NULL when missing) and the value of an attribute. Attributes that are
        not JSON (a damaged row, which reading it back sets aside) count as none: SQLite's JSON
        functions raise on them, which would fail the whole audience's query."""
        path = self.param(f'$."{key}"')
        attributes = "CASE WHEN json_valid(attributes) THEN attributes END"
        return f"json_type({attributes}, {path})", f"json_extract({attributes}, {path})"

    def truthy(self, value: Field | Attribute | DaysSince) -> str:
        if isinstance(value, DaysSince):
            column = f"[{value.moment.name}]"
            today = f"{self.at_least(column, 0)} AND NOT {self.at_least(column, 1)}"
            return f"({column} IS NOT NULL AND NOT ({today}))"
        if isinstance(value, Attribute):
            kind, value_sql = self.json(value.key)
            return (
                f"coalesce(CASE {kind} WHEN 'true' THEN 1 WHEN 'integer' THEN {value_sql} != 0"
                f" WHEN 'real' THEN {value_sql} != 0 WHEN 'text' THEN {value_sql} != ''"
                f" WHEN 'array' THEN {value_sql} != '[]' WHEN 'object' THEN {value_sql} != '{{}}'"
                " ELSE 0 END, 0)"
            )
        column = f"[{value.name}]"
        if value.kind == "number":
            return f"coalesce({column} != 0, 0)"
        if value.kind == "text":
            return f"coalesce({column} IS NOT NULL AND {column} != '', 0)"
        return f"({column} IS NOT NULL)"
