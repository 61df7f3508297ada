"""What changed between two configs, in words an admin reads after /reload or SIGHUP."""

from __future__ import annotations

import contextlib
import gc
import sys
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Final

from bot.config import Config, Operator, Queue

# sections a running bot cannot swap: they take effect after a restart
RESTART_NEEDED = ("bitrix24", "telegram", "storage", "metrics", "shutdown_grace_s")
_SWAPPED = (
    "language",
    "timezone",
    "admin_contact",
    "admins",
    "supervisors",
    "chats",
    "announce_to",
    "dialog_numbers",
    "button_expiry_min",
    "stale_after_min",
    "messages",
)


def _entries(config: Config, kind: str) -> dict[int, Operator | Queue]:
    entries: tuple[Operator | Queue, ...] = (
        config.operators if kind == "operators" else config.queues
    )
    return {entry.bitrix_id: entry for entry in entries}


def describe_changes(old: Config, new: Config) -> list[str]:
    """One line per change: directory entries added, removed, renamed; settings changed."""
    lines: list[str] = []
    for kind, word in (("operators", "operator"), ("queues", "queue")):
        before, after = _entries(old, kind), _entries(new, kind)
        for bitrix_id in sorted(after.keys() - before.keys()):
            entry = after[bitrix_id]
            lines.append(f"+ {word} {entry.key} ({bitrix_id}) {entry.name}")
        for bitrix_id in sorted(before.keys() - after.keys()):
            entry = before[bitrix_id]
            lines.append(f"- {word} {entry.key} ({bitrix_id}) {entry.name}")
        for bitrix_id in sorted(before.keys() & after.keys()):
            was, now = before[bitrix_id], after[bitrix_id]
            if (was.key, was.name) != (now.key, now.name):
                lines.append(f"~ {word} {bitrix_id}: {was.key} {was.name} → {now.key} {now.name}")
            elif was != now:
                lines.append(f"~ {word} {now.key} ({bitrix_id}): other names changed")
    for field in _SWAPPED:
        if getattr(old, field) != getattr(new, field):
            lines.append(f"~ {field} changed")
    for field in RESTART_NEEDED:
        if getattr(old, field) != getattr(new, field):
            lines.append(f"! {field} changed: takes effect after a restart")
    return lines


def swappable(old: Config, new: Config) -> Config:
    """``new``, except for the sections only a restart can change (kept as in ``old``)."""
    return new.model_copy(update={field: getattr(old, field) for field in RESTART_NEEDED})


_SWITCH_S = 0.0005


@contextlib.contextmanager
def collector_paused() -> Iterator[None]:
    """Around building a new config's services in a worker thread: no collection of the whole
    heap runs meanwhile, and what was built is never scanned by one afterwards.

    A full collection holds the GIL for as long as it scans (a quarter of a second with ten
    thousand operators), so the event loop would stall whichever thread set it off; building
    a large directory allocates enough objects to set one off several times. On success the
    heap is frozen (:func:`gc.freeze`): what is built stays until the next reload, and what the
    last one built is freed by its reference counts (directory objects hold no cycles).
    """
    enabled, interval = gc.isenabled(), sys.getswitchinterval()
    gc.disable()
    # the loop waits this long for the GIL whenever it has something to do (5 ms by default)
    sys.setswitchinterval(min(interval, _SWITCH_S))
    try:
        yield
        gc.freeze()
    finally:
        sys.setswitchinterval(interval)
        if enabled:
            gc.enable()


_BATCH: Final = 200  # objects let go of at once: well under a millisecond of freeing
_CONTAINERS: Final = (dict, list, tuple, set, frozenset)


def release(retired: list[Any], parts: Callable[[Any], Iterable[Any]]) -> None:
    """In a worker thread: let go of ``retired`` (a list of one object, its only reference)
    a batch of objects at a time, taking ``parts(object)`` (its config, its directory) apart.

    Freeing ten thousand operators is one call that holds the GIL until the last of them is
    gone (tens of ms): the event loop would stall, whichever thread let go. So the contents
    of each large section are held here in slices first, and let go of after the section:
    no single step frees more than a slice. Nothing is changed: whatever a command still
    uses stays as it was, and is freed when that command is done with it.
    """
    held: list[Any] = []
    for part in parts(retired[0]):
        for section in vars(part).values():
            if type(section) in _CONTAINERS and len(section) > _BATCH:
                items = (
                    [*section.keys(), *section.values()] if type(section) is dict else [*section]
                )
                held += (items[start : start + _BATCH] for start in range(0, len(items), _BATCH))
                del items
            held.append(section)  # let go of before its slices: frees nothing yet
        held.append(part)
    retired.clear()
    while held:
        del held[-1]
