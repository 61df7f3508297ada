"""Per-update context: the reader's language, the access check, and in-flight tracking."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from aiogram import BaseMiddleware, Bot
from aiogram.dispatcher.event.bases import CancelHandler, SkipHandler
from aiogram.exceptions import TelegramAPIError
from aiogram.types import CallbackQuery, Chat, Message, TelegramObject, Update, User

from bot.access import Verdict
from bot.command import (
    COMMANDS,
    DialogKind,
    DialogRef,
    UsageError,
    parse_finish,
    parse_transfer,
)
from bot.inbox import Delivery, Handler, Inbox, update_key
from bot.messages import Html, Lang, pick_language
from bot.pending import Action
from bot.services import Services
from bot.storage import AuditEntry, Mark, utc_now
from handlers.keyboards import ConfirmTap, DialogTap, RetryTap, TargetTap
from handlers.respond import respond

log = logging.getLogger(__name__)


class CurrentServices(BaseMiddleware):
    """Hands each update the services in force when it arrives (a reload swaps them)."""

    def __init__(self, current: Callable[[], Services]) -> None:
        self._current = current

    async def __call__(self, handler: Handler, event: TelegramObject, data: dict[str, Any]) -> Any:
        data["services"] = self._current()
        return await handler(event, data)


# what the commands counter names; anything else starting with "/" is "unknown"
_COUNTED = frozenset(COMMANDS)


def _counted_as(event: TelegramObject) -> str:
    """The ``command`` label of a message or a tap."""
    if isinstance(event, CallbackQuery):
        return "tap"
    text = event.text if isinstance(event, Message) else None
    if not text or not text.startswith("/"):
        return "text"
    name = text.split(maxsplit=1)[0][1:].split("@", 1)[0].lower()
    return name if name in _COUNTED else "unknown"


class CountCommands(BaseMiddleware):
    """Counts each message and tap a handler took, by command and outcome: handled,
    refused (not a supervisor, or the wrong chat) or error."""

    async def __call__(self, handler: Handler, event: TelegramObject, data: dict[str, Any]) -> Any:
        counter = data["services"].metrics.commands
        try:
            result = await handler(event, data)
        except (SkipHandler, CancelHandler):  # aiogram's flow control: another handler's turn
            raise
        except Exception:
            counter.labels(_counted_as(event), "error").inc()
            raise
        counter.labels(_counted_as(event), "refused" if data.get("refused") else "handled").inc()
        return result


class LanguageMiddleware(BaseMiddleware):
    """Puts ``lang`` into handler data: the config's language, or the user's Telegram one."""

    async def __call__(self, handler: Handler, event: TelegramObject, data: dict[str, Any]) -> Any:
        data["lang"] = _lang(data, data["services"])
        return await handler(event, data)


class AccessMiddleware(BaseMiddleware):
    """Lets supervisors through; tells anyone else, once and politely, whom to ask."""

    async def __call__(self, handler: Handler, event: TelegramObject, data: dict[str, Any]) -> Any:
        if not isinstance(event, Message | CallbackQuery):
            return await handler(event, data)
        user = event.from_user
        chat = data.get("event_chat")
        if user is None or chat is None:
            return None
        services: Services = data["services"]
        verdict = services.access.decide(user.id, chat.id, private=chat.type == "private")
        if verdict is Verdict.ALLOW:
            data["supervisor_name"] = services.access.name_of(user.id) or user.full_name
            return await handler(event, data)
        messages, lang = services.replies.messages, data["lang"]
        data["refused"] = True  # for the commands counter, which wraps this
        if isinstance(event, CallbackQuery):
            # a tap always gets an answer, or the phone keeps spinning; buttons change nothing
            await event.answer(messages.template("tap.not_supervisor", lang), show_alert=True)
        elif verdict is Verdict.REFUSE:
            await respond(event, messages.text("not_supervisor", lang, user_id=user.id))
        elif verdict is Verdict.WRONG_CHAT:
            await respond(event, messages.text("wrong_chat", lang, chat_id=chat.id))
        return None


_ACTS = ("/transfer", "/finish")  # commands that change something in Bitrix24
_ACTING_TAPS = frozenset(tap.__prefix__ for tap in (TargetTap, DialogTap, ConfirmTap, RetryTap))


def _acts(update: Update) -> bool:
    if update.message is not None and update.message.text:
        word = update.message.text.split(maxsplit=1)[0].split("@", 1)[0].lower()
        return word in _ACTS
    if update.callback_query is not None and update.callback_query.data:
        return update.callback_query.data.split(":", 1)[0] in _ACTING_TAPS
    return False


@dataclass(frozen=True)
class _Command:
    """What an acting update asks for, as far as the audit trail and a notice need it."""

    action: str  # transfer | finish | tap
    dialogs: tuple[DialogRef, ...]
    target: str  # user:15 | queue:3 | - (finish, or unknown)

    def entries(self, update: Update, data: dict[str, Any], outcome: str) -> list[AuditEntry]:
        """One audit entry per dialog (one with "-" when none is known)."""
        user: User | None = data.get("event_from_user")
        chat: Chat | None = data.get("event_chat")
        words = [str(ref) for ref in self.dialogs] or ["-"]
        return [
            AuditEntry(
                utc_now(),
                user.id if user else 0,
                chat.id if chat else 0,
                self.action,
                word,
                self.target,
                outcome,
                0,
                update.update_id,
            )
            for word in words
        ]


def _lang(data: dict[str, Any], services: Services) -> Lang:
    """The reader's language, from the user aiogram found in the update."""
    user: User | None = data.get("event_from_user")
    return pick_language(services.config.language, user.language_code if user else None)


