"""Burst: 1,000 transfer commands from 50 supervisors within one second, against a portal
simulator that enforces Bitrix24's leaky bucket, and a Bot API that enforces Telegram's limits.

Figures:
- ``completion_s``: from the first command to the last dialog transferred at the portal;
- ``floor_s``: the bucket's minimum for one request per command, (N - X) / Y;
  ``completion_vs_floor`` = completion / floor (below 1 is possible: batches carry 50);
- ``unbatched_completion_s`` and ``batch_gain``: the same run with batching off, where each
  command costs its own requests (a look and a transfer), and how much faster batches are;
- ``user_visible_limit_errors``: replies that showed a rate-limit error (target 0);
- ``duplicate_calls``: dialogs transferred more than once (must be 0);
- ``replies_s``: until every supervisor had the reply (Telegram allows ~1 message a second
  per chat, so 20 replies to one supervisor take ~20 s whatever the portal does);
- ``vs_fast_bitrix24``: the same 1,000 transfer calls through our client and through
  fast_bitrix24's async client (a peer that also batches), on the same simulator: ours / theirs.

The simulated bucket drains 25 times faster than a real portal's 2 requests a second (X = 50,
Y = 50/s) so that the run stays short; the ratios do not depend on it.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from typing import Any

try:
    from bench import _stack
except ModuleNotFoundError:  # run as a script: python bench/burst.py
    import _stack  # type: ignore[no-redef]
from bot.bitrix24.client import BitrixClient
from bot.config import Bitrix24Settings
from bot.directory import Kind, Target
from bot.sandbox.portal import PortalSimulator
from bot.sandbox.telegram import TelegramLimits

KEY = "burst"
TRANSFER = "imopenlines.operator.transfer"
BUCKET_X, BUCKET_Y = 50, 50.0
FIRST_DIALOG = 100_000
SUPERVISOR_BASE = 5_000_000


def _bucket_portal(commands: int) -> PortalSimulator:
    """A portal with ``commands`` dialogs and the benchmark's leaky bucket."""
    dialogs = _stack.guest_dialogs(FIRST_DIALOG, commands)
    return _stack.make_portal(dialogs, leak_per_s=BUCKET_Y, burst=BUCKET_X)


def _yaml(supervisors: int, batched: bool) -> str:
    text = _stack.config_yaml(
        supervisors=[(SUPERVISOR_BASE + i, f"S{i}") for i in range(supervisors)],
        announce_to=None,
    )
    if not batched:
        text = text.replace("bitrix24:\n", "bitrix24:\n  batch_calls: false\n", 1)
    return text


def _applied(portal: PortalSimulator) -> list[int]:
    return [
        int(call.params["CHAT_ID"])
        for call in portal.calls_to(TRANSFER)
        if call.applied and call.status == 200
    ]


async def _bot_run(commands: int, supervisors: int, *, batched: bool) -> dict[str, Any]:
    portal = _stack.make_portal(
        _stack.guest_dialogs(FIRST_DIALOG, commands), leak_per_s=BUCKET_Y, burst=BUCKET_X
    )
    env = {"RATE": str(BUCKET_Y), "BURST": str(BUCKET_X), "DEADLINE_S": "120", "TIMEOUT_S": "30"}
    async with _stack.running_stack(
        _yaml(supervisors, batched),
        portal=portal,
        limits=TelegramLimits(),
        env=env,
        polling_timeout=1,
    ) as stack:
        tg = stack.telegram
        chats = [SUPERVISOR_BASE + i for i in range(supervisors)]
        started = time.monotonic()
        for n in range(commands):  # all within one second
            tg.send_message(f"/transfer {FIRST_DIALOG + n} @anna", user_id=chats[n % supervisors])
            if n % 50 == 49:
                await asyncio.sleep(1.0 / (commands / 50))
        await tg.wait_for(lambda: len(_applied(portal)) >= commands, timeout=600, interval=0.05)
        transfers_done = time.monotonic() - started
        await tg.wait_for(
            lambda: sum(len(tg.messages_to(c)) for c in chats) >= commands,
            timeout=600,
            interval=0.1,
        )
        replies_done = time.monotonic() - started
        await stack.settle()
        replies = [m.plain_text for c in chats for m in tg.messages_to(c)]
        limit_words = ("QUERY_LIMIT_EXCEEDED", "The portal is busy")
        counts = Counter(_applied(portal))
        return {
            "completion_s": transfers_done,
            "replies_s": replies_done,
            "replies": len(replies),
            "user_visible_limit_errors": sum(any(w in r for w in limit_words) for r in replies),
            "duplicate_calls": sum(1 for n in counts.values() if n > 1),
            "moved": sum(
                1 for n in range(commands) if portal.dialogs[FIRST_DIALOG + n].owner == _stack.ANNA
            ),
            "requests": sum(1 for c in portal.calls if not c.in_batch),
            "rejected_by_limit": portal.rejected_by_limit,
            "telegram_429": tg.flood_refusals,
        }


