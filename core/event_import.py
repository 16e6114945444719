"""`boomerang ingest FILE`: past events, or a platform's export, stored the way live events are.

The file is JSON lines or one JSON array, read as a stream: a batch of records at a time is
validated and stored in one transaction, so a file of any size needs the memory of a batch.
Each record is either an event in Boomerang's format (validated by `parse_event`, as
`POST /events` validates) or, with `--format NAME`, one object of a platform's export that
the source NAME turns into events (`Source.read_export`).

A record is all or nothing: its events are stored in a savepoint of their own (the group
commit's, `Store.ingest_group`), so a record that cannot be read or stored is rejected alone,
named by its line, and leaves nothing behind; the other records of its batch are stored.
Events are deduplicated by id, so importing a file twice stores nothing the second time.
The file is the admin's own word: its identities merge customers, as `POST /events`'s do.

Imported events are stored with the source `import` (`import:NAME` for an export), which
tells the engine they speak of the past (see `boomerang.journeys`): they update profiles,
act only on journeys begun by their moment, and start a journey only while the scenario's
first step is still ahead.
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import json
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO

from boomerang.ingest import IMPORTED, EventError, parse_event, parse_line
from boomerang.kinds import Source
from boomerang.model import Event

BATCH_RECORDS = 500  # records validated and stored in one transaction
CHUNK = 1 << 20  # bytes read at a time from a JSON array
MAX_RECORD = 16 << 20  # characters one record of a JSON array may take
SHOWN_REJECTIONS = 10  # rejected records listed in the summary; the rest are counted

# A record as read: where it is in the file (`line 3`, `record 3 (line 10)`), and its JSON
# value or the error that kept it from being read.
Record = tuple[str, Any]
Reader = Callable[[Any, str], list[Event]]


class ImportFileError(ValueError):
    """The file cannot be imported (from where it went wrong on); the message says why."""


@dataclass
class Rejection:
    """A record that was not imported: where it is and why."""

    where: str
    reason: str


@dataclass
class ImportSummary:
    """What an import did: events stored, events known already, records rejected."""

    accepted: int = 0
    duplicates: int = 0
    rejected: list[Rejection] = field(default_factory=list)

    def lines(self) -> list[str]:
        """The summary for the terminal: the counts, then the first rejections."""
        counts = f"{self.accepted} accepted, {self.duplicates} duplicates, {len(self.rejected)} rejected"
        shown = [f"  {r.reason}" for r in self.rejected[:SHOWN_REJECTIONS]]
        more = len(self.rejected) - SHOWN_REJECTIONS
        return [counts, *shown, *([f"  ... and {more} more"] if more > 0 else [])]


def event_reader(record: Any, where: str) -> list[Event]:
    """An event in Boomerang's format, validated as `POST /events` validates it (any year)."""
    event = parse_event(record, where)
    event.source = IMPORTED
    return [event]


def export_reader(source: Source) -> Reader:
    """The reader of `source`'s platform export; raises `ImportFileError` if it has none."""
    if type(source).read_export is Source.read_export:
        raise ImportFileError(f"source {source.name} cannot read exports (it has no read_export)")

    def read(record: Any, where: str) -> list[Event]:
        if not isinstance(record, dict):
            raise EventError(f"{where}: an export record must be a JSON object, not {type(record).__name__}")
        try:
            events = source.read_export(record)
        except EventError as exc:
            raise EventError(f"{where}: {exc}") from None
        if not isinstance(events, list) or not all(isinstance(e, Event) for e in events):
            raise EventError(f"{where}: source {source.name} read it as something else than a list of events")
        for event in events:
            event.source = f"{IMPORTED}:{source.name}"
        return events

    return read


def read_records(stream: BinaryIO, progress: Callable[[int], None]) -> Iterator[Record]:
    """The records of a JSON-lines file or of a JSON array, one at a time; `progress(n)` is told
    of every `n` bytes read. A line that is not JSON is a record holding its `EventError`."""
    first = stream.read(CHUNK)
    progress(len(first))
    if first.lstrip().startswith(b"["):
        yield from _array_records(first, stream, progress)
    else:
        yield from _line_records(first, stream, progress)


def _line_records(first: bytes, stream: BinaryIO, progress: Callable[[int], None]) -> Iterator[Record]:
    def lines() -> Iterator[bytes]:
        rest, pending = first, b""
        while rest:
            pieces = (pending + rest).split(b"\n")
            pending = pieces.pop()
            yield from pieces
            rest = stream.read(CHUNK)
            progress(len(rest))
        if pending:
            yield pending

    for number, raw in enumerate(lines(), start=1):
        try:
            line = raw.decode("utf-8").rstrip("\r")
        except UnicodeDecodeError as exc:
            yield f"line {number}", EventError(f"line {number}: not UTF-8 text (byte {exc.start})")
            continue
        if not line.strip():
            continue
        try:
            yield f"line {number}", parse_line(line, number)
        except EventError as exc:
            yield f"line {number}", exc


