"""What the bot's own messages are about, and what their buttons would do.

Buttons carry only small IDs (Telegram allows 64 bytes of callback data); the rest — which
dialogs, which target, who asked, when — is kept here, keyed by the message the buttons are
on. A tap claims its message before anything is sent to Bitrix24, so a double tap or two
supervisors tapping at once never act twice. Kept in memory, bounded: after a restart old
buttons answer "expired".
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum

from bot.bitrix24.client import Dialog
from bot.command import DialogRef
from bot.directory import Target

MessageKey = tuple[int, int]  # (chat_id, message_id)


class Action(StrEnum):
    """What a message's buttons are for."""

    PICK = "pick"  # choose a target for the dialogs
    SUGGEST = "suggest"  # "did you mean" a target for the dialogs
    CONFIRM_TRANSFER = "confirm_transfer"
    CONFIRM_FINISH = "confirm_finish"
    CHOOSE = "choose"  # which of several dialogs (then target, or the picker)


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
    """Pending button actions and the dialogs each bot message is about, in memory."""

    def __init__(
        self,
        expiry_s: float = 900.0,
        *,
        capacity: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.expiry_s = expiry_s
        self._capacity = capacity
        self._clock = clock
        self._pending: OrderedDict[MessageKey, Pending] = OrderedDict()
        self._about: OrderedDict[MessageKey, tuple[DialogRef, ...]] = OrderedDict()

    def put(self, key: MessageKey, pending: Pending) -> Pending:
        """Attach ``pending`` to a message (replacing what was there); returns it."""
        pending.created_at = pending.created_at or self._clock()
        self._pending[key] = pending
        self._pending.move_to_end(key)
        while len(self._pending) > self._capacity:
            self._pending.popitem(last=False)
        return pending

    def get(self, key: MessageKey) -> Pending | None:
        """The live pending action of a message; None when unknown or expired."""
        pending = self._pending.get(key)
        if pending is None:
            return None
        if self._clock() - pending.created_at > self.expiry_s:
            del self._pending[key]
            return None
        return pending

    def claim(self, key: MessageKey) -> Pending:
        """Take a message's action for execution, once.

        Raises :class:`Expired` for unknown or old buttons and :class:`Taken` when another
        tap got there first. No await happens between the check and the mark, so two taps
        handled concurrently cannot both pass.
        """
        pending = self.get(key)
        if pending is None:
            raise Expired(key)
        if pending.claimed:
            raise Taken(key)
        pending.claimed = True
        return pending

    def drop(self, key: MessageKey) -> None:
        """Forget a message's buttons (done, cancelled)."""
        self._pending.pop(key, None)

    def remember(self, key: MessageKey, dialogs: tuple[DialogRef, ...]) -> None:
        """Note which dialogs a message of the bot is about (for replies to it)."""
        if not dialogs:
            return
        self._about[key] = dialogs
        self._about.move_to_end(key)
        while len(self._about) > self._capacity:
            self._about.popitem(last=False)

    def about(self, key: MessageKey) -> tuple[DialogRef, ...]:
        """The dialogs a bot message is about; empty if unknown."""
        return self._about.get(key, ())