async def _ours(commands: int) -> float:
    portal = _stack.make_portal(
        _stack.guest_dialogs(FIRST_DIALOG, commands), leak_per_s=BUCKET_Y, burst=BUCKET_X
    )
    async with portal:
        settings = Bitrix24Settings(
            webhook_url=portal.url, rate_per_s=BUCKET_Y, burst=BUCKET_X, deadline_s=120
        )
        anna = Target(Kind.OPERATOR, _stack.ANNA, "Anna")
        async with BitrixClient(settings) as client:
            started = time.monotonic()
            await asyncio.gather(
                *(client.transfer(FIRST_DIALOG + n, anna) for n in range(commands))
            )
            elapsed = time.monotonic() - started
        assert len(set(_applied(portal))) == commands
    return elapsed


async def _fast_bitrix24(commands: int) -> float | None:
    try:
        from fast_bitrix24 import BitrixAsync
    except ImportError:
        return None
    portal = _stack.make_portal(
        _stack.guest_dialogs(FIRST_DIALOG, commands), leak_per_s=BUCKET_Y, burst=BUCKET_X
    )
    async with portal:
        bx = BitrixAsync(
            portal.url,
            verbose=False,
            requests_per_second=BUCKET_Y,
            request_pool_size=BUCKET_X,
            ssl=False,
        )
        items = [{"CHAT_ID": FIRST_DIALOG + n, "USER_ID": _stack.ANNA} for n in range(commands)]
        started = time.monotonic()
        await bx.call(TRANSFER, items)
        elapsed = time.monotonic() - started
        assert len(set(_applied(portal))) == commands
    return elapsed


async def run(quick: bool = False) -> dict[str, Any]:
    """Run the burst; returns the ``burst`` figures."""
    commands, supervisors = (200, 20) if quick else (1000, 50)
    floor = (commands - BUCKET_X) / BUCKET_Y
    batched = await _bot_run(commands, supervisors, batched=True)
    unbatched = await _bot_run(commands, supervisors, batched=False)
    ours = await _ours(commands)
    theirs = await _fast_bitrix24(commands)
    result: dict[str, Any] = {
        "commands": commands,
        "supervisors": supervisors,
        "bucket": {"X": BUCKET_X, "Y_per_s": BUCKET_Y},
        "floor_s": floor,
        "completion_s": batched["completion_s"],
        "completion_vs_floor": batched["completion_s"] / floor,
        "unbatched_completion_s": unbatched["completion_s"],
        "batch_gain": _stack.ratio(unbatched["completion_s"], batched["completion_s"]),
        "user_visible_limit_errors": batched["user_visible_limit_errors"]
        + unbatched["user_visible_limit_errors"],
        "duplicate_calls": batched["duplicate_calls"] + unbatched["duplicate_calls"],
        "replies_s": batched["replies_s"],
        "batched": batched,
        "unbatched": unbatched,
        "client_1000_transfers_s": ours,
        "fast_bitrix24_s": theirs,
        "vs_fast_bitrix24": _stack.ratio(ours, theirs) if theirs else None,
    }
    print(
        f"burst: {commands} commands from {supervisors} supervisors within 1 s, "
        f"bucket X={BUCKET_X} Y={BUCKET_Y:g}/s (floor {_stack.fmt(floor)} s)"
    )
    for name, figures in (("batched", batched), ("one call per request", unbatched)):
        print(
            f"  {name:>21}: transfers done in {_stack.fmt(figures['completion_s'])} s, replies in "
            f"{_stack.fmt(figures['replies_s'])} s, {figures['requests']} requests, "
            f"{figures['rejected_by_limit']} refused by the bucket, "
            f"{figures['telegram_429']} Telegram 429s, {figures['moved']} moved"
        )
    print(
        f"  completion / floor: {_stack.fmt(result['completion_vs_floor'])}; batching is "
        f"{_stack.fmt(result['batch_gain'])}x faster than one call per request"
    )
    print(
        f"  {commands} transfers through the client: ours {_stack.fmt(ours)} s, fast_bitrix24 "
        f"{_stack.fmt(theirs) if theirs else 'not installed'} s"
        + (f" (ours/theirs {_stack.fmt(result['vs_fast_bitrix24'])})" if theirs else "")
    )
    print(
        f"burst summary: completion_vs_floor={_stack.fmt(result['completion_vs_floor'])} "
        f"user_visible_limit_errors={result['user_visible_limit_errors']} "
        f"duplicate_calls={result['duplicate_calls']} vs_fast_bitrix24="
        f"{_stack.fmt(result['vs_fast_bitrix24']) if theirs else 'n/a'}"
    )
    return result


if __name__ == "__main__":
    _stack.cli(run, KEY, __doc__ or KEY, "200 commands instead of 1,000")
