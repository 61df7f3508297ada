"""/history 2043, /history @anna: the latest transfers and finishes from the audit trail."""

from __future__ import annotations

from aiogram import Router
from aiogram.filters import Command, CommandObject
from aiogram.types import Message

from bot.command import DialogKind, UsageError, parse_dialog
from bot.directory import ResolveError
from bot.messages import Html, Lang
from bot.services import Services
from handlers.respond import respond


async def history(message: Message, command: CommandObject, services: Services, lang: Lang) -> None:
    """The last entries about one dialog (by CHAT_ID) or one operator or queue."""
    replies, word = services.replies, (command.args or "").strip()
    if not word:
        await respond(message, replies.messages.text("history.usage", lang))
        return
    try:
        ref = parse_dialog(word, DialogKind.CHAT)
        entries = await services.storage.history(dialog=str(ref.number))
    except UsageError:
        try:
            target = services.directory.resolve(word)
        except ResolveError as err:
            await respond(message, replies.unresolved(err, lang))
            return
        entries = await services.storage.history(target=target.ref)
    if not entries:
        await respond(message, replies.messages.text("history.none", lang, word=word))
        return
    lines = [
        replies.audit_line(entry, services.access.name_of(entry.user_id), lang) for entry in entries
    ]
    await respond(message, Html("\n".join(lines)))


def build_router() -> Router:
    """The /history command."""
    router = Router(name="history")
    router.message.register(history, Command("history"))
    return router
