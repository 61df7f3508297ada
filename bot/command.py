"""The command grammar: message text in, a typed command or a typed usage error out.

Pure: no I/O, no directory. The words after the dialogs are kept as typed: whether they are
one name, a full name of several words, or a name with something after it is for the
directory to tell (:func:`bot.flow.read_target`).
"""

from __future__ import annotations

import difflib
import re
import unicodedata
from dataclasses import dataclass
from enum import StrEnum
from functools import lru_cache
from typing import Literal
from urllib.parse import parse_qs, unquote

from bot.spelling import fold

MAX_DIALOGS = 20
# every command the bot has, as the "/" menu spells them (matched in any case)
COMMANDS = ("transfer", "finish", "history", "operators", "queues", "help", "start", "reload")


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
    """``/transfer <dialog> [<dialog> ...] <who>``, parsed; either part may be missing
    (a reply to a message about a dialog supplies the dialog, a picker the target).

    ``words`` are everything after the dialogs, as typed: ``("@anna",)``,
    ``("Anna", "Smirnova")``, or ``("@bob", "please")``, which is not understood.
    """

    dialogs: tuple[DialogRef, ...]
    words: tuple[str, ...] = ()


UsageReason = Literal[
    "empty", "no_dialog", "bad_dialog", "bad_link", "bad_target", "too_many", "finish_target"
]


class UsageError(Exception):
    """The command cannot be understood; ``reason`` says which part, ``token`` the culprit,
    ``dialogs`` the dialogs understood before it."""

    def __init__(
        self, reason: UsageReason, token: str | None = None, dialogs: tuple[DialogRef, ...] = ()
    ) -> None:
        super().__init__(reason if token is None else f"{reason}: {token}")
        self.reason: UsageReason = reason
        self.token = token
        self.dialogs = dialogs


_NUMBER = r"([0-9]{1,10})"  # ASCII only: int() reads other digits, Telegram users rarely mean them
_CHAT_FORMS = re.compile(rf"^(?:#|chat)?{_NUMBER}$", re.IGNORECASE)
_SESSION_FORMS = re.compile(rf"^(?:s|session:|№){_NUMBER}$", re.IGNORECASE)
# a dialog in form, whatever its number: "0" and "99999999999" are bad dialogs, not names
_DIALOG_SHAPE = re.compile(r"^(?:#|chat|s|session:|№)?[0-9]+$", re.IGNORECASE)
# "№ 3568", "s 3567", "# 2043": a prefix typed apart from its number belongs to it
_PREFIX_APART = re.compile(r"(?<![^\s,;])(№|#|s|session:|chat)\s+(?=[0-9])", re.IGNORECASE)
_SEPARATORS = re.compile(r"[\s,;]+")
_TARGET_SHAPE = re.compile(r"^(?:[@#]|queue:|user:)?[\w.-]+$", re.IGNORECASE)
_TARGET_MARK = re.compile(r"^(?:@|#(?![0-9])|queue:|user:)", re.IGNORECASE)


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
    """One dialog word in any form of the grammar (``№ 3568`` too); raises
    :class:`UsageError`."""
    word = _PREFIX_APART.sub(r"\1", token.strip()).strip("()[]<>.")
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


def _is_dialog_word(token: str, bare_numbers: DialogKind) -> bool:
    """Whether ``token`` is a dialog; raises :class:`UsageError` for one in the form of a
    dialog that cannot be one (a link to no dialog, dialog 0)."""
    try:
        parse_dialog(token, bare_numbers)
    except UsageError as err:
        if err.reason == "bad_link" or _DIALOG_SHAPE.match(token.strip().strip("()[]<>.")):
            raise
        return False
    return True


def is_marked_target(word: str) -> bool:
    """Whether ``word`` can only be a target: ``@anna``, ``#support``, ``queue:3``."""
    return _TARGET_MARK.match(word) is not None


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
    # NFC: a name pasted from a Mac ("и" + U+0306) is the "й" typed on a phone
    text = unicodedata.normalize("NFC", _INVISIBLE.sub("", args or ""))
    text = _PREFIX_APART.sub(r"\1", text)
    return [t for t in _SEPARATORS.split(text) if t]


@lru_cache(maxsize=64)  # each command is read twice: to keep it, then to carry it out
def parse_transfer(args: str | None, bare_numbers: DialogKind = DialogKind.CHAT) -> TransferCommand:
    """Parse what follows ``/transfer``: dialogs, then the words that name the target.

    Missing parts are left empty for the caller to fill; malformed dialogs, and a first
    target word that cannot be a name, raise :class:`UsageError`.
    """
    tokens = _tokens(args)
    if tokens and _looks_like_dialog(tokens[-1], bare_numbers):
        return TransferCommand(parse_dialogs(tokens, bare_numbers))  # dialogs only: pick
    count = 0
    while count < len(tokens) and _is_dialog_word(tokens[count], bare_numbers):
        count += 1
    dialogs = parse_dialogs(tokens[:count], bare_numbers)
    words = tuple(tokens[count:])
    if words and not _TARGET_SHAPE.match(words[0]):
        # before a target, it was meant as a dialog ("+5 @anna"); else as the target
        reason: UsageReason = (
            "bad_dialog" if any(map(is_marked_target, words[1:])) else "bad_target"
        )
        raise UsageError(reason, words[0], dialogs)
    return TransferCommand(dialogs, words)


def parse_finish(
    args: str | None, bare_numbers: DialogKind = DialogKind.CHAT
) -> tuple[DialogRef, ...]:
    """Parse what follows ``/finish``: one or more dialogs (maybe none, for a reply).

    A name among them is refused as such (``finish_target``): /finish takes no target.
    """
    tokens = _tokens(args)
    for i, token in enumerate(tokens):
        if is_marked_target(token) and not _looks_like_dialog(token, bare_numbers):
            raise UsageError("finish_target", token, parse_dialogs(tokens[:i], bare_numbers))
    return parse_dialogs(tokens, bare_numbers)


_FOLDED_COMMANDS = {fold(name): name for name in COMMANDS}


def closest_command(word: str) -> str | None:
    """The command ``word`` was likely meant to be (``trasnfer``, ``Трансфер``), if any."""
    close = difflib.get_close_matches(fold(word[:40]), _FOLDED_COMMANDS, n=1, cutoff=0.6)
    return _FOLDED_COMMANDS[close[0]] if close else None
