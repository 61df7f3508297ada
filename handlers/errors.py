"""The last line of defence: a bug must still end in a reply, never in silence — and a tap
in exactly one answer."""

from __future__ import annotations

import html
import logging

from aiogram import Router
from aiogram.exceptions import TelegramAPIError
from aiogram.types import ErrorEvent, Message

from bot.messages import pick_language
from bot.services import Services
from handlers.respond import respond
from handlers.taps import TapAnswer, TapFailed
from handlers.work import not_modified

log = logging.getLogger(__name__)

MAX_ALERT = 200  # characters Telegram shows in a tap's alert


def _unwrapped(event: ErrorEvent) -> tuple[BaseException, TapAnswer | None]:
    """The failure itself, and for a tap its answer (answered or not)."""
    failure = event.exception
    if isinstance(failure, TapFailed) and failure.__cause__ is not None:
        return failure.__cause__, failure.answer
    query = event.update.callback_query
    # a tap that failed before reaching its handler (storage, middlewares): not answered yet
    return failure, None if query is None else TapAnswer(query)


async def on_error(event: ErrorEvent, services: Services) -> None:
    """Log the failure and tell the user something went wrong on the bot's side: for a
    command, under it; for a tap, in an alert if the tap was not answered yet, else under the
    tapped message. Telegram refusing an edit that would change nothing is no failure."""
    failure, answer = _unwrapped(event)
    update = event.update
    try:
        if not_modified(failure):  # the message already reads so: done, nothing to tell
            log.info("update %s: an edit changed nothing; taken as done", update.update_id)
            if answer is not None:
                await answer()
            return
        log.error("update %s failed", update.update_id, exc_info=failure)
        origin = update.message or update.callback_query
        user = origin.from_user if origin is not None else None
        lang = pick_language(services.config.language, user.language_code if user else None)
        text = services.replies.messages.text("internal_error", lang)
        if answer is not None and not answer.sent:
            await answer(html.unescape(text)[:MAX_ALERT], alert=True)
            return
        if isinstance(failure, TelegramAPIError):
            return  # Telegram itself is what failed
        tapped = update.callback_query.message if update.callback_query else None
        message = update.message or (tapped if isinstance(tapped, Message) else None)
        if message is not None:
            await respond(message, text)
    except TelegramAPIError:
        log.warning("could not tell the user about the failure")


def build_router() -> Router:
    """The error handler."""
    router = Router(name="errors")
    router.errors.register(on_error)
    return router
