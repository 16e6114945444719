"""The real `boomerang run` process under a stand-in for systemd's notify socket."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from boomerang import __version__
from conftest import API_TOKEN, event, start_daemon

pytestmark = pytest.mark.slow  # every test here starts the real daemon process


class NotifySocket:
    """An AF_UNIX datagram socket standing where systemd's NOTIFY_SOCKET would be."""

    def __init__(self) -> None:
        # A short path: AF_UNIX addresses are limited to about 100 bytes.
        self.directory = tempfile.mkdtemp(prefix="bn-")
        self.path = os.path.join(self.directory, "notify")
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.received: list[dict[str, str]] = []

    def wait_for(self, key: str, value: str = "1", timeout: float = 15) -> dict[str, str]:
        """Read notifications until one has key=value; returns it."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.sock.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                data = self.sock.recv(4096)
            except TimeoutError:
                break
            fields = dict(line.split("=", 1) for line in data.decode().splitlines() if "=" in line)
            self.received.append(fields)
            if fields.get(key) == value:
                return fields
        raise AssertionError(f"no {key}={value} within {timeout}s; got {self.received}")

    def close(self) -> None:
        self.sock.close()
        os.unlink(self.path)
        os.rmdir(self.directory)


@pytest.fixture
def notify() -> Iterator[NotifySocket]:
    sock = NotifySocket()
    yield sock
    sock.close()


def request(port: int, path: str, body: str | None = None) -> tuple[int, dict]:
    headers = {"Authorization": f"Bearer {API_TOKEN}"}
    req = urllib.request.Request(
        f"http://127.0.0.1:{port}{path}", data=body and body.encode(), headers=headers
    )
    try:
        with urllib.request.urlopen(req, timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


def start(project: Path, notify: NotifySocket, log: Path, **env: str) -> subprocess.Popen:
    return start_daemon(project, log, NOTIFY_SOCKET=notify.path, **env)


def test_the_daemon_speaks_systemd_and_survives_a_bad_reload(project: Path, notify: NotifySocket, tmp_path):
    port = int(os.environ["BOOMERANG_PORT"])
    log = tmp_path / "daemon.log"
    process = start(project, notify, log, WATCHDOG_USEC="400000", WATCHDOG_PID="")
    try:
        ready = notify.wait_for("READY")
        assert "serving on port" in ready["STATUS"]
        assert request(port, "/healthz") == (200, {"status": "ok", "version": __version__})

        body = json.dumps(event("evt-1", email="anna@example.com"))
        assert request(port, "/events", body) == (200, {"accepted": 1, "duplicates": 0})
        assert request(port, "/events", body) == (200, {"accepted": 0, "duplicates": 1})

        notify.wait_for("WATCHDOG")

        (project / "scenarios" / "broken.yaml").write_text("scenario: broken\nsteps:\n  - wait: [\n")
        process.send_signal(signal.SIGHUP)
        notify.wait_for("RELOADING")
        after = notify.wait_for("READY")
        assert after["STATUS"].startswith("reload failed")
        assert request(port, "/healthz")[0] == 200
        assert request(port, "/events", json.dumps(event("evt-2")))[1] == {"accepted": 1, "duplicates": 0}

        started = time.monotonic()
        process.send_signal(signal.SIGTERM)
        notify.wait_for("STOPPING")
        assert process.wait(timeout=10) == 0
        assert time.monotonic() - started < 10
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    text = log.read_text()
    assert "broken.yaml:4:1: error: invalid YAML" in text, text
    assert "reload failed: still running the previous configuration" in text
    assert "stopped: 2 events accepted, 1 duplicates" in text
    assert "anna@example.com" not in text  # no personal data in the log at INFO
    assert "Traceback" not in text


def test_a_broken_config_exits_2_with_positions_and_no_traceback(
    project: Path, notify: NotifySocket, tmp_path
):
    config = project / "boomerang.yaml"
    config.write_text(config.read_text().replace("port: ${BOOMERANG_PORT:-8080}", "port: eighty"))
    log = tmp_path / "daemon.log"
    process = start(project, notify, log)
    assert process.wait(timeout=15) == 1
    text = log.read_text()
    assert "boomerang.yaml:7:9: error: 'port' must be a whole number, not 'eighty'" in text, text
    assert "Traceback" not in text


def test_a_port_already_taken_is_a_clear_startup_error(project: Path, notify: NotifySocket, tmp_path):
    port = int(os.environ["BOOMERANG_PORT"])
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", port))
        taken.listen()
        log = tmp_path / "daemon.log"
        process = start(project, notify, log)
        assert process.wait(timeout=15) == 2
    text = log.read_text()
    assert f"cannot listen on 127.0.0.1:{port}" in text, text
    assert "Traceback" not in text
