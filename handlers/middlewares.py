"""Per-update context: the reader's language, the access check, and in-flight tracking."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from aiogram import BaseMiddleware
from aiogram.types import CallbackQuery, Message, TelegramObject, Update

from bot.access import Verdict
from bot.command import DialogKind, UsageError, parse_finish, parse_transfer
from bot.messages import Html, Lang, pick_language
from bot.services import Services
from bot.storage import AuditEntry, Mark, utc_now
from handlers.respond import respond

log = logging.getLogger(__name__)

Handler = Callable[[TelegramObject, dict[str, Any]], Awaitable[Any]]


class CurrentServices(BaseMiddleware):
    """Hands each update the services in force when it arrives (a reload swaps them)."""

    def __init__(self, current: Callable[[], Services]) -> None:
        self._current = current

    async def __call__(self, handler: Handler, event: TelegramObject, data: dict[str, Any]) -> Any:
        data["services"] = self._current()
        return await handler(event, data)


class LanguageMiddleware(BaseMiddleware):
    """Puts ``lang`` into handler data: the config's language, or the user's Telegram one."""

    async def __call__(self, handler: Handler, event: TelegramObject, data: dict[str, Any]) -> Any:
        services: Services = data["services"]
        user = data.get("event_from_user")
        data["lang"] = pick_language(services.config.language, user.language_code if user else None)
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
        if isinstance(event, CallbackQuery):
            # a tap always gets an answer, or the phone keeps spinning; buttons change nothing
            await event.answer(messages.template("tap.not_supervisor", lang), show_alert=True)
        elif verdict is Verdict.REFUSE:
            await respond(event, messages.text("not_supervisor", lang, user_id=user.id))
        elif verdict is Verdict.WRONG_CHAT:
            await respond(event, messages.text("wrong_chat", lang, chat_id=chat.id))
        return None


class InFlight(BaseMiddleware):
    """Counts updates being handled, so a graceful stop can wait for them to finish."""

    def __init__(self) -> None:
        self._count = 0
        self._idle = asyncio.Event()
        self._idle.set()

    async def __call__(self, handler: Handler, event: TelegramObject, data: dict[str, Any]) -> Any:
        self._count += 1
        self._idle.clear()
        try:
            return await handler(event, data)
        finally:
            self._count -= 1
            if self._count == 0:
                self._idle.set()

    async def wait_idle(self, limit_s: float) -> bool:
        """Wait until nothing is being handled; False if ``limit_s`` passed first."""
        try:
            await asyncio.wait_for(self._idle.wait(), limit_s)
        except TimeoutError:
            return False
        return True


_ACTS = ("/transfer", "/finish")  # commands that change something in Bitrix24
_ACTING_TAPS = ("t:", "d:", "ok")  # taps that do


def _acts(update: Update) -> bool:
    if update.message is not None and update.message.text:
        word = update.message.text.split(maxsplit=1)[0].split("@", 1)[0].lower()
        return word in _ACTS
    if update.callback_query is not None and update.callback_query.data:
        return update.callback_query.data.startswith(_ACTING_TAPS)
    return False


def _duplicate(update: Update, services: Services) -> AuditEntry:
    """The audit entry of a redelivery that was not carried out again."""
    event = update.message or update.callback_query
    user_id = event.from_user.id if event and event.from_user else 0
    message = update.message
    chat_id = message.chat.id if message else 0
    action, dialog, target = "tap", "-", "-"
    if message is not None and message.text:
        word, _, args = message.text.partition(" ")
        action = word.lstrip("/").split("@", 1)[0].lower()
        bare = DialogKind(services.config.dialog_numbers)
        try:
            if action == "finish":
                refs = parse_finish(args, bare)
            else:
                parsed = parse_transfer(args, bare)
                refs, target = parsed.dialogs, parsed.target or "-"
            dialog = ",".join(str(ref) for ref in refs) or "-"
        except UsageError:
            pass
    return AuditEntry(
        utc_now(), user_id, chat_id, action, dialog, target, "DUPLICATE", 0, update.update_id
    )


class ExactlyOnce(BaseMiddleware):
    """Carries each update out once, across restarts and redeliveries.

    The update's mark is taken in storage before any handler runs, so before any REST call.
    A redelivery of an update carried out (or being carried out) is dropped quietly; one that
    an earlier run took and died on is not run again: the supervisor is told, with the state
    of the dialogs now. A command older than ``stale_after_min`` (sent while the bot was down)
    is not carried out either: "send it again".
    """

    async def __call__(self, handler: Handler, event: TelegramObject, data: dict[str, Any]) -> Any:
        if not isinstance(event, Update):
            return await handler(event, data)
        services: Services = data["services"]
        key = f"u:{event.update_id}"
        mark = await services.storage.take(key)
        if mark in (Mark.DONE, Mark.RUNNING):
            log.info("update %s delivered again: dropped", event.update_id)
            if _acts(event):
                await services.storage.record([_duplicate(event, services)])
            return None
        try:
            if _acts(event) and mark is Mark.CUT_OFF:
                await self._tell_cut_off(event, services)
                return None
            if _acts(event) and await self._stale(event, services):
                return None
            return await handler(event, data)
        finally:
            await services.storage.done(key)

    @staticmethod
    def _lang(event: Update, services: Services) -> Lang:
        if event.message is not None:
            user = event.message.from_user
        else:
            user = event.callback_query.from_user if event.callback_query else None
        return pick_language(services.config.language, user.language_code if user else None)

    @staticmethod
    def _allowed(event: Update, services: Services) -> bool:
        message = event.message
        if message is None or message.from_user is None:
            return False
        verdict = services.access.decide(
            message.from_user.id, message.chat.id, private=message.chat.type == "private"
        )
        return verdict is Verdict.ALLOW

    async def _stale(self, event: Update, services: Services) -> bool:
        message = event.message
        if message is None or not self._allowed(event, services):
            return False
        age_min = (datetime.now(UTC) - message.date).total_seconds() / 60
        if age_min <= services.config.stale_after_min:
            return False
        text = services.replies.messages.text(
            "stale", self._lang(event, services), minutes=round(age_min)
        )
        await respond(message, text)
        return True

    async def _tell_cut_off(self, event: Update, services: Services) -> None:
        log.warning("update %s was cut off by a restart: not run again", event.update_id)
        lang = self._lang(event, services)
        text = services.replies.messages.text("restarted.cut_off", lang)
        if event.callback_query is not None:
            await event.callback_query.answer(text, show_alert=True)
            return
        message = event.message
        if message is None or not self._allowed(event, services):
            return
        await respond(message, await self._now(message, services, lang, text))

    @staticmethod
    async def _now(message: Message, services: Services, lang: Lang, text: Html) -> Html:
        """The cut-off notice, with what Bitrix24 says of the command's dialogs now."""
        args = (message.text or "").split(maxsplit=1)[1:]
        bare = DialogKind(services.config.dialog_numbers)
        try:
            if (message.text or "").lower().startswith("/finish"):
                refs = parse_finish(args[0] if args else None, bare)
            else:
                refs = parse_transfer(args[0] if args else None, bare).dialogs
        except UsageError:
            return text
        if not refs:
            return text
        replies = services.replies
        lines = [text, replies.messages.text("restarted.now", lang)]
        lines += (replies.look_line(look, lang) for look in await services.handoff.look(refs))
        return Html("\n".join(lines))
