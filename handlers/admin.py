"""/reload: admins re-read config.yaml without a restart."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiogram import Router
from aiogram.filters import Command
from aiogram.types import Message

from bot.config import ConfigError
from bot.messages import Html, Lang, escape
from bot.services import Services
from handlers.respond import respond


async def reload_config(
    message: Message,
    services: Services,
    lang: Lang,
    reload: Callable[[], Awaitable[list[str]]],
) -> None:
    """Reload the config; reply with what changed, or with every problem of a bad file."""
    text = services.replies.messages.text
    user_id = message.from_user.id if message.from_user else 0
    if not services.access.is_admin(user_id):
        await respond(message, text("reload.not_admin", lang))
        return
    try:
        changes = await reload()
    except ConfigError as err:
        lines = [text("reload.failed", lang), *(f"• {escape(p)}" for p in err.problems)]
        await respond(message, Html("\n".join(lines)))
        return
    if not changes:
        await respond(message, text("reload.nothing", lang))
        return
    await respond(message, Html("\n".join([text("reload.done", lang), *map(escape, changes)])))


def build_router() -> Router:
    """The /reload command."""
    router = Router(name="admin")
    router.message.register(reload_config, Command("reload", ignore_case=True))
    return router
