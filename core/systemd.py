"""Speaking to systemd: the notify protocol on `$NOTIFY_SOCKET`, and the unit file.

The protocol is a datagram of `KEY=value` lines sent to an AF_UNIX socket; speaking it
directly avoids a dependency on libsystemd.
"""

from __future__ import annotations

import logging
import os
import shutil
import socket
import sys
import time
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from boomerang.config import Config

log = logging.getLogger(__name__)


class Notifier:
    """Sends state changes to systemd; does nothing when not run by systemd."""

    def __init__(self, address: str | None):
        self.address = address
        self._socket: socket.socket | None = None
        if address:
            target = "\0" + address[1:] if address.startswith("@") else address
            self._target = target
            self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)

    @classmethod
    def from_environ(cls) -> Notifier:
        """A notifier for `$NOTIFY_SOCKET`, or a silent one if it is unset."""
        return cls(os.environ.get("NOTIFY_SOCKET") or None)

    def send(self, **fields: str | int) -> None:
        """Send one notification, e.g. `send(READY=1, STATUS="serving")`."""
        if self._socket is None:
            return
        payload = "\n".join(f"{key}={value}" for key, value in fields.items()).encode()
        try:
            self._socket.sendto(payload, self._target)
        except OSError as exc:  # systemd gone or socket full: the service goes on regardless
            log.debug("sd_notify failed: %s", exc)

    def ready(self, status: str) -> None:
        """The daemon is serving."""
        self.send(READY=1, STATUS=status)

    def reloading(self) -> None:
        """A reload has begun; `ready` ends it."""
        self.send(RELOADING=1, MONOTONIC_USEC=time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000)

    def stopping(self) -> None:
        """The daemon is shutting down."""
        self.send(STOPPING=1, STATUS="stopping")

    def status(self, text: str) -> None:
        """A one-line summary shown by `systemctl status`."""
        self.send(STATUS=text)

    def watchdog(self) -> None:
        """Tell the watchdog the daemon is alive."""
        self.send(WATCHDOG=1)

    def close(self) -> None:
        """Close the socket."""
        if self._socket is not None:
            self._socket.close()
            self._socket = None


def watchdog_interval() -> float | None:
    """Seconds between watchdog pings (half of `$WATCHDOG_USEC`), or None when not asked for."""
    usec = os.environ.get("WATCHDOG_USEC")
    pid = os.environ.get("WATCHDOG_PID")
    if not usec or (pid and pid != str(os.getpid())):
        return None
    try:
        return int(usec) / 1_000_000 / 2
    except ValueError:
        return None


STATE_DIRECTORY = Path("/var/lib/boomerang")


def unit_file(config: Config, executable: str | None = None, watchdog_seconds: int = 30) -> str:
    """A hardened `Type=notify` unit for running `boomerang run` with this config."""
    executable = executable or _installed_executable()
    writable = sorted(
        {str(path) for path in [config.state_folder, config.outbox] if path is not None}
        - {str(STATE_DIRECTORY)}
    )
    # "-": a path that does not exist yet must not stop the service from starting.
    extra = f"ReadWritePaths={' '.join('-' + path for path in writable)}\n" if writable else ""
    # A PostgreSQL server on this host starts first (and a missing postgresql.service is no
    # error: Wants= only asks for it).
    after = "network-online.target" + (" postgresql.service" if _local_postgresql(config) else "")
    return f"""\
[Unit]
Description=Boomerang: brings e-commerce customers back
After={after}
Wants={after}

[Service]
Type=notify
ExecStart={executable} run --config {config.path}
ExecReload=/bin/kill -HUP $MAINPID
WatchdogSec={watchdog_seconds}
Restart=on-failure
RestartSec=5
TimeoutStopSec=20
# Secrets (BOOMERANG_SECRET, BOOMERANG_API_TOKEN, provider tokens) come from here.
EnvironmentFile=-/etc/boomerang/environment
DynamicUser=yes
StateDirectory=boomerang
WorkingDirectory=%S/boomerang
{extra}UMask=0077
NoNewPrivileges=yes
ProtectSystem=strict
ProtectHome=read-only
PrivateTmp=yes
PrivateDevices=yes
ProtectKernelTunables=yes
ProtectKernelModules=yes
ProtectKernelLogs=yes
ProtectControlGroups=yes
ProtectClock=yes
ProtectHostname=yes
RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6
RestrictNamespaces=yes
RestrictRealtime=yes
RestrictSUIDSGID=yes
LockPersonality=yes
SystemCallArchitectures=native
CapabilityBoundingSet=

[Install]
WantedBy=multi-user.target
"""


def unit_notes(config: Config) -> list[str]:
    """Advice about a config that would fight the unit's sandbox."""
    notes = []
    if not config.on_postgresql and not Path(config.database).is_relative_to(STATE_DIRECTORY):
        notes.append(
            f"database {config.database} is outside the service's state directory; "
            f"under systemd use `database: {STATE_DIRECTORY / 'boomerang.db'}`"
        )
    if config.outbox is not None:
        notes.append("outbox is set: messages are written to files, not sent")
    return notes


def _local_postgresql(config: Config) -> bool:
    """Whether the database is a PostgreSQL server on this host: localhost, a loopback address
    or a Unix socket's folder (`?host=/var/run/postgresql`)."""
    if not config.on_postgresql:
        return False
    parts = urlsplit(str(config.database))
    hosts = [parts.hostname or ""] + [
        host for value in parse_qs(parts.query).get("host", []) for host in value.split(",")
    ]
    return any(host in ("localhost", "127.0.0.1", "::1") or host.startswith("/") for host in hosts)


def _installed_executable() -> str:
    """The absolute path of the `boomerang` script next to the running interpreter."""
    candidate = Path(sys.executable).parent / "boomerang"
    if candidate.exists():
        return str(candidate.absolute())
    found = shutil.which("boomerang")
    return str(Path(found).absolute()) if found else str(candidate.absolute())
