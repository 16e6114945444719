"""Long polling: `getUpdates` in a loop, for a bot without a public webhook URL.

The daemon stops a reloaded configuration's pollers and starts the new sources' own, so one
loop serves one source. Telegram confirms an update when the next call asks for a later one;
the offset is kept per bot (and Bot API server), so that a poller started by a reload does
not get again what the one before it handled.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from boomerang.kinds import Ingest
from boomerang.plugins.channels.telegram.bot_api import ApiError, BotApi, network_errors

log = logging.getLogger(__name__)

POLL_TIMEOUT = 25  # seconds a getUpdates long poll may wait for updates
POLL_BACKOFF_MAX = 60.0
UPDATE_ATTEMPTS = 5  # a polled update that fails this often is skipped

# the next update id to ask for, by Bot API server and bot token
_offsets: dict[tuple[str, str], int] = {}


async def poll_updates(
    bot: BotApi,
    handle: Callable[[dict[str, Any], Ingest], Awaitable[None]],
    ingest: Ingest,
    stop: asyncio.Event,
) -> None:
    """Long-poll `getUpdates` and `handle` each update until `stop` is set; outlives any failure."""
    bot_key = (bot.settings.api_base, bot.settings.token)
    backoff = 1.0
    failures: dict[int, int] = {}
    await drop_webhook(bot)
    while not stop.is_set():
        params: dict[str, Any] = {"timeout": POLL_TIMEOUT, "allowed_updates": ["message"]}
        if bot_key in _offsets:
            params["offset"] = _offsets[bot_key]
        try:
            updates = await _unless_stopped(bot.call("getUpdates", params, timeout=POLL_TIMEOUT + 15), stop)
            if updates is None:
                return
            for update in updates if isinstance(updates, list) else []:
                update_id = update.get("update_id") if isinstance(update, dict) else None
                if not isinstance(update_id, int):
                    continue
                try:
                    await handle(update, ingest)
                except Exception:
                    failures[update_id] = failures.get(update_id, 0) + 1
                    if failures[update_id] < UPDATE_ATTEMPTS:
                        raise
                    log.exception("telegram: update %s failed %d times; skipped", update_id, UPDATE_ATTEMPTS)
                failures.pop(update_id, None)
                _offsets[bot_key] = update_id + 1
            backoff = 1.0
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - the poller must outlive any one failure
            if isinstance(exc, ApiError) and exc.status == 409:
                await drop_webhook(bot)
            log.warning("telegram: getUpdates failed (%s); again in %.0fs", bot.redact(repr(exc)), backoff)
            if await _stopped(stop, backoff):
                return
            backoff = min(backoff * 2, POLL_BACKOFF_MAX)


async def drop_webhook(bot: BotApi) -> None:
    """getUpdates does not work while a webhook is set: remove it (pending updates stay)."""
    try:
        await bot.call("deleteWebhook", {"drop_pending_updates": False})
    except (ApiError, *network_errors()) as exc:
        log.warning("telegram: deleteWebhook failed: %s", bot.redact(str(exc)))


async def _stopped(stop: asyncio.Event, seconds: float) -> bool:
    """Wait up to `seconds`; True if `stop` was set meanwhile."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)
    return stop.is_set()


async def _unless_stopped(work: Any, stop: asyncio.Event) -> Any:
    """The result of `work`, or None as soon as `stop` is set; the work never outlives the wait."""
    task = asyncio.ensure_future(work)
    stopping = asyncio.ensure_future(stop.wait())
    finished = False
    try:
        await asyncio.wait({task, stopping}, return_when=asyncio.FIRST_COMPLETED)
        finished = task.done()
    finally:  # also when the poller itself is cancelled mid-wait (the daemon stopping)
        stopping.cancel()
        if not task.done():
            task.cancel()
            task.add_done_callback(_consume)
    return task.result() if finished else None


def _consume(task: asyncio.Future) -> None:
    """Take a cancelled call's outcome, so that asyncio does not report it as never retrieved."""
    if not task.cancelled():
        task.exception()
