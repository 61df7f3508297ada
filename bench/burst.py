"""Burst: 2,000 transfer commands from 100 supervisors within about one second, against the
portal simulator enforcing Bitrix24's real leaky bucket (X = 50, drained at 2 requests a
second, no time scaling) and a fake Bot API enforcing Telegram's limits (30 messages a second
overall, one a second per chat after 3).

Figures (``burst.n2000`` and ``telegram``), each over several runs:

- ``vs_floor``: from the first command to the last dialog moved at the portal, over the
  floor with batching: ``⌈3N/50⌉`` requests, and in seconds what the bucket allows for that
  many, ``max(0, R − X − 1) / Y``. A command makes three calls: a look first (a transfer to
  whoever holds the dialog already is not a no-op for the customer, and a finished dialog
  answers ``true`` and moves nothing), then the transfer and the look that verifies it; a
  ``batch`` carries 50 calls. For scale, the floor without batching is ``(3N − X − 1) / Y``.
- ``limit_errors_shown``: replies that showed a rate-limit error; ``duplicate_calls``:
  dialogs transferred more than once (counts, the most in any run).
- ``telegram.vs_floor``: until every reply was in, over Telegram's floor for these replies
  (the overall bucket and the busiest chat's); ``telegram.telegram_429``: refusals the bot
  provoked (the most in any run).

    python bench/burst.py [--quick]
"""

from __future__ import annotations

import asyncio
import math
import sys
import time
from collections import Counter
from typing import Any

try:
    from bench import _stack
except ModuleNotFoundError:  # run as a script: python bench/burst.py
    import _stack  # type: ignore[no-redef]
from bot.sandbox.portal import PortalSimulator
from bot.sandbox.telegram import TelegramLimits

KEY = "burst"
TRANSFER = "imopenlines.operator.transfer"
BUCKET_X, BUCKET_Y = 50, 2.0  # Bitrix24's own: a burst of 50, drained at 2 a second
BATCH = 50  # calls a batch carries
CALLS = 3  # a command's calls: a look, then the transfer and the look that verifies it
FIRST_DIALOG = 100_000
SUPERVISOR_BASE = 5_000_000
LIMIT_WORDS = ("QUERY_LIMIT_EXCEEDED", "The portal is busy", "портал перегружен", "Портал занят")


def batched_floor(commands: int) -> tuple[int, float]:
    """Requests and seconds the bucket allows at best with batching."""
    requests = math.ceil(CALLS * commands / BATCH)
    return requests, _stack.bucket_floor_s(requests, BUCKET_X, BUCKET_Y)


def unbatched_floor_s(commands: int) -> float:
    """Seconds at best with a request a call: ``(3N − X − 1) / Y``."""
    return _stack.bucket_floor_s(CALLS * commands, BUCKET_X, BUCKET_Y)


def telegram_floor_s(per_chat: list[int], limits: TelegramLimits) -> float:
    """The least time Telegram's limits allow for these replies (chat by chat counts)."""
    overall = max(0.0, sum(per_chat) - limits.per_second_overall) / limits.per_second_overall
    busiest = max(0.0, (max(per_chat) - limits.chat_burst) / limits.per_chat_per_second)
    return max(overall, busiest)


def _applied(portal: PortalSimulator) -> list[int]:
    return [
        int(call.params["CHAT_ID"])
        for call in portal.calls_to(TRANSFER)
        if call.applied and call.status == 200
    ]


