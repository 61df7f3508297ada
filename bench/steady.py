"""Steady load: 5 transfer commands a second for 60 s under Bitrix24's real bucket (X = 50,
drained at 2 requests a second), for four bots at once, each with its own portal simulator and
its own fake Bot API (Telegram's limits on):

- ``ours``: the product, file-backed SQLite in a temporary folder;
- ``bare``: aiogram + one aiohttp POST of ``imopenlines.operator.transfer`` per command, no
  limiter; a refusal is shown as the portal's error;
- ``limiter``: the same behind ``aiolimiter.AsyncLimiter(50, 25)`` (the bucket's own shape),
  retrying ``QUERY_LIMIT_EXCEEDED`` up to 5 times with 1, 2, 4, 8, 16 s back-off;
- ``fast_bitrix24``: one ``BitrixAsync(webhook)`` for the bot (its defaults: 2 requests a
  second, a pool of 50) and ``await bx.call(method, params)`` per command, as its README shows.

Then ours alone at 20 commands a second for 30 s. Latency is from the command's injection to
the first reply naming its dialog; after the last command each bot gets ``GRACE_S`` to answer,
and a command still unanswered then counts with the time so far (a lower bound) and in
``unanswered``. ``claimed_not_done``: replies with ✅ for a dialog the portal did not move.

    python bench/steady.py [--quick]
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from aiogram import Dispatcher, Router
from aiogram.exceptions import TelegramNetworkError
from aiogram.filters import Command, CommandObject
from aiogram.types import Message
from aiolimiter import AsyncLimiter

from bot.sandbox.portal import PortalSimulator
from bot.sandbox.telegram import FakeTelegram, SentMessage, TelegramLimits

try:
    from bench import _stack
except ModuleNotFoundError:  # run as a script: python bench/steady.py
    import _stack  # type: ignore[no-redef]

KEY = "steady"
BUCKET_X, BUCKET_Y = 50, 2.0
TRANSFER = "imopenlines.operator.transfer"
FIRST_DIALOG = 300_001
SUPERVISORS = 50
FIRST_SUPERVISOR = 7_300_001
GRACE_S = 30.0
LIMIT_WORDS = ("QUERY_LIMIT_EXCEEDED", "The portal is busy", "портал перегружен")
_DIALOG = re.compile(r"\b(3\d{5})\b")

Transfer = Callable[[int], Awaitable[str]]  # dialog -> reply text


@dataclass
class Load:
    """What one bot was sent and what it answered."""

    name: str
    sent: dict[int, float] = field(default_factory=dict)  # dialog -> injected at
    answered: dict[int, tuple[float, str]] = field(default_factory=dict)

    def seen(self, message: SentMessage) -> None:
        """FakeTelegram ``on_message``: the first reply naming a dialog answers it."""
        if message.method != "sendMessage":
            return
        now = time.perf_counter()
        for number in _DIALOG.findall(message.plain_text):
            dialog = int(number)
            if dialog in self.sent and dialog not in self.answered:
                self.answered[dialog] = (now, message.plain_text)


def _portal(commands: int) -> PortalSimulator:
    return _stack.make_portal(
        _stack.guest_dialogs(FIRST_DIALOG, commands), leak_per_s=BUCKET_Y, burst=BUCKET_X
    )


def _supervisor(n: int) -> int:
    return FIRST_SUPERVISOR + n % SUPERVISORS


# --------------------------------------------------------------------------------------------
# The comparison bots: one handler each, replying with the dialog number
# --------------------------------------------------------------------------------------------


def comparison_dispatcher(transfer: Transfer, closing: asyncio.Event) -> Dispatcher:
    """``/transfer <dialog> @anna`` → ``transfer(dialog)``, its text as the reply. Commands
    still waiting when the measurement ends (``closing``) end quietly."""
    router = Router(name="comparison")

    @router.message(Command("transfer"))
    async def on_transfer(message: Message, command: CommandObject) -> None:
        dialog = int((command.args or "0").split()[0])
        try:
            await message.answer(await transfer(dialog))
        except (RuntimeError, aiohttp.ClientError, TelegramNetworkError):
            if not closing.is_set():
                raise

    dispatcher = Dispatcher()
    dispatcher.include_router(router)
    return dispatcher


def _verdict(dialog: int, body: Any) -> str:
    if isinstance(body, dict) and body.get("error"):
        return f"❌ {dialog}: {body['error']}"
    return f"✅ {dialog} moved to Anna"


def bare_transfer(http: aiohttp.ClientSession, url: str) -> Transfer:
    """One POST per command, no limiter."""

    async def transfer(dialog: int) -> str:
        params = {"CHAT_ID": dialog, "USER_ID": _stack.ANNA}
        async with http.post(f"{url}{TRANSFER}.json", json=params) as response:
            return _verdict(dialog, await response.json(content_type=None))

    return transfer


def limiter_transfer(http: aiohttp.ClientSession, url: str) -> Transfer:
    """The same behind aiolimiter, retrying the portal's limit error with back-off."""
    limiter = AsyncLimiter(BUCKET_X, BUCKET_X / BUCKET_Y)
    bare = bare_transfer(http, url)

    async def transfer(dialog: int) -> str:
        for attempt in range(6):
            async with limiter:
                text = await bare(dialog)
            if "QUERY_LIMIT_EXCEEDED" not in text or attempt == 5:
                return text
            await asyncio.sleep(2**attempt)
        return text

    return transfer


