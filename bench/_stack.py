"""Shared plumbing for the benchmarks: the real bot polling a fake Bot API, calling a simulated
portal, all on 127.0.0.1 and in one event loop; plus small measuring helpers.

Like ``tests/harness.py`` (not imported: bench stands alone), everything between the two network
edges is the product as it runs: config parsed from YAML text, ``build_app``/``build_bot``, real
long polling over HTTP, real REST calls over HTTP.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import math
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from aiogram import Bot, Dispatcher

from bot.app import App, build_app, build_bot
from bot.config import Config, parse_config
from bot.sandbox.portal import PortalSimulator, SimDialog, SimOperator, SimQueue
from bot.sandbox.telegram import FakeTelegram, TelegramLimits

TOKEN = "4242:bench-token-for-the-fake-bot-api"  # not shaped like a real one
WEBHOOK_CODE = "b3nchW3bh00kC0de"

OLGA = 111111111
TEAM_CHAT = -1001234567890
ANNA, BOB, IRINA = 15, 16, 27  # Irina is on the portal but not in the bot's directory
SUPPORT = 3

POLLING_TIMEOUT_S = 10
START_TIMEOUT_S = 15.0
STOP_TIMEOUT_S = 40.0  # the bot's own shutdown grace is 30 s for commands in flight

# ${...} are filled from the environment made by running_stack(); {supervisors}, {chats},
# {announce}, {operators} and {queues} by config_yaml()
CONFIG_TEMPLATE = """\
bitrix24:
  webhook_url: ${{BITRIX24_WEBHOOK_URL}}
  timeout_s: ${{TIMEOUT_S:-5}}
  deadline_s: ${{DEADLINE_S:-10}}
  rate_per_s: ${{RATE:-1000}}
  burst: ${{BURST:-1000}}
telegram:
  token: ${{TELEGRAM_BOT_TOKEN}}
  api_url: ${{TELEGRAM_API_URL:-}}
