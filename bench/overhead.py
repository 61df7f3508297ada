"""Overhead: end-to-end latency of ``/transfer <dialog> @anna`` against a minimal bot.

Latency is measured from the moment the update is injected into the fake Bot API until the
fake receives the bot's reply (``sendMessage``): the real long poll, the REST calls and the
reply are all in it. The baseline is a minimal aiogram bot doing the same job on the same kind
of fakes in the same run: one ``Command("transfer")`` handler that POSTs
``imopenlines.operator.transfer`` (fixed CHAT_ID, USER_ID flipping between two operators so
each transfer is real) with one bare aiohttp session and replies a fixed text — no parsing,
directory, access checks, dialog look-up or message catalogue.

Both bots poll all the time (each its own FakeTelegram, same class, same settings, same
polling timeout) and call the same PortalSimulator; commands are sequential, in rounds that
alternate between the two bots (and which one goes first), after a discarded warm-up.

The bot paces what it posts (``bot.flood_control.Pacing``: about 28 messages a second overall,
3 at once then one a second per chat) to stay under Telegram's limits. Back-to-back commands
from one supervisor would measure that pacing (about 1 s a reply from the fourth on), not the
overhead; so commands start every ``PERIOD_S`` (20 a second) and come from ``SUPERVISORS``
supervisors in turn (each chat gets one every 2 s), the same pattern for both bots.

    python bench/overhead.py [--quick]
"""

from __future__ import annotations

import asyncio
import itertools
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiogram import Dispatcher, Router
from aiogram.filters import Command
from aiogram.types import Message

from bot.sandbox.telegram import FakeTelegram, SentMessage

try:
    from bench import _stack
except ModuleNotFoundError:  # run as a script: python bench/overhead.py
    import _stack  # type: ignore[no-redef]

KEY = "overhead"
TARGET_P50_RATIO = 1.2
FIRST_DIALOG = 100_001
MINIMAL_CHAT_ID = 90_001  # the one dialog the minimal bot moves back and forth
REPLY_TIMEOUT_S = 15.0
DEADLINE_S = 150.0  # the whole measurement; a bot that stops answering ends it early
PERIOD_S = 0.05  # one command every 50 ms: under the bot's own 28 messages a second
SUPERVISORS = 40  # in turn: each private chat gets a command every 2 s, under 1 a second
FIRST_SUPERVISOR = 7_000_001


@dataclass
class Side:
    """One bot under measurement: how to reach it and what it measured."""

    name: str
    telegram: FakeTelegram
    command: Callable[[int], str]  # the n-th command's text
    ok: Callable[[SentMessage], bool]
    samples: list[float] = field(default_factory=list)
    failed: int = 0
    sent: int = 0


def minimal_dispatcher(transfer_url: str) -> Dispatcher:
    """The baseline bot: one handler, one POST, one fixed reply."""
    router = Router(name="minimal")
    targets = itertools.cycle((_stack.ANNA, _stack.BOB))

    @router.message(Command("transfer"))
    async def transfer(message: Message, http: aiohttp.ClientSession) -> None:
        payload = {"CHAT_ID": MINIMAL_CHAT_ID, "USER_ID": next(targets)}
        async with http.post(transfer_url, json=payload) as response:
            await response.read()
        await message.answer("Done")

    dispatcher = Dispatcher()
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
    side.sent += 1
    if not side.ok(message):
        side.failed += 1
    if keep:
        side.samples.append((arrived - started) * 1000)


