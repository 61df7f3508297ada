"""The inbox: each update is kept in storage before Telegram is told it arrived, then carried
out in a task of its own; what a run that died left unfinished, the next run finishes.

Telegram forgets an update once it is confirmed (polling: the next ``getUpdates`` offset;
webhook: the 200), so the bot keeps it first. Before a write to Bitrix24 may go out, the
update is marked as sent: a run that picks it up after a crash then looks at the dialogs
instead of sending again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

from aiogram import Bot, Dispatcher
from aiogram.client.session.middlewares.base import (
    BaseRequestMiddleware,
    NextRequestMiddlewareType,
)
from aiogram.dispatcher.middlewares.error import ErrorsMiddleware
from aiogram.methods import EditMessageText, GetUpdates, SendMessage, TelegramMethod
from aiogram.methods.base import Response, TelegramType
from aiogram.types import TelegramObject, Update
from pydantic import ValidationError

from bot.storage import Mark, Storage

log = logging.getLogger(__name__)

# the rest of a dispatcher's middleware chain, as a middleware is handed it
Handler = Callable[[TelegramObject, dict[str, Any]], Awaitable[Any]]

SWEEP_S = 10.0  # how often to look for what a dead instance left (its heartbeat stops at 20 s)


def update_key(bot_id: int, update_id: int) -> str:
    """An update's mark: update IDs are per bot, and a storage may serve several bots."""
    return f"u:{bot_id}:{update_id}"


@dataclass(frozen=True)
class Delivery:
    """An update taken from the inbox to be carried out: its mark and how it was found."""

    key: str
    mark: Mark  # NEW, RESUMED (a dead run sent nothing) or CUT_OFF (it may have sent)
    sent: bool = False  # taken marked sent already (NEW only), and on disk


class _Journal:
    """Marks one update as sent, and as answered, once each, however many dialogs of it go
    out together."""

    def __init__(
        self, storage: Storage, delivery: Delivery, on_answered: Callable[[str], None]
    ) -> None:
        self._storage = storage
        self._key = delivery.key
        self._on_answered = on_answered
        self._marked = delivery.sent  # taken marked sent: on disk since the take returned
        self._sent: asyncio.Future[None] | None = None
        self._answered: asyncio.Future[None] | None = None

    async def sending(self) -> None:
        if self._marked:
            return
        if self._sent is None:
            self._sent = asyncio.ensure_future(self._storage.sending(self._key))
        await asyncio.shield(self._sent)

    async def answered(self) -> None:
        if self._answered is None:
            self._on_answered(self._key)
            self._answered = asyncio.ensure_future(self._storage.done(self._key))
        await asyncio.shield(self._answered)


# The update a task carries out. A context variable, because the workflow that sends is shared
# by every update in flight and knows nothing of Telegram; each inbox task sets its own.
_journal: ContextVar[_Journal | None] = ContextVar("inbox_journal", default=None)


async def before_write() -> None:
    """Called right before a write to Bitrix24: once this returns, the update being carried
    out is never carried out again, even if the bot dies now."""
    journal = _journal.get()
    if journal is not None:
        await journal.sending()


class AnswerSeen(BaseRequestMiddleware):
    """A request middleware of the bot's session: once the answer to an update is out (a
    message sent or edited), its mark is done at once, not after the bookkeeping that
    follows, so a crash in between does not answer it a second time after the restart."""

    async def __call__(
        self,
        make_request: NextRequestMiddlewareType[TelegramType],
        bot: Bot,
        method: TelegramMethod[TelegramType],
    ) -> Response[TelegramType]:
        response = await make_request(bot, method)
        journal = _journal.get()
        if journal is not None and isinstance(method, SendMessage | EditMessageText):
            await journal.answered()
        return response


class KeptBeforeConfirmed(BaseRequestMiddleware):
    """A request middleware of the polling bot's session: before a ``getUpdates`` confirms
    the updates taken so far (its offset), they are on disk, all of them with one sync."""

    def __init__(self, storage: Storage) -> None:
        self._storage = storage

    async def __call__(
        self,
        make_request: NextRequestMiddlewareType[TelegramType],
        bot: Bot,
        method: TelegramMethod[TelegramType],
    ) -> Response[TelegramType]:
        if isinstance(method, GetUpdates):
            await self._storage.flush()
        return await make_request(bot, method)


