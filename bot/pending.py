"""What the bot's own messages are about, and what their buttons would do.

Buttons carry only small IDs (Telegram allows 64 bytes of callback data); the rest — which
dialogs, which target, who asked, when — is kept here, keyed by the message the buttons are
on. A tap claims its message before anything is sent to Bitrix24, so a double tap or two
supervisors tapping at once never act twice — in storage, so that holds across instances
and restarts too.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from bot.bitrix24.client import Dialog
from bot.command import DialogKind, DialogRef
from bot.directory import Kind, Target
from bot.storage import Mark, Storage

MessageKey = tuple[int, int]  # (chat_id, message_id)


class Action(StrEnum):
    """What a message's buttons are for."""

    PICK = "pick"  # choose a target for the dialogs
    SUGGEST = "suggest"  # "did you mean" a target for the dialogs
    CONFIRM_TRANSFER = "confirm_transfer"
    CONFIRM_FINISH = "confirm_finish"
    CHOOSE = "choose"  # which of several dialogs (then target, or the picker)
    RETRY = "retry"  # once more, for the dialogs a transfer or finish did not move


class Expired(Exception):
    """The buttons are unknown (older than the expiry, or from before a restart)."""


class Taken(Exception):
    """Another tap is already doing (or has done) what these buttons do."""


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


class PendingStore:
    """Pending button actions and the dialogs each bot message is about, kept in storage so
    that any instance, and the next run, knows them."""

    def __init__(
        self, storage: Storage, expiry_s: float = 900.0, *, clock: Callable[[], float] = time.time
    ) -> None:
        self.storage = storage
        self.expiry_s = expiry_s
        self._clock = clock  # wall time: instances compare it

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

    async def claim(self, key: MessageKey) -> Pending:
        """Take a message's action for execution, once, whichever instance the tap reaches.

        Raises :class:`Expired` for unknown or old buttons and :class:`Taken` when another
        tap got there first.
        """
        won = await self.storage.claim_pending(_key(key), self._clock() - self.expiry_s)
        if won is Mark.CUT_OFF:
            raise Expired(key)
        if won is Mark.DONE:
            raise Taken(key)
        pending = _load(str(won))
        pending.claimed = True
        return pending

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
            "target": None
            if target is None
            else [target.kind.value, target.bitrix_id, target.name, target.key],
            "created_at": pending.created_at,
            "looked": [dataclasses.astuple(dialog) for dialog in pending.looked],
            "target_word": pending.target_word,
        }
    )


def _load(text: str) -> Pending:
    data = json.loads(text)
    target = data["target"]
    return Pending(
        action=Action(data["action"]),
        dialogs=_unrefs(data["dialogs"]),
        user_id=int(data["user_id"]),
        target=None if target is None else Target(Kind(target[0]), target[1], target[2], target[3]),
        created_at=float(data["created_at"]),
        looked=tuple(Dialog(*fields) for fields in data["looked"]),
        target_word=data["target_word"],
    )
