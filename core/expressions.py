"""The expression language shared by scenarios and templates: sandboxed Jinja2 over plain data.

Marketers cannot hurt the host. Four walls, each enough on its own for the attacks it names:

- **Data, not objects.** A context holds plain dicts, lists, strings, numbers and datetimes;
  the functions (`days_since`, the condition plugins') are wrapped so that they return copies
  of plain data and print as nothing but their name. On a mapping `.name` is the key only;
  on a string or a datetime only an allow-list of harmless methods; on anything else nothing
  but what Jinja's own runtime objects (`loop`, `namespace`, macros) offer.
- **Refused before it runs.** Every template and expression is checked when it is compiled
  (so by `boomerang check`, at start and on reload): no `_private` attribute or item, no
  `.format`, no `|attr`, no `self`, `history` or `lipsum`, no constant that is too big to build.
- **A budget.** Each evaluation runs under a `Budget`: a deadline, checked by every attribute
  lookup, call, operator, filter and loop step; a size limit on every value built on the way
  (repetition, powers, padding widths, joins) and on the output. Over it, `RenderLimitExceeded`.
- **What a function needs beyond its arguments** — the customer's history, the segments —
  comes from the `Scope` of the evaluation under way (`scope()`), which templates cannot name.
"""

from __future__ import annotations

import functools
import logging
import math
import re
import threading
import time
from collections.abc import Callable, Iterator, Mapping, MutableMapping, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta, tzinfo
from datetime import time as time_of_day
from decimal import Decimal
from typing import Any

from jinja2 import (
    ChainableUndefined,
    Template,
    TemplateSyntaxError,
    Undefined,
    nodes,
    pass_context,
    pass_environment,
    pass_eval_context,
)
from jinja2.exceptions import SecurityError, UndefinedError
from jinja2.parser import Parser
from jinja2.runtime import LoopContext, Macro
from jinja2.sandbox import ImmutableSandboxedEnvironment
from jinja2.utils import Namespace, _PassArg, missing

from boomerang import formats
from boomerang.history import History
from boomerang.names import template_names
from boomerang.recommendations import DEFAULT_LIMIT, Recommend

log = logging.getLogger(__name__)

# Names every expression and template may use besides the condition functions.
CONTEXT_NAMES = ("customer", "event", "journey", "now", "waited", "data", "cart", "order", "product")

MESSAGE_SECONDS = 1.0  # one message, rendered off the store's thread
MESSAGE_CHARACTERS = 256 * 1024  # the output of one template file, and any value built on the way
EXPRESSION_SECONDS = 0.1  # an `if:`, an audience, a segment, `with:`/`set:` values: on the store's thread
WORK_FACTOR = 16  # characters a render may produce in all (macros, loops, `set` blocks) per output character
MAX_RANGE = 100_000  # items of `range()`
MAX_POWER_BITS = 64 * 1024  # `a ** b` results bigger than this are refused
YIELD_SECONDS = 0.001  # how long an evaluation holds the GIL before it lets other threads run

# Names no template may use: objects the context once held, Jinja's default globals that are
# classes or generators, and the template's own reference.
REFUSED_NAMES = {
    "self": "'self' is not available: it is the template's internals",
    "history": "'history' is not available: use bought_category(), viewed_products() and the like",
    "segments": "'segments' is not available: use in_segment('name')",
    "lipsum": "'lipsum' is not available",
    "cycler": "'cycler' is not available: use loop.cycle(...)",
    "joiner": "'joiner' is not available: use loop.first or |join",
}
# Attributes that lead from data to code: string formatting reaches attributes of its
# arguments, the rest are Python's internals that do not start with an underscore.
REFUSED_ATTRIBUTES = {
    "format",
    "format_map",
    "mro",
    "func_globals",
    "func_code",
    "func_closure",
    "im_func",
    "im_self",
    "im_class",
    "gi_frame",
    "gi_code",
    "gi_yieldfrom",
    "cr_frame",
    "cr_code",
    "cr_await",
    "ag_frame",
    "ag_code",
    "tb_frame",
    "tb_next",
    "f_globals",
    "f_locals",
    "f_builtins",
    "f_back",
    "f_code",
}
REFUSED_FILTERS = {
    "attr": "the attr filter is not available: write value.name or value['name']",
    "pprint": "the pprint filter is not available: it prints Python objects",
}
STRING_METHODS = frozenset(
    [
        "capitalize",
        "casefold",
        "count",
        "endswith",
        "find",
        "isalnum",
        "isalpha",
        "isdecimal",
        "isdigit",
        "islower",
        "isnumeric",
        "isspace",
        "istitle",
        "isupper",
        "join",
        "lower",
        "lstrip",
        "partition",
        "removeprefix",
        "removesuffix",
        "replace",
        "rfind",
        "rpartition",
        "rsplit",
        "rstrip",
        "split",
        "splitlines",
        "startswith",
        "strip",
        "swapcase",
        "title",
        "upper",
        "striptags",
        "unescape",
    ]
)
DATETIME_ATTRIBUTES = frozenset(
    [
        "year",
        "month",
        "day",
        "hour",
        "minute",
        "second",
        "microsecond",
        "weekday",
        "isoweekday",
        "isoformat",
        "strftime",
        "date",
        "timestamp",
        "days",
        "seconds",
        "total_seconds",
    ]
)
SEQUENCE_METHODS = frozenset({"index", "count"})
_LEAVES = (str, int, float, Decimal, type(None), datetime, date, time_of_day, timedelta, Undefined)
_PERCENT_WIDTH = re.compile(r"%[-#0 +]*(\*|\d+)?(?:\.(\*|\d+))?")


