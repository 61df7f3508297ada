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
from aiogram.types import (
    BotCommand,
    BotCommandScopeAllGroupChats,
    BotCommandScopeAllPrivateChats,
    BotCommandScopeDefault,
    BotCommandScopeUnion,
)

from bot.bitrix24.client import BitrixClient
from bot.config import Config
from bot.messages import LANGS, Messages
from bot.services import Services
from handlers import build_router
from handlers.middlewares import InFlight

log = logging.getLogger(__name__)

# the "/" menu: everything in private chats; in groups only what makes sense in front of a team
PRIVATE_COMMANDS = ("transfer", "finish", "operators", "queues", "help")
GROUP_COMMANDS = ("transfer", "finish", "help")
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
    services: Services

    async def close(self) -> None:
        """Close the Bitrix24 session (aiogram closes the bot's own)."""
        await self.client.close()


def build_app(config: Config, client: BitrixClient | None = None) -> App:
    """The dispatcher with its routers, middlewares and workflow data."""
    client = client or BitrixClient(config.bitrix24)
    services = Services.build(config, client)
    messages = services.replies.messages
    in_flight = InFlight()
    dispatcher = Dispatcher(services=services)
    dispatcher.update.outer_middleware(in_flight)
    dispatcher.include_router(build_router())
    app = App(config, dispatcher, client, in_flight, services)

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


async def run_polling(config: Config) -> None:
    """Run the bot until SIGINT/SIGTERM; in-flight commands finish before it exits."""
    app = build_app(config)
    bot = build_bot(config)
    try:
        await app.dispatcher.start_polling(bot, handle_signals=True)
    finally:
        await app.close()
