"""`boomerang init`, and how commands report a bad config."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

from click.testing import CliRunner

from boomerang.cli import cli
from boomerang.config import load_config
from boomerang.scaffold import create_project
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


def test_the_demo_checks_clean_and_its_events_reach_every_kind_of_channel(demo: Path) -> None:
    """`init`'s demo configures every channel in outbox mode: `check` has nothing to say but
    its summary, and the shipped events.jsonl makes the plan choose among the channels."""
    config = str(demo / "boomerang.yaml")
    checked = CliRunner().invoke(cli, ["check", "--config", config])
    assert checked.exit_code == 0
    assert checked.output.splitlines() == ["8 files checked: no problems"]
    loaded = load_config(demo / "boomerang.yaml")
    assert loaded.outbox and set(loaded.channels) == {"email", "sms", "whatsapp", "push", "telegram"}
    events = str(demo / "events.jsonl")
    simulated = CliRunner().invoke(cli, ["simulate", "--config", config, "--events", events, "--json"])
    assert simulated.exit_code == 0, simulated.output
    rows = [json.loads(line) for line in simulated.stdout.splitlines()]
    chosen = {row["channel"] for row in rows if row["kind"] == "send"}
    assert {"push", "sms", "email", "telegram"} <= chosen


def test_the_demos_links_follow_its_port_unless_a_public_url_is_given(demo: Path) -> None:
    config = demo / "boomerang.yaml"
    assert load_config(config, environ={"BOOMERANG_PORT": "8081"}).public_url == "http://127.0.0.1:8081"
    assert load_config(config, environ={}).public_url == "http://127.0.0.1:8080"
    behind_a_proxy = {"BOOMERANG_PORT": "8081", "BOOMERANG_PUBLIC_URL": "https://track.shop.example"}
    assert load_config(config, environ=behind_a_proxy).public_url == "https://track.shop.example"


def test_the_readmes_configuration_is_what_init_writes(tmp_path: Path) -> None:
    readme = (Path(__file__).parent.parent / "README.md").read_text(encoding="utf-8")
    block = re.search(r"exactly as `boomerang init` writes it.*?```yaml\n(.*?)```", readme, re.DOTALL)
    assert block
    create_project(tmp_path / "shop")
    written = (tmp_path / "shop" / "boomerang.yaml").read_text(encoding="utf-8")
    names = "BOOMERANG_SECRET|BOOMERANG_API_TOKEN|BOOMERANG_ADMIN_TOKEN|TELEGRAM_WEBHOOK_SECRET"
    randoms = rf"({names}):-[A-Za-z0-9_-]{{32,}}\}}"
    assert re.sub(randoms, r"\1:-<random>}", written) == block.group(1)
