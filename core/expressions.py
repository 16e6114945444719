"""The expression language shared by scenarios and templates: sandboxed Jinja2.

Marketers cannot hurt the host: expressions and templates run in Jinja2's immutable sandbox,
so no attribute starting with an underscore, no mutation of data, no file or module access.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from jinja2 import ChainableUndefined, TemplateSyntaxError, Undefined
from jinja2.exceptions import SecurityError, UndefinedError
from jinja2.sandbox import ImmutableSandboxedEnvironment

log = logging.getLogger(__name__)

# Names every expression and template may use besides the condition functions.
CONTEXT_NAMES = ("customer", "event", "journey", "now", "waited", "data", "cart", "order", "product")


class ExpressionError(ValueError):
    """An expression that does not parse; `line` and `col` are within the expression."""

    def __init__(self, message: str, line: int = 1):
        super().__init__(message)
        self.line = line


class Sandbox(ImmutableSandboxedEnvironment):
    """The immutable sandbox, where `cart.items` means the key `items`, not the dict method.

    Event data is JSON, so on a mapping `.name` looks up the key only: a missing key is
    undefined rather than a method such as `items` or `keys` (Jinja's default).
    """

    def getattr(self, obj: Any, attribute: str) -> Any:
        if isinstance(obj, Mapping):
            if attribute in obj:
                return obj[attribute]
            return self.undefined(obj=obj, name=attribute)
        return super().getattr(obj, attribute)


def make_environment(functions: Mapping[str, Callable[..., Any]] | None = None, **options: Any) -> Sandbox:
    """A sandboxed Jinja2 environment with the condition functions as globals.

    Missing names are chainable undefined values: `cart.items | length` is 0 without a cart.
    """
    environment = Sandbox(undefined=ChainableUndefined, **options)
    environment.globals.update(functions or {})
    return environment


@dataclass(frozen=True)
class Expression:
    """A compiled expression such as `cart.total >= 50`."""

    source: str
    _compiled: Any

    def evaluate(self, context: Mapping[str, Any]) -> Any:
        """The expression's value; a runtime error is logged and yields None (falsy)."""
        try:
            value = self._compiled(**context)
        except (TypeError, ValueError, ArithmeticError, LookupError, UndefinedError, SecurityError) as exc:
            # Common and harmless (days_since of a customer who never ordered), so not a warning.
            log.debug("expression %r failed: %s: %s", self.source, type(exc).__name__, exc)
            return None
        return None if isinstance(value, Undefined) else value

    def test(self, context: Mapping[str, Any]) -> bool:
        """The expression's truth value."""
        return bool(self.evaluate(context))


def compile_expression(source: Any, environment: Sandbox) -> Expression:
    """Compile an expression; raises `ExpressionError` saying what does not parse."""
    text = str(source).strip() if not isinstance(source, bool) else str(source).lower()
    if not text:
        raise ExpressionError("the expression is empty")
    try:
        compiled = environment.compile_expression(text, undefined_to_none=False)
    except TemplateSyntaxError as exc:
        one_line = " ".join(text.split())
        raise ExpressionError(
            f"cannot parse expression '{one_line}': {exc.message}", exc.lineno or 1
        ) from None
    return Expression(text, compiled)
