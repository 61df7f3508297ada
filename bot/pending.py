"""What the bot's own messages are about, and what their buttons would do.

Buttons carry only small IDs (Telegram allows 64 bytes of callback data); the rest — which
dialogs, which target, who asked, when — is kept here, keyed by the message the buttons are
on. A tap is first checked against what its message offered (callback data comes from the
supervisor's phone and may be anything), then claims its message before anything is sent to
Bitrix24, so a double tap or two supervisors tapping at once never act twice — in storage, so
that holds across instances and restarts too.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from bot.bitrix24.client import Dialog
from bot.command import DialogKind, DialogRef
from bot.directory import Kind, Target
from bot.flow import CHOICE_SIZE, PAGE_SIZE, Page, picker_page
from bot.storage import Mark, Storage

MessageKey = tuple[int, int]  # (chat_id, message_id)
SETTLE_WAIT_S = 10.0  # sending is paced (about a message a second per chat)


class Action(StrEnum):
    """What a message's buttons are for."""

    PICK = "pick"  # choose a target for the dialogs
    SUGGEST = "suggest"  # "did you mean" a target for the dialogs
    AMBIGUOUS = "ambiguous"  # a name fits several: pick one of them, page by page
    CONFIRM_TRANSFER = "confirm_transfer"
    CONFIRM_FINISH = "confirm_finish"
    CHOOSE = "choose"  # which of several dialogs (then target, or the picker)
    RETRY = "retry"  # once more, for the dialogs a transfer or finish did not move


class Refused(Exception):
    """A tap that is not carried out; nothing was changed and no claim was spent."""


class Expired(Refused):
    """The buttons are older than the expiry."""


class Taken(Refused):
    """Another tap is already doing (or has done) what these buttons do."""


class NotOffered(Refused):
    """The message has no live buttons, or none that does what the tap asks: a tap on a
    message that was done, cancelled or never had buttons, or crafted callback data."""


@dataclass
class Pending:
    """The work a message's buttons stand for."""

    action: Action
    dialogs: tuple[DialogRef, ...]
    user_id: int
    target: Target | None = None
    created_at: float = 0.0
    claimed: bool = False
    looked: tuple[Dialog, ...] = ()  # the dialogs as last seen (picker header, holder)
    target_word: str | None = None  # a target typed with a reply to several dialogs
    # the targets the buttons offer (picker or a name's fits, every page; "did you mean"): a
    # tap may only choose one of these, and the pages are drawn from them
    offered: tuple[Target, ...] = ()

    def target_offered(self, kind: Kind, bitrix_id: int) -> Target | None:
        """The target with this kind and ID if a button of the message offers it, else None."""
        if self.action not in (Action.PICK, Action.SUGGEST, Action.AMBIGUOUS):
            return None
        return next((t for t in self.offered if t.kind is kind and t.bitrix_id == bitrix_id), None)

    def dialog_offered(self, chat_id: int) -> Dialog | None:
        """The dialog with this CHAT_ID if the message asks to choose it, else None."""
        if self.action is not Action.CHOOSE:
            return None
        return next((d for d in self.looked if d.chat_id == chat_id), None)

    def page_offered(self, number: int) -> bool:
        """Whether the message pages its targets (the picker, a name's fits) and has page
        ``number``."""
        return self.action in _PAGED and self.page(number).number == number

    def page(self, number: int) -> Page:
        """Page ``number`` of the targets offered, as this kind of message pages them."""
        return picker_page(self.offered, number, _PAGED.get(self.action, PAGE_SIZE))


_PAGED = {Action.PICK: PAGE_SIZE, Action.AMBIGUOUS: CHOICE_SIZE}  # targets per page


class Unstored:
    """Per chat, the bot's messages being sent whose buttons, or dialogs, are not stored yet
    (in this process). A tap, or a reply, is an update of its own, handled while the command
    that sent the message may still be storing them: a quick one would find nothing (a tap
    refused as not valid, a reply asked "which dialog?"), so it waits for them."""

    def __init__(self) -> None:
        self._by_chat: dict[int, set[asyncio.Future[None]]] = {}

    @contextlib.asynccontextmanager
    async def sending(self, chat_id: int) -> AsyncIterator[None]:
        """Around sending messages to ``chat_id`` and storing what they stand for."""
        stored: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        waiting = self._by_chat.setdefault(chat_id, set())
        waiting.add(stored)
        try:
            yield
        finally:
            stored.set_result(None)
            waiting.discard(stored)
            if not waiting and self._by_chat.get(chat_id) is waiting:
                del self._by_chat[chat_id]

    async def settled(self, chat_id: int) -> None:
        """Wait until the messages being sent to ``chat_id`` have what they stand for stored."""
        waiting = self._by_chat.get(chat_id)
        if waiting:
            await asyncio.wait(set(waiting), timeout=SETTLE_WAIT_S)


