"""Overhead: end-to-end latency of ``/transfer <dialog> @anna`` against fair minimal bots.

Latency runs from the moment the update is injected into the fake Bot API until the fake
receives the bot's reply (``sendMessage``): the real long poll, the REST calls, the storage
and the reply are all in it. The baselines do the same job with nothing else: one
``Command("transfer")`` handler that parses the arguments with the product's parser and
resolves the name in the same directory, makes the same calls ours makes: a look at the
dialog first (``imopenlines.dialog.get``: a transfer to whoever holds it already is not a no-op
for the customer, and a finished dialog answers ``true`` and moves nothing), then the transfer
and a second look in one ``batch`` (``true`` is no proof of a move), read with the product's
``parse_dialog``; writes one row to a file-backed SQLite database in WAL mode (as deployed),
and replies the line a supervisor needs (dialog, name, target) in HTML, as ours does. No
access checks, audit trail, pacing, batching or message catalogue: what they lack is our own
processing.

- ``baseline`` (the fair one: same storage) keeps what ours keeps, the least way that keeps
  the same promises: each update is written to its database, marked sent, and synced (one
  ``fdatasync`` of the WAL) before it is carried out and before the next ``getUpdates``
  confirms it; marked done once answered.
- ``keeps_nothing``: the same bot without that inbox; its one row is synced as SQLite does by
  default. Ours against it is ``p50_ratio_vs_keeps_nothing``: against a bot that may lose a
  command, or carry it out twice, after a crash.

All three use file-backed SQLite in a temporary folder, poll all the time (each its own
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
import html
import itertools
import os
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
from aiogram import BaseMiddleware, Bot, Dispatcher, Router
from aiogram.client.default import DefaultBotProperties
from aiogram.enums import ParseMode
from aiogram.filters import Command, CommandObject
from aiogram.types import Message, TelegramObject, Update

from bot.bitrix24.batching import batch_params
from bot.bitrix24.client import parse_dialog
from bot.command import parse_transfer
from bot.directory import Directory, Kind
from bot.inbox import Handler
from bot.sandbox.telegram import FakeTelegram, SentMessage

try:
    from bench import _stack
except ModuleNotFoundError:  # run as a script: python bench/overhead.py
    import _stack  # type: ignore[no-redef]

KEY = "overhead"
# who is timed, in this order: ours, the fair baseline (keeps each update as ours does), and
# the same without keeping updates (a row per move only)
SIDES = ("ours", "baseline", "keeps_nothing")
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
    """The baselines' storage: file-backed SQLite, WAL as deployed, written off the loop on one
    thread: a row per move and, for the baseline that keeps what ours keeps, an inbox."""

    def __init__(self, path: Path, *, synchronous: str = "FULL") -> None:
        """``synchronous``: SQLite's default, FULL, syncs every commit (the row is on disk
        before the reply); NORMAL, as ours, syncs where :meth:`keep` says."""
        self._wal = f"{path}-wal"
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="baseline-db")
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(f"PRAGMA synchronous={synchronous}")
        self._db.execute("CREATE TABLE IF NOT EXISTS moves (at REAL, chat INTEGER, target TEXT)")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS inbox"
            " (update_id INTEGER PRIMARY KEY, payload TEXT, done INTEGER NOT NULL DEFAULT 0)"
        )

    async def _run(self, work: Callable[[], Any]) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._executor, work)

    async def record(self, chat: int, target: str) -> None:
        """One row, committed (autocommit) before the reply."""
        await self._run(
            lambda: self._db.execute(
                "INSERT INTO moves VALUES (?, ?, ?)", (time.time(), chat, target)
            )
        )

    async def keep(self, update_id: int, payload: str) -> bool:
        """Keep an update on disk, as sent (it may write to Bitrix24 from now on): one INSERT
        and one ``fdatasync`` of the WAL, in one go. False for one kept already."""

        def write() -> bool:
            new = self._db.execute(
                "INSERT OR IGNORE INTO inbox (update_id, payload) VALUES (?, ?)",
                (update_id, payload),
            ).rowcount
            wal = os.open(self._wal, os.O_RDONLY)
            try:
                os.fdatasync(wal)
            finally:
                os.close(wal)
            return bool(new)

        return bool(await self._run(write))

    async def done(self, update_id: int) -> None:
        """The update was carried out (committed, not synced: a kill -9 keeps it)."""
        await self._run(
            lambda: self._db.execute("UPDATE inbox SET done = 1 WHERE update_id = ?", (update_id,))
        )

    async def kept(self) -> int:
        """Updates kept and carried out to the end."""
        done: int = await self._run(
            lambda: self._db.execute("SELECT COUNT(*) FROM inbox WHERE done = 1").fetchone()[0]
        )
        return done

    def close(self) -> None:
        self._executor.shutdown(wait=True)
        self._db.close()


class KeptFirst(BaseMiddleware):
    """The durable baseline's inbox, the least that keeps ours' promises: each update is kept
    on disk, marked sent, before it is carried out (in a task of its own) and before Telegram
    hears it arrived (the next ``getUpdates`` waits: ``handle_as_tasks=False``); its mark is
    done once it was carried out. A redelivery is dropped."""

    def __init__(self, store: BaselineStore) -> None:
        self._store = store
        self._tasks: set[asyncio.Task[None]] = set()

    async def __call__(
        self,
        handler: Handler,
        event: TelegramObject,
        data: dict[str, Any],
    ) -> None:
        assert isinstance(event, Update)
        payload = event.model_dump_json(exclude_unset=True, exclude_none=True)
        if not await self._store.keep(event.update_id, payload):
            return

        async def carry_out() -> None:
            try:
                await handler(event, data)
            finally:
                await self._store.done(event.update_id)

        task = asyncio.create_task(carry_out())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


def baseline_dispatcher(
    portal_url: str, directory: Directory, kept_first: KeptFirst | None = None
) -> Dispatcher:
    """A baseline: same parse, same calls (look; transfer + look), a row in the same kind of
    storage; with ``kept_first``, each update kept on disk first, as ours keeps it."""
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
        # the line a supervisor needs, in HTML as ours (the fake parses it, as Telegram would)
        mark = "✅" if moved else "❌ Not moved:"
        await message.answer(
            f"{mark} Dialog {chat} «{html.escape(before.name)}» → {html.escape(target.name)}"
        )

    dispatcher = Dispatcher(disable_fsm=True)  # as the bot's: no conversation states
    if kept_first is not None:
        dispatcher.update.outer_middleware(kept_first)
    dispatcher.include_router(router)
    return dispatcher


def _baseline_bot(telegram: FakeTelegram) -> Bot:
    """A baseline's bot: replies in HTML without link previews, as ours."""
    return telegram.make_bot(
        default=DefaultBotProperties(parse_mode=ParseMode.HTML, link_preview_is_disabled=True)
    )


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
    """The three bots on one portal answering after ``rtt_ms``: p50 and p99 of each."""
    per_bot = rounds * per_round + warmup
    portal = _stack.make_portal(
        _stack.guest_dialogs(FIRST_DIALOG, len(SIDES) * per_bot), latency_s=rtt_ms / 1000
    )
    firsts = {name: FIRST_DIALOG + i * per_bot for i, name in enumerate(SIDES)}

    def side(name: str, telegram: FakeTelegram) -> Side:
        first = firsts[name]
        return Side(
            name,
            telegram,
            lambda n: f"/transfer {first + n} {target_word(n)}",
            lambda m: m.plain_text.startswith("✅"),
        )

    supervisors = [(supervisor(i), f"S{i}") for i in range(SUPERVISORS)]
    yaml_text = _stack.config_yaml(supervisors=supervisors, announce_to=None)
    with tempfile.TemporaryDirectory(prefix="bench-overhead-") as name:
        folder = Path(name)
        env = {"STORAGE_PATH": str(folder / "handoff.sqlite3")}
        async with _stack.running_stack(yaml_text, portal=portal, env=env) as stack:
            directory = Directory.from_config(stack.config)
            kept = BaselineStore(folder / "kept.sqlite3", synchronous="NORMAL")
            rows = BaselineStore(folder / "rows.sqlite3")
            try:
                async with (
                    FakeTelegram(_stack.TOKEN, bot_username="kept_bench_bot") as kept_tg,
                    FakeTelegram(_stack.TOKEN, bot_username="rows_bench_bot") as rows_tg,
                    aiohttp.ClientSession() as http,
                    _stack.polling(
                        baseline_dispatcher(portal.url, directory, KeptFirst(kept)),
                        _baseline_bot(kept_tg),
                        kept_tg,
                        handle_as_tasks=False,  # the next getUpdates waits for the keeping
                        http=http,
                        store=kept,
                    ),
                    _stack.polling(
                        baseline_dispatcher(portal.url, directory),
                        _baseline_bot(rows_tg),
                        rows_tg,
                        http=http,
                        store=rows,
                    ),
                ):
                    sides = [
                        side("ours", stack.telegram),
                        side("baseline", kept_tg),
                        side("keeps_nothing", rows_tg),
                    ]
                    await _alternate(sides, rounds, per_round, warmup)
                    # the fair baseline really kept them all (its done mark follows the reply)
                    for _ in range(50):
                        if (unkept := per_bot - await kept.kept()) == 0:
                            break
                        await asyncio.sleep(0.1)
            finally:
                kept.close()
                rows.close()
            await stack.settle(10)
    return {
        "p50_ms": {s.name: _stack.median(s.samples) for s in sides},
        "p99_ms": {s.name: _stack.percentile(s.samples, 99) for s in sides},
        "samples": min(len(s.samples) for s in sides),
        "failed": sum(s.failed for s in sides),
        "baseline_unkept": unkept,
    }


