"""Doing what was asked — transfer or finish, then the announcement — for commands and taps."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

from aiogram import Bot
from aiogram.exceptions import TelegramAPIError
from aiogram.types import Message

from bot.bitrix24.client import Dialog
from bot.bitrix24.errors import BitrixError
from bot.command import DialogKind, DialogRef
from bot.directory import Target
from bot.handoff import Outcome, Status
from bot.messages import Html, Lang
from bot.pending import MessageKey
from bot.replies import split_message
from bot.services import Services

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Done:
    """The text to show the supervisor, and the dialogs it is about."""

    text: Html
    refs: tuple[DialogRef, ...]


def key_of(message: Message) -> MessageKey:
    """The key of a message in :class:`bot.pending.PendingStore`."""
    return (message.chat.id, message.message_id)


def chat_refs(dialogs: Sequence[Dialog]) -> tuple[DialogRef, ...]:
    """Dialogs as Bitrix24 named them, by CHAT_ID."""
    return tuple(DialogRef(DialogKind.CHAT, d.chat_id) for d in dialogs)


def replied_dialogs(message: Message, bot: Bot, services: Services) -> tuple[DialogRef, ...]:
    """The dialogs of the bot's message that ``message`` replies to, if any."""
    reply = message.reply_to_message
    if reply is None or reply.from_user is None or reply.from_user.id != bot.id:
        return ()
    return services.pending.about(key_of(reply))


def failures(refs: Sequence[DialogRef], looks: Sequence[Dialog | BitrixError]) -> list[Outcome]:
    """The looks that failed, as outcomes to report."""
    return [
        Outcome(ref, Status.FAILED, error=look)
        for ref, look in zip(refs, looks, strict=True)
        if isinstance(look, BitrixError)
    ]


async def carry_out(
    bot: Bot,
    services: Services,
    refs: Sequence[DialogRef],
    target: Target | None,
    *,
    by: str,
    lang: Lang,
    origin_chat: int,
) -> Done:
    """Transfer ``refs`` to ``target`` (finish them when None) and announce what changed."""
    handoff, replies, config = services.handoff, services.replies, services.config
    outcomes = await (handoff.transfer(refs, target) if target else handoff.finish(refs))
    text = replies.transfer(outcomes, target, lang)
    done_refs = tuple(
        DialogRef(DialogKind.CHAT, o.dialog.chat_id) if o.dialog else o.ref for o in outcomes
    )
    announcement = replies.announcement(outcomes, target, by, lang)
    team_chat = config.announce_to
    if announcement and team_chat is not None and team_chat != origin_chat:
        try:
            for chunk in split_message(announcement):
                sent = await bot.send_message(team_chat, chunk)
                services.pending.remember((team_chat, sent.message_id), done_refs)
        except TelegramAPIError as err:
            log.warning("announcement to %s failed: %s", team_chat, err)
            text = Html(f"{text}\n{replies.messages.text('announce.failed', lang)}")
    return Done(text, done_refs)
