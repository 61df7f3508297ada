"""Wiring: the aiogram ``Bot`` and ``Dispatcher`` built from a validated config.

Config, directory, client and the services go to handlers through the dispatcher's workflow
data; nothing lives in module globals.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from aiogram import Bot, Dispatcher
from aiogram.client.default import DefaultBotProperties
from aiogram.client.session.aiohttp import AiohttpSession
from aiogram.client.telegram import TelegramAPIServer
from aiogram.enums import ParseMode
from aiogram.exceptions import TelegramAPIError
from aiogram.types import BotCommand, BotCommandScopeDefault

from bot.access import AccessPolicy
from bot.bitrix24.client import BitrixClient
from bot.config import Config
from bot.directory import Directory
from bot.handoff import Handoff
from bot.messages import LANGS, Messages
from bot.replies import Replies
from handlers import build_router
from handlers.middlewares import InFlight

log = logging.getLogger(__name__)

COMMANDS = ("transfer", "operators", "queues", "help")
SHUTDOWN_GRACE_S = 30.0


def build_bot(config: Config) -> Bot:
    """A ``Bot`` for the configured token, on the configured Bot API server if any."""
    if config.telegram.token is None:
        raise ValueError("telegram.token is not set")
    api = config.telegram.api_url
    session = AiohttpSession(api=TelegramAPIServer.from_base(api)) if api else AiohttpSession()
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
    in_flight: InFlight

    async def close(self) -> None:
        """Close the Bitrix24 session (aiogram closes the bot's own)."""
        await self.client.close()


def build_app(config: Config, client: BitrixClient | None = None) -> App:
    """The dispatcher with its routers, middlewares and workflow data."""
    client = client or BitrixClient(config.bitrix24)
    directory = Directory.from_config(config)
    messages = Messages(config.messages, config.admin_contact)
    in_flight = InFlight()
    dispatcher = Dispatcher(
        config=config,
        directory=directory,
        access=AccessPolicy(config),
        handoff=Handoff(client),
        replies=Replies(messages, directory),
        client=client,
    )
    dispatcher.update.outer_middleware(in_flight)
    dispatcher.include_router(build_router())
    app = App(config, dispatcher, client, in_flight)

    async def on_startup(bot: Bot) -> None:
        try:
            await set_commands(bot, messages)
        except TelegramAPIError as err:  # a missing menu is no reason not to serve
            log.warning("could not set the command menu: %s", err)
        me = await bot.me()
        log.info("bot @%s started; Bitrix24 at %s", me.username, config.bitrix24.masked_webhook())

    async def on_shutdown() -> None:
        # polling has stopped taking updates; let the ones in hand finish and reply
        if not await in_flight.wait_idle(SHUTDOWN_GRACE_S):
            log.warning("stopping with commands still in flight")
        await app.close()

    dispatcher.startup.register(on_startup)
    dispatcher.shutdown.register(on_shutdown)
    return app


async def set_commands(bot: Bot, messages: Messages) -> None:
    """The Telegram "/" menu, in English (the default) and Russian."""
    for lang in LANGS:
        commands = [
            BotCommand(command=name, description=messages.template(f"command.{name}", lang))
            for name in COMMANDS
        ]
        await bot.set_my_commands(
            commands, scope=BotCommandScopeDefault(), language_code=None if lang == "en" else lang
        )


async def run_polling(config: Config) -> None:
    """Run the bot until SIGINT/SIGTERM; in-flight commands finish before it exits."""
    app = build_app(config)
    bot = build_bot(config)
    try:
        await app.dispatcher.start_polling(bot, handle_signals=True)
    finally:
        await app.close()
