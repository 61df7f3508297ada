"""The transfer workflow: look at each dialog, skip what needs nothing, move the rest, and
judge each move by the dialog as the portal shows it afterwards.

Bitrix24 answers ``result: true`` to transfers it then silently drops (an extranet user, an
unknown line, a transfer already running, a finished dialog), so "moved" here means seen
moved. Knows Bitrix24 through :class:`BitrixClient` and nothing of Telegram, so every
decision here is unit-tested without a bot.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import TypeVar

from bot.bitrix24.client import BitrixClient, Dialog, Seen
from bot.bitrix24.errors import BitrixError
from bot.command import DialogRef
from bot.directory import Target
from bot.inbox import before_write

log = logging.getLogger(__name__)

T = TypeVar("T")

_MEMORY_S = 300.0  # far longer than any command's look-then-move can take


class Status(StrEnum):
    """How one dialog's transfer ended."""

    MOVED = "moved"  # seen with the target after the transfer
    FINISHED = "finished"  # seen with no open session after the finish
    NOT_MOVED = "not_moved"  # sent (or maybe sent), and the dialog is not where it should be
    ALREADY = "already"  # it was with the target before we started: nothing sent
    CLOSED = "closed"  # it had been finished before we started: nothing sent
    DUPLICATE = "duplicate"  # another word of the same command named the same dialog
    FAILED = "failed"


_CODES = {Status.MOVED: "ok", Status.FINISHED: "ok", Status.NOT_MOVED: "NOT_MOVED"}


@dataclass(frozen=True, slots=True)
class Outcome:
    """One dialog's result, with what the supervisor needs to read it."""

    ref: DialogRef
    status: Status
    dialog: Dialog | None = None  # as it was before the transfer
    error: BitrixError | None = None  # FAILED: why; NOT_MOVED: why the answer was unclear
    after: Dialog | None = None  # as the portal showed it after the transfer or finish

    @property
    def code(self) -> str:
        """How it ended, for the audit trail and the logs: ``ok``, ``NOT_MOVED``, the error
        code of a failure, or what made it unnecessary."""
        if self.status is Status.FAILED and self.error is not None:
            return self.error.code
        return _CODES.get(self.status, self.status.value)

    @property
    def label(self) -> str:
        """The dialog's number as Bitrix24 shows it (CHAT_ID once known)."""
        return str(self.dialog.chat_id) if self.dialog else str(self.ref)


@dataclass(frozen=True, slots=True)
class Looks:
    """Each dialog as Bitrix24 described it (or why it could not be seen), and when the look
    started (``time.monotonic``)."""

    items: list[Dialog | BitrixError]
    at: float


