"""Telegram's flood control: wait the ``retry_after`` it asks for, then send again.

aiogram raises ``TelegramRetryAfter`` and leaves the waiting to the bot; without this, a reply
hit by a 429 would simply be lost.
"""

from __future__ import annotations

import asyncio
import logging

from aiogram import Bot
from aiogram.client.session.middlewares.base import (
    BaseRequestMiddleware,
    NextRequestMiddlewareType,
)
from aiogram.exceptions import TelegramRetryAfter
from aiogram.methods import GetUpdates, Response, TelegramMethod
from aiogram.methods.base import TelegramType

log = logging.getLogger(__name__)


class FloodWait(BaseRequestMiddleware):
    """Repeats a request refused with 429 after the wait Telegram names (bounded)."""

    def __init__(self, attempts: int = 4, max_wait_s: float = 60.0) -> None:
        self.attempts = attempts
        self.max_wait_s = max_wait_s

    async def __call__(
        self,
        make_request: NextRequestMiddlewareType[TelegramType],
        bot: Bot,
        method: TelegramMethod[TelegramType],
    ) -> Response[TelegramType]:
        for attempt in range(1, self.attempts + 1):
            try:
                return await make_request(bot, method)
            except TelegramRetryAfter as err:
                # polling has its own back-off; a wait longer than this is better reported
                if isinstance(method, GetUpdates) or attempt == self.attempts:
                    raise
                if err.retry_after > self.max_wait_s:
                    raise
                log.warning(
                    "telegram %s: flood control, retrying in %ss",
                    type(method).__name__,
                    err.retry_after,
                )
                await asyncio.sleep(err.retry_after)
        raise AssertionError("unreachable")