async def run(quick: bool = False) -> dict[str, Any]:
    """Measure; returns the figures (the ``overhead`` entry of results.json)."""
    rounds, per_round, warmup = (2, 15, 5) if quick else (5, 60, 15)
    commands = rounds * per_round + warmup
    dialogs = _stack.guest_dialogs(FIRST_DIALOG, commands)
    dialogs += _stack.guest_dialogs(MINIMAL_CHAT_ID, 1)
    portal = _stack.make_portal(dialogs)
    supervisors = [(supervisor(i), f"S{i}") for i in range(SUPERVISORS)]
    yaml_text = _stack.config_yaml(supervisors=supervisors, announce_to=None)
    started = time.perf_counter()
    with _stack.LogTally() as tally:
        async with _stack.running_stack(yaml_text, portal=portal) as stack:
            ours = Side(
                "ours",
                stack.telegram,
                lambda n: f"/transfer {FIRST_DIALOG + n} {'@anna' if n % 2 == 0 else '@bob'}",
                lambda m: m.plain_text.startswith("✅"),
            )
            async with (
                FakeTelegram(_stack.TOKEN, bot_username="minimal_bench_bot") as fake,
                aiohttp.ClientSession() as http,
            ):
                minimal = Side("minimal", fake, lambda n: "/transfer", lambda m: True)
                bot = fake.make_bot()
                dispatcher = minimal_dispatcher(f"{portal.url}imopenlines.operator.transfer.json")
                async with _stack.polling(dispatcher, bot, fake, http=http):
                    clocks = {
                        "ours": ReplyClock(ours.telegram),
                        "minimal": ReplyClock(minimal.telegram),
                    }
                    counters = {"ours": itertools.count(), "minimal": itertools.count()}
                    loop = asyncio.get_running_loop()

                    deadline = loop.time() + (DEADLINE_S / 5 if quick else DEADLINE_S)

                    async def block(side: Side, count: int, keep: bool) -> None:
                        for _ in range(count):
                            if loop.time() > deadline:
                                return
                            n = next(counters[side.name])
                            next_at = loop.time() + PERIOD_S
                            await _one(side, clocks[side.name], n, keep=keep)
                            await asyncio.sleep(max(0.0, next_at - loop.time()))

                    for side in (ours, minimal):
                        await block(side, warmup, keep=False)
                    round_ratios = []
                    for r in range(rounds):
                        order = (ours, minimal) if r % 2 == 0 else (minimal, ours)
                        before = {s.name: len(s.samples) for s in (ours, minimal)}
                        for side in order:
                            await block(side, per_round, keep=True)
                        p50 = {
                            s.name: _stack.median(s.samples[before[s.name] :])
                            for s in (ours, minimal)
                        }
                        round_ratios.append(_stack.ratio(p50["ours"], p50["minimal"]))
            await stack.settle(10)
            transfers = portal.calls_to("imopenlines.operator.transfer")
            real = sum(1 for c in transfers if c.status == 200)
            ours_calls = sum(1 for c in portal.calls if c.params.get("CHAT_ID") != MINIMAL_CHAT_ID)
            looked_at = {
                c.params.get("CHAT_ID"): c.at for c in portal.calls_to("imopenlines.dialog.get")
            }
            look_ms = [
                (c.at - looked_at[c.params["CHAT_ID"]]) * 1000
                for c in transfers
                if c.params.get("CHAT_ID") in looked_at
            ]
    seconds = time.perf_counter() - started

    figures: dict[str, Any] = {
        "p50_ratio": _stack.ratio(_stack.median(ours.samples), _stack.median(minimal.samples)),
        "p99_ratio": _stack.ratio(
            _stack.percentile(ours.samples, 99), _stack.percentile(minimal.samples, 99)
        ),
        "samples": min(len(ours.samples), len(minimal.samples)),
        "ours_p50_ms": round(_stack.median(ours.samples), 3),
        "ours_p99_ms": round(_stack.percentile(ours.samples, 99), 3),
        "minimal_p50_ms": round(_stack.median(minimal.samples), 3),
        "minimal_p99_ms": round(_stack.percentile(minimal.samples, 99), 3),
        "round_p50_ratios": round_ratios,
        "rounds": rounds,
        "per_round": per_round,
        "warmup": warmup,
        "period_ms": PERIOD_S * 1000,
        "supervisors": SUPERVISORS,
        "failed": ours.failed + minimal.failed,
        "complete": len(ours.samples) == len(minimal.samples) == rounds * per_round,
        "portal_transfers_ok": real,
        "portal_transfers": len(transfers),
        "ours_rest_calls_per_command": round(ours_calls / max(1, ours.sent), 2),
        "ours_look_ms": round(_stack.median(look_ms), 3),
        "warnings": sum(tally.counts.values()),
        "target_p50_ratio": TARGET_P50_RATIO,
        "seconds": round(seconds, 1),
    }
    _print(figures, tally)
    return figures


def _print(f: dict[str, Any], tally: _stack.LogTally) -> None:
    fmt = _stack.fmt
    print(
        f"overhead: {f['rounds']} rounds x {f['per_round']} sequential /transfer per bot, "
        f"one every {f['period_ms']:g} ms from {f['supervisors']} supervisors in turn"
    )
    print(f"  {'':8} {'p50 ms':>9} {'p99 ms':>9}")
    print(f"  {'ours':8} {fmt(f['ours_p50_ms'], 3):>9} {fmt(f['ours_p99_ms'], 3):>9}")
    print(f"  {'minimal':8} {fmt(f['minimal_p50_ms'], 3):>9} {fmt(f['minimal_p99_ms'], 3):>9}")
    print(f"  ratio    {fmt(f['p50_ratio']):>9} {fmt(f['p99_ratio']):>9}")
    print(f"  p50 ratio per round: {', '.join(fmt(r) for r in f['round_p50_ratios'])}")
    if not f["complete"]:
        print(f"  INCOMPLETE: the {DEADLINE_S:g} s deadline ended the run early")
    print(
        f"  transfers the portal accepted: {f['portal_transfers_ok']}/{f['portal_transfers']}; "
        f"failed or missing replies: {f['failed']}; warnings logged: {f['warnings']}"
    )
    print(
        f"  REST calls per command: ours {fmt(f['ours_rest_calls_per_command'])} "
        "(imopenlines.dialog.get, then the transfer), minimal 1; "
        f"dialog.get to transfer at the portal: {fmt(f['ours_look_ms'], 3)} ms median"
    )
    for line in tally.lines(5):
        print(f"    {line}")
    met = "met" if f["p50_ratio"] <= TARGET_P50_RATIO else "NOT met"
    print(
        f"overhead: p50 ratio {fmt(f['p50_ratio'])} (ours {fmt(f['ours_p50_ms'])} ms vs minimal "
        f"{fmt(f['minimal_p50_ms'])} ms), p99 ratio {fmt(f['p99_ratio'])}, "
        f"{f['samples']} samples each; target p50 ratio <= {TARGET_P50_RATIO}: {met} "
        f"[{f['seconds']} s]"
    )


def main(argv: list[str] | None = None) -> None:
    """``python bench/overhead.py [--quick] [--json]``."""
    _stack.cli(run, KEY, __doc__ or KEY, "a small run (a few seconds)", argv)


if __name__ == "__main__":
    sys.exit(main())
