"""The store's SQL as PostgreSQL reads it: the one place where the two databases' SQL differs.

The table families write SQLite's SQL once; on PostgreSQL, `translate` rewrites each statement
text (once: the result is cached by text, so a statement run a million times is rewritten once)
into what PostgreSQL takes, with the same meaning:

- placeholders `?` and `:name` become psycopg's `%s` and `%(name)s` (and a `%` in the text `%%`);
- `INSERT OR IGNORE` becomes `INSERT ... ON CONFLICT DO NOTHING`;
- a JSON list handed as one parameter, `x IN (SELECT value FROM json_each(?))`, becomes
  `x = ANY(%s)`, its parameter decoded into a list when the statement runs (psycopg sends it as
  an array of the elements' type, so integer ids compare with integer ids);
- `json_extract(column, '$.a.b')` becomes `(column::jsonb #>> '{a,b}')`, `LIKE` `ILIKE` (SQLite's
  ignores case), `instr(a, b)` a test
  of `strpos`, `substr(x, -n)` `right(x, n)`, `x IS ?` `x IS NOT DISTINCT FROM %s`, and
  SQLite's `[name]` quoting `"name"`;
- `total(x)` becomes `coalesce(sum(x), 0)`, and a bare `BEGIN` (a report's snapshot) a
  REPEATABLE READ transaction;
- SQLite's planner hints go (`INDEXED BY`; `CROSS JOIN ... ON` is a `JOIN`);
- the few expressions no rule above covers are replaced whole (`FRAGMENTS`).

String literals are left alone (but for `%`), so a JSON path such as `'$[0]'` stays what it is.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from boomerang.attribution import MESSAGE_ID_PATHS, ORDER_ID_PATHS, TOTAL_PATHS, json_first
from boomerang.store.migrations import item_id as sqlite_item_id
from boomerang.store.migrations_postgresql import item_id as postgresql_item_id


# Expressions the rules do not reach, replaced whole: SQLite's text as the table families write
# it, and PostgreSQL's. `journeys._VARIANTS_ONLY`: a context reduced to its `variants` (text
# that is not JSON is left for the decoder to refuse, as on SQLite); the catalogue id of a
# viewed product and the cross-sell rules of `products.recommend`.
def _json_first(column: str, paths: tuple[str, ...], number: bool = False) -> str:
    """`attribution.json_first` for PostgreSQL: the first of `paths` in the JSON text `column`
    that holds a scalar, as text (or, with `number`, as a number where that scalar is one)."""
    found = [(f"json_or_null({column}) #> '{{{','.join(path[2:].split('.'))}}}'") for path in paths]
    arms = " ".join(
        f"WHEN jsonb_typeof({value}) IN ('string', 'number') THEN "
        + (
            f"CASE WHEN jsonb_typeof({value}) = 'number' THEN ({value} #>> '{{}}')::double precision END"
            if number
            else f"{value} #>> '{{}}'"
        )
        for value in found
    )
    return f"(CASE {arms} END)"


FRAGMENTS = {
    # the report's attribution (`store/report.py`): where an order's id, total and message are
    json_first("e.data", TOTAL_PATHS): _json_first("e.data", TOTAL_PATHS, number=True),
    json_first("e.data", ORDER_ID_PATHS): _json_first("e.data", ORDER_ID_PATHS),
    json_first("e.data", MESSAGE_ID_PATHS): _json_first("e.data", MESSAGE_ID_PATHS),
    "typeof(total) IN ('integer', 'real')": "total IS NOT NULL",
    "SELECT key AS scenario, value AS type FROM json_each(:goals)": (
        "SELECT key AS scenario, value AS type FROM jsonb_each_text(:goals::jsonb)"
    ),
    "json_type(CASE WHEN json_valid(j.context) THEN j.context END, '$.variants') = 'object'": (
        "jsonb_typeof(json_or_null(j.context) -> 'variants') = 'object'"
    ),
    "json_each(r.variants) v": (
        "LATERAL (SELECT key, value #>> '{}' AS atom FROM jsonb_each(r.variants::jsonb)"
        " WHERE jsonb_typeof(value) IN ('string', 'number', 'boolean')) v"
    ),
    sqlite_item_id("json_extract(e.data, '$.product')"): (
        postgresql_item_id("(json_or_null(e.data) -> 'product')")
    ),
    "SELECT json_extract(value, '$[0]'), json_extract(value, '$[1]') FROM json_each(:rules)": (
        "SELECT rule ->> 0, rule ->> 1 FROM jsonb_array_elements(:rules::jsonb) AS rule"
    ),
    "CASE WHEN json_valid(context) THEN json_object('variants', json(json_extract(context, '$.variants')))"
    " ELSE context END": "CASE WHEN json_or_null(context) IS NOT NULL THEN jsonb_build_object('variants',"
    " json_or_null(context) -> 'variants')::text ELSE context END",
}

_LITERAL = re.compile(r"'(?:[^']|'')*'")
_PARAM = r"(\?|:[A-Za-z_]\w*)"
_EACH = r"json_each\(\s*" + _PARAM + r"\s*\)"
_LIST_IN = re.compile(
    r"\b(NOT\s+)?IN\s*\(\s*SELECT\s+(DISTINCT\s+)?value\s+FROM\s+" + _EACH + r"\s*\)", re.IGNORECASE
)
_DISTINCT_LIST = re.compile(r"\(\s*SELECT\s+DISTINCT\s+value\s+FROM\s+" + _EACH + r"\s*\)", re.IGNORECASE)
# a report's moments: the bound some seconds before a stored time, and the seconds between two
_SECONDS_BEFORE = re.compile(
    r"strftime\('%Y-%m-%dT%H:%M:%fZ', ([\w.]+), '-' \|\| \((:\w+) \+ 2\) \|\| ' seconds'\)"
)
_SECONDS_BETWEEN = re.compile(r"\(julianday\(([\w.]+)\) - julianday\(([\w.]+)\)\) \* 86400")
_QUEUES = re.compile(r"\s*(INSERT\s+INTO\s+jobs\b|UPDATE\s+jobs\s+SET\s+due_at\b)", re.IGNORECASE)
_INSERT_OR_IGNORE = re.compile(r"\bINSERT\s+OR\s+IGNORE\s+INTO\b", re.IGNORECASE)
_RETURNING = re.compile(r"\sRETURNING\s", re.IGNORECASE)
_JSON_EXTRACT = re.compile(r"\bjson_extract\(\s*([\w.]+)\s*,\s*'\$((?:\.\w+)+)'\s*\)")
_INSTR = re.compile(r"\binstr\(([^()]*)\)")
_SUBSTR_TAIL = re.compile(r"\bsubstr\((.*?),\s*-(\d+)\)")
_IS_PARAM = re.compile(r"\bIS\s+(?=\?)")
# a parameter tested for NULL alone has no type PostgreSQL can infer: the optional filters are text
_PARAM_IS_NULL = re.compile(r"(\?|(?<!:):[A-Za-z_]\w*)\s+IS\s+NULL\b")
# SQLite's hints for its planner: `CROSS JOIN ... ON` (keep this join order), `INDEXED BY`.
_CROSS_JOIN = re.compile(r"\bCROSS JOIN\b(?=[^()]*?\bON\b)")
_INDEXED_BY = re.compile(r"\s+INDEXED BY \w+")
_LIKE = re.compile(r"\sLIKE\s")  # SQLite's LIKE ignores the case of ASCII letters
_TOTAL = re.compile(r"\btotal\(")
_BRACKETED = re.compile(r"\[([A-Za-z_]\w*)\]")
_PLACEHOLDER = re.compile(r"\?|(?<!:):([A-Za-z_]\w*)")


@dataclass(frozen=True)
class Statement:
    """A statement as PostgreSQL takes it: its text, which of its parameters are JSON lists to
    decode (positions, or names), whether it writes (for `changes()`) and whether it queues or
    moves a job (the other daemons' schedulers are told)."""

    text: str
    lists: tuple[int | str, ...]
    writes: bool
    queues: bool = False

    def params(self, given: Sequence[Any] | Mapping[str, Any]) -> Sequence[Any] | Mapping[str, Any]:
        """The parameters to send: the JSON lists among them decoded."""
        if not self.lists:
            return given
        decoded: Any = dict(given) if isinstance(given, Mapping) else list(given)
        for key in self.lists:
            decoded[key] = json.loads(decoded[key])
        return decoded


@functools.lru_cache(maxsize=4096)
def translate(sql: str) -> Statement:
    """SQLite's statement `sql` as PostgreSQL takes it (see the module's docstring)."""
    if sql.strip().upper() == "BEGIN":
        # a transaction that only reads (`Reports.snapshot`) sees one snapshot, as in WAL
        return Statement("BEGIN ISOLATION LEVEL REPEATABLE READ", (), False)
    for sqlite_text, postgresql_text in FRAGMENTS.items():
        sql = sql.replace(sqlite_text, postgresql_text)
    literals: list[str] = []

    def hide(match: re.Match[str]) -> str:
        literals.append(match.group(0))
        return f"\0{len(literals) - 1}\0"

    sql = _JSON_EXTRACT.sub(_json_path, sql)
    sql = _SECONDS_BEFORE.sub(
        r"""to_char((\1::timestamptz - make_interval(secs => \2 + 2)) AT TIME ZONE 'UTC',"""
        """ 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')""",
        sql,
    )
    sql = _SECONDS_BETWEEN.sub(r"extract(epoch FROM (\1::timestamptz - \2::timestamptz))", sql)
    code = _LITERAL.sub(hide, sql)
    code = code.replace("%", "%%")
    if _INSERT_OR_IGNORE.search(code):
        code = _INSERT_OR_IGNORE.sub("INSERT INTO", code)
        returning = _RETURNING.search(code)
        at = returning.start() if returning else len(code.rstrip().rstrip(";"))
        code = f"{code[:at]} ON CONFLICT DO NOTHING{code[at:]}"
    code = _LIST_IN.sub(lambda m: ("<> ALL" if m.group(1) else "= ANY") + f"(\0L{m.group(3)}\0)", code)
    # a list of ids read as rows (`products.recommend`'s customers): text, as every id is
    code = _DISTINCT_LIST.sub(lambda m: f"(SELECT DISTINCT unnest(\0L{m.group(1)}\0::text[]))", code)
    code = _INSTR.sub(r"(strpos(\1) > 0)", code)
    code = _LIKE.sub(" ILIKE ", code)
    code = _SUBSTR_TAIL.sub(r"right(\1, \2)", code)
    code = _IS_PARAM.sub("IS NOT DISTINCT FROM ", code)
    code = _PARAM_IS_NULL.sub(r"\1::text IS NULL", code)
    code = _BRACKETED.sub(r'"\1"', code)
    code = _INDEXED_BY.sub("", code)
    code = _totals(code)
    code = _CROSS_JOIN.sub("JOIN", code)

    lists: list[int | str] = []
    position = -1

    def placeholder(match: re.Match[str]) -> str:
        nonlocal position
        name = match.group(1)
        if name is None:
            position += 1
        return "%s" if name is None else f"%({name})s"

    def mark_list(match: re.Match[str]) -> str:
        # a list parameter: its position among the `?`s before it, or its name
        nonlocal position
        param = match.group(1)
        if param == "?":
            position += 1
            lists.append(position)
            return "%s"
        lists.append(param[1:])
        return f"%({param[1:]})s"

    pieces = re.split(r"(\0L(?:\?|:\w+)\0)", code)
    out = []
    for piece in pieces:
        if piece.startswith("\0L"):
            out.append(mark_list(re.match(r"\0L(\?|:\w+)\0", piece)))  # type: ignore[arg-type]
        else:
            out.append(_PLACEHOLDER.sub(placeholder, piece))
    code = "".join(out)
    text = re.sub(r"\0(\d+)\0", lambda m: literals[int(m.group(1))].replace("%", "%%"), code)
    first = text.lstrip().split(None, 1)[0].upper() if text.strip() else ""
    return Statement(
        text, tuple(lists), first in ("INSERT", "UPDATE", "DELETE"), _QUEUES.match(text) is not None
    )


def _totals(code: str) -> str:
    """SQLite's `total(x)` (0 over no rows, not NULL) as `coalesce(sum(x), 0)`."""
    while (match := _TOTAL.search(code)) is not None:
        depth, end = 1, match.end()
        while depth:
            depth += {"(": 1, ")": -1}.get(code[end], 0)
            end += 1
        code = f"{code[: match.start()]}coalesce(sum({code[match.end() : end - 1]}), 0){code[end:]}"
    return code


def _json_path(match: re.Match[str]) -> str:
    """`json_extract(column, '$.a.b')` as PostgreSQL's `(column::jsonb #>> '{a,b}')`."""
    column, path = match.groups()
    return f"({column}::jsonb #>> '{{{','.join(path.strip('.').split('.'))}}}')"
