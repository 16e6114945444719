"""The declared plugin API: the built-in plugins import nothing else from the core, every name
of `boomerang.plugin_api` is documented, and its helpers do what they say."""

from __future__ import annotations

import ast
import tomllib
from datetime import UTC, datetime
from pathlib import Path

import pytest

from boomerang import plugin_api
from boomerang.config import load_config
from boomerang.plugin_api import SettingsCheck, b64url, b64url_decode, e164, retry_after
from boomerang.problems import ProblemError

ROOT = Path(__file__).parent.parent
ALLOWED = {"boomerang.kinds", "boomerang.plugin_api"}


def entry_point_modules() -> set[str]:
    """The modules the `boomerang` entry points name: one plugin each."""
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    return set(pyproject["project"]["entry-points"]["boomerang"].values())


def core_imports(file: Path) -> list[tuple[int, str, list[str]]]:
    """(line, module, names) of every import of a `boomerang` module in a file."""
    found = []
    for node in ast.walk(ast.parse(file.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "boomerang":
            found.append((node.lineno, node.module, [alias.name for alias in node.names]))
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "boomerang":
                    found.append((node.lineno, alias.name, []))
    return found


def test_the_built_in_plugins_import_only_the_declared_api() -> None:
    plugins = entry_point_modules()
    wrong = []
    for file in sorted((ROOT / "plugins").rglob("*.py")):
        for line, module, names in core_imports(file):
            if module == "boomerang" and set(names) <= {"hookimpl", "__version__"}:
                continue
            if module in ALLOWED:
                continue
            # a plugin's own helper modules, never another plugin
            if module.startswith("boomerang.plugins.") and module not in plugins:
                continue
            wrong.append(f"{file.relative_to(ROOT)}:{line}: {module} {names}")
    assert wrong == []


def test_every_name_of_the_plugin_api_is_documented_in_the_readme() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme[readme.index("### What a plugin may import") : readme.index("### The hooks")]
    assert [name for name in plugin_api.__all__ if f"`{name}`" not in section] == []
    assert all(hasattr(plugin_api, name) for name in plugin_api.__all__)


@pytest.mark.parametrize(
    ("header", "seconds"),
    [
        ("120", 120.0),
        (" 7 ", 7.0),
        ("Wed, 21 Oct 2015 07:28:30 GMT", 30.0),
        ("Wed, 21 Oct 2015 07:27:00 GMT", 0.0),  # a date gone by: at once
        (None, None),
        ("", None),
        ("soon", None),
        ("-3", None),
        ("1.5", None),
        ("inf", None),
    ],
)
def test_retry_after_reads_seconds_and_http_dates(header: str | None, seconds: float | None) -> None:
    assert retry_after(header, now=datetime(2015, 10, 21, 7, 28, tzinfo=UTC)) == seconds


def test_b64url_is_unpadded_and_reads_either_form() -> None:
    data = bytes(range(250, 256))
    assert b64url(data) == "-vv8_f7_"
    assert b64url_decode("-vv8_f7_") == b64url_decode("-vv8_f7_==") == data
    with pytest.raises(ValueError):
        b64url_decode("a")


@pytest.mark.parametrize(
    ("phone", "expected"),
    [
        ("+7 (999) 000-11.22", "+79990001122"),
        ("+15550001111", "+15550001111"),
        ("89990001122", None),  # no country code: not E.164
        ("+0123456789", None),
        ("", None),
        (None, None),
    ],
)
def test_e164_drops_punctuation_or_says_none(phone: str | None, expected: str | None) -> None:
    assert e164(phone) == expected


def test_a_settings_check_points_at_each_place(tmp_path: Path) -> None:
    path = tmp_path / "boomerang.yaml"
    path.write_text("channels:\n  pigeon:\n    urll: x\n    timeout: soon\n")
    config = load_config(path)
    check = SettingsCheck(config, "channels", "pigeon", known={"url", "timeout"})
    check.problem("url", "'url' is required")
    check.problem("timeout", "'timeout' must be a number")
    with pytest.raises(ProblemError) as caught:
        check.done()
    assert [(p.line, p.col, p.message) for p in caught.value.problems] == [
        (3, 5, "'url' is required"),  # missing: at the section's settings
        (3, 5, "unknown pigeon setting 'urll' (did you mean 'url'?)"),  # at the key
        (4, 14, "'timeout' must be a number"),  # at the value
    ]