def fast_bitrix24_transfer(url: str) -> Transfer:
    """fast_bitrix24 as its README shows: one client, ``await bx.call(method, params)``."""
    from fast_bitrix24 import BitrixAsync

    bx = BitrixAsync(url, verbose=False)

    async def transfer(dialog: int) -> str:
        try:
            await bx.call(TRANSFER, {"CHAT_ID": dialog, "USER_ID": _stack.ANNA})
        except Exception as err:  # what it raises is shown, as a bot would
            return f"❌ {dialog}: {err}"
        return f"✅ {dialog} moved to Anna"

    return transfer


@asynccontextmanager
async def comparison_bot(name: str, portal: PortalSimulator) -> AsyncIterator[FakeTelegram]:
    """A comparison bot polling a FakeTelegram of its own; yields the fake."""
    async with (
        FakeTelegram(_stack.TOKEN, bot_username=f"{name}_bench_bot", limits=TelegramLimits()) as tg,
        aiohttp.ClientSession() as http,
    ):
        if name == "bare":
            transfer = bare_transfer(http, portal.url)
        elif name == "limiter":
            transfer = limiter_transfer(http, portal.url)
        else:
            transfer = fast_bitrix24_transfer(portal.url)
        closing = asyncio.Event()
        dispatcher = comparison_dispatcher(transfer, closing)
        bot = tg.make_bot()
        task = asyncio.create_task(
            dispatcher.start_polling(bot, handle_signals=False, polling_timeout=1)
        )
        await tg.wait_for(lambda: bool(tg.calls_to("getUpdates")), timeout=15, interval=0.05)
        try:
            yield tg
        finally:
            closing.set()
            with contextlib.suppress(RuntimeError):
                await dispatcher.stop_polling()
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


@asynccontextmanager
async def our_bot(portal: PortalSimulator) -> AsyncIterator[FakeTelegram]:
    """The product under the real bucket, file-backed SQLite."""
    supervisors = [(_supervisor(i), f"S{i}") for i in range(SUPERVISORS)]
    yaml_text = _stack.config_yaml(supervisors=supervisors, announce_to=None)
    with tempfile.TemporaryDirectory(prefix="bench-steady-") as folder:
        env = {
            "RATE": str(BUCKET_Y),
            "BURST": str(BUCKET_X),
            "DEADLINE_S": "120",
            "TIMEOUT_S": "30",
            "STORAGE_PATH": str(Path(folder) / "handoff.sqlite3"),
        }
        async with _stack.running_stack(
            yaml_text, portal=portal, limits=TelegramLimits(), env=env, polling_timeout=1
        ) as stack:
            yield stack.telegram


# --------------------------------------------------------------------------------------------