class PendingStore:
    """Pending button actions and the dialogs each bot message is about, kept in storage so
    that any instance, and the next run, knows them."""

    def __init__(
        self,
        storage: Storage,
        expiry_s: float = 900.0,
        *,
        clock: Callable[[], float] = time.time,
        unstored: Unstored | None = None,
    ) -> None:
        self.storage = storage
        self.expiry_s = expiry_s
        self._clock = clock  # wall time: instances compare it
        self.unstored = unstored or Unstored()  # kept across reloads, as the storage is

    async def put(self, key: MessageKey, pending: Pending) -> Pending:
        """Attach ``pending`` to a message (replacing what was there); returns it."""
        pending.created_at = pending.created_at or self._clock()
        await self.storage.put_pending(_key(key), _dump(pending), pending.created_at)
        return pending

    async def get(self, key: MessageKey) -> Pending | None:
        """The live pending action of a message; None when unknown or expired."""
        found = await self.storage.get_pending(_key(key), self._clock() - self.expiry_s)
        if found is None:
            return None
        pending = _load(found[0])
        pending.claimed = found[1]
        return pending

    async def look(self, key: MessageKey, offers: Callable[[Pending], bool]) -> Pending:
        """A message's live, unclaimed pending work, if ``offers`` says the tap is one of its
        buttons; claims nothing (paging changes nothing, so it only looks).

        Raises :class:`NotOffered` when the message has no buttons or ``offers`` is false,
        :class:`Expired` when they are too old, :class:`Taken` when another tap has them.
        """
        return (await self._look(key, offers))[1]

    async def take(self, key: MessageKey, offers: Callable[[Pending], bool]) -> Pending:
        """Check a tap against its message, then claim the message's work for it, once.

        The check comes first, so a stale or crafted tap never spends the claim of a live
        button; raises as :meth:`look` does. If another tap changed the message between the
        check and the claim, what was claimed is checked again and, if the tap does not fit
        it, given back (unclaimed) before :class:`NotOffered` is raised.
        """
        seen, _ = await self._look(key, offers)
        won = await self.storage.claim_pending(_key(key), self._clock() - self.expiry_s)
        if won is Mark.CUT_OFF:
            raise Expired(key)
        if won is Mark.DONE:
            raise Taken(key)
        pending = _load(won)
        if won != seen and not offers(pending):
            await self.storage.put_pending(_key(key), won, pending.created_at)
            raise NotOffered(key)
        pending.claimed = True
        return pending

    async def _look(
        self, key: MessageKey, offers: Callable[[Pending], bool]
    ) -> tuple[str, Pending]:
        # read without the age limit, to tell old buttons ("expired") from none at all
        found = await self.storage.get_pending(_key(key), 0.0)
        if found is None:
            raise NotOffered(key)
        pending = _load(found[0])
        pending.claimed = found[1]
        if pending.created_at < self._clock() - self.expiry_s:
            raise Expired(key)
        if not offers(pending):
            raise NotOffered(key)
        if pending.claimed:
            raise Taken(key)
        return found[0], pending

    async def drop(self, key: MessageKey) -> None:
        """Forget a message's buttons (done, cancelled)."""
        await self.storage.drop_pending(_key(key))

    async def remember(self, key: MessageKey, dialogs: tuple[DialogRef, ...]) -> None:
        """Note which dialogs a message of the bot is about (for replies to it)."""
        if dialogs:
            await self.storage.remember(_key(key), _refs(dialogs), self._clock())

    async def about(self, key: MessageKey) -> tuple[DialogRef, ...]:
        """The dialogs a bot message is about; empty if unknown."""
        found = await self.storage.about(_key(key))
        return () if found is None else _unrefs(json.loads(found))


def _key(key: MessageKey) -> str:
    return f"{key[0]}:{key[1]}"


def _refs(dialogs: tuple[DialogRef, ...]) -> str:
    return json.dumps([[ref.kind.value, ref.number] for ref in dialogs])


def _unrefs(data: list[list[Any]]) -> tuple[DialogRef, ...]:
    return tuple(DialogRef(DialogKind(kind), int(number)) for kind, number in data)


def _dump(pending: Pending) -> str:
    target = pending.target
    return json.dumps(
        {
            "action": pending.action.value,
            "dialogs": json.loads(_refs(pending.dialogs)),
            "user_id": pending.user_id,
            "target": None if target is None else _target(target),
            "created_at": pending.created_at,
            "looked": [dataclasses.astuple(dialog) for dialog in pending.looked],
            "target_word": pending.target_word,
            "offered": [_target(t) for t in pending.offered],
        }
    )


def _load(text: str) -> Pending:
    data = json.loads(text)
    target = data["target"]
    return Pending(
        action=Action(data["action"]),
        dialogs=_unrefs(data["dialogs"]),
        user_id=int(data["user_id"]),
        target=None if target is None else _untarget(target),
        created_at=float(data["created_at"]),
        looked=tuple(Dialog(*fields) for fields in data["looked"]),
        target_word=data["target_word"],
        # rows stored before the offered targets were kept: no target tap fits them
        offered=tuple(_untarget(t) for t in data.get("offered", ())),
    )


def _target(target: Target) -> list[Any]:
    return [target.kind.value, target.bitrix_id, target.name, target.key]


def _untarget(data: list[Any]) -> Target:
    return Target(Kind(data[0]), int(data[1]), str(data[2]), data[3])
