"""The `boomerang` command line: one click group, each command a thin shell over the modules."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import sys
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import click

from boomerang import __version__
from boomerang.config import CONFIG_ENV, DEFAULT_CONFIG, Config, config_path, load_config
from boomerang.plugin_manager import Plugins, load_plugins
from boomerang.problems import ProblemError, counted, shown_path

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
# The plugins `main` loaded to build the command line, and their drop-in directories: a
# command reuses them rather than import and register every plugin again (`plugins_for`).
_loaded: tuple[tuple[Path, ...], Plugins] | None = None


def config_option(command: Callable[..., Any]) -> Callable[..., Any]:
    """`--config FILE` (default `$BOOMERANG_CONFIG`, then `./boomerang.yaml`) for a command."""
    return click.option(
        "--config",
        "config_file",
        type=click.Path(dir_okay=False, path_type=Path),
        envvar=CONFIG_ENV,
        default=DEFAULT_CONFIG,
        show_default=True,
        help=f"The configuration file (or set ${CONFIG_ENV}).",
    )(command)


def read_config(config_file: Path) -> Config:
    """Load the config or stop with its problems, one `file:line:col` line each."""
    try:
        return load_config(config_file)
    except ProblemError as exc:
        raise click.ClickException(f"the configuration is not valid:\n{exc}") from None


def setup_logging(level: str) -> None:
    """One line per record on stderr, which journald captures under systemd."""
    logging.basicConfig(stream=sys.stderr, level=level.upper(), format=LOG_FORMAT, force=True)


@click.group()
@click.version_option(__version__, prog_name="boomerang")
def cli() -> None:
    """Boomerang brings e-commerce customers back: scenarios in YAML, every channel,
    and a contact plan that never bombards anyone."""


@cli.command()
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path), default=".")
def init(directory: Path) -> None:
    """Create a working project in DIRECTORY: config, example scenarios and templates."""
    from boomerang.scaffold import create_project

    try:
        created = create_project(directory)
    except FileExistsError as exc:
        raise click.ClickException(f"{exc}; refusing to overwrite an existing project") from None
    click.echo(f"Created a Boomerang project in {directory}/:")
    for path in created:
        click.echo(f"  {path}")
    click.echo(
        f"\nRehearse its events with `cd {directory} && boomerang simulate --events events.jsonl`;\n"
        "start it with `boomerang run`. Messages go to outbox/ as files; remove `outbox:` from\n"
        "boomerang.yaml (and give the channels real credentials) to send for real. Post events\n"
        "with the api_token of boomerang.yaml (or set BOOMERANG_API_TOKEN) as `Authorization:\n"
        "Bearer <token>`."
    )


@cli.command()
@config_option
def run(config_file: Path) -> None:
    """Run the daemon: HTTP endpoints, scheduler and plugins. SIGHUP reloads, SIGTERM stops."""
    from boomerang.daemon import run_daemon

    config = read_config(config_file)
    setup_logging(config.log_level)
    sys.exit(asyncio.run(run_daemon(config_file)))


@cli.command()
@config_option
@click.argument("paths", nargs=-1, type=click.Path(exists=True, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print the problems as JSON for CI tools.")
def check(config_file: Path, paths: tuple[Path, ...], as_json: bool) -> None:
    """Validate the config, scenarios and templates; exit 1 on any error.

    PATHS are scenario files or folders (default: the config's scenarios folder).
    Every problem is printed as `file:line:col: error|warning: text`.
    """
    from boomerang.project import assemble
    from boomerang.scenarios import scenario_files

    problems = []
    scenarios = 0
    files = 1  # the config, when it cannot be read
    try:
        config = load_config(config_file)
    except ProblemError as exc:
        problems = exc.problems
    else:
        plugins = plugins_for(config.plugin_dirs)
        problems.extend(plugins.problems)
        chosen = scenario_files(config.scenarios)
        if paths:
            chosen = [f for p in paths for f in (scenario_files(p) if p.is_dir() else [p])]
        project, found = assemble(config, plugins, chosen)
        problems.extend(found)
        scenarios = len(project.scenarios) if project else 0
        files = len(chosen)
    problems = sorted({replace(p, file=shown_path(p.file)) for p in problems})
    errors = sum(p.severity == "error" for p in problems)
    warnings = len(problems) - errors
    if as_json:
        click.echo(
            json.dumps(
                {
                    "errors": errors,
                    "warnings": warnings,
                    "files": files,
                    "scenarios": scenarios,
                    "problems": [p.as_dict() for p in problems],
                },
                ensure_ascii=False,
                indent=2,
            )
        )
    else:
        for problem in problems:
            click.echo(str(problem))
        found = [counted(n, word) for n, word in ((errors, "error"), (warnings, "warning")) if n]
        click.echo(f"{counted(files, 'file')} checked: {', '.join(found) or 'no problems'}", err=True)
    sys.exit(1 if errors else 0)


@cli.command()
@config_option
@click.option(
    "--events",
    "events_file",
    required=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Events as JSON lines (the format of POST /events), in time order.",
)
@click.option("--from", "start", help="Start of the virtual clock (default: the first event).")
@click.option("--until", help="End of the virtual clock (default: 30 days after the last event).")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line instead of a table.")
@click.option(
    "--outcome",
    "outcomes",
    multiple=True,
    metavar="CHANNEL=OUTCOME",
    help="Rehearse a provider's answer: failed, undelivered, delivered, opened or clicked.",
)
@click.option(
    "--outbox",
    type=click.Path(file_okay=False, path_type=Path),
    help="Write each message rendered into DIR (email as .eml and .html, others as .txt).",
)
@click.option("--show", is_flag=True, help="Show each message's subject and first lines under its send.")
def simulate(
    config_file: Path,
    events_file: Path,
    start: str | None,
    until: str | None,
    as_json: bool,
    outcomes: tuple[str, ...],
    outbox: Path | None,
    show: bool,
) -> None:
    """Rehearse scenarios: run events on a virtual clock against the real scenarios, contact plan
    and templates, with a temporary store; nothing is sent. Prints the timeline."""
    from boomerang.rehearsed import RenderedMessages
    from boomerang.simulation import (
        EventsFileError,
        parse_moment,
        parse_outcomes,
        simulate_into,
        stream_events,
    )

    try:
        moments = [parse_moment(text) if text else None for text in (start, until)]
    except ValueError as exc:
        raise click.ClickException(f"--from/--until: {exc}; write e.g. 2026-03-02T10:00:00Z") from None
    try:
        rehearsed = parse_outcomes(outcomes)
    except ValueError as exc:
        raise click.ClickException(f"--outcome: {exc}") from None
    setup_logging("warning")
    events = stream_events(events_file)
    write = functools.partial(click.echo, nl=False)
    try:
        messages = RenderedMessages(outbox, show) if outbox or show else None
        asyncio.run(
            simulate_into(write, config_file, events, as_json, moments[0], moments[1], rehearsed, messages)
        )
    except EventsFileError as exc:
        raise click.ClickException(str(exc)) from None
    except ProblemError as exc:
        raise click.ClickException(f"the project has errors (run `boomerang check`):\n{exc}") from None


@cli.command()
@config_option
@click.argument("template", required=False)
@click.option("--channel", help="email, sms, whatsapp, push or telegram.")
@click.option("--locale", help="The locale's version (default: the customer's, then default_locale, en).")
@click.option("--customer", "customer_id", help="A stored customer: id, email or phone.")
@click.option(
    "--data",
    "data_file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="JSON with `customer` and `data` (the trigger event's data) to render with.",
)
@click.option("--all", "everything", is_flag=True, help="Every template, channel and locale: sample data.")
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Also write the preview as one self-contained HTML page (required with --all).",
)
def preview(
    config_file: Path,
    template: str | None,
    channel: str | None,
    locale: str | None,
    customer_id: str | None,
    data_file: Path | None,
    everything: bool,
    out: Path | None,
) -> None:
    """Render TEMPLATE as one customer would get it on one channel (with SMS segments and such);
    with --all, every template on one HTML page to review."""
    from boomerang.gallery import Card, gallery_page, render_all
    from boomerang.preview import PreviewError, render_preview
    from boomerang.project import open_project

    if everything and (template or channel or locale or customer_id or data_file or not out):
        raise click.UsageError("--all takes only --out FILE.html (and --config)")
    if not everything and not (template and channel):
        raise click.UsageError("name a TEMPLATE and its --channel, or use --all --out FILE.html")
    try:
        project, _ = open_project(config_file)
    except ProblemError as exc:
        raise click.ClickException(f"the project has errors (run `boomerang check`):\n{exc}") from None
    if everything:
        assert out is not None
        cards = render_all(project)
        _write_page(out, gallery_page(cards))
        failed = [card for card in cards if card.error]
        click.echo(f"{out}: {len(cards)} previews" + (f", {len(failed)} failed to render:" if failed else ""))
        for card in failed:
            click.echo(f"  {card.template} {card.channel} {card.locale}: {card.error}", err=True)
        if failed:
            sys.exit(1)
        return
    assert template and channel
    try:
        shown = render_preview(project, project.config, template, channel, customer_id, data_file, locale)
    except PreviewError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(shown.as_text(), nl=False)
    if out is not None:
        card = Card(template, channel, shown.message.locale or "-", shown)
        _write_page(out, gallery_page([card], f"{template} ({channel})"))


def _write_page(path: Path, page: str) -> None:
    try:
        path.write_text(page, encoding="utf-8")
    except OSError as exc:
        raise click.ClickException(f"cannot write {path}: {exc.strerror or exc}") from None


@cli.command()
@config_option
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--format",
    "format_name",
    metavar="SOURCE",
    help="FILE is this configured source's platform export (e.g. shopify), not Boomerang's event format.",
)
def ingest(config_file: Path, file: Path, format_name: str | None) -> None:
    """Import past events from FILE (JSON lines or a JSON array) as POST /events stores them.

    Safe to run twice: events are deduplicated by id. Stop the daemon first (the import
    writes the database itself and holds its lock). Exit 1 if any record was rejected.
    """
    from boomerang.database_lock import DatabaseLocked
    from boomerang.event_import import ImportFileError, import_file
    from boomerang.store import StoreUnavailable

    config = read_config(config_file)
    size = file.stat().st_size
    shown = sys.stderr.isatty()
    bar = click.progressbar(length=size, label=f"Importing {file.name}", file=sys.stderr)
    try:
        with bar if shown else contextlib.nullcontext():
            summary = import_file(config_file, file, format_name, bar.update if shown else lambda n: None)
    except DatabaseLocked:
        raise click.ClickException(
            f"the daemon is running on {config.database} (it holds {config.database}.lock): stop it, "
            "import, then start it again; an import writes the database itself, one process at a time"
        ) from None
    except ProblemError as exc:
        raise click.ClickException(f"the project has errors (run `boomerang check`):\n{exc}") from None
    except ImportFileError as exc:
        raise click.ClickException(f"{file}: {exc}") from None
    except StoreUnavailable as exc:
        raise click.ClickException(
            f"the database cannot take writes ({exc}); what was imported so far is kept: "
            "run the same import again once it can"
        ) from None
    for line in summary.lines():
        click.echo(line)
    if summary.rejected:
        sys.exit(1)


@cli.command()
@config_option
@click.argument("customer")
@click.option("--json", "as_json", is_flag=True, help="One JSON document instead of text.")
def explain(config_file: Path, customer: str, as_json: bool) -> None:
    """Show CUSTOMER (id, email or phone): profile, events, journeys and every contact-plan decision."""
    from boomerang.explain import explain as gather
    from boomerang.project import open_project
    from boomerang.store import StoreError, open_store

    config = read_config(config_file)
    try:
        project = open_project(config_file)[0]  # to show the messages' subjects and first lines
    except ProblemError:
        project = None
        click.echo("note: the project has errors (`boomerang check`): no message subjects shown", err=True)
    if config.no_database():
        raise click.ClickException(f"no database at {config.database}; has the daemon run yet?")
    # Read-only: the daemon may be running, and only the daemon (holding its lock) writes.
    try:
        store = open_store(config, read_only=True)
    except StoreError as exc:
        raise click.ClickException(str(exc)) from None
    try:
        found = gather(store, customer, config.default_timezone, project)
    finally:
        store.close()
    if found is None:
        raise click.ClickException(f"no customer '{customer}' (looked up by id, email and phone)")
    click.echo(found.as_json() if as_json else found.as_text(), nl=False)


@cli.command()
@config_option
@click.option(
    "--since", default="30d", show_default=True, help="A duration back from now (30d, 12h) or a date."
)
@click.option("--scenario", "scenario_id", help="Only this scenario.")
@click.option("--json", "as_json", is_flag=True, help="One JSON document instead of tables.")
@click.option("--csv", "as_csv", is_flag=True, help="CSV: one row per scenario, step and channel.")
@click.option(
    "--html",
    "html_file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write the report with its charts as one self-contained HTML page.",
)
def report(
    config_file: Path,
    since: str,
    scenario_id: str | None,
    as_json: bool,
    as_csv: bool,
    html_file: Path | None,
) -> None:
    """What each scenario earned: messages, conversions, revenue and cost per step and channel,
    the funnel, the contact plan's effects, and the uplift over the holdout and between variants."""
    from datetime import UTC, datetime

    from boomerang import report as reporting
    from boomerang.problems import did_you_mean
    from boomerang.project import open_project
    from boomerang.store import StoreError, open_store
    from boomerang.store.report import Reports

    if sum((as_json, as_csv, html_file is not None)) > 1:
        raise click.UsageError("choose one of --json, --csv and --html")
    try:
        project, _ = open_project(config_file)
    except ProblemError as exc:
        raise click.ClickException(f"the project has errors (run `boomerang check`):\n{exc}") from None
    config = project.config
    now = datetime.now(UTC)
    try:
        start, end = reporting.window(since, now)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--since") from None
    if config.no_database():
        raise click.ClickException(f"no database at {config.database}; has the daemon run yet?")
    try:
        reports = open_store(config, Reports, read_only=True)  # the daemon may be running
    except StoreError as exc:
        raise click.ClickException(str(exc)) from None
    try:
        if (
            scenario_id is not None
            and scenario_id not in {s.id for s in project.scenarios}
            and scenario_id not in reports.scenarios_known()
        ):
            raise click.ClickException(
                f"no scenario '{scenario_id}'{did_you_mean(scenario_id, [s.id for s in project.scenarios])}"
            )
        found = reporting.gather(reports, reporting.Settings.of(project), start, end, scenario_id)
    finally:
        reports.close()
    if html_file is not None:
        from boomerang.report_html import page

        _write_page(html_file, page(found))
        click.echo(f"{html_file}: the report of {len(found['scenarios'])} scenarios")
    elif as_json:
        click.echo(reporting.as_json(found), nl=False)
    elif as_csv:
        click.echo(reporting.as_csv(found), nl=False)
    else:
        click.echo(reporting.as_text(found), nl=False)


@cli.command()
@config_option
@click.argument("customer")
def forget(config_file: Path, customer: str) -> None:
    """Erase CUSTOMER (id, email or phone): profile, identities and personal data; counts stay."""
    from datetime import UTC, datetime

    from boomerang.erasure import remove_outbox_files
    from boomerang.store import StoreError, open_store, unavailable

    config = read_config(config_file)
    if config.no_database():
        raise click.ClickException(f"no database at {config.database}; has the daemon run yet?")
    try:
        open_store(config, read_only=True).close()  # refuses a schema this version does not write
        # Beside a running daemon too: one short write transaction, which SQLite's lock (WAL,
        # a 10 s busy timeout) orders with the daemon's own; its lock file guards the daemon's
        # work, not the database's writes.
        store = open_store(config)
    except StoreError as exc:
        raise click.ClickException(str(exc)) from None
    try:
        gone = store.forget(customer, datetime.now(UTC))
    except Exception as exc:
        if unavailable(exc):  # locked past the busy timeout, disk full: nothing was changed
            raise click.ClickException(f"the database cannot take it now ({exc}); try again") from None
        raise
    finally:
        store.close()
    if gone is None:
        raise click.ClickException(f"no customer '{customer}' (looked up by id, email and phone)")
    files = remove_outbox_files(config.outbox, gone.message_files)
    click.echo(gone.summary() + (f"; {files} outbox files deleted" if files else ""))


@cli.command()
@config_option
@click.option(
    "--to", "url", required=True, metavar="URL", help="The PostgreSQL database: postgresql://user@host/db"
)
def migrate(config_file: Path, url: str) -> None:
    """Copy the project's SQLite database into an empty PostgreSQL database (--to URL).

    Stop the daemon first. One transaction: on any error the target is left as it was. Prints
    each table's rows in both; exit 1 if they differ.
    """
    from boomerang.database_lock import DatabaseLocked
    from boomerang.store import StoreError
    from boomerang.store.copy import copy_to_postgresql, postgresql_url, shown_url

    try:
        postgresql_url(url)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="'--to'") from None
    config = read_config(config_file)
    if not config.database.exists():
        raise click.ClickException(f"no database at {config.database}; has the daemon run yet?")
    progress = _CopyProgress()
    try:
        copied = copy_to_postgresql(config.database, url, progress)
    except DatabaseLocked:
        raise click.ClickException(
            f"the daemon is running on {config.database} (it holds {config.database}.lock): stop it, then "
            "run `boomerang migrate --to` again; the copy must see every row, with none written meanwhile"
        ) from None
    except StoreError as exc:
        raise click.ClickException(str(exc)) from None
    finally:
        progress.finish()
    click.echo(f"{'table':<18} {'SQLite':>10} {'PostgreSQL':>11}")
    for table in copied:
        click.echo(f"{table.table:<18} {table.sqlite:>10} {table.postgresql:>11}")
    cast = sum(table.cast for table in copied)
    click.echo(
        f"copied {sum(table.sqlite for table in copied)} rows into {shown_url(url)}, every count checked"
        + (f"; {cast} values cast or repaired to fit their column" if cast else "")
    )
    click.echo(f"Next: set `database: {shown_url(url)}` in {config_file} and start the daemon.")