def _allowed(data: dict[str, Any], services: Services) -> bool:
    """Whether the update comes from a supervisor where supervisors may act."""
    user: User | None = data.get("event_from_user")
    chat: Chat | None = data.get("event_chat")
    if user is None or chat is None:
        return False
    verdict = services.access.decide(user.id, chat.id, private=chat.type == "private")
    return verdict is Verdict.ALLOW


async def _typed_transfer(update: Update, services: Services) -> bool:
    """Whether ``update`` is a transfer typed in full, dialogs and target: unless something
    stops it, it writes right after its first look."""
    if update.message is None or not _acts(update):
        return False
    command = await _command(update, services)
    return command.action == "transfer" and bool(command.dialogs) and command.target != "-"


async def _command(update: Update, services: Services) -> _Command:
    """What an acting update asks for: parsed from a command's text, or for a tap, what the
    tapped message's buttons (or, once they are gone, the message) are about."""
    message = update.message
    if message is not None and message.text:
        word, _, args = message.text.partition(" ")
        action = word.lstrip("/").split("@", 1)[0].lower()
        bare = DialogKind(services.config.dialog_numbers)
        try:
            if action == "finish":
                return _Command(action, parse_finish(args, bare), "-")
            parsed = parse_transfer(args, bare)
            return _Command(action, parsed.dialogs, " ".join(parsed.words) or "-")
        except UsageError:
            return _Command(action, (), "-")
    query = update.callback_query
    if query is None or not isinstance(query.message, Message):
        return _Command("tap", (), "-")
    key = (query.message.chat.id, query.message.message_id)
    pending = await services.pending.get(key)
    if pending is None:
        return _Command("tap", await services.pending.about(key), "-")
    action = "finish" if pending.action is Action.CONFIRM_FINISH else "transfer"
    target = pending.target.ref if pending.target else "-"
    return _Command(action, pending.dialogs, target)


