"""/transfer: parse, resolve, move the dialogs, reply, announce."""

from __future__ import annotations

import logging

from aiogram import Bot, Router
from aiogram.exceptions import TelegramAPIError
from aiogram.filters import Command, CommandObject
from aiogram.types import Message

from bot.command import DialogKind, UsageError, parse_transfer
from bot.config import Config
from bot.directory import Directory, ResolveError
from bot.handoff import Handoff
from bot.messages import Html, Lang
from bot.replies import Replies, split_message
from handlers.respond import respond

log = logging.getLogger(__name__)


async def transfer(
    message: Message,
    command: CommandObject,
    bot: Bot,
    config: Config,
    directory: Directory,
    handoff: Handoff,
    replies: Replies,
    lang: Lang,
    supervisor_name: str,
) -> None:
    """``/transfer <dialog> [<dialog> ...] <target>``; nothing is sent unless all of it resolves."""
    try:
        parsed = parse_transfer(command.args, DialogKind(config.dialog_numbers))
    except UsageError as err:
        await respond(message, replies.usage(lang, err))
        return
    try:
        target = directory.resolve(parsed.target)
    except ResolveError as err:
        await respond(message, replies.unresolved(err, lang))
        return

    outcomes = await handoff.transfer(parsed.dialogs, target)
    text = replies.transfer(outcomes, target, lang)
    announcement = replies.announcement(outcomes, target, supervisor_name, lang)
    if announcement and config.announce_to is not None and config.announce_to != message.chat.id:
        try:
            for chunk in split_message(announcement):
                await bot.send_message(config.announce_to, chunk)
        except TelegramAPIError as err:
            log.warning("announcement to %s failed: %s", config.announce_to, err)
            text = Html(f"{text}\n{replies.messages.text('announce.failed', lang)}")
    await respond(message, text)


def build_router() -> Router:
    """The /transfer command."""
    router = Router(name="transfer")
    router.message.register(transfer, Command("transfer"))
    return router
