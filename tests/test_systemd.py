"""The unit file from `boomerang systemd-unit`, and the notifier's wire format."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

import pytest
from click.testing import CliRunner

from boomerang.cli import cli
from boomerang.systemd import Notifier, watchdog_interval
from conftest import BOOMERANG


def unit(project: Path) -> str:
    result = CliRunner().invoke(cli, ["systemd-unit", "--config", str(project / "boomerang.yaml")])
    assert result.exit_code == 0, result.output
    return result.stdout


def directives(text: str) -> dict[str, str]:
    pairs = [line.split("=", 1) for line in text.splitlines() if "=" in line and not line.startswith("#")]
    return {key: value for key, value in pairs}


def test_the_unit_is_hardened_and_runs_this_installation(project: Path) -> None:
    found = directives(unit(project))
    assert found["Type"] == "notify"
    assert found["ExecStart"] == f"{BOOMERANG} run --config {(project / 'boomerang.yaml').resolve()}"
    assert Path(found["ExecStart"].split()[0]).is_absolute()
    assert found["ExecReload"] == "/bin/kill -HUP $MAINPID"
    assert found["WatchdogSec"] == "30"
    assert found["Restart"] == "on-failure"
    assert found["DynamicUser"] == "yes"
    assert found["StateDirectory"] == "boomerang"
    assert found["ProtectSystem"] == "strict"
    assert found["NoNewPrivileges"] == "yes"
    assert found["WantedBy"] == "multi-user.target"


def test_the_unit_warns_about_a_database_outside_the_state_directory(project: Path) -> None:
    config = with_database(project, "./boomerang.db") / "boomerang.yaml"  # a SQLite file, whatever the store
    result = CliRunner().invoke(cli, ["systemd-unit", "--config", str(config)])
    assert "note: database" in result.stderr and "/var/lib/boomerang/boomerang.db" in result.stderr


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")
def test_the_unit_passes_systemd_analyze_verify(project: Path, tmp_path: Path) -> None:
    path = tmp_path / "boomerang.service"
    path.write_text(unit(project))
    result = subprocess.run(
        ["systemd-analyze", "verify", str(path)], capture_output=True, text=True, timeout=60
    )
    complaints = [line for line in result.stderr.splitlines() if "boomerang.service" in line]
    assert result.returncode == 0 and not complaints, result.stderr


def test_the_notifier_sends_datagrams_and_understands_abstract_addresses() -> None:
    directory = tempfile.mkdtemp(prefix="bn-")
    path = os.path.join(directory, "s")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as server:
        server.bind(path)
        notifier = Notifier(path)
        notifier.ready("serving")
        assert server.recv(1024) == b"READY=1\nSTATUS=serving"
        notifier.close()
    os.unlink(path)
    os.rmdir(directory)
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as server:
        server.bind("\0boomerang-test-abstract")
        notifier = Notifier("@boomerang-test-abstract")
        notifier.stopping()
        assert server.recv(1024) == b"STOPPING=1\nSTATUS=stopping"
        notifier.close()
    Notifier(None).ready("nobody listens")  # outside systemd: silently nothing


def test_the_watchdog_interval_is_half_of_watchdog_usec(monkeypatch) -> None:
    monkeypatch.setenv("WATCHDOG_USEC", "30000000")
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    assert watchdog_interval() == 15.0
    monkeypatch.setenv("WATCHDOG_PID", "1")  # meant for another process
    assert watchdog_interval() is None
    monkeypatch.delenv("WATCHDOG_USEC")
    assert watchdog_interval() is None


def with_database(project: Path, database: str) -> Path:
    """The project's config with `database:` set to `database`."""
    config = project / "boomerang.yaml"
    lines = [
        f"database: {database}" if line.startswith("database:") else line
        for line in config.read_text().splitlines()
    ]
    config.write_text("\n".join(lines) + "\n")
    return project


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://boomerang:${BOOMERANG_DB_PASSWORD:-x}@127.0.0.1:5432/boomerang",
        "postgresql://boomerang@localhost/boomerang",
        "postgresql:///boomerang?host=/var/run/postgresql",
    ],
)
def test_a_postgresql_server_on_this_host_starts_before_the_daemon(project: Path, url: str) -> None:
    result = CliRunner().invoke(
        cli, ["systemd-unit", "--config", str(with_database(project, url) / "boomerang.yaml")]
    )
    assert result.exit_code == 0, result.output
    found = directives(result.stdout)
    assert found["After"] == found["Wants"] == "network-online.target postgresql.service"
    assert "note: database" not in result.stderr  # no advice to move a server's database into a folder


def test_a_postgresql_server_elsewhere_is_not_waited_for(project: Path) -> None:
    found = directives(unit(with_database(project, "postgresql://boomerang@db.internal:5432/boomerang")))
    assert found["After"] == found["Wants"] == "network-online.target"
    assert "postgresql.service" not in unit(with_database(project, "./boomerang.db"))  # nor on SQLite
