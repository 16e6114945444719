"""`boomerang init`, and how commands report a bad config."""

from __future__ import annotations

import subprocess
from pathlib import Path

from click.testing import CliRunner

from boomerang.cli import cli
from boomerang.config import load_config
from conftest import BOOMERANG


def test_init_makes_a_project_that_loads_and_keeps_existing_ones(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["init", str(tmp_path / "shop")])
    assert result.exit_code == 0, result.output
    config = load_config(tmp_path / "shop" / "boomerang.yaml", environ={})
    assert config.outbox == (tmp_path / "shop" / "outbox").resolve()
    assert "email" in config.channels
    assert config.secret and config.api_token and config.secret != config.api_token
    assert list((tmp_path / "shop" / "scenarios").glob("*.yaml"))
    assert (tmp_path / "shop" / "plugins").is_dir()
    again = CliRunner().invoke(cli, ["init", str(tmp_path / "shop")])
    assert again.exit_code == 1
    assert "already exists; refusing to overwrite" in again.output


def test_two_projects_get_different_secrets(tmp_path: Path) -> None:
    CliRunner().invoke(cli, ["init", str(tmp_path / "a")])
    CliRunner().invoke(cli, ["init", str(tmp_path / "b")])
    a = load_config(tmp_path / "a" / "boomerang.yaml", environ={})
    b = load_config(tmp_path / "b" / "boomerang.yaml", environ={})
    assert a.secret != b.secret and a.api_token != b.api_token


def test_config_comes_from_the_environment_variable_when_not_given(project: Path, monkeypatch) -> None:
    monkeypatch.setenv("BOOMERANG_CONFIG", str(project / "boomerang.yaml"))
    result = CliRunner().invoke(cli, ["systemd-unit"])
    assert result.exit_code == 0
    assert f"--config {(project / 'boomerang.yaml').resolve()}" in result.stdout


def test_a_missing_env_variable_is_reported_by_name_and_position(project: Path, monkeypatch) -> None:
    config = project / "boomerang.yaml"
    config.write_text(config.read_text().replace("secret: ${BOOMERANG_SECRET:-", "secret: ${SHOP_SECRET}#"))
    process = subprocess.run(
        [BOOMERANG, "plugins", "--config", str(config)], capture_output=True, text=True, timeout=60
    )
    assert process.returncode == 1
    line = (
        config.read_text()
        .splitlines()
        .index(next(x for x in config.read_text().splitlines() if x.startswith("secret:")))
        + 1
    )
    assert f"boomerang.yaml:{line}:9: error: environment variable SHOP_SECRET is not set" in process.stderr
    assert "Traceback" not in process.stderr


def test_help_lists_the_commands() -> None:
    result = CliRunner().invoke(cli, ["--help"])
    for command in ("init", "run", "plugins", "systemd-unit"):
        assert command in result.output


def test_sources_setup_names_the_configured_sources_and_refuses_one_with_nothing_to_set_up(
    project: Path,
) -> None:
    config = str(project / "boomerang.yaml")
    unknown = CliRunner().invoke(cli, ["sources", "setup", "shopfy", "--config", config])
    assert unknown.exit_code == 1
    assert "no source 'shopfy'" in unknown.output and "configured: api" in unknown.output
    nothing = CliRunner().invoke(cli, ["sources", "setup", "api", "--config", config])
    assert nothing.exit_code == 1
    assert "source 'api' has nothing to set up" in nothing.output
