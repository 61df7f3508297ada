"""The ``/transfer`` grammar: message text in, a typed command or a typed usage error out.

Pure: no I/O, no directory. The target word is kept as typed; :class:`bot.directory.Directory`
resolves it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum
from typing import Literal
from urllib.parse import parse_qs, unquote

MAX_DIALOGS = 20


class DialogKind(StrEnum):
    """What a dialog number means in Bitrix24."""

    CHAT = "chat"  # CHAT_ID: one dialog, many sessions
    SESSION = "session"  # a session number, as in "Dialog №3567"


@dataclass(frozen=True, slots=True)
class DialogRef:
    """A dialog as the supervisor named it."""

    kind: DialogKind
    number: int

    def __str__(self) -> str:
        return str(self.number) if self.kind is DialogKind.CHAT else f"s{self.number}"


@dataclass(frozen=True, slots=True)
class TransferCommand:
    """``/transfer <dialog> [<dialog> ...] <target>``, parsed; either part may be missing
    (a reply to a message about a dialog supplies the dialog, a picker the target)."""

    dialogs: tuple[DialogRef, ...]
    target: str | None


UsageReason = Literal["empty", "no_dialog", "bad_dialog", "bad_link", "bad_target", "too_many"]


class UsageError(Exception):
    """The command cannot be understood; ``reason`` says which part, ``token`` the culprit."""

    def __init__(self, reason: UsageReason, token: str | None = None) -> None:
        super().__init__(reason if token is None else f"{reason}: {token}")
        self.reason: UsageReason = reason
        self.token = token


_NUMBER = r"([0-9]{1,10})"  # ASCII only: int() reads other digits, Telegram users rarely mean them
_CHAT_FORMS = re.compile(rf"^(?:#|chat)?{_NUMBER}$", re.IGNORECASE)
_SESSION_FORMS = re.compile(rf"^(?:s|session:|№){_NUMBER}$", re.IGNORECASE)
_SEPARATORS = re.compile(r"[\s,;]+")
_TARGET_SHAPE = re.compile(r"^(?:[@#]|queue:|user:)?[\w.-]+$", re.IGNORECASE)


def _from_link(token: str) -> DialogRef | None:
    """A pasted Bitrix24 link: ``?IM_DIALOG=chat2043`` or ``?IM_HISTORY=imol|3567``."""
    if "IM_DIALOG" not in token.upper() and "IM_HISTORY" not in token.upper():
        return None
    query = parse_qs(token.split("?", 1)[-1].split("#", 1)[0])
    upper = {k.upper(): v for k, v in query.items()}
    for value in upper.get("IM_DIALOG", []):
        match = re.fullmatch(rf"chat{_NUMBER}", unquote(value), re.IGNORECASE)
        if match:
            return _checked(DialogKind.CHAT, match.group(1), token)
    for value in upper.get("IM_HISTORY", []):
        match = re.fullmatch(rf"imol\|{_NUMBER}", unquote(value), re.IGNORECASE)
        if match:
            return _checked(DialogKind.SESSION, match.group(1), token)
    raise UsageError("bad_link", token)


def _checked(kind: DialogKind, digits: str, token: str) -> DialogRef:
    number = int(digits)
    if number <= 0 or number > 2**31 - 1:
        raise UsageError("bad_link" if "?" in token else "bad_dialog", token)
    return DialogRef(kind, number)


_BARE = re.compile(rf"^{_NUMBER}$")


def parse_dialog(token: str, bare_numbers: DialogKind = DialogKind.CHAT) -> DialogRef:
    """One dialog word in any form of the grammar; raises :class:`UsageError`."""
    word = token.strip().strip("()[]<>.")
    link = _from_link(word)
    if link is not None:
        return link
    if match := _BARE.match(word):
        return _checked(bare_numbers, match.group(1), token)
    if match := _CHAT_FORMS.match(word):
        return _checked(DialogKind.CHAT, match.group(1), token)
    if match := _SESSION_FORMS.match(word):
        return _checked(DialogKind.SESSION, match.group(1), token)
    raise UsageError("bad_dialog", token)


def _looks_like_dialog(token: str, bare_numbers: DialogKind) -> bool:
    try:
        parse_dialog(token, bare_numbers)
    except UsageError:
        return False
    return True


def parse_dialogs(words: list[str], bare_numbers: DialogKind) -> tuple[DialogRef, ...]:
    """Several dialog words; duplicates collapse, order is kept, at most :data:`MAX_DIALOGS`."""
    dialogs: list[DialogRef] = []
    for word in words:
        ref = parse_dialog(word, bare_numbers)
        if ref not in dialogs:
            dialogs.append(ref)
    if len(dialogs) > MAX_DIALOGS:
        raise UsageError("too_many", str(MAX_DIALOGS))
    return tuple(dialogs)


# invisible characters that copying from Bitrix24 or a phone keyboard slips into words
_INVISIBLE = re.compile("[\u200b-\u200f\u202a-\u202e\u2060-\u2064\u2066-\u2069\ufeff]")


def _tokens(args: str | None) -> list[str]:
    return [t for t in _SEPARATORS.split(_INVISIBLE.sub("", args or "")) if t]


def parse_transfer(args: str | None, bare_numbers: DialogKind = DialogKind.CHAT) -> TransferCommand:
    """Parse what follows ``/transfer``: dialogs, then the target (if the last word is one).

    Missing parts are left empty for the caller to fill; malformed parts raise
    :class:`UsageError`.
    """
    tokens = _tokens(args)
    if not tokens:
        return TransferCommand((), None)
    *dialog_words, last = tokens
    if _looks_like_dialog(last, bare_numbers):
        return TransferCommand(parse_dialogs(tokens, bare_numbers), None)
    if not _TARGET_SHAPE.match(last):
        raise UsageError("bad_target", last)
    return TransferCommand(parse_dialogs(dialog_words, bare_numbers), last)


def parse_finish(
    args: str | None, bare_numbers: DialogKind = DialogKind.CHAT
) -> tuple[DialogRef, ...]:
    """Parse what follows ``/finish``: one or more dialogs (maybe none, for a reply)."""
    return parse_dialogs(_tokens(args), bare_numbers)
