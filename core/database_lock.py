"""The lock file beside the database: one writer process per database file.

The daemon holds it for its whole life; `boomerang ingest` holds it while it imports, so
that neither writes under the other (the engine's jobs and leases assume one owner).
"""

from __future__ import annotations

import fcntl
from pathlib import Path
from typing import IO

from boomerang.private_files import create_private


class DatabaseLocked(Exception):
    """Another process (a running daemon, an import) holds the database's lock."""


def lock_database(database: Path) -> IO[bytes]:
    """Take the exclusive lock beside `database` (`<database>.lock`) and hold it until the
    returned file is closed (or the process ends); raises `DatabaseLocked` if it is held."""
    create_private(Path(f"{database}.lock"))
    handle = open(f"{database}.lock", "ab")  # noqa: SIM115 - held open while the lock is needed
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        raise DatabaseLocked(str(database)) from None
    return handle
