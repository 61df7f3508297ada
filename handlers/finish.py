"""/finish: look at the dialogs, then finish them after one confirming tap."""

from __future__ import annotations

from aiogram import Bot, Router
from aiogram.filters import Command, CommandObject
from aiogram.types import Message

from bot.bitrix24.client import Dialog
from bot.command import DialogKind, UsageError, parse_finish
from bot.messages import Lang
from bot.pending import Action, Pending
from bot.services import Services
from handlers import keyboards
from handlers.respond import respond
from handlers.work import chat_refs, failures, key_of, replied_dialogs


async def finish(
    message: Message, command: CommandObject, bot: Bot, services: Services, lang: Lang
) -> None:
    """``/finish <dialog> [<dialog> ...]``, or ``/finish`` in reply to a message about one."""
    replies = services.replies
    try:
        refs = parse_finish(command.args, DialogKind(services.config.dialog_numbers))
    except UsageError as err:
        await respond(message, replies.usage(lang, err, "finish"))
        return
    refs = refs or await replied_dialogs(message, bot, services)
    if not refs:
        await respond(message, replies.messages.text("usage.finish", lang))
        return
    looks = await services.handoff.look(refs)
    seen = [look for look in looks if isinstance(look, Dialog)]
    if not seen:
        await respond(message, replies.transfer(failures(refs, looks), None, lang))
        return
    markup = keyboards.confirm("button.finish", replies, lang)
    user_id = message.from_user.id if message.from_user else 0
    pending = Pending(Action.CONFIRM_FINISH, chat_refs(seen), user_id, looked=tuple(seen))
    async with services.pending.unstored.sending(message.chat.id):
        sent = await respond(message, replies.confirm(refs, looks, None, lang), markup)
        key = key_of(sent[-1])
        await services.pending.put(key, pending)
        await services.pending.remember(key, chat_refs(seen))


def build_router() -> Router:
    """The /finish command."""
    router = Router(name="finish")
    router.message.register(finish, Command("finish", ignore_case=True))
    return router