language: auto
admin_contact: "@it_ops"
storage: {{path: "${{STORAGE_PATH:-:memory:}}"}}
supervisors:{supervisors}
chats:{chats}
{announce}operators:{operators}
queues:{queues}
"""

DEFAULT_OPERATORS = (
    "  - {key: anna, bitrix_id: 15, name: Anna Smirnova, aliases: [anya], telegram: anna_s}\n"
    "  - {key: bob, bitrix_id: 16, name: Bob Lee}\n"
)
DEFAULT_QUEUES = (
    "  - {key: support, bitrix_id: 3, name: Support line, aliases: [sup]}\n"
    "  - {key: sales, bitrix_id: 5, name: Sales line}\n"
)


def config_yaml(
    *,
    supervisors: Iterable[tuple[int, str]] = ((OLGA, "Olga"),),
    chats: Iterable[tuple[int, str]] = ((TEAM_CHAT, "Support leads"),),
    announce_to: int | None = None,
    operators: str = DEFAULT_OPERATORS,
    queues: str = DEFAULT_QUEUES,
) -> str:
    """Config YAML text; ``operators``/``queues`` are ready-made YAML list items."""
    return CONFIG_TEMPLATE.format(
        supervisors=_items(f"  - {{id: {i}, name: {n}}}\n" for i, n in supervisors),
        chats=_items(f"  - {{id: {i}, name: {n}}}\n" for i, n in chats),
        announce="" if announce_to is None else f"announce_to: {announce_to}\n",
        operators=_items([operators]),
        queues=_items([queues]),
    )


def _items(lines: Iterable[str]) -> str:
    """A YAML block list after its key (``[]`` when empty), without the final newline."""
    text = "".join(lines).rstrip("\n")
    return f"\n{text}" if text else " []"


def make_portal(
    dialogs: Iterable[SimDialog] = (),
    *,
    operators: Iterable[SimOperator] | None = None,
    queues: Iterable[SimQueue] | None = None,
    leak_per_s: float = 10_000.0,
    burst: int = 10_000,
    latency_s: float = 0.0,
) -> PortalSimulator:
    """A portal simulator (not started) with Anna 15, Bob 16, Irina 27 and queues 3, 5; its
    leaky bucket is generous unless told otherwise."""
    return PortalSimulator(
        operators=list(operators)
        if operators is not None
        else [
            SimOperator(ANNA, "Anna Smirnova"),
            SimOperator(BOB, "Bob Lee"),
            SimOperator(IRINA, "Irina Volkova"),
        ],
        queues=list(queues)
        if queues is not None
        else [SimQueue(SUPPORT, "Support line"), SimQueue(5, "Sales line")],
        dialogs=list(dialogs),
        webhook_code=WEBHOOK_CODE,
        leak_per_s=leak_per_s,
        burst=burst,
        latency_s=latency_s,
    )


def guest_dialogs(first: int, count: int, owner: int = IRINA) -> list[SimDialog]:
    """``count`` open dialogs numbered from ``first`` (CHAT_ID = session number), all held by
    ``owner`` (by default someone no benchmark transfers to, so every transfer is real)."""
    return [
        SimDialog(n, n, f"Guest {n - first + 1}", owner=owner, line_id=SUPPORT)
        for n in range(first, first + count)
    ]


# --------------------------------------------------------------------------------------------
# Polling
# --------------------------------------------------------------------------------------------


async def _wait_polling(telegram: FakeTelegram, task: asyncio.Task[None], seen: int) -> None:
    """Until the bot has sent a getUpdates beyond the first ``seen`` (or its task ended)."""

    def polled() -> bool:
        return task.done() or len(telegram.calls_to("getUpdates")) > seen

    await telegram.wait_for(polled, timeout=START_TIMEOUT_S, interval=0.05)
    if task.done():
        task.result()  # raises what stopped it
        raise RuntimeError("polling ended before it started")


@asynccontextmanager
async def polling(
    dispatcher: Dispatcher,
    bot: Bot,
    telegram: FakeTelegram,
    *,
    polling_timeout: int = POLLING_TIMEOUT_S,
    app: App | None = None,
    **workflow_data: Any,
) -> AsyncIterator[asyncio.Task[None]]:
    """Run ``dispatcher.start_polling(bot)`` in a task until the block ends; the block starts
    once the bot's first long poll has reached ``telegram``. With ``app``, as the product
    polls (``App.poll``: each update kept on disk before the next ``getUpdates``)."""
    seen = len(telegram.calls_to("getUpdates"))
    if app is not None:
        run = app.poll(bot, handle_signals=False, polling_timeout=polling_timeout)
    else:  # as aiogram's own defaults have it: each update handled in a task of its own
        run = dispatcher.start_polling(
            bot, handle_signals=False, polling_timeout=polling_timeout, **workflow_data
        )
    task = asyncio.create_task(run, name="bench-polling")
    try:
        await _wait_polling(telegram, task, seen)
        yield task
    finally:
        if not task.done():
            with contextlib.suppress(RuntimeError):  # "Polling is not started": it ended
                await asyncio.wait_for(dispatcher.stop_polling(), STOP_TIMEOUT_S)
        if not task.done():
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


@dataclass
class Stack:
    """A running bot with its two fakes."""

    telegram: FakeTelegram
    portal: PortalSimulator
    config: Config
    app: App
    bot: Bot

    async def settle(self, timeout: float = 60.0) -> bool:  # noqa: ASYNC109 - a bench deadline
        """Wait until every injected update was fetched and handled; False on timeout."""
        try:
            await self.telegram.wait_for(
                lambda: self.telegram.pending_updates == 0, timeout=timeout, interval=0.1
            )
        except TimeoutError:
            return False
        return await self.app.inbox.wait_idle(timeout)


@asynccontextmanager
async def running_stack(
    yaml_text: str,
    *,
    portal: PortalSimulator | None = None,
    limits: TelegramLimits | None = None,
    env: dict[str, str] | None = None,
    polling_timeout: int = POLLING_TIMEOUT_S,
) -> AsyncIterator[Stack]:
    """Start the portal simulator and the fake Bot API, then the real bot polling it; the
    block runs once the bot polls. On exit polling stops (commands in flight finish) and
    both fakes close."""
    portal = portal if portal is not None else make_portal()
    async with portal, FakeTelegram(TOKEN, bot_username="handoff_bench_bot", limits=limits) as tg:
        environment = {
            "BITRIX24_WEBHOOK_URL": portal.url,
            "TELEGRAM_BOT_TOKEN": TOKEN,
            "TELEGRAM_API_URL": tg.base_url,
            **(env or {}),
        }
        config = parse_config(yaml_text, environment, source="bench config")
        app = build_app(config)
        bot = build_bot(config)
        try:
            async with polling(app.dispatcher, bot, tg, polling_timeout=polling_timeout, app=app):
                yield Stack(tg, portal, config, app, bot)
        finally:
            await app.close()  # idempotent; covers a start that failed before on_shutdown


# --------------------------------------------------------------------------------------------
# Measuring
# --------------------------------------------------------------------------------------------


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0-100), linear between closest ranks; NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def median(values: Sequence[float]) -> float:
    """The 50th percentile."""
    return percentile(values, 50)


def spread(values: Sequence[float], digits: int = 3) -> dict[str, float]:
    """``{"median", "min", "max"}`` of one figure over several runs (NaN when there are none)."""
    if not values:
        return {"median": math.nan, "min": math.nan, "max": math.nan}
    return {
        "median": round(median(values), digits),
        "min": round(min(values), digits),
        "max": round(max(values), digits),
    }


def bucket_floor_s(requests: int, burst: int, per_s: float) -> float:
    """The least time a leaky bucket of ``burst`` draining ``per_s`` a second allows for
    ``requests``: ``burst + 1`` go at once (the simulator refuses above ``burst``), then one
    every ``1 / per_s`` seconds."""
    return max(0, requests - burst - 1) / per_s


def ratio(ours: float, baseline: float) -> float:
    """``ours / baseline``, rounded; NaN when the baseline is not positive."""
    return round(ours / baseline, 3) if baseline > 0 else math.nan


def _proc_status_kib(field: str) -> int | None:
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def peak_rss_mib() -> float:
    """This process's peak resident set size (VmHWM) in MiB; NaN where /proc has none."""
    kib = _proc_status_kib("VmHWM")
    return round(kib / 1024, 1) if kib is not None else math.nan


