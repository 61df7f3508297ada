"""Wiring: the aiogram ``Bot`` and ``Dispatcher`` built from a validated config.

Config, directory, client and the services go to handlers through the dispatcher's workflow
data; nothing lives in module globals.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from aiogram import Bot, Dispatcher
from aiogram.client.default import DefaultBotProperties
from aiogram.client.session.aiohttp import AiohttpSession
from aiogram.client.telegram import TelegramAPIServer
from aiogram.enums import ParseMode
from aiogram.exceptions import TelegramAPIError
from aiogram.methods import AnswerCallbackQuery, EditMessageText, GetUpdates, SendMessage
from aiogram.methods.base import Response
from aiogram.types import (
    BotCommand,
    BotCommandScopeAllGroupChats,
    BotCommandScopeAllPrivateChats,
    BotCommandScopeDefault,
    BotCommandScopeUnion,
)

from bot.bitrix24.client import BitrixClient
from bot.config import Config, ConfigError, load_config, parse_listen
from bot.flood_control import FloodWait, Pacing
from bot.handoff import Handoff
from bot.inbox import AnswerSeen, Inbox, KeptBeforeConfirmed
from bot.messages import LANGS, Messages
from bot.metrics import Metrics, serve_metrics
from bot.portal_check import check_in_background, stop_check
from bot.reload import collector_paused, describe_changes, release, swappable
from bot.services import Services
from bot.yamlsource import Problem
from handlers import build_router
from handlers.middlewares import CurrentServices, Intake

log = logging.getLogger(__name__)

# the "/" menu: everything in private chats; in groups only what makes sense in front of a team
PRIVATE_COMMANDS = ("transfer", "finish", "history", "operators", "queues", "help", "reload")
GROUP_COMMANDS = ("transfer", "finish", "history", "help")

# aiogram reads every answer with ``Response[<what the method returns>]``, and pydantic keeps
# such classes only in a weak cache: each garbage collection that frees one makes the next
# answer build it again (about 4 ms; seen on every few commands). Held here for the methods
# the bot calls all the time (their answers are lists of updates, a message, or true).
_ANSWER_TYPES = tuple(
    Response[method.__returning__]  # type: ignore[name-defined]
    for method in (GetUpdates, SendMessage, EditMessageText, AnswerCallbackQuery)
)


class BotPoster:
    """The announcer's way to post: the bot, once polling has started."""

    def __init__(self) -> None:
        self.bot: Bot | None = None

    def _bot(self) -> Bot:
        if self.bot is None:
            raise RuntimeError("the bot has not started")
        return self.bot

    async def send(self, chat_id: int, text: str) -> int:
        """Send ``text`` to ``chat_id``; returns the message ID."""
        return (await self._bot().send_message(chat_id, text)).message_id

    async def edit(self, chat_id: int, message_id: int, text: str) -> None:
        """Replace the text of one of the bot's messages."""
        await self._bot().edit_message_text(text=text, chat_id=chat_id, message_id=message_id)


def build_bot(config: Config, metrics: Metrics | None = None) -> Bot:
    """A ``Bot`` for the configured token, on the configured Bot API server if any; its
    flood-control refusals are counted in ``metrics``."""
    if config.telegram.token is None:
        raise ValueError("telegram.token is not set")
    api = config.telegram.api_url
    session = AiohttpSession(api=TelegramAPIServer.from_base(api)) if api else AiohttpSession()
    # pacing first, so a request retried after a 429 is paced again
    session.middleware(FloodWait(metrics=metrics))
    session.middleware(Pacing())
    session.middleware(AnswerSeen())
    return Bot(
        config.telegram.token.get_secret_value(),
        session=session,
        default=DefaultBotProperties(parse_mode=ParseMode.HTML, link_preview_is_disabled=True),
    )


@dataclass
class App:
    """Everything one running bot owns; :meth:`close` releases it."""

    config: Config
    dispatcher: Dispatcher
    client: BitrixClient
    inbox: Inbox
    services: Services
    poster: BotPoster
    path: Path | None = None  # the config file, for reloads
    env: Mapping[str, str] | None = None  # what ${VAR} reads on reload (None: the process's)
    prepare: Callable[[Config], Config] | None = None  # the sandbox: a reread config's servers
    _reloads: set[asyncio.Task[None]] = field(default_factory=set)
    _reloading: asyncio.Lock = field(default_factory=asyncio.Lock)
    portal_check: asyncio.Task[None] | None = None  # the start-up check, running in background

    async def close(self) -> None:
        """Close the Bitrix24 session (aiogram closes the bot's own)."""
        await self.client.close()

    async def poll(
        self, bot: Bot, *, handle_signals: bool = True, polling_timeout: int = 10
    ) -> None:
        """Poll Telegram until stopped. Each update is kept in the inbox before the next
        ``getUpdates`` confirms it (the inbox then carries it out in a task of its own)."""
        bot.session.middleware(KeptBeforeConfirmed(self.services.storage))
        await self.dispatcher.start_polling(
            bot,
            handle_as_tasks=False,
            handle_signals=handle_signals,
            polling_timeout=polling_timeout,
        )

    @property
    def metrics(self) -> Metrics:
        """The bot's metrics (they live with the Bitrix24 client, which outlives reloads)."""
        return self.client.metrics

    async def reload(self) -> list[str]:
        """Read the config file again and swap in what it says; returns what changed.

        Raises :class:`ConfigError` for a bad file (the running config stays in force).
        Everything heavy (the file, the directory and its indexes, the replies) is built in a
        thread; the event loop only swaps one reference, so a directory of ten thousand
        does not hold up the commands being served meanwhile.
        """
        async with self._reloading:  # each reload builds on the services the last one left
            try:
                if self.path is None:
                    raise ConfigError(
                        "config", [Problem((), "the bot was not started from a file")]
                    )
                changes, fresh = await asyncio.to_thread(self._build_reloaded, self.path)
            except ConfigError:
                self.metrics.config_reloads.labels("failed").inc()
                raise
            self.metrics.config_reloads.labels("changed" if changes else "unchanged").inc()
            retired = [self.services]
            self.services = fresh
            # the old config and directory are let go of in a thread, a few objects at a time
            await asyncio.to_thread(release, retired, lambda old: (old.config, old.directory))
        log.info("config reloaded: %s", "; ".join(changes) or "no changes")
        return changes

    def _build_reloaded(self, path: Path) -> tuple[list[str], Services]:
        """In a worker thread: the new config, what changed, and the services built from it."""
        with collector_paused():
            new = load_config(path, self.env)
            if self.prepare is not None:
                new = self.prepare(new)
            current = self.services
            changes = describe_changes(current.config, new)
            return changes, current.reloaded(swappable(self.config, new), self.poster)

    def reload_in_background(self) -> None:
        """SIGHUP: reload, logging the outcome (there is nobody to reply to)."""

        async def reload() -> None:
            try:
                await self.reload()
            except ConfigError as err:
                log.error("config not reloaded, the old one stays in force: %s", err)

        task = asyncio.get_running_loop().create_task(reload())
        self._reloads.add(task)
        task.add_done_callback(self._reloads.discard)


