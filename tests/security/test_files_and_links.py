"""Issue 9, section 5: HEAD never unsubscribes, private files whatever the umask, and commands
that may run beside the daemon (explain, preview) never write or migrate its database."""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import stat
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest
from click.testing import CliRunner

from boomerang.cli import cli
from boomerang.config import load_config
from boomerang.database_url import is_postgresql
from boomerang.outbox import message_of
from boomerang.scaffold import create_project
from boomerang.store import MIGRATIONS
from boomerang.store.migrations_postgresql import POSTGRESQL_MIGRATIONS, postgresql_schema_version
from boomerang.store.postgresql import PostgresDatabase
from boomerang.tracking import Tracking
from conftest import API_TOKEN, AUTH, SECRET, project_database, running, url, wait_for

WELCOME = """scenario: welcome
category: promo
trigger: {event: signup.completed}
steps:
  - send: welcome
"""

SIGNUP = {
    "id": "s-1",
    "type": "signup.completed",
    "at": "2026-03-02T10:00:00Z",
    "customer": {"id": "c-1", "email": "anna@example.com", "name": "Anna"},
}


@pytest.fixture
def loose_umask() -> Iterator[None]:
    """The umask most hosts run with: anything not made private on purpose is world-readable."""
    previous = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(previous)


def welcome_project(project: Path) -> None:
    for old in (project / "scenarios").glob("*.yaml"):
        old.unlink()
    (project / "scenarios" / "welcome.yaml").write_text(WELCOME)
    (project / "templates" / "welcome").mkdir()
    (project / "templates" / "welcome" / "email.en.html").write_text(
        "---\nsubject: Welcome\n---\n<p>Welcome, {{ customer.name }}.</p>\n"
    )


async def post_signup_and_wait_for_mail(daemon) -> Path:
    async with (
        aiohttp.ClientSession() as session,
        session.post(url(daemon, "/events"), data=json.dumps(SIGNUP), headers=AUTH) as answer,
    ):
        assert answer.status == 200
    outbox = daemon.project.config.outbox
    mails = await wait_for(
        lambda: sorted(outbox.glob("*-email-*.eml")) if outbox.exists() else [],
        what="a message in the outbox",
    )
    return mails[0]


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


async def test_head_on_an_unsubscribe_link_changes_nothing(project: Path) -> None:
    welcome_project(project)
    async with running(project) as daemon:
        mail = await post_signup_and_wait_for_mail(daemon)
        _, message_id = message_of(mail.name)
        link = Tracking(f"http://127.0.0.1:{daemon.port}", SECRET).unsubscribe_url(message_id)
        async with aiohttp.ClientSession() as session:
            for method in ("HEAD", "GET", "HEAD"):
                async with session.request(method, link) as answer:
                    assert answer.status == 200
            customer = await daemon.store.run(daemon.store.customer, "c-1")
            assert not customer.opt_outs  # a link scanner's HEAD changed nothing
            events = await daemon.store.run(daemon.store.events_of, "c-1")
            assert "message.unsubscribed" not in [e["type"] for e in events]

            # Only POST unsubscribes (RFC 8058).
            form = aiohttp.FormData({"List-Unsubscribe": "One-Click"})
            async with session.post(link, data=form) as answer:
                assert answer.status == 200
        customer = await daemon.store.run(daemon.store.customer, "c-1")
        assert "email" in customer.opt_outs


async def test_config_database_and_outbox_are_private_whatever_the_umask(
    tmp_path: Path, loose_umask: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    project = tmp_path / "shop"
    create_project(project)
    assert mode(project / "boomerang.yaml") == 0o600  # it holds the secret and the API token
    welcome_project(project)
    monkeypatch.delenv("BOOMERANG_CONFIG", raising=False)
    monkeypatch.setenv("BOOMERANG_PORT", "0")
    monkeypatch.setenv("BOOMERANG_API_TOKEN", API_TOKEN)
    async with running(project) as daemon:
        mail = await post_signup_and_wait_for_mail(daemon)
        database = daemon.project.config.database
        files = [database, Path(f"{database}-wal"), Path(f"{database}-shm"), Path(f"{database}.lock"), mail]
        assert {path.name: mode(path) for path in files} == {path.name: 0o600 for path in files}
        assert mode(mail.parent) == 0o700
        assert "Anna" in mail.read_text()  # the file that must not be world-readable holds personal data


@pytest.mark.sqlite_only  # the mode of the SQLite file
async def test_a_database_made_world_readable_by_an_older_version_is_tightened(
    project: Path, loose_umask: None
) -> None:
    database = project / "boomerang.db"
    database.touch(mode=0o644)
    async with running(project):
        assert mode(database) == 0o600


def older_database(project: Path) -> int:
    """Make the project's database one migration behind this Boomerang, as an upgrade leaves it;
    returns its schema's number."""
    if is_postgresql(database := load_config(project / "boomerang.yaml").database):
        connection = PostgresDatabase(str(database)).pg
        for _number, _name, sql in POSTGRESQL_MIGRATIONS[:-1]:
            connection.execute(sql)
        connection.execute("CREATE TABLE boomerang_schema (version integer NOT NULL)")
        connection.execute("INSERT INTO boomerang_schema VALUES (%s)", [POSTGRESQL_MIGRATIONS[-2][0]])
        connection.close()
        return POSTGRESQL_MIGRATIONS[-2][0]
    connection = sqlite3.connect(database)
    for number, _name, sql in MIGRATIONS[:-1]:
        connection.executescript(sql)  # whole: a trigger's body holds semicolons of its own
        connection.execute(f"PRAGMA user_version = {number}")
    connection.commit()
    connection.close()
    return MIGRATIONS[-2][0]


def schema_of(project: Path) -> int:
    """The number of the last migration the project's database has had."""
    with project_database(project) as connection:
        if isinstance(connection, PostgresDatabase):
            return postgresql_schema_version(connection.pg)
        return connection.execute("PRAGMA user_version").fetchone()[0]


@pytest.mark.parametrize(
    "command",
    [["explain", "c-1"], ["preview", "cart_reminder", "--channel", "email", "--customer", "c-1"]],
    ids=["explain", "preview"],
)
def test_commands_beside_the_daemon_do_not_migrate_its_database(project: Path, command: list[str]) -> None:
    version = older_database(project)
    result = CliRunner().invoke(cli, [command[0], "--config", str(project / "boomerang.yaml"), *command[1:]])
    assert result.exit_code == 1, result.output
    assert "older than this Boomerang" in result.stderr and "Traceback" not in result.output
    assert schema_of(project) == version  # only the daemon, holding its lock, migrates


async def test_explain_reads_while_the_daemon_runs(project: Path) -> None:
    welcome_project(project)
    async with running(project) as daemon:
        await post_signup_and_wait_for_mail(daemon)
        result = await asyncio.to_thread(
            CliRunner().invoke, cli, ["explain", "--config", str(project / "boomerang.yaml"), "c-1", "--json"]
        )
        assert result.exit_code == 0, result.output
        assert json.loads(result.stdout)["customer"]["id"] == "c-1"
