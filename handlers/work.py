"""Doing what was asked — transfer or finish, then the announcement — for commands and taps."""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass

from aiogram import Bot
from aiogram.exceptions import TelegramAPIError, TelegramBadRequest
from aiogram.types import CallbackQuery, InlineKeyboardMarkup, Message, Update

from bot.bitrix24.client import Dialog
from bot.bitrix24.errors import BitrixError
from bot.command import DialogKind, DialogRef
from bot.directory import AmbiguousName, ResolveError, Target
from bot.flow import CHOICE_SIZE, choices, picker_page
from bot.handoff import Looks, Outcome, Status
from bot.messages import Html, Lang
from bot.pending import Action, MessageKey, Pending
from bot.replies import Replies, split_message
from bot.services import Services
from bot.storage import AuditEntry, utc_now
from handlers import keyboards

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Done:
    """The text to show the supervisor, the dialogs it is about, and whether the team chat
    heard of it (None: nothing to announce there)."""

    text: Html
    refs: tuple[DialogRef, ...]
    announced: Awaitable[bool] | None = None
    retry: Pending | None = None  # what a "Try again" tap would do, if anything did not move

    def markup(self, replies: Replies, lang: Lang) -> InlineKeyboardMarkup | None:
        """The "Try again" button when something did not move; else no buttons."""
        return keyboards.retry(replies, lang) if self.retry is not None else None

    async def offer_retry(self, shown: Message, services: Services) -> None:
        """Keep what "Try again" under ``shown`` would do (nothing, if nothing is to retry)."""
        if self.retry is not None:
            await services.pending.put(key_of(shown), self.retry)

    async def note_if_unannounced(self, shown: Message, lang: Lang, services: Services) -> None:
        """Once the announcement is out, or failed: say so under the result (``shown``, the
        message with the last part of :attr:`text`) if it failed."""
        if self.announced is None or await self.announced:
            return
        note = services.replies.messages.text("announce.failed", lang)
        try:
            await shown.edit_text(f"{split_message(self.text)[-1]}\n{note}")
        except TelegramAPIError as err:
            log.warning("could not add the announcement note: %s", err)


def not_modified(err: BaseException) -> bool:
    """Whether ``err`` is Telegram refusing an edit that would change nothing: the message
    already reads so, which is done, not a failure."""
    return isinstance(err, TelegramBadRequest) and "message is not modified" in err.message


async def edited(edit: Awaitable[object]) -> None:
    """Await an edit of a bot message, taking "message is not modified" as done (a repeated
    tap on Next shows the same page; "Try again" may bring the same result)."""
    try:
        await edit
    except TelegramBadRequest as err:
        if not not_modified(err):
            raise


def key_of(message: Message) -> MessageKey:
    """The key of a message in :class:`bot.pending.PendingStore`."""
    return (message.chat.id, message.message_id)


def chat_refs(dialogs: Sequence[Dialog]) -> tuple[DialogRef, ...]:
    """Dialogs as Bitrix24 named them, by CHAT_ID."""
    return tuple(DialogRef(DialogKind.CHAT, d.chat_id) for d in dialogs)


async def replied_dialogs(message: Message, bot: Bot, services: Services) -> tuple[DialogRef, ...]:
    """The dialogs of the bot's message that ``message`` replies to, if any."""
    reply = message.reply_to_message
    if reply is None or reply.from_user is None or reply.from_user.id != bot.id:
        return ()
    await services.pending.unstored.settled(reply.chat.id)
    return await services.pending.about(key_of(reply))


def failures(refs: Sequence[DialogRef], looks: Sequence[Dialog | BitrixError]) -> list[Outcome]:
    """The looks that failed, as outcomes to report."""
    return [
        Outcome(ref, Status.FAILED, error=look)
        for ref, look in zip(refs, looks, strict=True)
        if isinstance(look, BitrixError)
    ]


@dataclass(frozen=True)
class Asker:
    """Who asked, where, in which language, and in which update."""

    user_id: int
    chat_id: int
    name: str
    lang: Lang
    update_id: int | None

    @classmethod
    def of(
        cls, event: Message | CallbackQuery, chat_id: int, update: Update, name: str, lang: Lang
    ) -> Asker:
        """The asker of a message or a tap."""
        user_id = event.from_user.id if event.from_user else 0
        return cls(user_id, chat_id, name, lang, update.update_id)


async def carry_out(
    services: Services,
    refs: Sequence[DialogRef],
    target: Target | None,
    asker: Asker,
    looks: Looks | None = None,
) -> Done:
    """Transfer ``refs`` to ``target`` (finish them when None), write the audit trail, and
    announce what changed. The audit entries are written before anyone is told. ``looks``:
    the dialogs as just looked at, for a transfer not to look again."""
    handoff, replies, config = services.handoff, services.replies, services.config
    started = time.monotonic()
    outcomes = await (handoff.transfer(refs, target, looks) if target else handoff.finish(refs))
    latency_ms = round((time.monotonic() - started) * 1000)
    now = utc_now()
    await services.storage.record(
        [
            AuditEntry(
                now,
                asker.user_id,
                asker.chat_id,
                "transfer" if target else "finish",
                o.label,
                target.ref if target else "-",
                o.code,
                latency_ms,
                asker.update_id,
            )
            for o in outcomes
        ]
    )
    for o in outcomes:
        services.metrics.dialog_actions.labels(
            "transfer" if target else "finish", o.status.value, o.code
        ).inc()
    log.info(
        "command user=%s chat=%s action=%s dialogs=%s target=%s outcomes=%s latency_ms=%s",
        asker.user_id,
        asker.chat_id,
        "transfer" if target else "finish",
        ",".join(o.label for o in outcomes),
        target.ref if target else "-",
        ",".join(o.code for o in outcomes),
        latency_ms,
    )
    text = replies.transfer(outcomes, target, asker.lang)
    done_refs = tuple(
        DialogRef(DialogKind.CHAT, o.dialog.chat_id) if o.dialog else o.ref for o in outcomes
    )
    announced = None
    if services.announcer is not None and config.announce_to != asker.chat_id:
        lines = replies.announcement(outcomes, target, asker.name, asker.lang)
        if lines:
            announced = services.announcer.announce(lines, done_refs)
    not_moved = tuple(
        DialogRef(DialogKind.CHAT, o.dialog.chat_id)
        for o in outcomes
        if o.status is Status.NOT_MOVED and o.dialog is not None
    )
    retry = Pending(Action.RETRY, not_moved, asker.user_id, target=target) if not_moved else None
    return Done(text, done_refs, announced, retry)


async def fitting(
    error: ResolveError, services: Services, lang: Lang
) -> tuple[Action, tuple[Target, ...], InlineKeyboardMarkup]:
    """The buttons for a target word that did not name one entry: what they are for, the
    targets they offer, and the keyboard. A name that fits several shows a page of them
    (online marks, "More »"); an unknown one, the closest names ("did you mean")."""
    replies = services.replies
    if isinstance(error, AmbiguousName):
        offered = choices(error.candidates)
        page = picker_page(offered, 0, CHOICE_SIZE)
        online = await services.presence.of(page.targets)
        return Action.AMBIGUOUS, offered, keyboards.choices(page, replies, lang, online)
    online = await services.presence.of(error.candidates)
    markup = keyboards.suggestions(error.candidates, replies, lang, online)
    return Action.SUGGEST, error.candidates, markup
