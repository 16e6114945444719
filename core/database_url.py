"""What a `database:` setting names: a SQLite file (a path) or a PostgreSQL server (a URL)."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

SCHEMES = ("postgresql://", "postgres://")


def is_postgresql(database: Path | str) -> bool:
    """Whether `database` is a PostgreSQL URL (`postgresql://` or `postgres://`), not a file."""
    return isinstance(database, str) and database.startswith(SCHEMES)


def url_problem(url: str) -> str | None:
    """What is wrong with a PostgreSQL URL, or None when it reads as one (whether the server
    answers is found out when the store opens it)."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises on a port that is not a number
    except ValueError as exc:
        return f"not a valid PostgreSQL URL ({exc}): write postgresql://user@host:5432/database"
    if not parts.hostname and "host=" not in parts.query:
        return "a PostgreSQL URL names its server: postgresql://user@host:5432/database"
    if not parts.path.strip("/"):
        return "a PostgreSQL URL names its database: postgresql://user@host:5432/database"
    return None


def shown(database: Path | str) -> str:
    """The database as logs and messages show it: a URL without its password."""
    if not is_postgresql(database):
        return str(database)
    parts = urlsplit(str(database))
    if parts.password is None:
        return str(database)
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return parts._replace(netloc=netloc).geturl()