def build_app(
    config: Config,
    client: BitrixClient | None = None,
    path: Path | None = None,
    env: Mapping[str, str] | None = None,
    *,
    check_portal: bool = False,
    prepare: Callable[[Config], Config] | None = None,
) -> App:
    """The dispatcher with its routers, middlewares and workflow data.

    ``check_portal``: on start-up, check the portal in the background and log what it found.
    ``prepare``: applied to the config each reload reads (the sandbox's own servers)."""
    client = client or BitrixClient(config.bitrix24)
    poster = BotPoster()
    services = Services.build(config, Handoff(client), poster)
    messages = services.replies.messages
    # no conversation states: a command is one message, and what buttons stand for is kept in
    # storage (aiogram's FSM middleware would look up a state for every update, for nothing)
    dispatcher = Dispatcher(disable_fsm=True)
    inbox = Inbox(dispatcher, services.storage)  # the storage outlives reloads
    app = App(config, dispatcher, client, inbox, services, poster, path, env, prepare)
    app.metrics.watch(lambda: inbox.backlog, lambda: client.health.report().status != "ok")
    dispatcher["reload"] = app.reload
    dispatcher.update.outer_middleware(CurrentServices(lambda: app.services))
    dispatcher.update.outer_middleware(Intake(inbox))
    dispatcher.include_router(build_router())

    async def on_startup(bot: Bot) -> None:
        poster.bot = bot
        await services.storage.open()
        with contextlib.suppress(NotImplementedError, RuntimeError):  # no signals off Unix
            asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, app.reload_in_background)
        try:
            await set_commands(bot, messages)
        except TelegramAPIError as err:  # a missing menu is no reason not to serve
            log.warning("could not set the command menu: %s", err)
        me = await bot.me()
        log.info("bot @%s started; Bitrix24 at %s", me.username, config.bitrix24.masked_webhook())
        if check_portal:
            app.portal_check = check_in_background(config, path)
        inbox.sweep_in_background(bot)

    async def on_shutdown() -> None:
        await stop_check(app.portal_check)
        # no new updates come in now; let the ones in hand finish and reply
        left = await inbox.stop(config.shutdown_grace_s)
        if left:
            log.warning("stopped with %d update(s) unfinished: the next start finishes them", left)
        if app.services.announcer is not None:
            await app.services.announcer.close()
        await app.services.storage.close()  # last: everything above may still write to it
        await app.close()

    dispatcher.startup.register(on_startup)
    dispatcher.shutdown.register(on_shutdown)
    return app


async def set_commands(bot: Bot, messages: Messages) -> None:
    """The Telegram "/" menu per scope (private chats, groups) and language (en default, ru)."""
    scopes: tuple[tuple[BotCommandScopeUnion, tuple[str, ...]], ...] = (
        (BotCommandScopeDefault(), PRIVATE_COMMANDS),
        (BotCommandScopeAllPrivateChats(), PRIVATE_COMMANDS),
        (BotCommandScopeAllGroupChats(), GROUP_COMMANDS),
    )
    for scope, names in scopes:
        for lang in LANGS:
            commands = [
                BotCommand(command=name, description=messages.template(f"command.{name}", lang))
                for name in names
            ]
            await bot.set_my_commands(
                commands, scope=scope, language_code=None if lang == "en" else lang
            )


async def run_polling(
    config: Config, path: Path | None = None, metrics_listen: str | None = None
) -> None:
    """Run the bot until SIGINT/SIGTERM (SIGHUP reloads the config); in-flight commands
    finish before it exits. ``metrics_listen`` (HOST:PORT) serves ``GET /metrics``."""
    app = build_app(config, path=path, check_portal=True)
    bot = build_bot(config, app.metrics)
    metrics = None
    try:
        if metrics_listen:
            metrics = await serve_metrics(app.metrics, *parse_listen(metrics_listen, "--metrics"))
            log.info("metrics at http://%s/metrics", metrics_listen)
        await app.poll(bot)
    finally:
        if metrics is not None:
            await metrics.cleanup()
        await app.close()