class _CopyProgress:
    """`migrate --to`'s progress on stderr: a bar per table on a terminal, else plain lines (each
    table's start and end, and every 100,000 rows)."""

    def __init__(self) -> None:
        self.bar: Any = None
        self.table = ""

    def __call__(self, table: str, done: int, total: int) -> None:
        if not sys.stderr.isatty():
            if done in (0, total) or done % 100_000 == 0:
                click.echo(f"{table}: {done}/{total} rows", err=True)
            return
        if table != self.table:
            self.finish()
            self.table = table
            if not total:  # a bar of nothing draws nothing
                click.echo(f"{table:<18}  no rows", err=True)
                return
            self.bar = click.progressbar(length=total, label=f"{table:<18}", file=sys.stderr, show_pos=True)
        if self.bar is not None:
            self.bar.update(done - self.bar.pos)

    def finish(self) -> None:
        """End the bar drawn last."""
        if self.bar is not None:
            self.bar.render_finish()
            self.bar = None


@cli.command(name="plugins")
@config_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def plugins_command(config_file: Path, as_json: bool) -> None:
    """List the plugins loaded, where each came from, and the hooks it implements."""
    plugin_dirs = read_config(config_file).plugin_dirs if config_file.exists() else []
    loaded = load_plugins(plugin_dirs)
    rows = [
        {
            "name": info.name,
            "origin": info.origin,
            "package": info.package,
            "version": info.version,
            "file": info.file,
            "hooks": info.hooks(loaded.pm),
        }
        for info in loaded.infos
    ]
    if as_json:
        click.echo(
            json.dumps({"plugins": rows, "problems": [p.as_dict() for p in loaded.problems]}, indent=2)
        )
    else:
        width = max([len(row["name"]) for row in rows] + [4])
        for row in rows:
            where = f"{row['package']} {row['version']}" if row["origin"] == "package" else row["file"]
            click.echo(f"{row['name']:<{width}}  {where}")
            click.echo(f"{'':<{width}}  hooks: {', '.join(row['hooks']) or '-'}")
        for problem in loaded.problems:
            click.echo(str(problem), err=True)
    if loaded.problems:
        sys.exit(1)


