"""Telegram's flood control, from the bot's side: keep under the limits, and when a 429
comes anyway, wait the ``retry_after`` it names and send again.

Telegram allows about 30 messages a second overall and about one a second per chat (short
bursts pass); past that it answers 429. aiogram raises ``TelegramRetryAfter`` and leaves the
rest to the bot: without these middlewares a reply could simply be lost.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict

from aiogram import Bot
from aiogram.client.session.middlewares.base import (
    BaseRequestMiddleware,
    NextRequestMiddlewareType,
)
from aiogram.exceptions import TelegramRetryAfter
from aiogram.methods import (
    EditMessageReplyMarkup,
    EditMessageText,
    GetUpdates,
    Response,
    SendMessage,
    TelegramMethod,
)
from aiogram.methods.base import TelegramType
from aiolimiter import AsyncLimiter

from bot.metrics import Metrics

log = logging.getLogger(__name__)


class FloodWait(BaseRequestMiddleware):
    """Repeats a request refused with 429 after the wait Telegram names (bounded)."""

    def __init__(
        self, attempts: int = 4, max_wait_s: float = 60.0, metrics: Metrics | None = None
    ) -> None:
        self.attempts = attempts
        self.max_wait_s = max_wait_s
        self.metrics = metrics

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
                if self.metrics is not None:
                    self.metrics.telegram_429.labels(type(method).__name__).inc()
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


_PACED = (SendMessage, EditMessageText, EditMessageReplyMarkup)


class Pacing(BaseRequestMiddleware):
    """Spaces out what the bot posts: overall and per chat, as Telegram asks."""

    def __init__(
        self,
        per_second: float = 28.0,
        burst: int = 5,
        chat_burst: int = 2,
        chat_per_second: float = 1.0,
    ) -> None:
        # a little under Telegram's 30/s and its bursts of about 3 per chat: requests reach
        # Telegram a little later than they leave these buckets, and can arrive bunched. The
        # overall bucket is kept small (``burst``) rather than a second's worth: then the rate
        # can sit close to 30/s and still leave most of Telegram's own second of slack unused
        self._overall = AsyncLimiter(burst, burst / per_second)
        self._chat_burst = chat_burst
        self._chat_period = chat_burst / chat_per_second
        self._chats: OrderedDict[int | str, AsyncLimiter] = OrderedDict()

    def _chat(self, chat_id: int | str) -> AsyncLimiter:
        limiter = self._chats.pop(chat_id, None) or AsyncLimiter(
            self._chat_burst, self._chat_period
        )
        self._chats[chat_id] = limiter  # most recent last; the oldest are forgotten
        while len(self._chats) > 10_000:
            self._chats.popitem(last=False)
        return limiter

    async def __call__(
        self,
        make_request: NextRequestMiddlewareType[TelegramType],
        bot: Bot,
        method: TelegramMethod[TelegramType],
    ) -> Response[TelegramType]:
        if isinstance(method, _PACED):
            chat_id = method.chat_id
            if chat_id is not None:
                await self._chat(chat_id).acquire()
            await self._overall.acquire()
        return await make_request(bot, method)
