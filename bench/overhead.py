"""Overhead: end-to-end latency of ``/transfer <dialog> @anna`` against a fair minimal bot.

Latency runs from the moment the update is injected into the fake Bot API until the fake
receives the bot's reply (``sendMessage``): the real long poll, the REST calls, the storage
and the reply are all in it. The baseline does the same job with nothing else: one
``Command("transfer")`` handler that parses the arguments with the product's parser and
resolves the name in the same directory, makes the same calls ours makes: a look at the
dialog first (``imopenlines.dialog.get``: a transfer to whoever holds it already is not a no-op
for the customer, and a finished dialog answers ``true`` and moves nothing), then the transfer
and a second look in one ``batch`` (``true`` is no proof of a move), read with the product's
``parse_dialog``; writes one row to a file-backed SQLite database in WAL mode (as deployed),
and replies a fixed text. No access checks, inbox, audit trail, pacing or message catalogue:
what it lacks is our own processing.

Both bots use file-backed SQLite in a temporary folder, poll all the time (each its own
FakeTelegram, same settings) and call the same portal simulator, whose answers come after
0 ms, then 50 ms (``latency_s``: a portal's round trip). Commands are sequential, one every
``PERIOD_S`` from ``SUPERVISORS`` supervisors in turn (so the bot's own pacing of a chat,
one message a second, stays out of it), one command to each bot in turn, after a warm-up.
Each run gives one p50 ratio per round trip; the figure is their median, min and max.

``fsyncs_per_command``: the bot as its own process under ``strace -f -c -e
trace=fdatasync,fsync`` (what SQLite itself asks of the disk), N commands one at a time
against none, the portal answering after 50 ms: (calls with N - calls with 0) / N.

    python bench/overhead.py [--quick]
"""

from __future__ import annotations

import asyncio
import itertools
import re
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from aiogram import Dispatcher, Router
from aiogram.filters import Command, CommandObject
from aiogram.types import Message

from bot.bitrix24.batching import batch_params
from bot.bitrix24.client import parse_dialog
from bot.command import parse_transfer
from bot.directory import Directory, Kind
from bot.sandbox.telegram import FakeTelegram, SentMessage

try:
    from bench import _stack
except ModuleNotFoundError:  # run as a script: python bench/overhead.py
    import _stack  # type: ignore[no-redef]

KEY = "overhead"
RTTS_MS = (0, 50)
FIRST_DIALOG = 100_001
REPLY_TIMEOUT_S = 15.0
PERIOD_S = 0.05  # one command every 50 ms: under the bot's own 28 messages a second
SUPERVISORS = 40  # in turn: each private chat gets a command every 2 s, under 1 a second
FIRST_SUPERVISOR = 7_000_001
SCRIPT = Path(__file__).resolve()
# the portal's round trip while syncs are counted: at 0 ms a command's two syncs could merge
# by chance; a real portal takes tens of milliseconds
FSYNC_RTT_MS = 50


@dataclass
class Side:
    """One bot under measurement: how to reach it and what it measured."""

    name: str
    telegram: FakeTelegram
    command: Callable[[int], str]  # the n-th command's text
    ok: Callable[[SentMessage], bool]
    samples: list[float] = field(default_factory=list)
    failed: int = 0


class BaselineStore:
    """One table in a file-backed SQLite database, WAL as deployed, written off the loop."""

    def __init__(self, path: Path) -> None:
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="baseline-db")
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("CREATE TABLE IF NOT EXISTS moves (at REAL, chat INTEGER, target TEXT)")

    async def record(self, chat: int, target: str) -> None:
        """One row, committed (autocommit) before the reply."""

        def write() -> None:
            self._db.execute("INSERT INTO moves VALUES (?, ?, ?)", (time.time(), chat, target))

        await asyncio.get_running_loop().run_in_executor(self._executor, write)

    def close(self) -> None:
        self._executor.shutdown(wait=True)
        self._db.close()


