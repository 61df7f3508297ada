"""What a command or a tap leads to: usage, a choice, a picker, a confirmation, or the work.

Pure decisions, unit-tested without Telegram; the handlers carry them out.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

from bot.bitrix24.client import Dialog
from bot.command import DialogRef, TransferCommand, UsageError
from bot.directory import Directory, ResolveError, Target

CONFIRM_FROM = 3  # this many dialogs in one go ask for one confirming tap
PAGE_SIZE = 8  # targets per picker page: four rows of two on a phone


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
