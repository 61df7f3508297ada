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
from bot.command import DialogRef, TransferCommand, UsageError
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


@dataclass(frozen=True)
class Plan:
    """A step and what it needs."""

    step: Step
    dialogs: tuple[DialogRef, ...] = ()
    target: Target | None = None
    target_word: str | None = None
    error: UsageError | ResolveError | None = None


def plan_transfer(
    command: TransferCommand, replied: tuple[DialogRef, ...], directory: Directory
) -> Plan:
    """Decide what ``/transfer`` does; ``replied`` are the dialogs of the message it answers."""
    dialogs = command.dialogs or replied
    if not dialogs:
        return Plan(Step.USAGE, error=UsageError("no_dialog" if command.target else "empty"))
    if not command.dialogs and len(replied) > 1:
        return Plan(Step.CHOOSE, dialogs, target_word=command.target)
    if command.target is None:
        return Plan(Step.PICK, dialogs)
    try:
        target = directory.resolve(command.target)
    except ResolveError as err:
        step = Step.SUGGEST if err.candidates else Step.USAGE
        return Plan(step, dialogs, target_word=command.target, error=err)
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