async def _drive(
    load: Load, tg: FakeTelegram, portal: PortalSimulator, rate: float, seconds: float, grace: float
) -> dict[str, Any]:
    tg.on_message = load.seen
    commands = round(rate * seconds)
    loop = asyncio.get_running_loop()
    start = loop.time()
    for n in range(commands):
        await asyncio.sleep(max(0.0, start + n / rate - loop.time()))
        dialog = FIRST_DIALOG + n
        load.sent[dialog] = time.perf_counter()
        tg.send_message(f"/transfer {dialog} @anna", user_id=_supervisor(n))
    with contextlib.suppress(TimeoutError):
        await tg.wait_for(lambda: len(load.answered) >= commands, timeout=grace, interval=0.1)
    cutoff = time.perf_counter()
    latencies = [
        (load.answered[d][0] if d in load.answered else cutoff) - at for d, at in load.sent.items()
    ]
    texts = {d: text for d, (_, text) in load.answered.items()}
    moved = {d for d, sim in portal.dialogs.items() if sim.owner == _stack.ANNA}
    return {
        "p50_s": _stack.median(latencies),
        "p95_s": _stack.percentile(latencies, 95),
        "p99_s": _stack.percentile(latencies, 99),
        "limit_errors_shown": sum(any(w in t for w in LIMIT_WORDS) for t in texts.values()),
        "claimed_not_done": sum(
            1 for d, t in texts.items() if t.startswith("✅") and d not in moved
        ),
        "unanswered": commands - len(load.answered),
        "moved": len(moved & set(load.sent)),
        "commands": commands,
    }


async def _one_bot(name: str, rate: float, seconds: float, grace: float) -> dict[str, Any]:
    portal = _portal(round(rate * seconds))
    async with portal:
        bot = our_bot(portal) if name == "ours" else comparison_bot(name, portal)
        async with bot as tg:
            return await _drive(Load(name), tg, portal, rate, seconds, grace)


def _summary(results: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {
        key: _stack.spread([r[key] for r in results]) for key in ("p50_s", "p95_s", "p99_s")
    }
    for key in ("limit_errors_shown", "claimed_not_done", "unanswered", "moved"):
        out[key] = max(r[key] for r in results)
    out["commands"] = results[0]["commands"]
    return out


async def run(quick: bool = False, runs: int = 2) -> dict[str, Any]:
    """Run the steady loads; returns the ``steady`` figures."""
    started = time.perf_counter()
    runs = 1 if quick else runs
    seconds5, seconds20, grace = (6.0, 3.0, 5.0) if quick else (60.0, 30.0, GRACE_S)
    bots = ["ours", "bare", "limiter", "fast_bitrix24"]
    try:
        import fast_bitrix24  # noqa: F401
    except ImportError:
        bots.remove("fast_bitrix24")
    rate5: dict[str, list[dict[str, Any]]] = {name: [] for name in bots}
    rate20: list[dict[str, Any]] = []
    for _ in range(runs):
        together = await asyncio.gather(*(_one_bot(n, 5.0, seconds5, grace) for n in bots))
        for name, result in zip(bots, together, strict=True):
            rate5[name].append(result)
        rate20.append(await _one_bot("ours", 20.0, seconds20, grace))
    figures: dict[str, Any] = {
        "rate5": {name: _summary(results) for name, results in rate5.items()},
        "rate20": {"ours": _summary(rate20)},
        "runs": runs,
        "seconds": round(time.perf_counter() - started, 1),
    }
    fmt = _stack.fmt
    for label, by_bot in (("5/s", figures["rate5"]), ("20/s", figures["rate20"])):
        for name, f in by_bot.items():
            print(
                f"steady {label} {name:>13}: p50 {fmt(f['p50_s']['median'])} s, p99 "
                f"{fmt(f['p99_s']['median'])} s, limit errors shown {f['limit_errors_shown']}, "
                f"claimed not done {f['claimed_not_done']}, unanswered {f['unanswered']}, "
                f"moved {f['moved']}/{f['commands']}"
            )
    return figures


def main(argv: list[str] | None = None) -> None:
    """``python bench/steady.py [--quick] [--json]``."""
    _stack.cli(run, KEY, __doc__ or KEY, "a few seconds each, one run", argv)


if __name__ == "__main__":
    sys.exit(main())