async def one_run(commands: int, supervisors: int) -> dict[str, Any]:
    """One burst; what the portal and the fake Bot API saw."""
    portal = _stack.make_portal(
        _stack.guest_dialogs(FIRST_DIALOG, commands), leak_per_s=BUCKET_Y, burst=BUCKET_X
    )
    env = {"RATE": str(BUCKET_Y), "BURST": str(BUCKET_X), "DEADLINE_S": "120", "TIMEOUT_S": "30"}
    chats = [SUPERVISOR_BASE + i for i in range(supervisors)]
    yaml_text = _stack.config_yaml(supervisors=[(c, f"S{i}") for i, c in enumerate(chats)])
    limits = TelegramLimits()
    async with _stack.running_stack(
        yaml_text, portal=portal, limits=limits, env=env, polling_timeout=1
    ) as stack:
        tg = stack.telegram
        started = time.monotonic()
        for n in range(commands):  # all within about one second
            tg.send_message(f"/transfer {FIRST_DIALOG + n} @anna", user_id=chats[n % supervisors])
            if n % 50 == 49:
                await asyncio.sleep(1.0 / (commands / 50))
        await tg.wait_for(
            lambda: len(set(_applied(portal))) >= commands, timeout=600, interval=0.05
        )
        moved_s = time.monotonic() - started

        def replied() -> int:
            return sum(len(tg.messages_to(c)) for c in chats)

        await tg.wait_for(lambda: replied() >= commands, timeout=900, interval=0.1)
        replies_s = time.monotonic() - started
        await stack.settle()
        replies = [m.plain_text for c in chats for m in tg.messages_to(c)]
        per_chat = [len(tg.messages_to(c)) for c in chats]
        counts = Counter(_applied(portal))
        return {
            "moved_s": moved_s,
            "replies_s": replies_s,
            "telegram_floor_s": telegram_floor_s(per_chat, limits),
            "limit_errors_shown": sum(any(w in r for w in LIMIT_WORDS) for r in replies),
            "duplicate_calls": sum(1 for n in counts.values() if n > 1),
            "requests": sum(1 for c in portal.calls if not c.in_batch),
            "rejected_by_limit": portal.rejected_by_limit,
            "telegram_429": tg.flood_refusals,
        }


async def run(quick: bool = False, runs: int = 3) -> dict[str, Any]:
    """Run the bursts; returns ``{"burst": …, "telegram": …}``."""
    started = time.perf_counter()
    commands, supervisors = (200, 100) if quick else (2000, 100)
    runs = 1 if quick else runs
    results = [await one_run(commands, supervisors) for _ in range(runs)]
    requests, floor_s = batched_floor(commands)
    burst: dict[str, Any] = {
        "commands": commands,
        "bucket": {"X": BUCKET_X, "Y_per_s": BUCKET_Y},
        "floor_requests": requests,
        "floor_s": floor_s,
        "unbatched_floor_s": unbatched_floor_s(commands),
        # below the first refused request the floor is 0 s: no ratio to give (quick runs)
        "vs_floor": _stack.spread([r["moved_s"] / floor_s for r in results])
        if floor_s > 0
        else None,
        "moved_s": _stack.spread([r["moved_s"] for r in results]),
        "requests": _stack.spread([r["requests"] for r in results]),
        "requests_vs_floor": _stack.spread([r["requests"] / requests for r in results]),
        "limit_errors_shown": max(r["limit_errors_shown"] for r in results),
        "duplicate_calls": max(r["duplicate_calls"] for r in results),
        "rejected_by_limit": max(r["rejected_by_limit"] for r in results),
        "runs": runs,
    }
    telegram: dict[str, Any] = {
        "replies": commands,
        "supervisors": supervisors,
        "floor_s": round(results[0]["telegram_floor_s"], 2),
        "vs_floor": _stack.spread([r["replies_s"] / r["telegram_floor_s"] for r in results]),
        "replies_s": _stack.spread([r["replies_s"] for r in results]),
        "telegram_429": max(r["telegram_429"] for r in results),
        "runs": runs,
    }
    seconds = round(time.perf_counter() - started, 1)
    fmt = _stack.fmt
    vs = burst["vs_floor"]
    print(
        f"burst: {commands} commands, bucket X={BUCKET_X} Y={BUCKET_Y:g}/s; floor {requests} "
        f"requests, {fmt(floor_s)} s (unbatched {fmt(burst['unbatched_floor_s'])} s); moved in "
        f"{fmt(burst['moved_s']['median'])} s = "
        f"{fmt(vs['median']) if vs else 'n/a'}x the floor, "
        f"{fmt(burst['requests']['median'], 0)} requests; limit errors shown "
        f"{burst['limit_errors_shown']}, duplicates {burst['duplicate_calls']}"
    )
    print(
        f"telegram: {commands} replies in {fmt(telegram['replies_s']['median'])} s, floor "
        f"{fmt(telegram['floor_s'])} s = {fmt(telegram['vs_floor']['median'])}x; "
        f"429s {telegram['telegram_429']} [{seconds} s]"
    )
    return {"n2000": burst, "telegram": telegram}


def main(argv: list[str] | None = None) -> None:
    """``python bench/burst.py [--quick] [--json]``."""
    _stack.cli(run, KEY, __doc__ or KEY, "200 commands, one run", argv)


if __name__ == "__main__":
    sys.exit(main())
