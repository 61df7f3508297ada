"""Per-update context: the reader's language, the access check, and in-flight tracking."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from aiogram import BaseMiddleware
from aiogram.types import CallbackQuery, Message, TelegramObject

from bot.access import Verdict
from bot.messages import pick_language
from bot.services import Services
from handlers.respond import respond

Handler = Callable[[TelegramObject, dict[str, Any]], Awaitable[Any]]


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