@cli.command(name="systemd-unit")
@config_option
@click.option("--watchdog", default=30, show_default=True, help="WatchdogSec= in seconds.")
def systemd_unit(config_file: Path, watchdog: int) -> None:
    """Print a hardened systemd unit (Type=notify) that runs this installation."""
    from boomerang.systemd import unit_file, unit_notes

    config = read_config(config_file)
    click.echo(unit_file(config, watchdog_seconds=watchdog), nl=False)
    for note in unit_notes(config):
        click.echo(f"note: {note}", err=True)


@cli.group()
def sources() -> None:
    """The sources that feed events in: shops, sites, CRMs."""


@sources.command(name="setup")
@config_option
@click.argument("name")
def sources_setup(config_file: Path, name: str) -> None:
    """Register source NAME with its platform (webhook subscriptions); safe to run twice."""
    from boomerang.kinds import SetupError
    from boomerang.problems import did_you_mean
    from boomerang.project import open_project

    try:
        project, _ = open_project(config_file)
    except ProblemError as exc:
        raise click.ClickException(f"the project has errors (run `boomerang check`):\n{exc}") from None
    registry = project.registry
    source = registry.sources.get(name)
    if source is None:
        known = sorted(registry.sources)
        raise click.ClickException(
            f"no source '{name}'{did_you_mean(name, known)}; configured: {', '.join(known) or 'none'}"
        )

    async def setup() -> list[str] | None:
        try:
            return await source.setup()
        finally:
            await registry.close()

    try:
        done = asyncio.run(setup())
    except SetupError as exc:
        raise click.ClickException(f"{name}: {exc}") from None
    if done is None:
        raise click.ClickException(f"source '{name}' has nothing to set up")
    for line in done:
        click.echo(line)


