"""/start, /help, /operators, /queues: what the bot does and who is in the directory."""

from __future__ import annotations

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


async def not_understood(message: Message, services: Services, lang: Lang) -> None:
    """Anything else in a private chat: point to /help rather than stay silent."""
    await respond(message, services.replies.messages.text("not_understood", lang))


def build_router() -> Router:
    """Help and directory listings; the private-chat catch-all is registered last."""
    router = Router(name="info")
    router.message.register(help_, CommandStart())
    router.message.register(help_, Command("help"))
    router.message.register(operators, Command("operators"))
    router.message.register(queues, Command("queues"))
    router.message.register(not_understood, F.chat.type == "private")
    return router