async def _alternate(sides: list[Side], rounds: int, per_round: int, warmup: int) -> None:
    """Warm all up, then ``rounds * per_round`` turns of one command to each bot in turn (who
    goes first rotates), so the machine's drifting speed falls on all alike."""
    clocks = {side.name: ReplyClock(side.telegram) for side in sides}
    counters = {side.name: itertools.count() for side in sides}
    loop = asyncio.get_running_loop()

    async def one(side: Side, keep: bool) -> None:
        next_at = loop.time() + PERIOD_S
        await _one(side, clocks[side.name], next(counters[side.name]), keep=keep)
        await asyncio.sleep(max(0.0, next_at - loop.time()))

    for _ in range(warmup):
        for side in sides:
            await one(side, keep=False)
    for turn in range(rounds * per_round):
        shift = turn % len(sides)
        for side in sides[shift:] + sides[:shift]:
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
        p50 = [r["p50_ms"] for r in results]
        p99 = [r["p99_ms"] for r in results]
        figures[f"rtt{rtt_ms}"] = {
            "p50_ratio": _stack.spread([p["ours"] / p["baseline"] for p in p50]),
            "p99_ratio": _stack.spread([p["ours"] / p["baseline"] for p in p99]),
            "p50_ratio_vs_keeps_nothing": _stack.spread(
                [p["ours"] / p["keeps_nothing"] for p in p50]
            ),
            **{f"{name}_p50_ms": _stack.spread([p[name] for p in p50]) for name in SIDES},
            "samples_per_run": results[0]["samples"],
            "failed": sum(r["failed"] for r in results),
            "baseline_unkept": sum(r["baseline_unkept"] for r in results),
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
        ratio, bare = r["p50_ratio"], r["p50_ratio_vs_keeps_nothing"]
        print(
            f"overhead rtt {rtt_ms} ms: p50 ours {fmt(r['ours_p50_ms']['median'])} ms, "
            f"baseline {fmt(r['baseline_p50_ms']['median'])} ms, ratio {fmt(ratio['median'])} "
            f"({fmt(ratio['min'])}-{fmt(ratio['max'])}); keeping nothing "
            f"{fmt(r['keeps_nothing_p50_ms']['median'])} ms, ratio {fmt(bare['median'])} "
            f"({fmt(bare['min'])}-{fmt(bare['max'])}); failed {r['failed']}"
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
