"""The daemon: the aiohttp application, its lifecycle, signals and systemd notifications.

Start: load the project, open the store, serve, then tell systemd READY=1. SIGHUP reloads
config, scenarios and templates, keeping the old ones if the new ones are invalid. SIGTERM
stops accepting requests, lets in-flight ones finish, closes everything and exits 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import signal
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import IO

from aiohttp import web

from boomerang import __version__, metrics, tracking
from boomerang.bodies import MAX_BODY
from boomerang.clock import WallClock
from boomerang.config import load_config
from boomerang.database_lock import DatabaseLocked, lock_database
from boomerang.engine import Engine
from boomerang.ingest import Ingestor
from boomerang.kinds import Route, Source
from boomerang.metrics import Metrics, read_store_figures
from boomerang.model import Event, Job
from boomerang.plugin_manager import Plugins, address_fields, load_plugins, notify
from boomerang.problems import ProblemError
from boomerang.project import Project, known_event_types, load_project
from boomerang.rate_limits import RateLimits, rate_limits_for
from boomerang.report_web import ReportPages
from boomerang.scheduler import Scheduler
from boomerang.store import Store, StoreError, StoreUnavailable, open_store, unavailable
from boomerang.systemd import Notifier, watchdog_interval

log = logging.getLogger(__name__)

GRACE_SECONDS = 8.0  # in-flight requests get this long after SIGTERM; systemd waits longer
RETRY_AFTER = 5  # seconds a sender is asked to wait when the database cannot take writes
# How long the engine acts on stored events in one go (one transaction) before ingest's next
# group commit may have the store's thread: the batch size follows from the time it takes.
EVENT_BATCH_SECONDS = 0.01
# Ingest comes first: the engine acts on stored events once no request has come for
# INGEST_QUIET_SECONDS, and under a steady stream of requests one batch per
# ENGINE_WAITS_AT_MOST seconds all the same, so that its backlog always moves.
INGEST_QUIET_SECONDS = 0.05
YOUNG_OBJECTS_PER_COLLECTION = 50_000  # Python's default is 700
ENGINE_WAITS_AT_MOST = 0.5


class StartupError(Exception):
    """The daemon cannot start; the message says why."""


class Daemon:
    """One running Boomerang: HTTP endpoints, store and plugins, driven by signals."""

    def __init__(self, config_path: Path, notifier: Notifier | None = None):
        self.config_path = config_path
        self.notifier = notifier or Notifier.from_environ()
        self.clock = WallClock()
        self.stopping = asyncio.Event()
        self.reloads = 0
        self.metrics = Metrics()  # this daemon's own registry: daemons in one process share nothing
        self.plugins: Plugins
        self.project: Project
        self.store: Store
        self.rate_limits: RateLimits  # the providers' limits, shared by the daemons on the database
        self._reader: Store | None = None  # a read-only connection for the store's figures
        self._lock: IO[bytes] | None = None  # the SQLite file's lock (none on PostgreSQL)
        self._stop_listening: Callable[[], None] | None = None  # other daemons' jobs (PostgreSQL)
        self.ingest: Ingestor
        # Each source's (or channel's) routes, with its name: who refused a request.
        self._routes: dict[tuple[str, str], tuple[str, Route]] = {}
        self._runner: web.AppRunner | None = None
        self._tasks: list[asyncio.Task] = []
        self.crashed = False
        self._pollers: list[tuple[asyncio.Event, asyncio.Task]] = []
        self._events_waiting = asyncio.Event()
        self._unavailable_logged = 0.0  # monotonic time a 503 was last logged
        self.port: int | None = None

    # lifecycle
    async def start(self) -> None:
        """Load everything and start serving; raises `StartupError` if that is impossible."""
        try:
            config = load_config(self.config_path)
        except ProblemError as exc:
            raise StartupError(str(exc)) from None
        self.plugins = load_plugins(config.plugin_dirs)
        for problem in self.plugins.problems:
            log.error("%s", problem)
        # Kept across reloads, as the database is: a reload does not refill the buckets.
        self.rate_limits = rate_limits_for(config.database)
        try:
            self.project = load_project(self.config_path, self.plugins, self.rate_limits)
        except ProblemError as exc:
            raise StartupError(str(exc)) from None
        if not config.api_token:
            log.warning("no api_token is set: POST /events refuses every request")
        if not config.secret:
            log.warning("no secret is set: links are not tracked and unsubscribe links are not added")
        # One daemon per SQLite file (its lock file); on PostgreSQL several share the database.
        self._lock = None if config.on_postgresql else _lock_database(Path(config.database))
        try:
            self.store = open_store(config)
        except StoreError as exc:
            self._release_lock()
            raise StartupError(str(exc)) from None
        self.store.address_fields = address_fields(self.project.registry.channel_kinds)
        if not self.store.shared:
            # This process owns the database now (the lock says so): leases held by a process
            # that died are void, and its jobs run again at once. On PostgreSQL the other
            # daemons' leases are theirs: a dead one's run out by themselves.
            released = await self.store.run(self.store.release_all_leases)
            if released:
                log.info("took back %d jobs left running by the previous process", released)
        self.ingest = Ingestor(
            self.store,
            self.clock,
            self._on_stored,
            verified=self._verified_source,
            wake=lambda: self.scheduler.wake(),
            outbox=lambda: self.project.config.outbox,
            metrics=self.metrics,
        )
        self.metrics.event_types = frozenset(known_event_types(self.project.registry))
        self.engine = Engine(self.store, self.clock, self.plugins, self.project, metrics=self.metrics)
        # A visit's end is stored through the ingestor, like any source's event, so that
        # `event_stored` hears of its `site.left`.
        self.engine.handlers["visit"] = self._visit_over
        # On PostgreSQL a message `sending` may be another daemon's, in flight: a dead daemon's
        # are settled by whichever daemon claims their jobs once the leases run out.
        unknown_sends = 0
        if not self.store.shared:
            unknown_sends = await self.store.run(self.engine.settle_interrupted_sends, self.clock.now())
        if unknown_sends:
            log.warning(
                "%d marketing messages were cut off mid-send by the previous process: "
                "marked unknown, not sent again",
                unknown_sends,
            )
        self.scheduler = Scheduler(self.store, self.clock, self.engine.run_job, batches=self.engine.batches)
        # Other daemons on the database (PostgreSQL) say when they queue a job: look again then.
        loop = asyncio.get_running_loop()
        self._stop_listening = self.store.listen_for_jobs(
            lambda: loop.call_soon_threadsafe(self.scheduler.wake)
        )
        # Events stored before a crash but not yet acted on are acted on now.
        while await self.store.run(self.engine.handle_pending_events):
            pass
        await self.store.run(self.engine.ensure_ticks, self.clock.now())
        app = web.Application(client_max_size=MAX_BODY, middlewares=[self._store_unavailable])
        app.router.add_get("/healthz", self.healthz)
        app.router.add_get("/metrics", self.scrape)
        app.add_routes(
            tracking.routes(
                config.secret, self.store, self.ingest, lambda: self.project.registry.channels
            )
        )
        # GET /report: its own read-only connection and thread, closed with the app
        report_pages = ReportPages(config.database, lambda: self.project, self.clock.now)
        app.add_routes(report_pages.routes())
        app.on_cleanup.append(report_pages.close)
        self._install_routes(app)
        access_log = log if config.log_level == "debug" else None
        self._runner = web.AppRunner(
            app, handle_signals=False, access_log=access_log, shutdown_timeout=GRACE_SECONDS
        )
        await self._runner.setup()
        site = web.TCPSite(self._runner, config.host, config.port, reuse_address=True)
        try:
            await site.start()
        except OSError as exc:
            await self._runner.cleanup()
            self.store.close()
            self._release_lock()
            raise StartupError(f"cannot listen on {config.host}:{config.port}: {exc.strerror}") from None
        server = getattr(site, "_server", None)
        sockets = getattr(server, "sockets", None) or []
        self.port = sockets[0].getsockname()[1] if sockets else config.port
        self._start_pollers(self.project)
        self._watch(self.scheduler.serve(self.stopping), "scheduler")
        self._watch(self._handle_events(), "event handling")
        self._reader = open_store(config, read_only=True)
        self._watch(self._refresh_figures(), "store figures")
        interval = watchdog_interval()
        if interval:
            self._watch(self._watchdog(interval), "watchdog")
        log.info("boomerang %s listening on %s:%s", __version__, config.host, self.port)
        self._log_loaded()
        self.notifier.ready(self.status())

    def _log_loaded(self) -> None:
        """What the daemon runs with, one line each, so a first run shows what it will do."""
        project = self.project
        names = ", ".join(scenario.id for scenario in project.scenarios) or "none"
        log.info("scenarios (%d): %s", len(project.scenarios), names)
        log.info("channels: %s", ", ".join(sorted(project.registry.channels)) or "none")
        if project.config.outbox is not None:
            log.info("outbox mode: nothing is sent, messages go to %s", project.config.outbox)
        log.info("sources: %s", ", ".join(sorted(project.registry.sources)) or "none")
        log.info("plugins: %s", ", ".join(sorted(info.name for info in self.plugins.infos)) or "none")

    async def serve(self) -> int:
        """Run until SIGTERM or SIGINT; returns the process exit code."""
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, self.stopping.set)
        loop.add_signal_handler(signal.SIGINT, self.stopping.set)
        loop.add_signal_handler(signal.SIGHUP, lambda: asyncio.ensure_future(self.reload()))
        await self.stopping.wait()
        await self.stop()
        return 1 if self.crashed else 0

    async def stop(self) -> None:
        """Stop accepting requests, finish in-flight ones, close plugins and the store."""
        self.notifier.stopping()
        self.stopping.set()
        await self._stop_pollers()
        unfinished = await self.scheduler.drain(GRACE_SECONDS)
        if unfinished:
            log.warning("%d jobs were still running; they will run again after the restart", unfinished)
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._runner is not None:
            await self._runner.cleanup()
        await self.project.registry.close()
        await self.rate_limits.close()
        if self._reader is not None:
            self._reader.close()
        if self._stop_listening is not None:
            await asyncio.to_thread(self._stop_listening)
        self.store.close()
        self._release_lock()
        log.info(
            "stopped: %d events accepted, %d duplicates, %d jobs done, %d reloads",
            self.ingest.accepted,
            self.ingest.duplicates,
            self.scheduler.done,
            self.reloads,
        )
        self.notifier.close()

    async def reload(self) -> bool:
        """Re-read config, scenarios and templates; keep the running ones if any is invalid."""
        self.notifier.reloading()
        changed = self.plugins.drop_ins_changed(self.project.config.plugin_dirs)
        if changed:
            log.warning("reload: plugins changed (%s): restart to load them", ", ".join(changed))
        try:
            project = load_project(self.config_path, self.plugins, self.rate_limits)
        except ProblemError as exc:
            self.metrics.reloaded(ok=False)
            for problem in exc.problems:
                log.log(logging.ERROR if problem.severity == "error" else logging.WARNING, "%s", problem)
            restart = "; plugins changed: restart to load them" if changed else ""
            log.error("reload failed: still running the previous configuration%s", restart)
            self.notifier.ready(f"reload failed ({len(exc.errors)} errors); " + self.status())
            return False
        old, self.project = self.project, project
        self._warn_about_restart_only_changes(old, project)
        self.engine.use(project)
        self.metrics.event_types = frozenset(known_event_types(project.registry))
        self.store.address_fields = address_fields(project.registry.channel_kinds)
        await self.store.run(self.engine.ensure_ticks, self.clock.now())
        self.scheduler.wake()
        # The old sources' pollers stop before their sources close; the new ones take over.
        await self._stop_pollers()
        self._start_pollers(project)
        await old.registry.close()
        self.reloads += 1
        self.metrics.reloaded(ok=True)
        log.info("reloaded: %d scenarios", len(project.scenarios))
        self.notifier.ready(self.status())
        return True

    def _release_lock(self) -> None:
        if self._lock is not None:
            self._lock.close()
            self._lock = None

    def status(self) -> str:
        """The one-line summary for `systemctl status`."""
        return (
            f"serving on port {self.port}: {len(self.project.scenarios)} scenarios, "
            f"{self.ingest.accepted} events accepted"
        )

    def _verified_source(self, name: str) -> bool:
        """Whether the source of this name may merge customers (the merge policy, core/ingest.py).

        Channels' public routes (push subscriptions) are no source, so never verified."""
        return getattr(self.project.registry.sources.get(name), "verified", False) is True

    # routes of sources and channels: fixed paths, handlers looked up in the live project
    def _collect_routes(self, project: Project) -> dict[tuple[str, str], tuple[str, Route]]:
        routes: dict[tuple[str, str], tuple[str, Route]] = {}
        owners = [*project.registry.sources.values(), *project.registry.channels.values()]
        for owner in owners:
            for route in owner.routes():
                key = (route.method.upper(), route.path)
                if key in routes:
                    raise StartupError(f"two plugins serve {key[0]} {key[1]}")
                routes[key] = (owner.name, route)
        return routes

    def _install_routes(self, app: web.Application) -> None:
        self._routes = self._collect_routes(self.project)
        for method, path in self._routes:
            app.router.add_route(method, path, self._dispatcher(method, path))

    def _dispatcher(self, method: str, path: str) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        async def dispatch(request: web.Request) -> web.StreamResponse:
            served = self._routes.get((method, path))
            if served is None:
                raise web.HTTPNotFound(text="this endpoint was switched off by a reload\n")
            owner, route = served
            # A refusal is counted here, where the route's owner is known, whichever way the
            # handler refuses: an answer, an HTTP exception (aiohttp's 413), a store that
            # cannot take the write (answered 503 by `_store_unavailable`).
            try:
                response = await route.handler(request, self.ingest)
            except web.HTTPException as exc:
                if exc.status >= 400:
                    self.metrics.rejected(owner, exc.status)
                raise
            except StoreUnavailable:
                self.metrics.rejected(owner, 503)
                raise
            if response.status >= 400:
                self.metrics.rejected(owner, response.status)
            return response

        return dispatch

    def _warn_about_restart_only_changes(self, old: Project, new: Project) -> None:
        try:
            routes = self._collect_routes(new)
        except StartupError as exc:
            log.error("reload: %s; keeping the previous routes", exc)
            return
        for key in routes.keys() - self._routes.keys():
            log.warning("reload: %s %s is new and will be served after a restart", *key)
        self._routes = {key: route for key, route in routes.items() if key in self._routes}
        before, after = old.config, new.config
        for name in ("host", "port", "database", "plugin_dirs"):
            if getattr(before, name) != getattr(after, name):
                log.warning("reload: a change of '%s' takes effect after a restart", name)

    # endpoints of the core
    async def healthz(self, request: web.Request) -> web.Response:
        """Liveness: answers while the daemon serves."""
        return web.json_response({"status": "ok", "version": __version__})

    async def scrape(self, request: web.Request) -> web.Response:
        """`GET /metrics`: the daemon's metrics in the Prometheus text format (OpenMetrics when
        the scraper asks for it). Reads nothing from the store: its figures are the copy
        `_refresh_figures` keeps."""
        body, content_type = self.metrics.exposition(request.headers.get("Accept"))
        return web.Response(body=body, headers={"Content-Type": content_type})

    @web.middleware
    async def _store_unavailable(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        """A request whose write the database cannot take now (disk full, locked) is answered
        503 with Retry-After, so that the sender tries again: nothing of it was stored."""
        try:
            return await handler(request)
        except StoreUnavailable as exc:
            if self.clock.monotonic() - self._unavailable_logged > 10:  # once in a while, not per request
                self._unavailable_logged = self.clock.monotonic()
                log.error("the database cannot take writes (%s): answering 503 until it can", exc)
            return web.json_response(
                {
                    "error": f"the database cannot take writes right now ({exc}); nothing of this "
                    f"request was stored: send it again in {RETRY_AFTER} seconds"
                },
                status=503,
                headers={"Retry-After": str(RETRY_AFTER)},
            )

    # side tasks
    async def _on_stored(self, events: list[Event]) -> None:
        if self.plugins.hook.event_stored.get_hookimpls():  # no plugin listens: no call per event
            for event in events:
                await notify(self.plugins, "event_stored", event=event)
        self._events_waiting.set()

    async def _handle_events(self) -> None:
        """Act on stored events as they come, in batches: journeys start, exit, wake up.

        Each batch is one call on the store's thread, and yields to ingest: it waits until
        requests pause (or a bounded time under a steady stream), so that acting on events
        never takes the store's thread from the requests that bring them. A database that
        cannot take writes leaves the batch queued; it is tried again a little later.
        """
        limit = 25
        while True:
            await self._events_waiting.wait()
            self._events_waiting.clear()
            try:
                while True:
                    await self.ingest.idle(INGEST_QUIET_SECONDS, ENGINE_WAITS_AT_MOST)
                    handled, seconds = await self.store.run(self._act_on_events, limit)
                    if not handled:
                        break
                    # Aim at EVENT_BATCH_SECONDS a batch: bigger batches commit less often,
                    # smaller ones keep ingest's answers quick.
                    if seconds > EVENT_BATCH_SECONDS and limit > 1:
                        limit //= 2
                    elif seconds < EVENT_BATCH_SECONDS / 2 and handled == limit and limit < 500:
                        limit *= 2
            except Exception as exc:
                if not unavailable(exc):
                    raise
                log.error("cannot act on stored events now (%s); trying again in %d s", exc, RETRY_AFTER)
                await asyncio.sleep(RETRY_AFTER)
                self._events_waiting.set()
            self.scheduler.wake()

    async def _refresh_figures(self) -> None:
        """Read the store's figures (customers, events, active journeys, due jobs) every
        `metrics.STORE_FIGURES_SECONDS`, on a read-only connection with a thread of its own: a
        reading never waits for ingest's writes nor holds them up (WAL), and a scrape only
        reads the copy. A reading that fails is logged (once, until one succeeds again) and
        tried again at the next one; the gauges keep the last figures meanwhile."""
        assert self._reader is not None
        reader = self._reader
        failing = False
        while True:
            scenarios = [scenario.id for scenario in self.project.scenarios]
            kinds = [*self.engine.handlers]
            try:
                last = self.metrics.store.figures
                self.metrics.store.figures = await reader.run(
                    read_store_figures, reader, scenarios, kinds, self.clock.now().timestamp(), last
                )
                failing = False
            except Exception as exc:  # noqa: BLE001 - stale figures, not a stopped daemon
                if not failing:
                    log.warning("cannot read the store's figures for /metrics now: %s", exc)
                failing = True
            await asyncio.sleep(metrics.STORE_FIGURES_SECONDS)

    async def _visit_over(self, job: Job) -> None:
        """A `visit` job fell due: the browser has been quiet long enough. Store its `site.left`
        (a re-run after a crash finds it stored already), then end the visit, unless the browser
        was active again meanwhile."""
        event = await self.store.run(self.store.visit_left, job)
        if event is not None:
            await self.ingest([event], job.payload.get("source", "site"))
        await self.store.run(self.store.end_visit, job)

    def _act_on_events(self, limit: int) -> tuple[int, float]:
        """On the store's thread: act on up to `limit` stored events; how many, and the seconds
        it took (measured here, not counting the wait for the thread)."""
        started = time.perf_counter()
        handled = self.engine.handle_pending_events(limit)
        return handled, time.perf_counter() - started

    def _start_pollers(self, project: Project) -> None:
        """Start the pollers of the project's sources, each with its own stop signal."""
        for source in project.registry.sources.values():
            if type(source).poll is not Source.poll:
                stop = asyncio.Event()
                task = self._watch(source.poll(self.ingest, stop), f"poller of source {source.name}")
                self._pollers.append((stop, task))

    async def _stop_pollers(self) -> None:
        """Tell every poller to stop and wait for them (a reload replaces the sources)."""
        pollers, self._pollers = self._pollers, []
        for stop, _ in pollers:
            stop.set()
        tasks = [task for _, task in pollers]
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=GRACE_SECONDS)
            for task in pending:
                task.cancel()
        self._tasks = [task for task in self._tasks if task not in tasks]

    def _watch(self, work: Awaitable[None], name: str) -> asyncio.Task:
        """Run a side task; if it dies, the daemon stops cleanly rather than limp on without it."""

        def done(task: asyncio.Task) -> None:
            if not task.cancelled() and task.exception() is not None:
                log.error("%s stopped with an error: %r", name, task.exception())
                self.crashed = True
                self.stopping.set()

        task = asyncio.ensure_future(work)
        task.add_done_callback(done)
        self._tasks.append(task)
        return task

    async def _watchdog(self, interval: float) -> None:
        while True:
            self.notifier.watchdog()
            await asyncio.sleep(interval)


async def run_daemon(config_path: Path) -> int:
    """Start the daemon and serve until told to stop; returns the exit code."""
    daemon = Daemon(config_path)
    try:
        await daemon.start()
    except StartupError as exc:
        for line in str(exc).splitlines():
            log.error("%s", line)
        daemon.notifier.send(STATUS="failed to start", ERRNO=1)
        return 2
    # In the daemon's own process (not in one that starts daemons in-process, as tests do):
    # what the start loaded (modules, plugins, scenarios) lives as long as the process, so it
    # is kept out of every garbage collection; and young objects are collected less often: a
    # request of 500 events makes tens of thousands, nearly all freed with it by reference
    # counting, and each collection that found them still alive walked them once more.
    gc.freeze()
    gc.set_threshold(YOUNG_OBJECTS_PER_COLLECTION)
    with contextlib.suppress(asyncio.CancelledError):
        return await daemon.serve()
    return 0


def _lock_database(database: Path) -> IO[bytes]:
    """Hold an exclusive lock beside the database: one daemon per database file."""
    try:
        return lock_database(database)
    except DatabaseLocked:
        raise StartupError(
            f"another boomerang daemon is using {database} (or `boomerang ingest` is importing "
            "into it); one daemon per database"
        ) from None