@cli.group()
def promo() -> None:
    """Personal promo codes issued to customers."""


@promo.command(name="export")
@config_option
@click.option("--since", help="Only codes issued in this last while (7d, 12h) or since a moment (ISO-8601).")
@click.option("--scenario", help="Only the codes of this scenario.")
@click.option("--provider", help="Only the codes of this provider (local, shopify...).")
@click.option(
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write the CSV to FILE instead of stdout.",
)
def promo_export(
    config_file: Path, since: str | None, scenario: str | None, provider: str | None, output: Path | None
) -> None:
    """Print the codes issued as CSV (customer ids, not addresses), for shops that import codes by hand."""
    from datetime import UTC, datetime

    from boomerang.clock import parse_duration, parse_time
    from boomerang.private_files import write_private
    from boomerang.promo_codes import export_csv
    from boomerang.store import StoreError, open_store

    start = None
    if since is not None:
        try:
            start = datetime.now(UTC) - parse_duration(since)
        except ValueError:
            try:
                start = parse_time(since)
            except ValueError:
                raise click.BadParameter(
                    f"'{since}' is neither a duration (7d, 12h, 30m)"
                    " nor a moment such as 2026-03-02T00:00:00Z",
                    param_hint="--since",
                ) from None
    config = read_config(config_file)
    # Read-only: the daemon may be running, and only the daemon (holding its lock) writes.
    try:
        store = open_store(config, read_only=True)
    except StoreError as exc:
        raise click.ClickException(f"{exc}; has the daemon run yet?") from None
    try:
        text = export_csv(store.issued_promo_codes(start, scenario, provider))
    finally:
        store.close()
    if output is None:
        click.echo(text, nl=False)
    else:
        try:
            write_private(output, text.encode())
        except OSError as exc:
            raise click.ClickException(f"cannot write {output}: {exc.strerror or exc}") from None