class Intake(BaseMiddleware):
    """Keeps each update in the inbox, then carries it out once, across crashes and
    redeliveries.

    As an update comes (from polling or the webhook): it and its mark go to storage, and a
    task of the inbox carries it on from here; only then does Telegram hear it arrived
    (polling reads on, the webhook answers 200). In that task, or in a pass of its own for an
    update adopted from a run that died (``delivery`` set): a command a dead run may have sent
    is not sent again: the supervisor is told, with the dialogs as they are now; one older
    than ``stale_after_min`` (sent while the bot was down) is not carried out: "send it
    again". A redelivery of an update taken already is dropped quietly.
    """

    def __init__(self, inbox: Inbox) -> None:
        self._inbox = inbox

    async def __call__(self, handler: Handler, event: TelegramObject, data: dict[str, Any]) -> Any:
        if not isinstance(event, Update):
            return await handler(event, data)
        services: Services = data["services"]
        delivery: Delivery | None = data.get("delivery")
        if delivery is not None:
            return await self._carry_out(handler, event, data, delivery)
        bot: Bot = data["bot"]
        key = update_key(bot.id, event.update_id)
        payload = event.model_dump_json(exclude_unset=True, exclude_none=True)
        # a transfer typed in full, alone (no other in hand, the Bitrix24 client idle), is
        # marked sent as it is kept, and one sync keeps both before its first look (its first
        # write follows that look at once). Anything else is marked right before its first
        # write: under load calls wait for the bucket, and a crash meanwhile should leave the
        # command to be carried out again
        sent = (
            await _typed_transfer(event, services)
            and services.handoff.client.lone
            and self._inbox.hold_alone(key)
        )
        try:
            mark = await services.storage.take(key, payload, sent=sent)
        except BaseException:
            self._inbox.let_go(key)
            raise
        if mark is not Mark.NEW:
            self._inbox.let_go(key)
        if mark in (Mark.DONE, Mark.RUNNING):
            log.info("update %s delivered again: dropped", event.update_id)
            if _acts(event):
                command = await _command(event, services)
                await services.storage.record(command.entries(event, data, "DUPLICATE")[:1])
            return None
        delivery = Delivery(key, mark, sent=sent and mark is Mark.NEW)

        async def carried_out(update: TelegramObject, data: dict[str, Any]) -> Any:
            assert isinstance(update, Update)
            return await self._carry_out(handler, update, data, delivery)

        # on from here, in a task of the inbox: no second pass through the dispatcher
        self._inbox.carry_on(carried_out, event, data, delivery)
        return None

    async def _carry_out(
        self, handler: Handler, event: Update, data: dict[str, Any], delivery: Delivery
    ) -> Any:
        services: Services = data["services"]
        if not _acts(event) or not _allowed(data, services):
            return await handler(event, data)
        # a tap's buttons were claimed by the run that died: it cannot be resumed
        cut_off = delivery.mark is Mark.CUT_OFF or (
            delivery.mark is Mark.RESUMED and event.callback_query is not None
        )
        if cut_off:
            await self._tell_cut_off(event, data, services)
            return None
        if event.message is not None and await self._stale(event.message, data, services):
            command = await _command(event, services)
            await services.storage.record(command.entries(event, data, "STALE"))
            return None
        return await handler(event, data)

    async def _stale(self, message: Message, data: dict[str, Any], services: Services) -> bool:
        age_min = (datetime.now(UTC) - message.date).total_seconds() / 60
        if age_min <= services.config.stale_after_min:
            return False
        text = services.replies.messages.text(
            "stale", _lang(data, services), minutes=round(age_min)
        )
        await respond(message, text)
        return True

    async def _tell_cut_off(self, event: Update, data: dict[str, Any], services: Services) -> None:
        """The run that died may have sent it: tell the supervisor, with the dialogs now."""
        log.warning("update %s was cut off by a restart: not run again", event.update_id)
        lang = _lang(data, services)
        command = await _command(event, services)
        replies = services.replies
        lines = [replies.messages.text("restarted.cut_off", lang)]
        if command.dialogs:
            lines.append(replies.messages.text("restarted.now", lang))
            looks = await services.handoff.look(command.dialogs)
            lines += replies.look_lines(command.dialogs, looks, lang)
        await services.storage.record(command.entries(event, data, "CUT_OFF"))
        query = event.callback_query
        if query is not None:
            with contextlib.suppress(TelegramAPIError):  # too old to answer after a restart
                await query.answer()
        message = event.message or (query.message if query is not None else None)
        if isinstance(message, Message):
            await respond(message, Html("\n".join(lines)))
