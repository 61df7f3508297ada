"""The real bot process under ``strace``: how many times it waits for the disk (``fsync``,
``fdatasync``) per command on the SQLite file, counted, never timed.

What a command must cost: one sync for the update (before the next ``getUpdates`` confirms
it) and its sent mark (before the transfer) together, none for the audit rows, the done marks
and what messages are about; in a burst, one for the updates a ``getUpdates`` brought and one
for the sent marks of the commands that reach Bitrix24 together (see bot/storage.py).
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import signal
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from bot.sandbox.portal import PortalSimulator, SimDialog
from bot.sandbox.telegram import FakeTelegram
from tests.conftest import ANNA, BOB, make_portal
from tests.harness import CROWD, TOKEN, fakes_env
from tests.processes import BotProcess, bot_process
from tests.test_crash import FIRST, write_config

STRACE = shutil.which("strace")
COMMANDS = 50  # write_config has this many supervisors, CROWD .. CROWD + 49
SYNC = re.compile(r"\b(fsync|fdatasync|fdatasync64)\(")
PERIOD_S = 0.05  # one command every 50 ms when one at a time: under the bot's reply pacing

pytestmark = pytest.mark.skipif(STRACE is None, reason="strace is not installed")


def portal_with_dialogs() -> PortalSimulator:
    portal = make_portal()
    for n in range(FIRST, FIRST + COMMANDS):
        portal.dialogs[n] = SimDialog(n, n, f"Guest {n}", owner=BOB, line_id=3)
    return portal


@dataclass
class Traced:
    """The bot under strace, and the file strace writes each sync call to as it happens."""

    bot: BotProcess
    trace: Path

    def syncs(self) -> int:
        """Sync calls so far, by every thread of the bot."""
        return len(SYNC.findall(self.trace.read_text()))


@asynccontextmanager
async def traced_bot(
    folder: Path, portal: PortalSimulator, telegram: FakeTelegram
) -> AsyncIterator[Traced]:
    """``python -m bot`` on the two fakes and a SQLite file, under strace."""
    config = write_config(folder)
    trace = folder / "strace.out"
    assert STRACE is not None
    # seccomp-bpf: only the sync calls stop the bot (tracing every call slows it to a crawl)
    wrapper = (STRACE, "-f", "-qq", "--seccomp-bpf", "-e", "trace=fsync,fdatasync")
    env = fakes_env(portal, telegram)
    async with bot_process(config, wrapper=(*wrapper, "-o", str(trace)), **env) as bot:
        # started: it polls, and its first command is answered (start-up writes are not counted)
        await telegram.wait_for(lambda: bool(telegram.calls_to("getUpdates")), timeout=60)
        await one_command(telegram, COMMANDS - 1)
        try:
            yield Traced(bot, trace)
        finally:  # the bot itself, not strace: then strace ends with it
            children = f"/proc/{bot.process.pid}/task/{bot.process.pid}/children"
            for pid in (await asyncio.to_thread(Path(children).read_text)).split():
                os.kill(int(pid), signal.SIGTERM)
            assert await bot.finish() == 0, bot.stderr[-3000:]


async def one_command(telegram: FakeTelegram, i: int) -> float:
    """Supervisor ``i`` transfers their dialog and waits for the answer; returns seconds."""
    started = time.perf_counter()
    telegram.send_message(f"/transfer {FIRST + i} @anna", user_id=CROWD + i)
    answered = lambda: bool(telegram.messages_to(CROWD + i))  # noqa: E731
    await telegram.wait_for(answered, timeout=30, interval=0.001)
    return time.perf_counter() - started


async def test_a_burst_of_commands_costs_at_most_one_sync_each(tmp_path: Path) -> None:
    portal = portal_with_dialogs()
    burst = COMMANDS - 1
    telegram = FakeTelegram(TOKEN, bot_username="handoff_test_bot")
    async with portal, telegram, traced_bot(tmp_path, portal, telegram) as traced:
        before = traced.syncs()
        for i in range(burst):  # all at once: they arrive together, as a burst does
            telegram.send_message(f"/transfer {FIRST + i} @anna", user_id=CROWD + i)
        await telegram.wait_for(
            lambda: all(telegram.messages_to(CROWD + i) for i in range(burst)), timeout=60
        )
        await asyncio.sleep(0.5)  # anything written after the answers counts too
        syncs = traced.syncs() - before
    assert all(portal.dialogs[FIRST + i].owner == ANNA for i in range(COMMANDS))
    print(f"{syncs} syncs for a burst of {burst} commands")
    assert 0 < syncs <= burst


async def test_commands_one_at_a_time_cost_one_sync_each(tmp_path: Path) -> None:
    # a real portal's round trip: the sent mark cannot come by chance right after the update
    portal = portal_with_dialogs()
    portal.latency_s = 0.05
    count = 20
    telegram = FakeTelegram(TOKEN, bot_username="handoff_test_bot")
    async with portal, telegram, traced_bot(tmp_path, portal, telegram) as traced:
        before = traced.syncs()
        latencies = []
        for i in range(count):
            latencies.append(await one_command(telegram, i))
            await asyncio.sleep(max(0.0, PERIOD_S - latencies[-1]))
        await asyncio.sleep(0.5)
        syncs = traced.syncs() - before
    assert all(portal.dialogs[FIRST + i].owner == ANNA for i in range(count))
    latencies.sort()
    print(f"{syncs} syncs for {count} commands; p50 {latencies[count // 2] * 1000:.1f} ms")
    # the update, kept before the next getUpdates confirms it, and the sent mark, made while
    # the look is under way, share one sync
    assert 0 < syncs <= count