class RenderLimitExceeded(Exception):
    """A render or an evaluation went over its time or size budget."""


class ExpressionError(ValueError):
    """An expression that does not parse; `line` and `col` are within the expression."""

    def __init__(self, message: str, line: int = 1):
        super().__init__(message)
        self.line = line


class Refused(TemplateSyntaxError):
    """A template or expression that uses what the sandbox does not allow."""


@dataclass
class Budget:
    """How long an evaluation may take and how much it may build.

    The time is the evaluating thread's CPU time: on a busy machine, time spent waiting for a
    core is not the evaluation's doing and must not turn an audience's answer into "no" (an
    expression over its budget is false). Reading that clock costs ten times the wall clock's,
    so each tick reads the wall clock and only a deadline passed on it reads the CPU's."""

    seconds: float = MESSAGE_SECONDS
    characters: int = MESSAGE_CHARACTERS
    # Hand the GIL over now and then (see `tick`); off where no other thread waits for it
    # (`simulate`, which renders on the thread its store answers on).
    yields: bool = True
    deadline: float = field(init=False)  # on the wall clock: no CPU time can be spent before
    yielded: float = field(init=False)
    started: float = field(init=False)  # the thread's CPU time at the start
    produced: int = 0

    def __post_init__(self) -> None:
        self.yielded = time.monotonic()
        self.deadline = self.yielded + self.seconds
        self.started = time.thread_time()

    def tick(self) -> None:
        """Raise `RenderLimitExceeded` once the budget's CPU time is spent."""
        now = time.monotonic()
        if now > self.deadline:
            spent = time.thread_time() - self.started
            if spent > self.seconds:
                raise RenderLimitExceeded(f"it took longer than its budget of {self.seconds:g} s")
            self.deadline = now + self.seconds - spent  # the soonest the rest can be spent
        if self.yields and now - self.yielded > YIELD_SECONDS:
            # Hand the GIL over now and then: the event loop and the store's thread answer requests
            # while a long render goes on, instead of waiting for the interpreter's switch interval.
            self.yielded = now
            time.sleep(0)

    def produce(self, characters: int) -> None:
        """Count characters written anywhere (loops, macros, blocks); too many is over budget."""
        self.produced += characters
        if self.produced > self.characters * WORK_FACTOR:
            raise RenderLimitExceeded(
                f"it wrote more than {self.characters * WORK_FACTOR} characters on the way"
            )
        self.tick()


@dataclass
class Scope:
    """One evaluation under way: its budget and what its functions may consult.

    Condition functions read it through `scope()`; templates and expressions cannot reach it.
    `history` is the customer's (None where there is no customer's past), `segments` the
    compiled `segments:` of the config; `strict` (simulate, preview) makes a name that is not
    defined at all fail where it is printed, looped over or tested, instead of being nothing.
    `locale` and `zone` are what the `money`, `number`, `date` and `datetime` filters write
    for: the template file's locale (`MessageTemplate.render` sets it) and the customer's clock.
    `recommend` answers `recommendations()` for the customer (None where there is no customer:
    then it gives nothing): lists fetched before the render, or read on the store's thread.
    """

    budget: Budget = field(default_factory=Budget)
    history: History | None = None
    segments: Mapping[str, Expression] = field(default_factory=dict)
    strict: bool = False
    locale: str = "en"
    zone: tzinfo = UTC
    recommend: Recommend | None = None


_current: ContextVar[Scope | None] = ContextVar("boomerang_scope", default=None)


def scope() -> Scope:
    """The evaluation under way, for condition functions; LookupError outside one."""
    current = _current.get()
    if current is None:
        raise LookupError("no expression or template is being evaluated")
    return current


@contextmanager
def evaluating(current: Scope) -> Iterator[Scope]:
    """Make `current` the scope of what is evaluated inside the block (in this thread)."""
    token = _current.set(current)
    try:
        yield current
    finally:
        _current.reset(token)


def _limit() -> int:
    current = _current.get()
    return current.budget.characters if current else MESSAGE_CHARACTERS


def current_scope() -> Scope:
    """The evaluation under way, or a new one with a message's budget if there is none."""
    return _current.get() or Scope()


def _tick() -> None:
    current = _current.get()
    if current is not None:
        current.budget.tick()


