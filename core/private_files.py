"""Files that hold personal data or secrets: readable by the daemon's user alone.

The config (with `secret` and `api_token`), the database with its WAL, and the outbox (names,
emails, carts) are created 0600 in folders created 0700, whatever the umask: a shared host's
other users must not read them. SQLite gives the `-wal` and `-shm` files the database's mode.
"""

from __future__ import annotations

import os
from pathlib import Path

FILE_MODE = 0o600
FOLDER_MODE = 0o700


def private_folder(path: Path) -> None:
    """Create `path` (and missing parents) as 0700 folders; an existing folder is left as it is."""
    missing = [folder for folder in (path, *path.parents) if not folder.exists()]
    for folder in reversed(missing):
        folder.mkdir(mode=FOLDER_MODE, exist_ok=True)
        os.chmod(folder, FOLDER_MODE)  # mkdir's mode is filtered by the umask


def create_private(path: Path) -> None:
    """Make sure `path` exists as a 0600 file; an existing file is tightened to 0600."""
    private_folder(path.parent)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT, FILE_MODE)
    try:
        os.fchmod(descriptor, FILE_MODE)
    finally:
        os.close(descriptor)


def write_private(path: Path, content: bytes) -> None:
    """Write a 0600 file atomically: readers see the old content or the new, never half."""
    temporary = path.with_name(f".{path.name}.tmp")
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC
    try:
        descriptor = os.open(temporary, flags, FILE_MODE)
    except FileNotFoundError:
        # The folder is made only when missing: an outbox writes thousands of files into one
        # folder, and checking each of its parents first cost five system calls a file.
        private_folder(path.parent)
        descriptor = os.open(temporary, flags, FILE_MODE)
    try:
        os.fchmod(descriptor, FILE_MODE)  # a leftover temporary file may have had another mode
        # Written without a file object, which would cost two more system calls (fstat, isatty).
        view = memoryview(content)
        while view:
            view = view[os.write(descriptor, view) :]
    finally:
        os.close(descriptor)
    os.replace(temporary, path)
