"""The names an expression or a template may use, and the uses of names that do not exist.

A misspelt name is not an error at run time: `ordr.total > 100` is undefined, so false, and
`{{ ordr.id }}` prints nothing. `check` therefore compares the names each place uses (found in
Jinja's syntax tree, so loop variables, `set` and macros are left out) with those it can get:

- every expression and template: `customer`, `event`, `journey`, `now`, `waited`, `data`, the
  functions (Jinja's globals and the condition plugins'), and in templates `promo`,
  `unsubscribe_url` and `preferences_url`;
- the trigger event's data keys, lifted to the top level. Data is free-form, so only the
  normalised types have known keys (`DATA_KEYS`). For any other type (a source plugin's, a
  custom one) the keys cannot be known: then only unknown functions and misspellings of the
  names above are reported, never a name that may be a data key.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from jinja2 import meta, nodes

from boomerang.problems import did_you_mean
from boomerang.recommendations import DEFAULT_LIMIT

if TYPE_CHECKING:  # expressions.py uses this module to check what it compiles
    from boomerang.expressions import Sandbox

ALWAYS = ("customer", "event", "journey", "now", "waited", "data")
# Set for every message a send step renders (the two links empty for a transactional one).
MESSAGE_NAMES = ("promo", "unsubscribe_url", "preferences_url")
# The data keys the normalised event types carry (see the README's "The event format").
DATA_KEYS: dict[str, tuple[str, ...]] = {
    "product.viewed": ("product",),
    "category.viewed": ("category",),
    "cart.updated": ("cart",),
    "checkout.started": ("cart",),
    "order.placed": ("order",),
    "order.paid": ("order",),
    "order.shipped": ("order",),
    "order.delivered": ("order",),
    "order.cancelled": ("order",),
    "promo.redeemed": ("code", "order_id", "message_id", "scenario", "step", "value", "message"),
    "promo.rejected": ("code", "order_id", "reason"),
}


@dataclass(frozen=True, order=True)
class NameUse:
    """A top-level name an expression or template uses, at its place in the file."""

    line: int
    col: int
    name: str
    called: bool  # used as a function: `name(...)`


@dataclass(frozen=True)
class Names:
    """What one place may use; `open` when the trigger's data keys cannot be known."""

    data: frozenset[str]
    functions: frozenset[str]
    open: bool

    def problem(self, use: NameUse, where: str = "") -> str | None:
        """What is wrong with one use (`where` is said after the name), or None if it is there."""
        if use.called:
            if use.name in self.functions:
                return None
            return f"unknown function '{use.name}'{where}{did_you_mean(use.name, self.functions)}"
        if use.name in self.data or use.name in self.functions:
            return None
        suggestion = did_you_mean(use.name, self.data if self.open else self.data | self.functions)
        if self.open:
            # A data key of an unknown event type may have any name: only a near miss of a
            # name that is always there is surely a mistake.
            return f"unknown name '{use.name}'{where}{suggestion}" if suggestion else None
        if not suggestion:
            suggestion = f"; the names here are {', '.join(sorted(self.data))} and the functions"
        return f"unknown name '{use.name}'{where}{suggestion}"


def names_for(event_types: Iterable[str] | None, functions: Iterable[str], message: bool) -> Names:
    """The names of a scenario's places: `event_types` of its trigger (None for a schedule or a
    date, which have no event), `functions` the environment's globals, `message` for templates."""
    data = set(ALWAYS) | (set(MESSAGE_NAMES) if message else set())
    types = list(event_types or ())
    for event_type in types:
        data.update(DATA_KEYS.get(event_type, ()))
    unknown_data = any(event_type not in DATA_KEYS for event_type in types)
    return Names(frozenset(data), frozenset(functions), unknown_data)


def template_names(tree: nodes.Template, environment: Sandbox) -> list[tuple[int, str, bool]]:
    """`(line within the source, name, called)` of the names a parsed template uses but never
    defines (Jinja's own analysis: a loop variable, a `set` or a macro is defined), leaving
    out those it tests with `is defined`."""
    tree.set_environment(environment)
    free = meta.find_undeclared_variables(tree)
    called = {id(call.node) for call in tree.find_all(nodes.Call)}
    # `cart is defined` is how a template shared by scenarios asks for a name only some give
    guarded = {
        test.node.name
        for test in tree.find_all(nodes.Test)
        if test.name in ("defined", "undefined") and isinstance(test.node, nodes.Name)
    }
    seen: dict[str, tuple[int, str, bool]] = {}
    for node in tree.find_all(nodes.Name):
        if node.name in free - guarded and node.ctx == "load" and node.name not in seen:
            seen[node.name] = (node.lineno, node.name, id(node) in called)
    return list(seen.values())


@dataclass(frozen=True)
class RecommendationCall:
    """A `recommendations(...)` call in a template: its line (within the source, then in the
    file once placed) and its strategy and limit as written (the defaults when left out; None
    when not a constant, so unknown before it runs)."""

    line: int
    strategy: Any
    limit: Any
    col: int = 1


def recommendation_calls(tree: nodes.Template) -> list[RecommendationCall]:
    """The `recommendations(...)` calls a parsed template makes."""
    found = []
    for call in tree.find_all(nodes.Call):
        if not (isinstance(call.node, nodes.Name) and call.node.name == "recommendations"):
            continue
        given: dict[str, Any] = {"limit": DEFAULT_LIMIT, "strategy": "viewed"}
        written = [*zip(("limit", "strategy"), call.args, strict=False)]
        written += [(keyword.key, keyword.value) for keyword in call.kwargs]
        for name, node in written:
            if name in given:
                given[name] = node.value if isinstance(node, nodes.Const) else None
        found.append(RecommendationCall(call.lineno, given["strategy"], given["limit"]))
    return found


def placed_call(call: RecommendationCall, first_line: int, lines: list[str]) -> RecommendationCall:
    """A call found in a text that starts at `first_line` of a file (`lines`), at its place
    there: its line, and the column of the first `recommendations` on that line."""
    number = first_line + call.line - 1
    text = lines[number - 1] if 0 < number <= len(lines) else ""
    return RecommendationCall(number, call.strategy, call.limit, text.find("recommendations") + 1 or 1)


def place(
    uses: list[tuple[int, str, bool]], lines: list[str], line: int, col: int, template: bool = False
) -> list[NameUse]:
    """Uses found in a text that starts at `line`:`col` of a file (`lines`), at their places
    there: the column is the name's first appearance on its line (from `col` on the first),
    in a template the first inside `{{ }}` or `{% %}` (the same word may be in the text)."""
    placed = []
    for relative, name, called in uses:
        number = line + relative - 1
        text = lines[number - 1] if 0 < number <= len(lines) else ""
        start = col - 1 if relative == 1 else 0
        found = [m.start() for m in re.finditer(rf"\b{re.escape(name)}\b", text[start:])]
        if template:
            found = [at for at in found if _inside_tag(text[: start + at])] or found
        placed.append(NameUse(number, start + found[0] + 1 if found else col, name, called))
    return placed


def _inside_tag(before: str) -> bool:
    """Whether the text before a place on a line leaves a `{{` or `{%` open."""
    opened = max(before.rfind("{{"), before.rfind("{%"))
    return opened >= 0 and opened > max(before.rfind("}}"), before.rfind("%}"))