def baseline_dispatcher(portal_url: str, directory: Directory) -> Dispatcher:
    """The fair baseline: same parse, same calls (look; transfer + look), same storage kind."""
    router = Router(name="baseline")

    @router.message(Command("transfer"))
    async def transfer(
        message: Message, command: CommandObject, http: aiohttp.ClientSession, store: BaselineStore
    ) -> None:
        parsed = parse_transfer(command.args)
        target = directory.resolve(" ".join(parsed.words))
        chat = parsed.dialogs[0].number
        look = {"CHAT_ID": chat}
        async with http.post(f"{portal_url}imopenlines.dialog.get.json", json=look) as response:
            before = parse_dialog((await response.json())["result"])
        if before.finished or before.held_by(target):
            await message.answer("☑️ Nothing to do")
            return
        key = "USER_ID" if target.kind is Kind.OPERATOR else "QUEUE_ID"
        calls = [
            ("imopenlines.operator.transfer", {"CHAT_ID": chat, key: target.bitrix_id}),
            ("imopenlines.dialog.get", look),
        ]
        async with http.post(f"{portal_url}batch.json", json=batch_params(calls)) as response:
            answer = (await response.json())["result"]["result"]
        moved = parse_dialog(answer["c1"]).shows_move(target, before)
        await store.record(chat, target.name)
        await message.answer("✅ Done" if moved else "❌ Not moved")

    dispatcher = Dispatcher(disable_fsm=True)  # as the bot's: no conversation states
    dispatcher.include_router(router)
    return dispatcher


class ReplyClock:
    """Times the first ``sendMessage`` to a chat after :meth:`expect` (via ``on_message``,
    i.e. when the fake records it, before it answers the bot)."""

    def __init__(self, telegram: FakeTelegram) -> None:
        self.chat_id = 0
        self.waiter: asyncio.Future[tuple[float, SentMessage]] | None = None
        telegram.on_message = self._seen

    def _seen(self, message: SentMessage) -> None:
        now = time.perf_counter()
        waiter = self.waiter
        if message.method != "sendMessage" or message.chat_id != self.chat_id:
            return
        if waiter is not None and not waiter.done():
            waiter.set_result((now, message))

    def expect(self, chat_id: int) -> asyncio.Future[tuple[float, SentMessage]]:
        self.chat_id = chat_id
        self.waiter = asyncio.get_running_loop().create_future()
        return self.waiter


def supervisor(n: int) -> int:
    """Who sends the ``n``-th command."""
    return FIRST_SUPERVISOR + n % SUPERVISORS


def target_word(n: int) -> str:
    return "@anna" if n % 2 == 0 else "@bob"


async def _one(side: Side, clock: ReplyClock, n: int, *, keep: bool) -> None:
    user = supervisor(n)
    reply = clock.expect(user)
    started = time.perf_counter()
    side.telegram.send_message(side.command(n), user_id=user, first_name=f"S{n % SUPERVISORS}")
    try:
        arrived, message = await asyncio.wait_for(reply, REPLY_TIMEOUT_S)
    except TimeoutError:
        side.failed += 1
        return
    if not side.ok(message):
        side.failed += 1
    if keep:
        side.samples.append((arrived - started) * 1000)