class Inbox:
    """Carries out kept updates, each in a task of its own, and knows which are running."""

    def __init__(self, dispatcher: Dispatcher, storage: Storage) -> None:
        self._dispatcher = dispatcher
        self._errors = ErrorsMiddleware(dispatcher)
        self._storage = storage
        self._tasks: set[asyncio.Task[None]] = set()
        self._sweeper: asyncio.Task[None] | None = None
        self._alone: str | None = None  # the update taken marked sent and not answered yet

    def start(self, bot: Bot, update: Update, delivery: Delivery) -> None:
        """Carry ``update`` out in the background, through the dispatcher as if it had just
        come (an update adopted from a run that died); its mark is done when it ends."""
        self._spawn(
            update, delivery, lambda: self._dispatcher.feed_update(bot, update, delivery=delivery)
        )

    def carry_on(
        self, handler: Handler, update: Update, data: dict[str, Any], delivery: Delivery
    ) -> None:
        """Carry ``update`` out in the background from where its first pass through the
        dispatcher stands: ``handler`` (the rest of the middleware chain and the routers) with
        the ``data`` gathered so far, under aiogram's errors middleware, as the dispatcher runs
        a handler. Its mark is done when it ends."""
        self._spawn(update, delivery, lambda: self._errors(handler, update, data))

    def _spawn(
        self, update: Update, delivery: Delivery, work: Callable[[], Awaitable[Any]]
    ) -> None:
        task = asyncio.get_running_loop().create_task(
            self._carry_out(update, delivery, work), name=f"update-{update.update_id}"
        )
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def hold_alone(self, key: str) -> bool:
        """Whether the update ``key`` may be taken marked sent, as a command alone: no other
        one so taken is unanswered. If so, it holds that place until it is answered or ends
        (or :meth:`let_go`), so updates taken at the same moment are not marked too."""
        if self._alone is not None:
            return False
        self._alone = key
        return True

    def let_go(self, key: str) -> None:
        """The update ``key`` holds the place of the command alone no more."""
        if self._alone == key:
            self._alone = None

    @property
    def backlog(self) -> int:
        """How many kept updates are being carried out now."""
        return len(self._tasks)

    async def _carry_out(
        self, update: Update, delivery: Delivery, work: Callable[[], Awaitable[Any]]
    ) -> None:
        journal = _Journal(self._storage, delivery, self.let_go)
        _journal.set(journal)  # this task's context only
        try:
            # a failure inside is the errors router's to answer; cancelled (a stop that ran out
            # of time) leaves the mark open, so the next run finishes it
            try:
                await work()
            except Exception:  # the errors router failed too: said here, not lost with the task
                log.exception("update %s failed, and could not be answered", update.update_id)
                return
            try:
                await journal.answered()  # written once: usually when the answer went out
            except Exception:  # the update was carried out: it must not look like a crash
                log.exception("could not mark update %s done", update.update_id)
        finally:
            self.let_go(delivery.key)

    def sweep_in_background(self, bot: Bot) -> None:
        """Adopt and finish what runs that died left: now, and every few seconds while other
        instances share the storage (any of them may die)."""
        self._sweeper = asyncio.get_running_loop().create_task(
            self._sweeping(bot), name="inbox-sweep"
        )

    async def _sweeping(self, bot: Bot) -> None:
        while True:
            try:
                await self.sweep(bot)
            except Exception:  # the storage is away for a moment: try again later
                log.exception("could not look for unfinished updates")
            else:
                if not self._storage.shared:
                    return
            await asyncio.sleep(SWEEP_S)

    async def sweep(self, bot: Bot) -> int:
        """Adopt the unfinished updates of runs that are gone and carry them out (or report
        them cut off); returns how many were adopted."""
        adopted = 0
        for key, payload in await self._storage.orphans():
            mark = await self._storage.take(key, payload)
            if mark not in (Mark.RESUMED, Mark.CUT_OFF):
                continue  # done meanwhile, or another instance adopted it first
            try:
                update = Update.model_validate_json(payload, context={"bot": bot})
            except ValidationError:
                log.error("unfinished update %s cannot be read: dropped", key)
                await self._storage.done(key)
                continue
            log.warning("update %s was left unfinished by a run that stopped: %s", key, mark)
            self.start(bot, update, Delivery(key, mark))
            adopted += 1
        return adopted

    async def wait_idle(self, limit_s: float) -> bool:
        """Wait until no update is being carried out; False if ``limit_s`` passed first."""
        deadline = asyncio.get_running_loop().time() + limit_s
        while self._tasks:
            left = deadline - asyncio.get_running_loop().time()
            if left <= 0:
                return False
            await asyncio.wait(set(self._tasks), timeout=left)
        return True

    async def stop(self, grace_s: float) -> int:
        """Stop sweeping; let running updates finish within ``grace_s``, then cancel the rest
        (their marks stay open for the next run). Returns how many were left."""
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
        await self.wait_idle(grace_s)
        late = set(self._tasks)
        for task in late:
            task.cancel()
        await asyncio.gather(*late, return_exceptions=True)
        return len(late)
