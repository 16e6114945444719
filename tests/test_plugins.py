"""Loading plugins: entry points, drop-in files, broken ones, switches, `boomerang plugins`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from boomerang.cli import cli
from boomerang.plugin_manager import collect, load_plugins
from boomerang.problems import ProblemError
from conftest import running

GOOD = """
from boomerang import hookimpl

@hookimpl
def register_conditions():
    return {"is_weekend": lambda now: now.weekday() >= 5}
"""


def plugins_listing(project: Path, *args: str) -> tuple[int, dict]:
    result = CliRunner().invoke(
        cli, ["plugins", "--config", str(project / "boomerang.yaml"), "--json", *args]
    )
    return result.exit_code, json.loads(result.output)


def test_built_in_plugins_are_listed_as_packages(project: Path) -> None:
    code, listing = plugins_listing(project)
    assert code == 0
    by_name = {row["name"]: row for row in listing["plugins"]}
    assert by_name["email"]["origin"] == "package"
    assert by_name["email"]["package"] == "boomerang"
    assert by_name["email"]["hooks"] == ["register_channel_kinds", "register_channels"]
    assert by_name["generic"]["hooks"] == ["register_sources"]


def test_a_drop_in_file_shows_up_with_its_hooks(project: Path) -> None:
    (project / "plugins" / "weekend.py").write_text(GOOD)
    code, listing = plugins_listing(project)
    assert code == 0
    row = next(r for r in listing["plugins"] if r["name"] == "weekend")
    assert row["origin"] == "file"
    assert row["file"] == str((project / "plugins" / "weekend.py").resolve())
    assert row["hooks"] == ["register_conditions"]


def test_the_table_output_names_origin_and_hooks(project: Path) -> None:
    (project / "plugins" / "weekend.py").write_text(GOOD)
    result = CliRunner().invoke(cli, ["plugins", "--config", str(project / "boomerang.yaml")])
    assert result.exit_code == 0
    assert "weekend" in result.output and "weekend.py" in result.output
    assert "hooks: register_conditions" in result.output


@pytest.mark.parametrize(
    ("source", "line", "fragment"),
    [
        ("x = 1\ndef broken(:\n", (2, 12), "SyntaxError"),
        ("import os\n\nraise RuntimeError('no database here')\n", (3, 1), "RuntimeError: no database here"),
        (
            "from boomerang import hookimpl\n\n@hookimpl\ndef register_chanels(config):\n    return []\n",
            (4, 5),
            "'register_chanels' is not a hook (did you mean 'register_channels'?)",
        ),
    ],
    ids=["syntax-error", "raises-on-import", "misspelt-hook"],
)
def test_a_broken_drop_in_is_reported_with_file_and_line(project: Path, source, line, fragment) -> None:
    (project / "plugins" / "good.py").write_text(GOOD)
    broken = project / "plugins" / "broken.py"
    broken.write_text(source)
    code, listing = plugins_listing(project)
    assert code == 1
    [problem] = listing["problems"]
    assert problem["file"] == str(broken)
    assert (problem["line"], problem["col"]) == line
    assert fragment in problem["message"]
    names = [row["name"] for row in listing["plugins"]]
    assert "good" in names and "broken" not in names


async def test_a_broken_drop_in_does_not_stop_the_daemon(project: Path) -> None:
    (project / "plugins" / "broken.py").write_text("raise ImportError('missing dependency')\n")
    async with running(project) as daemon:
        assert [str(p.file) for p in daemon.plugins.problems] == [str(project / "plugins" / "broken.py")]
        assert "email" in daemon.project.registry.channels


def test_switches_select_and_block_entry_points(project: Path, monkeypatch) -> None:
    monkeypatch.setenv("BOOMERANG_DISABLED_PLUGINS", "email")
    names = [row["name"] for row in plugins_listing(project)[1]["plugins"]]
    assert "email" not in names and "generic" in names
    monkeypatch.delenv("BOOMERANG_DISABLED_PLUGINS")
    monkeypatch.setenv("BOOMERANG_LOAD_PLUGINS", "generic")
    names = [row["name"] for row in plugins_listing(project)[1]["plugins"]]
    assert names == ["generic"]


def test_a_configured_channel_nobody_provides_is_an_error_with_its_position(project: Path) -> None:
    from boomerang.config import load_config

    config_file = project / "boomerang.yaml"
    config_file.write_text(config_file.read_text().replace("channels:\n", "channels:\n  emial: {}\n"))
    config = load_config(config_file)
    with pytest.raises(ProblemError) as caught:
        collect(load_plugins(config.plugin_dirs), config)
    [problem] = caught.value.problems
    assert problem.line == config_file.read_text().splitlines().index("  emial: {}") + 1
    assert problem.col == 10
    assert "no channel plugin provides 'emial' (did you mean 'email'?)" in problem.message


def test_a_directory_listed_twice_loads_each_file_once(project: Path) -> None:
    (project / "plugins" / "weekend.py").write_text(GOOD)
    loaded = load_plugins([project / "plugins", project / "plugins"])
    assert [info.name for info in loaded.infos].count("weekend") == 1
    assert loaded.problems == []


def test_the_readme_plugin_loads_with_the_hooks_it_claims(project: Path) -> None:
    readme = (Path(__file__).parent.parent / "README.md").read_text(encoding="utf-8")
    start = readme.index("save it as `plugins/telegram_alert.py`")
    code = readme[readme.index("```python\n", start) + len("```python\n") : readme.index("```\n", start + 60)]
    (project / "plugins" / "telegram_alert.py").write_text(code)
    code_, listing = plugins_listing(project)
    assert code_ == 0, listing["problems"]
    row = next(r for r in listing["plugins"] if r["name"] == "telegram_alert")
    assert row["hooks"] == ["event_stored", "register_actions", "register_conditions"]


@pytest.mark.parametrize(
    ("source", "line", "fragment"),
    [
        (
            "from boomerang import hookimpl\n\n\n@hookimpl\ndef register_channels(config):\n"
            "    return ['not a channel']\n",
            4,
            "plugin 'pigeon': handed over an invalid channel: 'not a channel'",
        ),
        (
            "from boomerang import hookimpl\n\n@hookimpl\ndef register_sources(config):\n"
            "    settings = config.sources['pigeon']\n    return []\n",
            5,
            "plugin 'pigeon': register_sources failed: KeyError: 'pigeon'",
        ),
        (
            "from boomerang import hookimpl\n\n@hookimpl\ndef register_conditions():\n"
            "    return {'days_since': len}\n",
            3,
            "plugin 'pigeon': duplicate condition name 'days_since', already taken by plugin 'conditions' (",
        ),
        (
            "from boomerang import hookimpl\n\n\n@hookimpl\n"
            "def register_channel_kinds():\n    return ['pigeon']\n",
            4,
            "plugin 'pigeon': handed over an invalid channel kind: 'pigeon'",
        ),
        (
            "from boomerang import hookimpl\nfrom boomerang.kinds import Channel\n\n\n"
            "class Mail(Channel):\n    name = 'email'\n\n\n@hookimpl\n"
            "def register_channel_kinds():\n    return [Mail]\n",
            9,
            "plugin 'pigeon': duplicate channel kind name 'email', already taken by plugin 'email' (",
        ),
        (
            "from boomerang import hookimpl\nfrom boomerang.kinds import Channel\n\n\n"
            "class Coop(Channel):\n    name = 'coop'\n    address_fields = ('telegram', 'phone')\n\n\n"
            "@hookimpl\ndef register_channel_kinds():\n    return [Coop]\n",
            10,
            "plugin 'pigeon': channel kind 'coop' declares address_fields ('telegram',): a tuple of profile",
        ),
    ],
    ids=[
        "invalid-object",
        "hook-raises",
        "name-taken",
        "channel-kind-not-a-class",
        "channel-kind-taken",
        "address-fields-unknown",
    ],
)
def test_a_bad_hand_over_names_the_plugin_and_its_file(project: Path, source, line, fragment) -> None:
    from boomerang.config import load_config

    pigeon = project / "plugins" / "pigeon.py"
    pigeon.write_text(source)
    config = load_config(project / "boomerang.yaml")
    with pytest.raises(ProblemError) as caught:
        collect(load_plugins(config.plugin_dirs), config)
    [problem] = caught.value.problems
    assert (problem.file, problem.line) == (str(pigeon), line)
    assert fragment in problem.message