def _array_records(first: bytes, stream: BinaryIO, progress: Callable[[int], None]) -> Iterator[Record]:
    """The elements of a JSON array, decoded one at a time from a sliding window of the file."""
    decoder, utf8 = json.JSONDecoder(), codecs.getincrementaldecoder("utf-8")()
    try:
        text, ended = utf8.decode(first), False
    except UnicodeDecodeError as exc:
        raise ImportFileError(f"the file is not UTF-8 text (byte {exc.start})") from None
    position = text.index("[") + 1
    line = 1 + text.count("\n", 0, position)

    def more() -> bool:
        nonlocal text, ended, position
        if ended:
            return False
        chunk = stream.read(CHUNK)
        progress(len(chunk))
        ended = not chunk
        try:
            text = text[position:] + utf8.decode(chunk, final=ended)
        except UnicodeDecodeError as exc:
            raise ImportFileError(f"after line {line}: the file is not UTF-8 text ({exc.reason})") from None
        position = 0
        return True

    def skip_space() -> str:
        nonlocal position, line
        while True:
            start = position
            while position < len(text) and text[position] in " \t\r\n":
                position += 1
            line += text.count("\n", start, position)
            if position < len(text):
                return text[position]
            if not more():
                return ""

    number = 0
    while True:
        mark = skip_space()
        if mark == "]":
            break
        if number:
            if mark != ",":
                raise ImportFileError(f"line {line}: {mark!r} where the JSON array needs ',' or ']'")
            position += 1
            skip_space()
        number += 1
        where = f"record {number} (line {line})"
        while True:
            try:
                value, end = decoder.raw_decode(text, position)
            except json.JSONDecodeError as exc:
                cut_short = exc.pos >= len(text) - 1 or exc.msg.startswith("Unterminated")
                if cut_short and len(text) - position < MAX_RECORD and more():
                    continue
                raise ImportFileError(f"{where}: invalid JSON: {exc.msg}") from None
            except RecursionError:
                raise ImportFileError(f"{where}: the JSON is nested too deep") from None
            if end == len(text) and more():  # a number may go on in the next chunk
                continue
            break
        line += text.count("\n", position, end)
        position = end
        yield where, value
    position += 1
    if skip_space():
        raise ImportFileError(f"line {line}: something follows the JSON array")


def batches(records: Iterable[Record], size: int = BATCH_RECORDS) -> Iterator[list[Record]]:
    """The records in lists of `size`."""
    batch: list[Record] = []
    for record in records:
        batch.append(record)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def import_records(store: Any, records: Iterable[Record], read: Reader) -> ImportSummary:
    """Validate and store the records, a batch per transaction, each record in a savepoint of
    its own; what was stored, known already and rejected.

    If the database cannot take a batch (`StoreUnavailable`: disk full, locked), that is
    raised: the batches before it are stored, that one and those after it are not, and
    importing the file again completes it.
    """
    summary = ImportSummary()
    for batch in batches(records):
        rejected: dict[int, Rejection] = {}
        readable: list[tuple[int, list[Event]]] = []
        for index, (where, value) in enumerate(batch):
            if isinstance(value, EventError):
                rejected[index] = Rejection(where, str(value))
                continue
            try:
                readable.append((index, read(value, where)))
            except EventError as exc:
                rejected[index] = Rejection(where, str(exc))
        outcomes = store.ingest_group([(events, True) for _, events in readable], datetime.now(UTC))
        for (index, events), outcome in zip(readable, outcomes, strict=True):
            if isinstance(outcome, Exception):
                where = batch[index][0]
                rejected[index] = Rejection(where, f"{where}: cannot be stored: {outcome}")
                continue
            summary.accepted += len(outcome)
            summary.duplicates += len(events) - len(outcome)
        summary.rejected += [rejected[index] for index in sorted(rejected)]
    return summary


def open_file(path: Path) -> BinaryIO:
    """The file to import, opened for reading; `ImportFileError` if it cannot be."""
    try:
        return path.open("rb")
    except OSError as exc:
        raise ImportFileError(f"{path}: cannot read: {exc.strerror}") from None


def import_file(
    config_path: Path, path: Path, format_name: str | None, progress: Callable[[int], None]
) -> ImportSummary:
    """`boomerang ingest`: import `path` into the project's database, then let the engine act
    on what was stored, as the daemon does at its start.

    The import holds the database's lock, as the daemon does: it refuses to run beside a
    running daemon (`DatabaseLocked`), and a daemon cannot start while it runs.
    Raises `ProblemError` for a project with errors, `ImportFileError` for a file or format
    that cannot be imported, `StoreUnavailable` when the database cannot take writes.
    """
    from boomerang.clock import WallClock
    from boomerang.database_lock import lock_database
    from boomerang.engine import Engine
    from boomerang.plugin_manager import address_fields
    from boomerang.problems import did_you_mean
    from boomerang.project import open_project
    from boomerang.store import open_store

    project, plugins = open_project(config_path)
    registry = project.registry
    try:
        read: Reader = event_reader
        if format_name is not None:
            source = registry.sources.get(format_name)
            if source is None:
                known = sorted(registry.sources)
                raise ImportFileError(
                    f"no source '{format_name}'{did_you_mean(format_name, known)}; "
                    f"configured: {', '.join(known) or 'none'}"
                )
            read = export_reader(source)
        # On SQLite the daemon's lock file keeps the import and the daemon apart; PostgreSQL
        # orders their writes itself, so an import may run beside the daemons.
        config = project.config
        held = contextlib.nullcontext() if config.on_postgresql else lock_database(Path(config.database))
        with open_file(path) as stream, held:
            store = open_store(config)
            try:
                store.address_fields = address_fields(registry.channel_kinds)
                summary = import_records(store, read_records(stream, progress), read)
                engine = Engine(store, WallClock(), plugins, project)
                while engine.handle_pending_events(BATCH_RECORDS):
                    pass
            finally:
                store.close()
    finally:
        asyncio.run(registry.close())
    return summary