def _plugin_dirs_for_commands(argv: list[str]) -> list[Path]:
    """Drop-in directories of the config named on the command line, for `register_commands`."""
    explicit = None
    for index, arg in enumerate(argv):
        if arg == "--config" and index + 1 < len(argv):
            explicit = argv[index + 1]
        elif arg.startswith("--config="):
            explicit = arg.split("=", 1)[1]
    path = config_path(explicit)
    if not path.exists():
        return []
    try:
        return load_config(path).plugin_dirs
    except ProblemError:
        return []  # the command itself will report the config's problems


def plugins_for(plugin_dirs: list[Path]) -> Plugins:
    """The plugins with these drop-in directories: those `main` loaded for the command line
    if it loaded the same directories and none of their files changed since, else loaded now."""
    if _loaded is not None:
        dirs, plugins = _loaded
        if dirs == tuple(plugin_dirs) and not plugins.drop_ins_changed(dirs):
            return plugins
    return load_plugins(plugin_dirs)


def build_cli(plugins: Plugins | None = None) -> click.Group:
    """The CLI with the commands plugins add through `register_commands`."""
    plugins = plugins or load_plugins(_plugin_dirs_for_commands(sys.argv[1:]))
    plugins.hook.register_commands(cli=cli)
    return cli


def main() -> None:
    """The `boomerang` console script."""
    global _loaded
    try:
        dirs = tuple(_plugin_dirs_for_commands(sys.argv[1:]))
        _loaded = (dirs, load_plugins(dirs))
        group = build_cli(_loaded[1])
    except Exception as exc:  # noqa: BLE001 - an installed plugin that breaks gets one clear line
        click.echo(f"Error: a plugin failed to load: {type(exc).__name__}: {exc}", err=True)
        sys.exit(1)
    group(prog_name="boomerang")
