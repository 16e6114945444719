"""The two meta-tests from datasette: every hook is documented, and every hook has a test."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import pytest

from boomerang import hookspecs
from boomerang.plugin_manager import HOOK_NAMES

ROOT = Path(__file__).parent.parent


@pytest.mark.parametrize("name", HOOK_NAMES)
def test_every_hook_has_a_docstring_with_each_parameter(name: str) -> None:
    spec = getattr(hookspecs, name)
    doc = inspect.getdoc(spec)
    assert doc, f"{name} has no docstring"
    for parameter in inspect.signature(spec).parameters:
        assert f":param {parameter}:" in doc, f"{name} does not document {parameter}"


@pytest.mark.parametrize("name", HOOK_NAMES)
def test_every_hook_is_documented_in_the_readme(name: str) -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert re.search(rf"`{name}\(", readme), f"README.md does not document {name}"


@pytest.mark.parametrize("name", HOOK_NAMES)
def test_every_hook_has_a_test(name: str) -> None:
    tests = "\n".join(path.read_text(encoding="utf-8") for path in (ROOT / "tests").glob("test_*.py"))
    assert f"def test_hook_{name}(" in tests, f"no test_hook_{name} in tests/"


def test_the_hookspecs_module_holds_only_markers_and_hooks() -> None:
    functions = {name for name, value in vars(hookspecs).items() if inspect.isfunction(value)}
    assert functions == set(HOOK_NAMES)