def _too_big(what: str, size: int, limit: int, unit: str = "characters") -> RenderLimitExceeded:
    return RenderLimitExceeded(f"{what} would be {size} {unit} long; the limit is {limit}")


def weigh(value: Any, limit: int | None = None) -> int:
    """Roughly how many characters `value` prints as; refuses what is not data or too big.

    A list may hold the same long string many times over, so its printed size, not its
    length, is what a template must not exceed.
    """
    limit = _limit() if limit is None else limit
    total = 0
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            total += len(item)
        elif isinstance(item, _LEAVES):
            total += 8
        elif isinstance(item, Mapping):
            total += 2 + 4 * len(item)
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list | tuple | set | frozenset | range):
            total += 2 + 2 * len(item)
            if total <= limit:
                stack.extend(item)
        else:
            raise SecurityError(f"a {type(item).__name__} is not data: templates print data only")
        if total > limit:
            raise _too_big("the text", total, limit)
    return total


def _bounded(value: Any) -> Any:
    """`value`, if it is not longer than the limit."""
    if isinstance(value, str | list | tuple | dict) and len(value) > _limit():
        raise _too_big("a value", len(value), _limit())
    return value


def _check_widths(text: str) -> None:
    """Refuse %-format specs with a star or a width beyond the limit."""
    limit = _limit()
    for width, precision in _PERCENT_WIDTH.findall(text):
        for number in (width, precision):
            if number == "*" or (number and int(number) > limit):
                raise RenderLimitExceeded(f"a format width of {number} is over the limit of {limit}")


def bounded_binop(
    operator: str, left: Any, right: Any, table: Mapping[str, Callable[[Any, Any], Any]]
) -> Any:
    """`left operator right`, refused before it is computed if the result would be too big."""
    limit = _limit()
    sequences = str | list | tuple
    if operator == "*":
        count, sequence = (left, right) if isinstance(right, sequences) else (right, left)
        if isinstance(sequence, sequences) and isinstance(count, int) and len(sequence) * count > limit:
            raise _too_big("a repetition", len(sequence) * count, limit)
        if isinstance(left, int) and isinstance(right, int):
            bits = left.bit_length() + right.bit_length()
            if bits > MAX_POWER_BITS:
                raise _too_big("a product", bits, MAX_POWER_BITS, "bits")
    elif operator == "**":
        if isinstance(left, int) and isinstance(right, int) and right > 0 and abs(left) > 1:
            bits = math.ceil(right * math.log2(abs(left)))
            if bits > MAX_POWER_BITS:
                raise _too_big("a power", bits, MAX_POWER_BITS, "bits")
    elif operator == "+":
        if isinstance(left, sequences) and isinstance(right, sequences) and len(left) + len(right) > limit:
            raise _too_big("a sum", len(left) + len(right), limit)
    elif operator == "%" and isinstance(left, str):
        _check_widths(left)
        weigh(right, limit)
    return _bounded(table[operator](left, right))


class Function:
    """A function of the expression language: returns plain data, prints as its name."""

    __slots__ = ("_function", "_name", "_plain")

    def __init__(self, name: str, function: Callable[..., Any], plain: bool = True):
        self._name = name
        self._function = function
        self._plain = plain

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._result(self._function(*args, **kwargs))

    def _result(self, value: Any) -> Any:
        return plain(value, self._name) if self._plain else value

    def __repr__(self) -> str:
        return f"{self._name}()"


class _ContextFunction(Function):
    __slots__ = ()

    @pass_context
    def __call__(self, context: Any, *args: Any, **kwargs: Any) -> Any:
        return self._result(self._function(context, *args, **kwargs))


class _EvalContextFunction(Function):
    __slots__ = ()

    @pass_eval_context
    def __call__(self, eval_context: Any, *args: Any, **kwargs: Any) -> Any:
        return self._result(self._function(eval_context, *args, **kwargs))


class _EnvironmentFunction(Function):
    __slots__ = ()

    @pass_environment
    def __call__(self, environment: Any, *args: Any, **kwargs: Any) -> Any:
        return self._result(self._function(environment, *args, **kwargs))


_FUNCTION_KINDS = {
    None: Function,
    _PassArg.context: _ContextFunction,
    _PassArg.eval_context: _EvalContextFunction,
    _PassArg.environment: _EnvironmentFunction,
}


def as_function(name: str, function: Callable[..., Any], plain_result: bool = True) -> Function:
    """Wrap a function for the expression language, keeping Jinja's `pass_context` and kin."""
    return _FUNCTION_KINDS[_PassArg.from_obj(function)](name, function, plain_result)


