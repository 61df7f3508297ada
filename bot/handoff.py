"""The transfer workflow: look at each dialog, skip what needs nothing, move the rest.

Knows Bitrix24 through :class:`BitrixClient` and nothing of Telegram, so every decision here
is unit-tested without a bot.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass
from enum import StrEnum

from bot.bitrix24.client import BitrixClient, Dialog
from bot.bitrix24.errors import BitrixError
from bot.command import DialogRef
from bot.directory import Target

log = logging.getLogger(__name__)

_MEMORY_S = 300.0  # far longer than any command's look-then-move can take


class Status(StrEnum):
    """How one dialog's transfer ended."""

    MOVED = "moved"
    FINISHED = "finished"
    ALREADY = "already"  # it was with the target before we started: nothing sent
    DUPLICATE = "duplicate"  # another word of the same command named the same dialog
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class Outcome:
    """One dialog's result, with what the supervisor needs to read it."""

    ref: DialogRef
    status: Status
    dialog: Dialog | None = None  # as it was before the transfer
    error: BitrixError | None = None

    @property
    def label(self) -> str:
        """The dialog's number as Bitrix24 shows it (CHAT_ID once known)."""
        return str(self.dialog.chat_id) if self.dialog else str(self.ref)


class Handoff:
    """Transfers dialogs; one dialog is never moved by two commands at the same time."""

    def __init__(self, client: BitrixClient) -> None:
        self._client = client
        self._locks: dict[int, asyncio.Lock] = {}
        self._moved_at: dict[int, float] = {}  # CHAT_ID -> when a transfer of it last ended

    async def transfer(self, refs: Sequence[DialogRef], target: Target) -> list[Outcome]:
        """Transfer each dialog to ``target``; one :class:`Outcome` per ref, in order."""
        started = time.monotonic()
        try:
            looks = await self.look(refs)
            looked_at = started
            seen: set[int] = set()
            jobs: list[Awaitable[Outcome]] = []
            for ref, look in zip(refs, looks, strict=True):
                if isinstance(look, BitrixError):
                    jobs.append(_ready(Outcome(ref, Status.FAILED, error=look)))
                elif look.chat_id in seen:
                    jobs.append(_ready(Outcome(ref, Status.DUPLICATE, look)))
                else:
                    seen.add(look.chat_id)
                    jobs.append(self._move(ref, look, target, looked_at))
            outcomes = list(await asyncio.gather(*jobs))
        finally:
            # forget what no command in flight can need, so the tables do not grow forever
            self._locks = {k: v for k, v in self._locks.items() if v.locked()}
            stale = time.monotonic() - _MEMORY_S
            self._moved_at = {k: v for k, v in self._moved_at.items() if v > stale}
        for outcome in outcomes:
            _log(outcome, target, started)
        return outcomes

    async def look(self, refs: Sequence[DialogRef]) -> list[Dialog | BitrixError]:
        """Each dialog as Bitrix24 describes it now, or why it cannot be seen."""
        return list(await asyncio.gather(*(self._look(ref) for ref in refs)))

    async def _look(self, ref: DialogRef) -> Dialog | BitrixError:
        try:
            return await self._client.dialog(ref)
        except BitrixError as err:
            return err

    async def finish(self, refs: Sequence[DialogRef]) -> list[Outcome]:
        """Finish each dialog (``imopenlines.operator.another.finish``); one outcome per ref."""
        started = time.monotonic()
        looks = await self.look(refs)
        outcomes = list(
            await asyncio.gather(
                *(self._finish_one(ref, look) for ref, look in zip(refs, looks, strict=True))
            )
        )
        for outcome in outcomes:
            _log(outcome, None, started)
        return outcomes

    async def _finish_one(self, ref: DialogRef, look: Dialog | BitrixError) -> Outcome:
        if isinstance(look, BitrixError):
            return Outcome(ref, Status.FAILED, error=look)
        async with self._locks.setdefault(look.chat_id, asyncio.Lock()):
            try:
                await self._client.finish(look.chat_id)
            except BitrixError as err:
                return Outcome(ref, Status.FAILED, look, err)
            finally:
                self._moved_at[look.chat_id] = time.monotonic()
        return Outcome(ref, Status.FINISHED, look)

    async def _move(
        self, ref: DialogRef, dialog: Dialog, target: Target, looked_at: float
    ) -> Outcome:
        chat_id = dialog.chat_id
        async with self._locks.setdefault(chat_id, asyncio.Lock()):
            if self._moved_at.get(chat_id, -1.0) >= looked_at:
                # another command moved (or tried to) since we looked: our look is stale
                try:
                    dialog = await self._client.dialog(chat_id)
                except BitrixError as err:
                    return Outcome(ref, Status.FAILED, dialog, err)
            if dialog.held_by(target):
                return Outcome(ref, Status.ALREADY, dialog)
            try:
                await self._client.transfer(chat_id, target, before=dialog)
            except BitrixError as err:
                return Outcome(ref, Status.FAILED, dialog, err)
            finally:
                self._moved_at[chat_id] = time.monotonic()
            return Outcome(ref, Status.MOVED, dialog)


async def _ready(outcome: Outcome) -> Outcome:
    return outcome


def _log(outcome: Outcome, target: Target | None, started: float) -> None:
    code = outcome.error.code if outcome.error else outcome.status.value
    log.info(
        "%s dialog=%s target=%s outcome=%s latency_ms=%.0f",
        "finish" if target is None else "transfer",
        outcome.label,
        target.ref if target else "-",
        code,
        (time.monotonic() - started) * 1000,
    )
