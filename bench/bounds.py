"""Where the bot's own time goes with the portal at 0 ms: the bot as it is, against itself with
one part of its work switched off, in one process.

Not a way to run the bot: what is switched off is mostly what it promises (each update kept,
the disk synced), made a no-op only to measure what it costs: the figure is a bound, what
the bot could gain at most by making that part cheaper. The two take turns in blocks of 10
commands (``/transfer <dialog> @anna``, one every 30 ms), so the machine's drifting speed
falls on both alike; p50 of each over all blocks, and the difference per pair of blocks
(median, min, max). ``same`` switches off nothing: its difference is the noise.

    python bench/bounds.py [--quick]
"""

from __future__ import annotations

import asyncio
import itertools
import os
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import prometheus_client.metrics
from aiogram.types import Update

from bot.storage import Mark, SqliteStorage

try:
    from bench import _stack, overhead
except ModuleNotFoundError:  # run as a script: python bench/bounds.py
    import _stack  # type: ignore[no-redef]
    import overhead  # type: ignore[no-redef]

KEY = "bounds"
BLOCK = 10
PERIOD_S = 0.03
WARMUP = 20

Patch = tuple[object, str, object]  # (where, attribute, what replaces it)


async def _new(*_: object, **__: object) -> Mark:
    return Mark.NEW


async def _nothing(*_: object, **__: object) -> None:
    return None


def _labels(self: object, *_: object, **__: object) -> object:
    return self


def _none(*_: object, **__: object) -> None:
    return None


def _storage_calls() -> list[Patch]:
    calls = ("flush", "sending", "done", "record", "put_pending", "remember")
    return [(SqliteStorage, "take", _new), *((SqliteStorage, name, _nothing) for name in calls)]


# what each variant switches off
VARIANTS: dict[str, Callable[[], list[Patch]]] = {
    "same": list,
    "storage (every call)": _storage_calls,
    # nothing kept, nothing to sync either
    "storage: keeping the update": lambda: [(SqliteStorage, "take", _new)],
    "storage: the disk sync": lambda: [(os, "fdatasync", _none)],
    "storage: the audit row": lambda: [(SqliteStorage, "record", _nothing)],
    "metrics": lambda: [
        (prometheus_client.metrics.MetricWrapperBase, "labels", _labels),
        (prometheus_client.metrics.Histogram, "observe", _none),
        (prometheus_client.metrics.Counter, "inc", _none),
    ],
    "the update's copy (JSON)": lambda: [(Update, "model_dump_json", lambda *_, **__: "{}")],
}


@contextmanager
def switched_off(patches: list[Patch]) -> Iterator[None]:
    """Apply ``patches`` for the block, then put back what was there."""
    saved = []
    for where, name, replacement in patches:
        if not hasattr(where, name):  # the bot changed: the bound would measure nothing
            raise AttributeError(f"{where!r} has no {name}: update bench/bounds.py")
        saved.append((where, name, getattr(where, name)))
        setattr(where, name, replacement)
    try:
        yield
    finally:
        for where, name, original in reversed(saved):
            setattr(where, name, original)


async def one_variant(name: str, blocks: int) -> dict[str, Any]:
    """The bot as it is and with ``name`` switched off, ``blocks`` blocks each, in turn."""
    patches = VARIANTS[name]()
    commands = WARMUP + 2 * blocks * BLOCK
    portal = _stack.make_portal(_stack.guest_dialogs(overhead.FIRST_DIALOG, commands), latency_s=0)
    supervisors = [(overhead.supervisor(i), f"S{i}") for i in range(overhead.SUPERVISORS)]
    yaml_text = _stack.config_yaml(supervisors=supervisors, announce_to=None)
    with tempfile.TemporaryDirectory(prefix="bench-bounds-") as folder:
        env = {"STORAGE_PATH": str(Path(folder) / "handoff.sqlite3")}
        async with _stack.running_stack(yaml_text, portal=portal, env=env) as stack:
            side = overhead.Side(
                "ours",
                stack.telegram,
                lambda n: f"/transfer {overhead.FIRST_DIALOG + n} @anna",
                lambda m: m.plain_text.startswith("✅"),
            )
            clock = overhead.ReplyClock(stack.telegram)
            counter = itertools.count()

            async def send(count: int, *, keep: bool) -> list[float]:
                side.samples = []
                for _ in range(count):
                    await overhead._one(side, clock, next(counter), keep=keep)
                    await asyncio.sleep(PERIOD_S)
                return side.samples

            await send(WARMUP, keep=False)
            as_is: list[float] = []
            off: list[float] = []
            gains: list[float] = []  # per pair of blocks: p50 as is - p50 switched off
            for block in range(blocks):
                first_off = block % 2 == 1  # which goes first alternates too
                pair: dict[bool, list[float]] = {}
                for switched in (first_off, not first_off):
                    with switched_off(patches if switched else []):
                        pair[switched] = await send(BLOCK, keep=True)
                as_is += pair[False]
                off += pair[True]
                gains.append(_stack.median(pair[False]) - _stack.median(pair[True]))
            await stack.settle(10)
    return {
        "as_is_p50_ms": round(_stack.median(as_is), 3),
        "off_p50_ms": round(_stack.median(off), 3),
        "gain_ms": _stack.spread(gains),
        "samples": min(len(as_is), len(off)),
        "failed": side.failed,
    }


async def run(quick: bool = False) -> dict[str, Any]:
    """Every variant in turn; returns the figures by variant."""
    started = time.perf_counter()
    blocks = 2 if quick else 25
    figures: dict[str, Any] = {}
    for name in VARIANTS:
        figures[name] = result = await one_variant(name, blocks)
        gain = result["gain_ms"]
        print(
            f"{name:28s} p50 as is {_stack.fmt(result['as_is_p50_ms'])} ms, switched off "
            f"{_stack.fmt(result['off_p50_ms'])} ms; per pair of blocks "
            f"{_stack.fmt(gain['median'])} ms ({_stack.fmt(gain['min'])} to "
            f"{_stack.fmt(gain['max'])}); {result['samples']} commands each, "
            f"{result['failed']} failed",
            flush=True,
        )
    figures["seconds"] = round(time.perf_counter() - started, 1)
    return figures


def main(argv: list[str] | None = None) -> None:
    """``python bench/bounds.py [--quick] [--json]``."""
    _stack.cli(run, KEY, __doc__ or KEY, "two blocks a variant (seconds)", argv)


if __name__ == "__main__":
    sys.exit(main())
