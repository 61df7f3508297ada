"""What a command or a tap leads to: usage, a choice, a picker, a confirmation, or the work.

Pure decisions, unit-tested without Telegram; the handlers carry them out.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum

from bot.bitrix24.client import Dialog
from bot.bitrix24.errors import BitrixError
from bot.command import (
    DialogRef,
    TransferCommand,
    UsageError,
    UsageReason,
    is_marked_target,
)
from bot.directory import Directory, Kind, ResolveError, Target

CONFIRM_FROM = 3  # this many dialogs in one go ask for one confirming tap
PAGE_SIZE = 8  # targets per picker page: four rows of two on a phone
CHOICE_SIZE = 6  # people per page when a name fits several: three rows of two, then More


class Step(StrEnum):
    """The next thing the bot does for a command."""

    USAGE = "usage"
    CHOOSE = "choose"  # a reply to a message about several dialogs: which one?
    PICK = "pick"  # no target given: show the picker
    SUGGEST = "suggest"  # the target name is unknown: offer the closest
    CONFIRM = "confirm"
    EXECUTE = "execute"


class Misread(Exception):
    """The words after the dialogs named ``target``, then went on with ``word``, which is
    not understood: another target (``second``; one per command), or nothing the bot knows."""

    def __init__(self, target: Target, word: str, second: Target | None = None) -> None:
        super().__init__(word)
        self.target = target
        self.word = word
        self.second = second


@dataclass(frozen=True)
class Plan:
    """A step and what it needs."""

    step: Step
    dialogs: tuple[DialogRef, ...] = ()
    target: Target | None = None
    target_word: str | None = None
    error: UsageError | ResolveError | Misread | None = None


def _meant_as_dialog(words: tuple[str, ...]) -> bool:
    """Whether the first of ``words`` was meant as a dialog: a target follows it, or it
    has digits ("20x4 anna"), and it is not a target itself."""
    first, rest = words[0], words[1:]
    if not rest or is_marked_target(first):
        return False
    return any(map(is_marked_target, rest)) or any(c.isdigit() for c in first)


def read_target(words: tuple[str, ...], directory: Directory) -> tuple[Target, str]:
    """The target that ``words`` name, and the words that named it ("Anna Smirnova").

    Raises :class:`Misread` for words after the name, :class:`ResolveError` for a name
    nobody (or several) has, and :class:`UsageError` ``bad_dialog`` for a word before a
    target that is neither ("/transfer 2043 foo @anna": «foo» was meant as a dialog).
    """
    try:
        reading = directory.read(words)
    except ResolveError as err:
        if _meant_as_dialog(words):
            raise UsageError("bad_dialog", words[0]) from err
        raise
    if reading.words == len(words):
        return reading.target, " ".join(words)
    word = words[reading.words]
    try:
        second: Target | None = directory.read(words[reading.words :]).target
    except ResolveError:
        second = None
    raise Misread(reading.target, word, second if second != reading.target else None)


def plan_transfer(
    command: TransferCommand, replied: tuple[DialogRef, ...], directory: Directory
) -> Plan:
    """Decide what ``/transfer`` does; ``replied`` are the dialogs of the message it answers."""
    dialogs = command.dialogs or replied
    if not dialogs:
        if command.words and _meant_as_dialog(command.words):
            return Plan(Step.USAGE, error=UsageError("bad_dialog", command.words[0]))
        reason: UsageReason = "no_dialog" if command.words else "empty"
        return Plan(Step.USAGE, error=UsageError(reason))
    choose = not command.dialogs and len(replied) > 1
    if not command.words:
        return Plan(Step.CHOOSE, dialogs) if choose else Plan(Step.PICK, dialogs)
    typed = " ".join(command.words)
    try:
        target, named_by = read_target(command.words, directory)
    except (UsageError, Misread) as err:
        return Plan(Step.USAGE, dialogs, error=err)
    except ResolveError as err:
        if choose:  # which dialog first; the name is for after the choice
            return Plan(Step.CHOOSE, dialogs, target_word=typed)
        step = Step.SUGGEST if err.candidates else Step.USAGE
        return Plan(step, dialogs, target_word=typed, error=err)
    if choose:
        return Plan(Step.CHOOSE, dialogs, target_word=named_by)
    return after_target(dialogs, target)


def after_target(dialogs: tuple[DialogRef, ...], target: Target) -> Plan:
    """Once the target is known: confirm a bulk transfer, else just do it."""
    step = Step.CONFIRM if len(dialogs) >= CONFIRM_FROM else Step.EXECUTE
    return Plan(step, dialogs, target)


def picker_targets(directory: Directory, dialogs: Sequence[Dialog]) -> list[Target]:
    """Queues first, then operators; for one dialog, without whoever holds it now."""
    holder: Dialog | None = dialogs[0] if len(dialogs) == 1 else None
    return [
        target
        for target in (*directory.queues, *directory.operators)
        if holder is None or not holder.held_by(target)
    ]


@dataclass(frozen=True)
class Page:
    """One page of the picker."""

    targets: tuple[Target, ...]
    number: int
    has_prev: bool
    has_next: bool


def picker_page(targets: Sequence[Target], number: int, size: int = PAGE_SIZE) -> Page:
    """Page ``number`` of ``targets`` (clamped to the pages that exist)."""
    last = max(0, (len(targets) - 1) // size)
    number = min(max(number, 0), last)
    start = number * size
    return Page(tuple(targets[start : start + size]), number, number > 0, number < last)


_DIGITS = re.compile(r"(\d+)")


def natural_key(text: str) -> tuple[tuple[tuple[int, int, str], ...], str]:
    """A sort key that reads numbers as numbers, case aside: ``Operator 2`` before
    ``Operator 10``; equal keys (``op2``, ``op02``) keep a fixed order by the text itself."""
    parts = _DIGITS.split(text.casefold())
    return (
        tuple((0, int(part), "") if i % 2 else (1, 0, part) for i, part in enumerate(parts)),
        text,
    )


def choices(candidates: Sequence[Target]) -> tuple[Target, ...]:
    """The entries a name fits, in the order a person looks for them: by name, numbers as
    numbers; queues before people of the same name."""
    return tuple(sorted(candidates, key=lambda t: (natural_key(t.name), t.kind is Kind.OPERATOR)))


def offline_first(
    target: Target | None, looks: Sequence[Dialog | BitrixError], online: Mapping[int, bool]
) -> bool:
    """Whether a typed transfer must first say that its operator is offline: only when the
    portal said so (an unknown status asks nothing) and some dialog would really move (one
    that is finished, or with that operator already, is only reported)."""
    if target is None or target.kind is not Kind.OPERATOR:
        return False
    if online.get(target.bitrix_id, True):
        return False
    return any(
        isinstance(look, Dialog) and not look.finished and not look.held_by(target)
        for look in looks
    )