def plain(value: Any, where: str = "a function") -> Any:
    """A copy of `value` as plain data; TypeError for anything else (a path, a connection...)."""
    if isinstance(value, _LEAVES):
        return value
    if isinstance(value, Mapping):
        return {str(key): plain(item, where) for key, item in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [plain(item, where) for item in value]
    raise TypeError(f"{where}() returned a {type(value).__name__}, not plain data")


def _recommendations(limit: Any = DEFAULT_LIMIT, strategy: Any = "viewed") -> list[dict[str, Any]]:
    """`recommendations(limit=4, strategy="viewed")`: products for the customer, from the
    evaluation's `Scope` (never the store: whoever renders fetched them, or reads them)."""
    recommend = current_scope().recommend
    return recommend(strategy, limit) if recommend is not None else []


def _bounded_range(*args: int) -> range:
    numbers = range(*args)
    if len(numbers) > MAX_RANGE:
        raise _too_big("range()", len(numbers), MAX_RANGE, "items")
    return numbers


@pass_context
def _iterate(_: Any, iterable: Any) -> Any:
    """Every `for` loop goes through this: each step checks the deadline."""
    current = _current.get()
    if current is None:
        return iterable
    budget = current.budget

    def steps() -> Iterator[Any]:
        for item in iterable:
            budget.tick()
            yield item

    return steps()


@pass_context
def _charge(_: Any, value: Any) -> Any:
    """Every printed value, every `~` operand, and literal text in loops and macros goes
    through this: it must print as data, and what a render writes in all is counted."""
    if isinstance(value, Undefined):
        return value
    size = len(value) if isinstance(value, str) else weigh(value)
    current = _current.get()
    if current is not None:
        current.budget.produce(size)
    return value


_STRUCTURAL_FILTERS = frozenset(
    [
        "length",
        "count",
        "first",
        "last",
        "sort",
        "map",
        "select",
        "reject",
        "selectattr",
        "rejectattr",
        "list",
        "unique",
        "sum",
        "min",
        "max",
        "groupby",
        "dictsort",
        "items",
        "reverse",
        "random",
        "default",
        "d",
        "abs",
        "int",
        "float",
        "round",
    ]
)


def _guard(name: str, function: Callable[..., Any]) -> Callable[..., Any]:
    """A filter that checks the deadline, refuses non-data and too big arguments and results."""
    check = _FILTER_CHECKS.get(name)
    # Filters that pass the context (or environment) get it first; the checks are for the rest.
    offset = 1 if _PassArg.from_obj(function) is not None else 0
    # A filter that only counts or rearranges its input turns none of it into text: weighing
    # that input, on every call in a loop, would only cost time.
    weighs = name not in _STRUCTURAL_FILTERS

    @functools.wraps(function)
    def guarded(*args: Any, **kwargs: Any) -> Any:
        _tick()
        if name == "join" and len(args) > offset:
            args = _listed(args, offset)  # a generator (`map(...)`) is weighed like a list
        for argument in (*args[offset:], *kwargs.values()) if weighs else ():
            container = isinstance(argument, Mapping | list | tuple | set | frozenset)
            if (container or callable(argument)) and not isinstance(argument, Undefined):
                weigh(argument)
        if check is not None:
            check(*args[offset:], **kwargs)
        return _bounded(function(*args, **kwargs))

    return guarded


def _listed(args: tuple[Any, ...], index: int) -> tuple[Any, ...]:
    """`args` with the one at `index` made a list, if it is an iterator that cannot be weighed."""
    value = args[index]
    if isinstance(value, Sequence | Mapping | set | frozenset | Undefined) or not hasattr(value, "__iter__"):
        return args
    return (*args[:index], list(value), *args[index + 1 :])


def _check_width(value: Any, width: Any = None, *_: Any, **__: Any) -> None:
    lines = str(value).count("\n") + 1
    size = (len(width) if isinstance(width, str) else int(width)) * lines if width else 0
    if size > _limit():
        raise _too_big("the padding", size, _limit())


def _check_format(value: Any, *args: Any, **kwargs: Any) -> None:
    _check_widths(str(value))
    weigh([value, *args, *kwargs.values()])


def _check_join(value: Any, separator: str = "", *_: Any, **__: Any) -> None:
    if isinstance(value, Sequence | set | frozenset):
        size = weigh(list(value)) + len(str(separator)) * len(value)
        if size > _limit():
            raise _too_big("the joined text", size, _limit())


def _check_replace(value: Any, old: Any, new: Any, count: int | None = None) -> None:
    text, old, new = str(value), str(old), str(new)
    times = text.count(old) if old else len(text) + 1
    size = len(text) + min(times, count if count is not None and count >= 0 else times) * len(new)
    if size > _limit():
        raise _too_big("the replaced text", size, _limit())


def _check_count(value: Any, count: Any = 1, *_: Any, **__: Any) -> None:
    if int(count) > MAX_RANGE:
        raise _too_big("the count", int(count), MAX_RANGE, "items")


def _check_wordwrap(
    value: Any, width: int = 79, break_long_words: bool = True, wrapstring: Any = None, *_: Any, **__: Any
) -> None:
    text = str(value)
    size = len(text) + (len(text) // max(int(width), 1) + 1) * len(str(wrapstring or "\n"))
    if size > _limit():
        raise _too_big("the wrapped text", size, _limit())


def _check_urlize(
    value: Any,
    trim_url_limit: Any = None,
    nofollow: bool = False,
    target: Any = None,
    rel: Any = None,
    *_: Any,
    **__: Any,
) -> None:
    text = str(value)
    # Every link (four characters at least) gets the target and rel attributes.
    size = len(text) + (len(text) // 4 + 1) * (len(str(target or "")) + len(str(rel or "")))
    if size > _limit():
        raise _too_big("the linked text", size, _limit())


def _check_sum(value: Any, attribute: Any = None, start: Any = 0) -> None:
    if not isinstance(start, int | float):
        raise SecurityError("sum() adds numbers only")


def _check_tojson(value: Any, indent: Any = None) -> None:
    if indent is not None and (not isinstance(indent, int) or indent > 8):
        raise RenderLimitExceeded("tojson indent is at most 8")
    weigh(value, _limit() // (1 + (indent or 0)))


_FILTER_CHECKS: dict[str, Callable[..., None]] = {
    "center": _check_width,
    "indent": _check_width,
    "format": _check_format,
    "join": _check_join,
    "replace": _check_replace,
    "slice": _check_count,
    "batch": _check_count,
    "wordwrap": _check_wordwrap,
    "sum": _check_sum,
    "tojson": _check_tojson,
    "urlize": _check_urlize,
}
# Filters whose `attribute` argument (the first for selectattr and rejectattr) names attributes.
ATTRIBUTE_FILTERS = {
    "map",
    "selectattr",
    "rejectattr",
    "sort",
    "groupby",
    "sum",
    "unique",
    "min",
    "max",
    "join",
}


def _missing(value: Any) -> bool:
    """Whether a filter's value is nothing to format: None, or a missing name or key (which
    fails here in a strict scope, as printing it would)."""
    if isinstance(value, Undefined):
        str(value)
        return True
    return value is None


@pass_context
def _money(_: Any, value: Any, currency: Any = None) -> str:
    """`{{ cart.total | money(cart.currency) }}`: `79,90 €` for ru, `€79.90` for en."""
    if _missing(value):
        return ""
    currency = None if isinstance(currency, Undefined) else currency
    return formats.money(value, currency, formats.locale_of(current_scope().locale))


@pass_context
def _number(_: Any, value: Any, digits: Any = None) -> str:
    """`{{ 1234.5 | number }}`: `1 234,5` for ru; `number(2)` shows two decimals."""
    if _missing(value):
        return ""
    return formats.number_text(value, formats.locale_of(current_scope().locale), digits)


@pass_context
def _date(_: Any, value: Any, format: Any = "long") -> str:
    """`{{ order.created_at | date }}`: the day on the customer's clock, `March 3, 2026`."""
    if _missing(value):
        return ""
    current = current_scope()
    return formats.date_text(value, formats.locale_of(current.locale), current.zone, format)


@pass_context
def _datetime(_: Any, value: Any, format: Any = None) -> str:
    """`{{ order.created_at | datetime }}`: day and time on the customer's clock."""
    if _missing(value):
        return ""
    current = current_scope()
    return formats.datetime_text(value, formats.locale_of(current.locale), current.zone, format)


# Filters that write for the locale and clock of the scope under way (see `boomerang.formats`);
# they pass the context so that Jinja never folds `{{ 3 | number }}` while compiling, outside it.
FORMAT_FILTERS: dict[str, Callable[..., str]] = {
    "money": _money,
    "number": _number,
    "date": _date,
    "datetime": _datetime,
}


class Sandbox(ImmutableSandboxedEnvironment):
    """The immutable sandbox over plain data, with a budget; see the module docstring.

    Event data is JSON, so on a mapping `.name` looks up the key only: a missing key is
    undefined rather than a method such as `items` or `keys` (Jinja's default).
    """

    # Intercepted, so that the optimizer cannot fold `'x' * 10**8` while compiling.
    intercepted_binops = frozenset({"*", "**", "+", "%"})

    def __init__(self, **options: Any):
        super().__init__(**options)
        self.globals = {
            "range": as_function("range", _bounded_range, plain_result=False),
            "dict": as_function("dict", dict),
            "namespace": as_function("namespace", Namespace, plain_result=False),
            "recommendations": as_function("recommendations", _recommendations),
        }
        self.filters = {
            name: _guard(name, function)
            for name, function in self.filters.items()
            if name not in REFUSED_FILTERS
        }
        self.filters.update({name: _guard(name, function) for name, function in FORMAT_FILTERS.items()})
        self.filters["_iterate"] = _iterate
        self.filters["_charge"] = _charge

    def make_globals(self, d: MutableMapping[str, Any] | None) -> MutableMapping[str, Any]:
        """A template's globals as one dict rather than Jinja's `ChainMap` over the environment's:
        every evaluation copies them into its context, and copying a `ChainMap` goes key by key
        in Python (a third of an audience expression's time). The globals are all set when the
        environment is made (`make_environment`), before any template, so nothing is missed."""
        return {**self.globals, **(d or {})}

    def getattr(self, obj: Any, attribute: str) -> Any:
        """`obj.attribute`: a mapping's key, or what `is_safe_attribute` allows."""
        _tick()
        if isinstance(obj, Mapping):
            if attribute in obj:
                return obj[attribute]
            return self.undefined(obj=obj, name=attribute)
        return super().getattr(obj, attribute)

    def getitem(self, obj: Any, argument: Any) -> Any:
        """`obj[argument]`: a mapping's key, an item, or what `is_safe_attribute` allows."""
        _tick()
        if isinstance(obj, Mapping):
            try:
                return obj[argument]
            except (TypeError, LookupError):
                return self.undefined(obj=obj, name=argument)
        return super().getitem(obj, argument)

    def is_safe_attribute(self, obj: Any, attr: str, value: Any) -> bool:
        """Only harmless methods of strings and datetimes, and Jinja's own runtime objects."""
        if not super().is_safe_attribute(obj, attr, value):
            return False
        if isinstance(obj, str):
            return attr in STRING_METHODS
        if isinstance(obj, date | time_of_day | timedelta):
            return attr in DATETIME_ATTRIBUTES
        if isinstance(obj, list | tuple):
            # A named tuple's fields are data: `group.grouper` and `group.list` of `groupby`.
            return attr in SEQUENCE_METHODS or attr in getattr(type(obj), "_fields", ())
        return isinstance(obj, Undefined | LoopContext | Namespace | Macro)

    def unsafe_undefined(self, obj: Any, attribute: str) -> Undefined:
        """An attribute the sandbox refuses fails the render, rather than print as nothing."""
        raise SecurityError(f"'{attribute}' of a {type(obj).__name__} is not available in templates")

    def wrap_str_format(self, value: Any) -> None:
        """`str.format` reaches its arguments' attributes and widths: not available at all."""
        return None

    def call(__self, __context: Any, __obj: Any, *args: Any, **kwargs: Any) -> Any:
        """Call a function or method from sandboxed code, within the budget."""
        _tick()
        owner = getattr(__obj, "__self__", None)
        if isinstance(owner, str):
            name = getattr(__obj, "__name__", "")
            if name == "replace":
                _check_replace(owner, *args, **kwargs)
            elif name == "join" and args:
                args = _listed(args, 0)
                _check_join(args[0], owner)
        return _bounded(super().call(__context, __obj, *args, **kwargs))

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        """The intercepted operators, refused before they build something too big."""
        _tick()
        return bounded_binop(operator, left, right, self.binop_table)

    def _generate(
        self, source: nodes.Template, name: str | None, filename: str | None, defer_init: bool = False
    ) -> str:
        """Refuse what the sandbox does not allow, then route loops and output through the budget."""
        for line, message in refusals(source, self):
            raise Refused(message, line, name, filename)
        _route_through_budget(source)
        return super()._generate(source, name, filename, defer_init)


# What runs its body more than once: literal text there is counted too.
_REPEATING = (nodes.For, nodes.Macro, nodes.CallBlock, nodes.Block)


def _route_through_budget(node: nodes.Node, repeated: bool = False) -> None:
    """Every loop step ticks the deadline; every value printed or joined with `~` is checked
    for being data and counted. Literal text written once is left alone (it is as long as the
    template, and the output's limit counts it), so that Jinja can still fold it."""
    if isinstance(node, nodes.For):
        node.iter = _filtered(node.iter, "_iterate")
    elif isinstance(node, nodes.Output):
        node.nodes = [
            child if isinstance(child, nodes.TemplateData) and not repeated else _filtered(child, "_charge")
            for child in node.nodes
        ]
    elif isinstance(node, nodes.Concat):
        node.nodes = [
            child if isinstance(child, nodes.Const) else _filtered(child, "_charge") for child in node.nodes
        ]
    repeated = repeated or isinstance(node, _REPEATING)
    for child in node.iter_child_nodes():
        _route_through_budget(child, repeated)


def _filtered(node: nodes.Expr, name: str) -> nodes.Filter:
    return nodes.Filter(node, name, [], [], None, None, lineno=node.lineno)


def refusals(source: nodes.Node, environment: Sandbox) -> list[tuple[int, str]]:
    """What in a parsed template or expression the sandbox refuses, as (line, message)."""
    found: list[tuple[int, str]] = []
    kinds = (nodes.Name, nodes.Getattr, nodes.Getitem, nodes.Filter, nodes.BinExpr, nodes.Output, *_LOADERS)
    for node in source.find_all(kinds):
        message = None
        if isinstance(node, nodes.Output):
            found.extend(
                (child.lineno, f"'{child.name}' is a function: call it, {child.name}(...)")
                for child in node.nodes
                if isinstance(child, nodes.Name) and child.name in environment.globals
            )
        elif isinstance(node, nodes.Name) and node.ctx == "load":
            message = REFUSED_NAMES.get(node.name)
            if node.name.startswith("__"):
                message = f"'{node.name}' is private"
        elif isinstance(node, nodes.Getattr | nodes.Getitem):
            attribute = node.attr if isinstance(node, nodes.Getattr) else getattr(node.arg, "value", None)
            if isinstance(attribute, str) and attribute.startswith("_"):
                message = f"'{attribute}' is private: names starting with _ are not available"
            elif attribute in REFUSED_ATTRIBUTES:
                message = f"'.{attribute}' is not available"
                if attribute in ("format", "format_map"):
                    message += ": use ~ or the format filter to build text"
        elif isinstance(node, nodes.Filter):
            message = REFUSED_FILTERS.get(node.name)
            if node.name.startswith("_"):
                message = f"the filter '{node.name}' is private"
            elif node.name in ATTRIBUTE_FILTERS:
                message = _private_attribute_argument(node)
            if not message and node.name in _FILTER_CHECKS:
                message = _constant_too_big(node, environment)
        elif isinstance(node, nodes.BinExpr) and node.operator in Sandbox.intercepted_binops:
            message = _constant_too_big(node, environment)
        elif isinstance(node, _LOADERS):
            message = "templates cannot load other templates (include, import, extends): write it out here"
        if message:
            found.append((node.lineno, message))
    return found


_LOADERS = (nodes.Include, nodes.Import, nodes.FromImport, nodes.Extends)


def _private_attribute_argument(node: nodes.Filter) -> str | None:
    """`map(attribute='__class__')` reaches attributes as `x.__class__` does."""
    names = [keyword.value for keyword in node.kwargs if keyword.key == "attribute"]
    if node.name in ("selectattr", "rejectattr") and node.args:
        names.append(node.args[0])
    for name in names:
        text = name.value if isinstance(name, nodes.Const) else None
        if isinstance(text, str) and any(part.startswith("_") for part in text.split(".")):
            return f"'{text}' is private: names starting with _ are not available"
    return None


def _constant_too_big(node: nodes.BinExpr | nodes.Filter, environment: Sandbox) -> str | None:
    """Whether a constant operation such as `'x' * 10**8` or `'x'|center(10**8)` would be
    refused when it runs (Jinja cannot fold these: the sandbox intercepts them)."""
    try:
        _constant(node, environment)
    except RenderLimitExceeded as exc:
        return f"this would be refused when rendered: {exc}"
    except Exception:  # noqa: BLE001 - not a constant, or an error the render reports
        return None
    return None


def _constant(node: nodes.Expr, environment: Sandbox) -> Any:
    if isinstance(node, nodes.BinExpr) and node.operator in Sandbox.intercepted_binops:
        left, right = _constant(node.left, environment), _constant(node.right, environment)
        return bounded_binop(node.operator, left, right, environment.binop_table)
    if isinstance(node, nodes.Filter) and node.name in _FILTER_CHECKS and node.node is not None:
        function = environment.filters[node.name]
        passed = {_PassArg.eval_context: nodes.EvalContext(environment), _PassArg.environment: environment}
        pass_arg = _PassArg.from_obj(function)
        if pass_arg is _PassArg.context or node.dyn_args or node.dyn_kwargs:
            raise nodes.Impossible()
        args = [_constant(argument, environment) for argument in node.args]
        kwargs = {keyword.key: _constant(keyword.value, environment) for keyword in node.kwargs}
        first = [passed[pass_arg]] if pass_arg is not None else []
        return function(*first, _constant(node.node, environment), *args, **kwargs)
    return node.as_const()


class DataUndefined(ChainableUndefined):
    """A missing name or key: chainable, so `cart.items | length` is 0 without a cart.

    A missing key of data that is there (`promo.code` without a code) stays harmless. A name
    that is not defined at all (`ordr`, a misspelling `check` reports) prints as nothing in
    the daemon, with a warning, so one event short of a key does not stop a message; in a
    `strict` scope (simulate, preview) it is an error that names it.
    """

    __slots__ = ()

    def _missing_name(self) -> bool:
        if self._undefined_obj is not missing:
            return False  # a key of data that is there
        current = _current.get()
        if current is not None and current.strict:
            self._fail_with_undefined_error()
        return True

    def __str__(self) -> str:
        if self._missing_name():
            log.warning("a template printed '%s', which is not defined for its message", self._undefined_name)
        return ""

    def __iter__(self) -> Iterator[Any]:
        self._missing_name()
        return iter(())

    def __bool__(self) -> bool:
        self._missing_name()
        return False

    def __len__(self) -> int:
        self._missing_name()
        return 0


def make_environment(functions: Mapping[str, Callable[..., Any]] | None = None, **options: Any) -> Sandbox:
    """A sandboxed Jinja2 environment with the condition functions as globals; missing names
    are `DataUndefined`."""
    environment = Sandbox(undefined=DataUndefined, **options)
    environment.globals.update({name: as_function(name, f) for name, f in (functions or {}).items()})
    return environment


class LazyTemplate:
    """A template checked when it loads and compiled on its first render (`compiled`).

    Checking it (parsing, the names it uses, what the sandbox refuses: see
    `boomerang.templates`) needs no compiled code, so `boomerang check` never compiles; a
    project that runs compiles every template once when it loads (`TemplateLibrary.warm`).
    """

    __slots__ = ("_compiled", "_environment", "source")

    def __init__(self, environment: Sandbox, source: str):
        self.source = source
        self._environment = environment
        self._compiled: Template | None = None

    def compiled(self) -> Template:
        """The compiled template; compiled once, whichever thread renders it first."""
        compiled = self._compiled
        if compiled is None:
            with _COMPILING:
                if self._compiled is None:
                    self._compiled = self._environment.from_string(self.source)
                compiled = self._compiled
        return compiled

    def generate(self, *args: Any, **kwargs: Any) -> Iterator[str]:
        """`Template.generate` of the compiled template."""
        return self.compiled().generate(*args, **kwargs)


_COMPILING = threading.Lock()


def render(template: Template | LazyTemplate, context: Mapping[str, Any]) -> str:
    """Render within the budget of the scope under way (a message's, if there is none)."""
    current = _current.get()
    if current is None:
        with evaluating(Scope()):
            return render(template, context)
    limit = current.budget.characters
    chunks, size = [], 0
    for chunk in template.generate(context):
        size += len(chunk)
        if size > limit:
            raise RenderLimitExceeded(f"its text is longer than the limit of {limit} characters")
        current.budget.tick()
        chunks.append(chunk)
    return "".join(chunks)


class Expression:
    """An expression such as `cart.total >= 50`, checked (`compile_expression`) and compiled on
    its first evaluation (or by `compiled`, when a project that runs loads)."""

    __slots__ = ("_compiled", "_environment", "names", "source")

    def __init__(self, source: str, environment: Sandbox, names: Sequence[tuple[int, str, bool]] = ()):
        self.source = source
        self.names = list(names)  # `template_names` of the expression, for `check`
        self._environment = environment
        self._compiled: Any = None

    def __repr__(self) -> str:
        return f"Expression({self.source!r})"

    def compiled(self) -> Any:
        """The compiled expression; compiled once, whichever thread evaluates it first."""
        compiled = self._compiled
        if compiled is None:
            with _COMPILING:
                if self._compiled is None:
                    environment = self._environment
                    self._compiled = environment.compile_expression(self.source, undefined_to_none=False)
                compiled = self._compiled
        return compiled

    def evaluate(self, context: Mapping[str, Any], within: Scope | None = None) -> Any:
        """The expression's value; a runtime error is logged and yields None (falsy).

        It runs in `within`, else in the scope under way (a segment inside an `if:`), else in a
        scope of its own with the expressions' short budget.
        """
        # Compiled before a budget of its own starts: compiling once is not evaluating, and
        # on a busy machine it alone could take the expression's tenth of a second.
        function = self._compiled or self.compiled()
        current = within or _current.get() or Scope(Budget(EXPRESSION_SECONDS))
        try:
            with evaluating(current):
                value = function(**context)
        except RenderLimitExceeded as exc:
            log.warning("expression %r stopped: %s", self.source, exc)
            return None
        except (TypeError, ValueError, ArithmeticError, LookupError, UndefinedError, SecurityError) as exc:
            # Common and harmless (days_since of a customer who never ordered), so not a warning.
            log.debug("expression %r failed: %s: %s", self.source, type(exc).__name__, exc)
            return None
        return None if isinstance(value, Undefined) else value

    def test(self, context: Mapping[str, Any], within: Scope | None = None) -> bool:
        """The expression's truth value."""
        return bool(self.evaluate(context, within))


def compile_expression(source: Any, environment: Sandbox) -> Expression:
    """Check an expression as compiling it would, and find the names it uses; raises
    `ExpressionError` saying what does not parse or is refused. It is compiled on first use.

    One parse serves everything: the syntax (as `Environment.compile_expression` parses it),
    the sandbox's refusals (which compiling raises first) and the names it uses, found by a
    pass of Jinja's code generator that also raises what generating its code would (an
    unknown filter or test)."""
    text = str(source).strip() if not isinstance(source, bool) else str(source).lower()
    if not text:
        raise ExpressionError("the expression is empty")
    try:
        parser = Parser(environment, text, state="variable")
        expression = parser.parse_expression()
        if not parser.stream.eos:
            raise TemplateSyntaxError("chunk after expression", parser.stream.current.lineno, None, None)
        # What compiling it compiles, and what the names are looked up in (a printed value)
        assign = nodes.Assign(nodes.Name("result", "store"), expression, lineno=1)
        for line, message in refusals(nodes.Template([assign], lineno=1), environment):
            raise Refused(message, line)
        names = template_names(nodes.Template([nodes.Output([expression])], lineno=1), environment)
    except TemplateSyntaxError as exc:
        one_line = " ".join(text.split())
        what = "refused" if isinstance(exc, Refused) else "cannot parse"
        raise ExpressionError(f"{what} expression '{one_line}': {exc.message}", exc.lineno or 1) from None
    return Expression(text, environment, names)