class Handoff:
    """Transfers dialogs; one dialog is never moved by two commands at the same time."""

    def __init__(self, client: BitrixClient) -> None:
        self._client = client
        self._locks = _DialogLocks()
        # CHAT_ID -> when a transfer or finish of it last ended, in that order (oldest first)
        self._moved_at: OrderedDict[int, float] = OrderedDict()

    @property
    def client(self) -> BitrixClient:
        """The Bitrix24 client it calls through (and whose rate bucket it shares)."""
        return self._client

    async def transfer(
        self, refs: Sequence[DialogRef], target: Target, looks: Looks | None = None
    ) -> list[Outcome]:
        """Transfer each dialog to ``target``; one :class:`Outcome` per ref, in order.

        ``looks``: the dialogs as the caller just looked at them (one per ref), not looked at
        again; a dialog another command moved since then is looked at afresh all the same.
        """
        started = time.monotonic()
        if looks is None:
            looks = await self.looked(refs)
        seen: set[int] = set()
        jobs: list[Awaitable[Outcome]] = []
        for ref, look in zip(refs, looks.items, strict=True):
            if isinstance(look, BitrixError):
                jobs.append(_ready(Outcome(ref, Status.FAILED, error=look)))
            elif look.chat_id in seen:
                jobs.append(_ready(Outcome(ref, Status.DUPLICATE, look)))
            else:
                seen.add(look.chat_id)
                jobs.append(self._move(ref, look, target, looks.at))
        outcomes = await _each(jobs)
        for outcome in outcomes:
            _log(outcome, target, started)
        return outcomes

    async def look(self, refs: Sequence[DialogRef]) -> list[Dialog | BitrixError]:
        """Each dialog as Bitrix24 describes it now, or why it cannot be seen."""
        return await _each([self._look(ref) for ref in refs])

    async def looked(self, refs: Sequence[DialogRef]) -> Looks:
        """:meth:`look`, with when it was done: what :meth:`transfer` may be given."""
        at = time.monotonic()
        return Looks(await self.look(refs), at)

    async def _look(self, ref: DialogRef) -> Dialog | BitrixError:
        try:
            return await self._client.dialog(ref)
        except BitrixError as err:
            return err

    async def finish(self, refs: Sequence[DialogRef]) -> list[Outcome]:
        """Finish each dialog (``imopenlines.operator.another.finish``); one outcome per ref."""
        started = time.monotonic()
        looks = (await self.looked(refs)).items
        outcomes = await _each(
            [self._finish_one(ref, look) for ref, look in zip(refs, looks, strict=True)]
        )
        for outcome in outcomes:
            _log(outcome, None, started)
        return outcomes

    async def _finish_one(self, ref: DialogRef, look: Dialog | BitrixError) -> Outcome:
        if isinstance(look, BitrixError):
            return Outcome(ref, Status.FAILED, error=look)
        if look.finished:
            return Outcome(ref, Status.CLOSED, look)
        async with self._locks.holding(look.chat_id):
            try:
                await before_write()
                seen = await self._client.finish(look.chat_id)
            except BitrixError as err:
                return Outcome(ref, Status.FAILED, look, err)
            finally:
                self._moved(look.chat_id)
        # a portal that does not report sessions cannot show it: its word has to do
        done = seen.after.finished or (seen.after.session_id is None and seen.unclear is None)
        return _judged(ref, look, seen, done, Status.FINISHED)

    async def _move(
        self, ref: DialogRef, dialog: Dialog, target: Target, looked_at: float
    ) -> Outcome:
        chat_id = dialog.chat_id
        async with self._locks.holding(chat_id):
            if self._moved_at.get(chat_id, -1.0) >= looked_at:
                # another command moved (or tried to) since we looked: our look is stale
                try:
                    dialog = await self._client.dialog(chat_id)
                except BitrixError as err:
                    return Outcome(ref, Status.FAILED, dialog, err)
            if dialog.finished:
                return Outcome(ref, Status.CLOSED, dialog)
            if dialog.held_by(target):
                # a transfer to the holder is not a no-op: the customer would see a notice
                return Outcome(ref, Status.ALREADY, dialog)
            try:
                await before_write()
                seen = await self._client.transfer(chat_id, target)
            except BitrixError as err:
                return Outcome(ref, Status.FAILED, dialog, err)
            finally:
                self._moved(chat_id)
            return _judged(ref, dialog, seen, seen.after.shows_move(target, dialog), Status.MOVED)

    def _moved(self, chat_id: int) -> None:
        """Note that a transfer or finish of ``chat_id`` just ended (looks from before it are
        stale), and forget what no command in flight can need any more."""
        now = time.monotonic()
        self._moved_at[chat_id] = now
        self._moved_at.move_to_end(chat_id)  # the newest last: the stale ones lead
        stale = now - _MEMORY_S
        while (oldest := next(iter(self._moved_at))) != chat_id and self._moved_at[oldest] < stale:
            self._moved_at.popitem(last=False)


class _DialogLocks:
    """A lock per dialog, kept while some command holds it or waits for it, then dropped (the
    table does not grow with every dialog ever moved)."""

    def __init__(self) -> None:
        self._held: dict[int, tuple[asyncio.Lock, int]] = {}  # CHAT_ID -> lock, its users

    @contextlib.asynccontextmanager
    async def holding(self, chat_id: int) -> AsyncIterator[None]:
        """Hold the lock of ``chat_id`` for the block."""
        lock, users = self._held.get(chat_id) or (asyncio.Lock(), 0)
        self._held[chat_id] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            users = self._held[chat_id][1] - 1
            if users:
                self._held[chat_id] = (lock, users)
            else:  # no one holds it or waits for it: a command from now on makes a new one
                del self._held[chat_id]

    def __len__(self) -> int:
        return len(self._held)


def _judged(ref: DialogRef, before: Dialog, seen: Seen, done: bool, status: Status) -> Outcome:
    if done:
        return Outcome(ref, status, before, after=seen.after)
    return Outcome(ref, Status.NOT_MOVED, before, seen.unclear, seen.after)


async def _each(jobs: Sequence[Awaitable[T]]) -> list[T]:
    """Await each job, side by side; one (most commands name one dialog) needs no task."""
    if len(jobs) == 1:
        return [await jobs[0]]
    return list(await asyncio.gather(*jobs))


async def _ready(outcome: Outcome) -> Outcome:
    return outcome


def _log(outcome: Outcome, target: Target | None, started: float) -> None:
    log.info(
        "%s dialog=%s target=%s outcome=%s%s latency_ms=%.0f",
        "finish" if target is None else "transfer",
        outcome.label,
        target.ref if target else "-",
        outcome.code,
        f" unclear={outcome.error.code}"
        if outcome.status is Status.NOT_MOVED and outcome.error
        else "",
        (time.monotonic() - started) * 1000,
    )
