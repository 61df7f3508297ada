"""Before the bot serves: a storage folder that exists and may be written (and no database of a
newer release), a token Telegram accepts, and (for long polling) no webhook left over from
webhook mode.

Telegram being unreachable at start-up (no network yet, DNS failing, Telegram down) is waited
out with a back-off and one log line per attempt, until it answers or the process is told to
stop; a token Telegram refuses ends the start-up with one line naming the variable.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import os
import signal
import sqlite3
from collections.abc import Awaitable, Sequence
from pathlib import Path
from typing import TypeVar
from urllib.parse import urlsplit

from aiogram import Bot
from aiogram.exceptions import (
    AiogramError,
    ClientDecodeError,
    TelegramAPIError,
    TelegramNotFound,
    TelegramRetryAfter,
    TelegramUnauthorizedError,
)
from aiogram.types import User
from aiogram.utils.backoff import Backoff, BackoffConfig

from bot.config import ENV_API_URL, ENV_TOKEN, Config, StorageSettings
from bot.schema import SCHEMA_VERSION, SchemaTooNew, sqlite_version

log = logging.getLogger(__name__)

T = TypeVar("T")

# 1 s, 2 s, 4 s ... 60 s: quick when the network comes up a moment after the bot, gentle on a
# long outage; the small jitter keeps several restarted bots from asking in lockstep
BACKOFF = BackoffConfig(min_delay=1.0, max_delay=60.0, factor=2.0, jitter=0.1)
# a network that drops packets would otherwise hold one attempt for aiogram's 60 s default
REQUEST_TIMEOUT_S = 10
_REASON_MAX = 200
# where deploy/handoff-bot.service lets the bot write (StateDirectory=handoff-bot)
SERVICE_STORAGE = "/var/lib/handoff-bot/handoff.sqlite3"


class Readiness(enum.Enum):
    """How the start-up check ended."""

    READY = "ready"  # Telegram knows the token; polling (if asked) will get updates
    STOPPED = "stopped"  # SIGINT/SIGTERM while waiting for Telegram
    REFUSED = "refused"  # Telegram refused the token: no point retrying


class TokenRefused(Exception):
    """Telegram answered that it does not know the bot token (401, or 404 for a malformed one).

    The message names the variable, never the token."""


def storage_problem(settings: StorageSettings) -> str | None:
    """One line if the SQLite file cannot be created or written (a missing or read-only
    folder), is not a database, or was written by a newer release (its schema version), else
    None.

    SQLite would only find out when the bot opens it, after Telegram and the portal were
    contacted; a typo in the path, or a downgrade without the backup, is better reported at
    once."""
    if settings.url is not None or settings.path == ":memory:":
        return None  # PostgreSQL, or nothing on disk
    where = f"storage.path {settings.path}"
    folder = Path(settings.path).parent
    if not folder.exists():
        return f"{where}: the folder {folder} does not exist; create it"
    if not folder.is_dir():
        return f"{where}: {folder} is not a folder"
    # SQLite writes the file and its -wal and -shm next to it. A service under
    # ProtectSystem=strict sees /etc read-only: a database left next to config.yaml there
    # would fail only at the first command, after every restart.
    for place in (folder, Path(settings.path)):
        if place.exists() and not os.access(place, os.W_OK):
            return (
                f"{where}: the bot may not write to {place} "
                f"(read-only, or another user's); as a service, use {SERVICE_STORAGE}"
            )
    if Path(settings.path).is_file():
        try:
            with contextlib.closing(sqlite3.connect(settings.path)) as db:
                found = sqlite_version(db)
        except sqlite3.Error as err:
            return f"{where}: {err}"
        if found > SCHEMA_VERSION:
            return str(SchemaTooNew(where, found, SCHEMA_VERSION))
    return None


def _one_line(text: str) -> str:
    first = text.strip().splitlines()[0] if text.strip() else "no details"
    return first if len(first) <= _REASON_MAX else first[: _REASON_MAX - 1] + "…"


def describe_failure(err: AiogramError) -> str:
    """A short, single-line reason for a failed attempt (aiohttp's text for network errors;
    never a whole proxy page, never a URL: a request URL carries the token)."""
    if isinstance(err, ClientDecodeError):
        return "the answer is not the Bot API's (a proxy or captive-portal page?)"
    if isinstance(err, TelegramAPIError):
        method = err.method.__api_method__
        return f"{method}: {_one_line(err.message)}"
    return _one_line(str(err))


def token_refused(err: TelegramUnauthorizedError | TelegramNotFound, api_url: str | None) -> str:
    """The one line for a refused token: the variable to fix, never the token itself."""
    if isinstance(err, TelegramUnauthorizedError):
        return (
            f"Telegram refused the bot token (401 Unauthorized): check {ENV_TOKEN}, "
            "@BotFather's /token shows the current one"
        )
    elsewhere = f", or {ENV_API_URL} is not a Bot API server" if api_url else ""
    return (
        f"Telegram does not know the bot token (404 Not Found): {ENV_TOKEN} is malformed{elsewhere}"
    )


async def reach_telegram(
    bot: Bot,
    *,
    polling: bool,
    backoff: BackoffConfig = BACKOFF,
    request_timeout: int = REQUEST_TIMEOUT_S,
    api_url: str | None = None,
) -> User:
    """``getMe`` until Telegram answers; returns the bot's user.

    While Telegram cannot be reached (network errors, 5xx, 429, an answer that is not the Bot
    API's) it retries with ``backoff``, one warning per attempt. With ``polling``, a webhook
    left set (webhook mode ran before) is deleted, pending updates kept: Telegram refuses
    ``getUpdates`` (409 Conflict) while one is set, and aiogram's polling would retry that
    forever. Raises :class:`TokenRefused` when Telegram refuses the token."""
    delays = Backoff(backoff)
    attempt = 0
    while True:
        attempt += 1
        try:
            me = await bot.get_me(request_timeout=request_timeout)
            if polling:
                await _delete_webhook(bot, request_timeout)
        except (TelegramUnauthorizedError, TelegramNotFound) as err:
            raise TokenRefused(token_refused(err, api_url)) from None
        except (TelegramAPIError, ClientDecodeError) as err:
            delay = next(delays)
            if isinstance(err, TelegramRetryAfter):
                delay = max(delay, float(err.retry_after))  # Telegram's own wait wins
            # aiohttp names the URL in a few errors, and the URL carries the token
            reason = describe_failure(err).replace(bot.token, "***")
            log.warning(
                "Telegram not reachable (attempt %d): %s; retrying in %.1f s",
                attempt,
                reason,
                delay,
            )
            await asyncio.sleep(delay)
            continue
        if attempt > 1:
            log.info("Telegram answered on attempt %d", attempt)
        return me


async def _delete_webhook(bot: Bot, request_timeout: int) -> None:
    info = await bot.get_webhook_info(request_timeout=request_timeout)
    if not info.url:
        return
    # drop_pending_updates=False: commands sent while the webhook was set still get done
    await bot.delete_webhook(drop_pending_updates=False, request_timeout=request_timeout)
    # the host only: a webhook path may carry a secret
    log.warning(
        "a webhook to %s was set (webhook mode ran before?); deleted it so that long polling "
        "gets updates; %d pending updates kept",
        urlsplit(info.url).hostname or "?",
        info.pending_update_count,
    )


async def until_stopped(
    work: Awaitable[T], signals: Sequence[signal.Signals] = (signal.SIGINT, signal.SIGTERM)
) -> T | None:
    """Await ``work``; ``None`` if one of ``signals`` came first (``work`` is then
    cancelled). The handlers are removed again afterwards, for whoever runs next."""
    loop = asyncio.get_running_loop()
    task = asyncio.ensure_future(work)
    stopped = False

    def stop() -> None:
        nonlocal stopped
        stopped = True
        task.cancel()

    installed = []
    for signum in signals:
        try:
            loop.add_signal_handler(signum, stop)
        except (NotImplementedError, RuntimeError):  # no signal handlers off Unix
            continue
        installed.append(signum)
    try:
        return await task
    except asyncio.CancelledError:
        current = asyncio.current_task()
        if stopped and (current is None or not current.cancelling()):
            return None
        raise
    finally:
        for signum in installed:
            loop.remove_signal_handler(signum)


async def check_telegram(
    config: Config, *, polling: bool, backoff: BackoffConfig = BACKOFF
) -> Readiness:
    """Wait until Telegram accepts the token (see :func:`reach_telegram`) or the process is
    stopped; logs the outcome in one line. Uses a short-lived ``Bot`` of its own."""
    from bot.app import build_bot  # the handlers come with it: only when the bot really runs

    bot = build_bot(config)
    try:
        work = reach_telegram(
            bot, polling=polling, backoff=backoff, api_url=config.telegram.api_url
        )
        me = await until_stopped(work)
    except TokenRefused as err:
        log.error("%s", err)
        return Readiness.REFUSED
    finally:
        await bot.session.close()
    if me is None:
        log.info("stopped while waiting for Telegram")
        return Readiness.STOPPED
    return Readiness.READY
