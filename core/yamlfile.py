"""Reading YAML with positions kept, so that every complaint can name `file:line:col`.

ruamel.yaml's round-trip loader keeps the line and column of every key and value and never
builds Python objects from tags, so no YAML construct reaches anything but plain data.

Anchors and aliases are kept as shared objects, so a "billion laughs" (an alias of a list of
aliases of lists of aliases...) loads in milliseconds, and then every reader that walks the
data (validation, templates, JSON) spends forever in it. `parse_yaml` therefore measures the
size the data has once aliases are expanded, and refuses data that aliases make larger than
`MAX_EXPANDED_NODES` or that contains itself. Its scanner also slows down more than linearly
with the depth of flow collections (`[[[[...`: seconds at a thousand levels), so brackets
nested deeper than `MAX_FLOW_DEPTH` are refused before it starts.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import MarkedYAMLError, YAMLError

from boomerang.problems import Problem, ProblemError

# Far above any real config or scenario (the reference scenarios have a few hundred nodes),
# far below what makes walking the data slow.
MAX_EXPANDED_NODES = 100_000
MAX_FLOW_DEPTH = 100  # levels of [ ] and { }; real files use a handful
_BRACKETS = re.compile(r"[\[\]{}]")
# What the parser says about indentation, and what the writer of the file needs to hear.
_PLAIN_WORDS = (
    (
        "expected <block end>",
        "this line is indented differently from the lines above it: "
        "line it up with the keys (or the '- ' items) it belongs with",
    ),
    (
        "did not find expected key",
        "this line is indented differently from the lines above it: "
        "line it up with the keys (or the '- ' items) it belongs with",
    ),
    (
        "did not find expected '-' indicator",
        "this line is indented differently from the list items above it: start it with '- ' or line it up",
    ),
    (
        "mapping values are not allowed here",
        "a 'key:' where none can start: this line is indented further than the one above it, "
        "or a value holds ': ' and must be put in quotes",
    ),
    (
        "could not find expected ':'",
        "a line without 'key: value' where one is expected: add the ':' or line it up with the lines above",
    ),
    ("found character '\\t' that cannot start any token", "a tab: indent with spaces only"),
)


def parse_yaml(text: str, file: str) -> Any:
    """Parse YAML text, raising `ProblemError` with the position of a syntax error."""
    _check_flow_depth(text, file)
    yaml = YAML(typ="rt", pure=True)
    try:
        data = yaml.load(text)
    except MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, col = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        message = _in_plain_words(exc.problem or exc.context or "invalid YAML")
        raise ProblemError([Problem(file, line, col, f"invalid YAML: {message}")]) from None
    except YAMLError as exc:
        raise ProblemError([Problem(file, 1, 1, f"invalid YAML: {exc}")]) from None
    except RecursionError:  # ruamel.yaml's composer recurses once per level of nesting
        raise ProblemError([Problem(file, 1, 1, "invalid YAML: nested too deeply")]) from None
    _check_expanded_size(data, file)
    return data


def _in_plain_words(problem: str) -> str:
    """The parser's complaint about layout in the terms of the file: lines, indents, quotes."""
    for start, words in _PLAIN_WORDS:
        if problem.startswith(start):
            return words
    return problem


def _check_flow_depth(text: str, file: str) -> None:
    """Raise `ProblemError` where brackets open more than `MAX_FLOW_DEPTH` levels deep. Brackets
    in quoted text count too: harmless, since no real file comes near the limit."""
    depth = 0
    for match in _BRACKETS.finditer(text):
        if match.group() in "[{":
            depth += 1
            if depth > MAX_FLOW_DEPTH:
                line = text.count("\n", 0, match.start()) + 1
                col = match.start() - (text.rfind("\n", 0, match.start()) + 1) + 1
                why = f"invalid YAML: [ ] and {{ }} nested more than {MAX_FLOW_DEPTH} levels deep"
                raise ProblemError([Problem(file, line, col, why)])
        else:
            depth = max(0, depth - 1)


def _check_expanded_size(data: Any, file: str) -> None:
    """Raise `ProblemError` if aliases make `data` larger than `MAX_EXPANDED_NODES` once expanded,
    or make it contain itself. Each shared node is measured once, so this is quick."""
    sizes: dict[int, int] = {}
    open_nodes: set[int] = set()

    def refuse(node: Any, why: str) -> None:
        line, col = node_position(node)
        raise ProblemError([Problem(file, line, col, f"invalid YAML: {why}")])

    def size(node: Any) -> int:
        if not isinstance(node, dict | list):
            return 1
        key = id(node)
        if key in sizes:
            return sizes[key]
        if key in open_nodes:
            refuse(node, "an alias refers to a node that contains it")
        open_nodes.add(key)
        children = [*node.keys(), *node.values()] if isinstance(node, dict) else node
        total = 1 + sum(size(child) for child in children)
        open_nodes.discard(key)
        if total > MAX_EXPANDED_NODES:
            refuse(
                node,
                f"anchors and aliases expand this to more than {MAX_EXPANDED_NODES:,} values "
                "(a 'billion laughs'); write the values out or use fewer aliases",
            )
        sizes[key] = total
        return total

    size(data)


def load_yaml(path: Path) -> Any:
    """Read and parse a YAML file; unreadable or malformed files raise `ProblemError`."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ProblemError([Problem(str(path), 1, 1, f"cannot read file: {exc}")]) from None
    return parse_yaml(text, str(path))


def key_position(node: Any, key: Any) -> tuple[int, int]:
    """Line and column (from 1) of `key` in a mapping, or of item `key` in a sequence."""
    try:
        if isinstance(node, CommentedMap):
            line, col = node.lc.key(key)
        elif isinstance(node, CommentedSeq):
            line, col = node.lc.item(key)
        else:
            return node_position(node)
    except (KeyError, IndexError, TypeError):
        return node_position(node)
    return line + 1, col + 1


def value_position(node: Any, key: Any) -> tuple[int, int]:
    """Line and column (from 1) of the value stored under `key` (or at index `key`)."""
    try:
        if isinstance(node, CommentedMap):
            line, col = node.lc.value(key)
        elif isinstance(node, CommentedSeq):
            line, col = node.lc.item(key)
        else:
            return node_position(node)
    except (KeyError, IndexError, TypeError):
        return key_position(node, key)
    return line + 1, col + 1


def node_position(node: Any) -> tuple[int, int]:
    """Line and column (from 1) where a mapping or sequence starts; (1, 1) if unknown."""
    lc = getattr(node, "lc", None)
    if lc is None or lc.line is None:
        return 1, 1
    return lc.line + 1, lc.col + 1
