"""JSON from outside, read within limits: every endpoint's body, event files, stored columns.

`json.loads` recurses once per level of nesting, so a body of 100 000 `[` characters (200 KB)
raises RecursionError deep inside it. Here the nesting is measured first, by a scan that does
not recurse, and a document deeper than the limit is refused before it is parsed.
"""

from __future__ import annotations

import json
import re
from itertools import accumulate
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from aiohttp import web

MAX_BODY = 1024 * 1024  # 1 MiB: larger requests get 413
MAX_DEPTH = 64  # nesting a whole document may have (an event's data and attributes get 32 of it)
MAX_VALUE_DEPTH = 32  # nesting a free-form value (event data, customer attributes) may have

# A JSON string, written so that a failed match cannot backtrack more than linearly.
_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_NOT_BRACKET = re.compile(r"[^\[\]{}]+")
# For str.translate: every ASCII character but quotes and brackets deleted, braces made brackets
# (depth counts both kinds alike).
_QUOTES_AND_BRACKETS = {
    **dict.fromkeys(code for code in range(128) if chr(code) not in '"[]{}'),
    ord("{"): "[",
    ord("}"): "]",
}


class BodyError(ValueError):
    """Input that cannot be read as JSON within the limits; `status` is the HTTP answer."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


def loads(text: str | bytes, max_depth: int = MAX_DEPTH) -> Any:
    """Parse JSON nested at most `max_depth` levels; raises `BodyError` saying what is wrong.

    JSON syntax errors keep `json.JSONDecodeError`'s line and column in the message.
    """
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise BodyError(f"the body is not UTF-8 text (byte {exc.start})") from None
    depth = _depth(text, max_depth)
    if depth > max_depth:
        depth = _prefix_depth(_brackets(text))  # the message says how deep it really is
    if depth > max_depth:
        raise BodyError(f"the JSON is nested {depth} levels deep; at most {max_depth} are allowed")
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise BodyError(f"line {exc.lineno}, column {exc.colno}: invalid JSON: {exc.msg}") from None
    except ValueError as exc:  # an integer of more than 4300 digits
        raise BodyError(f"invalid JSON: {exc}") from None


def _depth(text: str, max_depth: int = MAX_DEPTH) -> int:
    """The deepest nesting of brackets outside strings; over-counts only in invalid JSON.

    Exact up to `max_depth`; beyond it, what it says is only more than `max_depth`."""
    brackets = _brackets(text)
    # Peel the innermost pairs off, a round per level, each round a pass of str.replace: a
    # round takes the deepest point down by one at most, so the rounds plus the depth of what
    # is left (nothing, in valid JSON) bound the depth from above, and are it when balanced.
    rounds = 0
    while rounds <= max_depth:
        peeled = brackets.replace("[]", "")
        if peeled == brackets:
            return rounds + _prefix_depth(brackets)
        brackets, rounds = peeled, rounds + 1
    return rounds


def _brackets(text: str) -> str:
    """The brackets of a JSON text that lie outside its strings, in order, braces written as
    square brackets."""
    if '\\"' in text:
        outside = _STRING.sub("", text)
    else:
        # No quote is escaped, so every quote opens or closes a string (as the parser sees them,
        # up to its first error): with all but quotes and brackets gone, the strings are every
        # other piece between quotes.
        outside = "".join(text.translate(_QUOTES_AND_BRACKETS).split('"')[::2])
    if not outside.isascii() or outside.strip("[]"):
        outside = _NOT_BRACKET.sub("", outside).translate(_QUOTES_AND_BRACKETS)
    return outside


def _prefix_depth(brackets: str) -> int:
    """The deepest nesting of a string of brackets, counted bracket by bracket (slow)."""
    return max(accumulate((1 if char == "[" else -1 for char in brackets), initial=0))


def nesting(value: Any) -> int:
    """How many containers deep a decoded value is: `1` is 0, `{}` is 1, `{"a": [1]}` is 2."""
    depth, level = 0, [value]
    while True:  # level by level, not recursion: the value may be as deep as its parser allowed
        below: list[Any] = []
        containers = False
        for item in level:
            if isinstance(item, dict):
                below += item.values()
                containers = True
            elif isinstance(item, list):
                below += item
                containers = True
        if not containers:
            return depth
        depth, level = depth + 1, below


async def read_json(request: web.Request, max_bytes: int = MAX_BODY) -> Any:
    """A request's body as JSON, at most `max_bytes` and `MAX_DEPTH` deep; raises `BodyError`
    with status 413 for a body too large and 400 for one that is not such JSON."""
    if (request.content_length or 0) > max_bytes:
        raise BodyError(f"the request is larger than {max_bytes} bytes", 413)
    body = await request.read()  # aiohttp itself answers 413 above the app's MAX_BODY
    if len(body) > max_bytes:
        raise BodyError(f"the request is larger than {max_bytes} bytes", 413)
    if not body.strip():
        raise BodyError("the body is empty; send a JSON object")
    return loads(body)
