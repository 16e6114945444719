"""Reading YAML with positions kept, so that every complaint can name `file:line:col`.

ruamel.yaml's round-trip loader keeps the line and column of every key and value and never
builds Python objects from tags, so no YAML construct reaches anything but plain data.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import MarkedYAMLError, YAMLError

from boomerang.problems import Problem, ProblemError


def parse_yaml(text: str, file: str) -> Any:
    """Parse YAML text, raising `ProblemError` with the position of a syntax error."""
    yaml = YAML(typ="rt", pure=True)
    try:
        return yaml.load(text)
    except MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, col = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        message = exc.problem or exc.context or "invalid YAML"
        raise ProblemError([Problem(file, line, col, f"invalid YAML: {message}")]) from None
    except YAMLError as exc:
        raise ProblemError([Problem(file, 1, 1, f"invalid YAML: {exc}")]) from None


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
