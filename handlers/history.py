"""/history 2043, /history @anna: the latest transfers and finishes from the audit trail."""

from __future__ import annotations

import re

from aiogram import Router
from aiogram.filters import Command, CommandObject
from aiogram.types import Message

from bot.bitrix24.client import Dialog
from bot.command import DialogKind, DialogRef, UsageError, parse_dialog
from bot.directory import BadTarget, ResolveError
from bot.messages import Html, Lang
from bot.services import Services
from handlers.respond import respond

_SEPARATORS = re.compile(r"[\s,;]+")


def _dialog(word: str) -> DialogRef | None:
    """``word`` as a dialog (a number, s3567, a link), or None when it is not one."""
    try:
        return parse_dialog(word, DialogKind.CHAT)
    except UsageError:
        return None


def _names_one(services: Services, words: str) -> bool:
    try:
        services.directory.resolve(words)
    except (BadTarget, ResolveError):
        return False
    return True


async def history(message: Message, command: CommandObject, services: Services, lang: Lang) -> None:
    """The last entries about one dialog (by CHAT_ID) or one operator or queue; a name may be
    several words (``/history Anna Smirnova``)."""
    replies = services.replies
    words = [w for w in _SEPARATORS.split(command.args or "") if w]
    if not words:
        await respond(message, replies.history_usage(lang))
        return
    several = len(words) > 1
    # a dialog and more, or two spelled names: one at a time ("Line 2" is a name)
    if several and (_dialog(words[0]) or any(w.startswith(("@", "#")) for w in words)):
        await respond(message, replies.history_usage(lang, "many"))
        return
    word = " ".join(words)
    ref = None if several else _dialog(word)
    if ref is not None:
        entries = await services.storage.history(dialog=str(ref.number))
    else:
        try:
            target = services.directory.resolve(word)
        except BadTarget as err:
            await respond(message, replies.history_usage(lang, err))
            return
        except ResolveError as err:
            # no one of that name, but a name and a dialog ("anna 2043"): one at a time
            name = " ".join(w for w in words if not _dialog(w))
            if name != word and _names_one(services, name):
                await respond(message, replies.history_usage(lang, "many"))
            else:
                await respond(message, replies.unresolved(err, lang))
            return
        entries = await services.storage.history(target=target.ref)
    if not entries:
        await respond(message, replies.messages.text("history.none", lang, word=word))
        return
    # the dialogs' names: one look at them all (batched); the number alone where it fails
    refs = {e.dialog: named for e in entries if (named := _dialog(e.dialog)) is not None}
    distinct = list(dict.fromkeys(refs.values()))
    looks = dict(zip(distinct, await services.handoff.look(distinct), strict=True))
    lines = []
    for entry in entries:
        ref = refs.get(entry.dialog)
        look = looks[ref] if ref is not None else None
        who = services.access.name_of(entry.user_id)
        dialog = look if isinstance(look, Dialog) else None
        lines.append(replies.audit_line(entry, who, lang, services.config.zone, dialog))
    await respond(message, Html("\n".join(lines)))


def build_router() -> Router:
    """The /history command."""
    router = Router(name="history")
    router.message.register(history, Command("history", ignore_case=True))
    return router