async def one_run(rtt_ms: int, rounds: int, per_round: int, warmup: int) -> dict[str, Any]:
    """Both bots on one portal answering after ``rtt_ms``; ours / baseline p50 and p99."""
    per_bot = rounds * per_round + warmup
    ours_first, base_first = FIRST_DIALOG, FIRST_DIALOG + per_bot
    portal = _stack.make_portal(
        _stack.guest_dialogs(FIRST_DIALOG, 2 * per_bot), latency_s=rtt_ms / 1000
    )
    supervisors = [(supervisor(i), f"S{i}") for i in range(SUPERVISORS)]
    yaml_text = _stack.config_yaml(supervisors=supervisors, announce_to=None)
    with tempfile.TemporaryDirectory(prefix="bench-overhead-") as folder:
        env = {"STORAGE_PATH": str(Path(folder) / "handoff.sqlite3")}
        async with _stack.running_stack(yaml_text, portal=portal, env=env) as stack:
            ours = Side(
                "ours",
                stack.telegram,
                lambda n: f"/transfer {ours_first + n} {target_word(n)}",
                lambda m: m.plain_text.startswith("✅"),
            )
            store = BaselineStore(Path(folder) / "baseline.sqlite3")
            try:
                async with (
                    FakeTelegram(_stack.TOKEN, bot_username="baseline_bench_bot") as fake,
                    aiohttp.ClientSession() as http,
                ):
                    base = Side(
                        "baseline",
                        fake,
                        lambda n: f"/transfer {base_first + n} {target_word(n)}",
                        lambda m: m.plain_text.startswith("✅"),
                    )
                    dispatcher = baseline_dispatcher(
                        portal.url, Directory.from_config(stack.config)
                    )
                    async with _stack.polling(
                        dispatcher, fake.make_bot(), fake, http=http, store=store
                    ):
                        await _alternate(ours, base, rounds, per_round, warmup)
            finally:
                store.close()
            await stack.settle(10)
    return {
        "ours_p50_ms": _stack.median(ours.samples),
        "baseline_p50_ms": _stack.median(base.samples),
        "ours_p99_ms": _stack.percentile(ours.samples, 99),
        "baseline_p99_ms": _stack.percentile(base.samples, 99),
        "samples": min(len(ours.samples), len(base.samples)),
        "failed": ours.failed + base.failed,
    }


async def _alternate(ours: Side, base: Side, rounds: int, per_round: int, warmup: int) -> None:
    """Warm both up, then ``rounds * per_round`` pairs: one command to each bot in turn (which
    goes first alternates), so the machine's drifting speed falls on both alike."""
    clocks = {side.name: ReplyClock(side.telegram) for side in (ours, base)}
    counters = {side.name: itertools.count() for side in (ours, base)}
    loop = asyncio.get_running_loop()

    async def one(side: Side, keep: bool) -> None:
        next_at = loop.time() + PERIOD_S
        await _one(side, clocks[side.name], next(counters[side.name]), keep=keep)
        await asyncio.sleep(max(0.0, next_at - loop.time()))

    for _ in range(warmup):
        for side in (ours, base):
            await one(side, keep=False)
    for pair in range(rounds * per_round):
        for side in (ours, base) if pair % 2 == 0 else (base, ours):
            await one(side, keep=True)


# --------------------------------------------------------------------------------------------
# fsyncs: the bot as its own process under strace
# --------------------------------------------------------------------------------------------


async def fsync_child(commands: int) -> None:
    """In a child process (under strace): our bot with file storage, ``commands`` transfers."""
    portal = _stack.make_portal(
        _stack.guest_dialogs(FIRST_DIALOG, max(1, commands)), latency_s=FSYNC_RTT_MS / 1000
    )
    supervisors = [(supervisor(i), f"S{i}") for i in range(SUPERVISORS)]
    yaml_text = _stack.config_yaml(supervisors=supervisors, announce_to=None)
    with tempfile.TemporaryDirectory(prefix="bench-fsync-") as folder:
        env = {"STORAGE_PATH": str(Path(folder) / "handoff.sqlite3")}
        async with _stack.running_stack(yaml_text, portal=portal, env=env) as stack:
            tg = stack.telegram
            for n in range(commands):
                user = supervisor(n)
                before = len(tg.messages_to(user))
                tg.send_message(f"/transfer {FIRST_DIALOG + n} {target_word(n)}", user_id=user)
                await tg.wait_for(lambda u=user, b=before: len(tg.messages_to(u)) > b, timeout=15)
                await asyncio.sleep(PERIOD_S)
            await stack.settle(10)
            moved = sum(1 for d in portal.dialogs.values() if d.owner in (_stack.ANNA, _stack.BOB))
    print(f"moved {moved}")


_STRACE_CALLS = re.compile(r"^\s*[\d.]+\s+[\d.]+\s+\d+\s+(\d+)\s+(?:\d+\s+)?(fdatasync|fsync)$")