class Stopwatch:
    """``with Stopwatch() as sw: ...`` then ``sw.seconds``."""

    def __enter__(self) -> Stopwatch:
        self.started = time.perf_counter()
        self.seconds = 0.0
        return self

    def __exit__(self, *_: object) -> None:
        self.seconds = time.perf_counter() - self.started


class LogTally(logging.Handler):
    """Counts WARNING-and-worse records by logger and message template while installed on the
    root logger (installing it also keeps Python's last-resort handler from printing them)."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.counts: Counter[str] = Counter()

    def emit(self, record: logging.LogRecord) -> None:
        self.counts[f"{record.levelname} {record.name}: {record.msg}"] += 1

    def __enter__(self) -> LogTally:
        logging.getLogger().addHandler(self)
        return self

    def __exit__(self, *_: object) -> None:
        logging.getLogger().removeHandler(self)

    def lines(self, limit: int = 10) -> list[str]:
        """The most frequent records, ``N x template``."""
        return [f"{n:5d} x {what}" for what, n in self.counts.most_common(limit)]


def fmt(value: float, digits: int = 2) -> str:
    """A figure for printing (``n/a`` for NaN)."""
    return "n/a" if isinstance(value, float) and math.isnan(value) else f"{value:.{digits}f}"


def cli(
    run: Callable[[bool], Awaitable[dict[str, Any]]],
    key: str,
    doc: str,
    quick_help: str,
    argv: list[str] | None = None,
) -> None:
    """The command line every bench script shares: ``--quick``, and ``--json`` to print the
    figures as JSON too."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help=quick_help)
    parser.add_argument("--json", action="store_true", help="print the figures as JSON too")
    args = parser.parse_args(argv)
    figures = asyncio.run(run(args.quick))
    if args.json:
        print(json.dumps({key: figures}, ensure_ascii=False))
