"""/start, /help, /operators, /queues: what the bot does and who is in the directory."""

from __future__ import annotations

import re

from aiogram import F, Router
from aiogram.filters import Command, CommandObject, CommandStart
from aiogram.types import Message

from bot.directory import Kind
from bot.messages import Lang
from bot.services import Services
from handlers.respond import respond


async def help_(message: Message, services: Services, lang: Lang) -> None:
    """Usage with this team's own names."""
    await respond(message, services.replies.help(lang))


async def operators(
    message: Message, command: CommandObject, services: Services, lang: Lang
) -> None:
    """The operators and every name that reaches them (``/operators anna`` searches)."""
    await respond(message, services.replies.listing(Kind.OPERATOR, lang, command.args))


async def queues(message: Message, command: CommandObject, services: Services, lang: Lang) -> None:
    """The queues (open lines) and every name that reaches them (``/queues sup`` searches)."""
    await respond(message, services.replies.listing(Kind.QUEUE, lang, command.args))


async def unknown_command(
    message: Message, command: CommandObject, services: Services, lang: Lang
) -> None:
    """A command the bot does not have: "did you mean", and the ones it has."""
    await respond(message, services.replies.unknown_command(command.command, lang))


async def not_understood(message: Message, services: Services, lang: Lang) -> None:
    """Anything else in a private chat: point to /help rather than stay silent."""
    await respond(message, services.replies.messages.text("not_understood", lang))


# any command; one for another bot (``/foo@other_bot``) does not match
_ANY_COMMAND = re.compile(r".+")


def build_router() -> Router:
    """Help and directory listings; then, for what no router took, the unknown-command
    answer (in a group only when addressed to this bot: others' commands are not ours)
    and the private-chat catch-all."""
    router = Router(name="info")
    router.message.register(help_, CommandStart(ignore_case=True))
    router.message.register(help_, Command("help", ignore_case=True))
    router.message.register(operators, Command("operators", ignore_case=True))
    router.message.register(queues, Command("queues", ignore_case=True))
    router.message.register(unknown_command, F.chat.type == "private", Command(_ANY_COMMAND))
    router.message.register(unknown_command, Command(_ANY_COMMAND, magic=F.mention))
    router.message.register(not_understood, F.chat.type == "private")
    return router