def _strace_count(commands: int) -> int:
    """fdatasync + fsync calls of a child that handles ``commands`` transfers."""
    with tempfile.NamedTemporaryFile(prefix="bench-strace-", suffix=".txt") as out:
        subprocess.run(
            [
                "strace",
                "-f",
                "-c",
                "-e",
                "trace=fdatasync,fsync",
                "-o",
                out.name,
                sys.executable,
                str(SCRIPT),
                "--fsync-child",
                str(commands),
            ],
            check=True,
            capture_output=True,
            timeout=300,
            cwd=SCRIPT.parent.parent,
        )
        text = Path(out.name).read_text(encoding="utf-8")
    return sum(
        int(m.group(1)) for line in text.splitlines() if (m := _STRACE_CALLS.match(line.strip()))
    )


async def fsyncs_per_command(commands: int) -> dict[str, Any]:
    """(calls with ``commands`` - calls with none) / ``commands``; None without strace."""
    if shutil.which("strace") is None:
        return {"fsyncs_per_command": None, "fsyncs_method": "strace not found"}
    idle, busy = await asyncio.gather(
        asyncio.to_thread(_strace_count, 0), asyncio.to_thread(_strace_count, commands)
    )
    return {
        "fsyncs_per_command": round((busy - idle) / commands, 2),
        "fsyncs_method": "strace -f -c -e trace=fdatasync,fsync on the bot's process, "
        f"commands one at a time, portal round trip {FSYNC_RTT_MS} ms",
        "fsyncs_commands": commands,
        "fsyncs_with_commands": busy,
        "fsyncs_without": idle,
    }


# --------------------------------------------------------------------------------------------


async def run(quick: bool = False, runs: int = 5) -> dict[str, Any]:
    """Measure; returns the ``overhead`` figures."""
    started = time.perf_counter()
    runs = 1 if quick else runs
    rounds, per_round, warmup = (1, 10, 3) if quick else (2, 30, 10)
    figures: dict[str, Any] = {}
    for rtt_ms in RTTS_MS:
        results = [await one_run(rtt_ms, rounds, per_round, warmup) for _ in range(runs)]
        figures[f"rtt{rtt_ms}"] = {
            "p50_ratio": _stack.spread([r["ours_p50_ms"] / r["baseline_p50_ms"] for r in results]),
            "p99_ratio": _stack.spread([r["ours_p99_ms"] / r["baseline_p99_ms"] for r in results]),
            "ours_p50_ms": _stack.spread([r["ours_p50_ms"] for r in results]),
            "baseline_p50_ms": _stack.spread([r["baseline_p50_ms"] for r in results]),
            "samples_per_run": results[0]["samples"],
            "failed": sum(r["failed"] for r in results),
        }
    figures.update(await fsyncs_per_command(10 if quick else 50))
    figures["runs"] = runs
    figures["seconds"] = round(time.perf_counter() - started, 1)
    _print(figures)
    return figures


def _print(f: dict[str, Any]) -> None:
    fmt = _stack.fmt
    for rtt_ms in RTTS_MS:
        r = f[f"rtt{rtt_ms}"]
        print(
            f"overhead rtt {rtt_ms} ms: p50 ours {fmt(r['ours_p50_ms']['median'])} ms vs "
            f"baseline {fmt(r['baseline_p50_ms']['median'])} ms, ratio "
            f"{fmt(r['p50_ratio']['median'])} ({fmt(r['p50_ratio']['min'])}-"
            f"{fmt(r['p50_ratio']['max'])}), failed {r['failed']}"
        )
    print(f"overhead: fsyncs per command {f['fsyncs_per_command']} ({f['fsyncs_method']})")


def main(argv: list[str] | None = None) -> None:
    """``python bench/overhead.py [--quick] [--json]``."""
    args = argv if argv is not None else sys.argv[1:]
    if args[:1] == ["--fsync-child"]:
        asyncio.run(fsync_child(int(args[1])))
        return
    _stack.cli(run, KEY, __doc__ or KEY, "a small run (a few seconds)", argv)


if __name__ == "__main__":
    sys.exit(main())
