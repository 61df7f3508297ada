"""The last line of defence: a bug must still end in a reply, never in silence."""

from __future__ import annotations

import logging

from aiogram import Router
from aiogram.exceptions import TelegramAPIError
from aiogram.types import ErrorEvent

from bot.messages import pick_language
from bot.services import Services
from handlers.respond import respond

log = logging.getLogger(__name__)


async def on_error(event: ErrorEvent, services: Services) -> None:
    """Log the failure and tell the user something went wrong on the bot's side."""
    log.error("update %s failed", event.update.update_id, exc_info=event.exception)
    message = event.update.message
    if message is None or isinstance(event.exception, TelegramAPIError):
        return  # nothing to answer, or Telegram itself is what failed
    user = message.from_user
    lang = pick_language(services.config.language, user.language_code if user else None)
    try:
        await respond(message, services.replies.messages.text("internal_error", lang))
    except TelegramAPIError:
        log.warning("could not tell the user about the failure")


def build_router() -> Router:
    """The error handler."""
    router = Router(name="errors")
    router.errors.register(on_error)
    return router
