"""Scale: big directories — config parse, "did you mean", a /reload's stall, memory.

* ``n10000.parse_s``, ``n100000.parse_s``: ``parse_config`` of generated YAML text.
* ``n100000.didyoumean_ms``: ``Directory.resolve`` of an unknown name (a typo, one letter
  wrong), which computes the "did you mean" suggestions; the median per call after a first miss
  (which may build an index: ``didyoumean_first_ms``). Beside it, not timed: of 60 such typos,
  how many were offered the name meant (``didyoumean_offered``); and timed, typos two letters
  wrong, one in each half of the name, which no name is one slip from
  (``didyoumean_two_slips_ms``, and ``didyoumean_two_slips_offered`` of 60).
* ``n10000.reload_stall_ms``: the running bot, started from a config file of 10k operators,
  reloads it (``App.reload``, what /reload and SIGHUP do) while a ticker task on the event
  loop notes how late each 1 ms sleep wakes up: the longest lateness.
* ``rss_ratio_10k``: peak RSS (VmHWM, read from /proc by the parent) of the bot as its own
  process (``python -m bot --config …``, 10k operators, after a few commands) over that of a
  minimal aiogram bot with handlers (``/transfer`` doing one aiohttp POST and replying) as its
  own process; the fakes run in the parent, and all these processes run side by side (each
  with fakes of its own). Also at 2 operators.

    python bench/scale.py [--quick]
"""

from __future__ import annotations

import asyncio
import os
import random
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

KEY = "scale"
OPERATORS = 10_000
QUEUES = 50
FIRST_BITRIX_ID = 100_000
CHILD_TIMEOUT_S = 120.0
MISSES = 16  # did-you-mean look-ups timed a run, of each kind
SUPERVISOR_IDS = tuple(range(7_100_001, 7_100_007))
SCRIPT = Path(__file__).resolve()
ROOT = SCRIPT.parent.parent

_FIRST = ("ka", "lo", "mi", "ra", "ne", "ti", "vo", "sa", "de", "ru")
_LAST = ("bor", "vin", "kel", "mas", "tun", "gor", "pel", "dar", "sol", "nik")


@dataclass
class Roster:
    """A generated directory: YAML list items and the names to look up."""

    operators_yaml: str
    queues_yaml: str
    known: list[str] = field(default_factory=list)
    unknown: list[str] = field(default_factory=list)
    keys: list[str] = field(default_factory=list)
    meant: dict[str, str] = field(default_factory=dict)  # a typo -> the key it misspells
    two_slips: list[str] = field(default_factory=list)  # typos two letters wrong


def _name(i: int) -> tuple[str, str]:
    """A unique first/last name pair for operator ``i`` (< 10,000: 100 x 100)."""
    first = (_FIRST[i % 10] + _FIRST[(i // 10) % 10]).capitalize()
    last = (_LAST[(i // 100) % 10] + _LAST[(i // 1000) % 10] + "ova").capitalize()
    if i >= 10_000:
        last += str(i // 10_000)
    return first, last


def generate(operators: int = OPERATORS, queues: int = QUEUES, seed: int = 7) -> Roster:
    """Operators with keys ``first_last``; every 4th has an alias, every 3rd a Telegram
    username; ``queues`` lines with one alias each. Names are unique as config requires."""
    rng = random.Random(seed)
    op_lines: list[str] = []
    keys: list[str] = []
    spellings: list[str] = []
    for i in range(operators):
        first, last = _name(i)
        key = f"{first}_{last}".lower()
        keys.append(key)
        item = f"  - {{key: {key}, bitrix_id: {FIRST_BITRIX_ID + i}, name: {first} {last}"
        spellings += [key, f"@{key}", key.upper(), f"user:{FIRST_BITRIX_ID + i}"]
        if i % 4 == 0:
            alias = f"{first.lower()}{i}"
            item += f", aliases: [{alias}]"
            spellings += [alias, f"@{alias}"]
        if i % 3 == 0:
            username = f"{first}_{last}_tg"
            item += f", telegram: {username}"
            spellings += [username.lower(), f"@{username}"]
        op_lines.append(item + "}\n")
    q_lines: list[str] = []
    for j in range(1, queues + 1):
        q_lines.append(
            f"  - {{key: line{j:03d}, bitrix_id: {10 + j}, name: Line {j}, aliases: [l{j}x]}}\n"
        )
        spellings += [f"#line{j:03d}", f"queue:{10 + j}", f"l{j}x"]
    known = [rng.choice(spellings) for _ in range(2_000)]
    unknown: list[str] = []
    meant: dict[str, str] = {}
    # a "q" for a letter other than "k" (which it is spelt as in names): a typo, not a hit
    for key in rng.sample(keys, min(len(keys), 60)):
        at = rng.choice([at for at in range(2, len(key) - 1) if key[at] != "k"])
        typo = key[:at] + "q" + key[at + 1 :]  # one letter wrong: "did you mean" finds it
        unknown.append(typo if len(unknown) % 2 else f"@{typo}")
        meant[unknown[-1]] = key
    two_slips: list[str] = []
    for key in rng.sample(keys, min(len(keys), 60)):
        half = len(key) // 2
        wrong = [
            rng.choice([at for at in span if key[at] != "k"])
            for span in (range(1, half), range(half + 1, len(key)))
        ]
        typo = "".join("q" if at in wrong else c for at, c in enumerate(key))
        two_slips.append(f"@{typo}")
        meant[two_slips[-1]] = key
    unknown += ["zzqvx", "@nobody_here", "#noline", "qwertyuiop"]
    rng.shuffle(unknown)
    return Roster("".join(op_lines), "".join(q_lines), known, unknown, keys, meant, two_slips)


# --------------------------------------------------------------------------------------------
# In process: parse, did-you-mean
# --------------------------------------------------------------------------------------------


def _yaml(roster: Roster) -> str:
    stack = _lib()
    return str(
        stack.config_yaml(
            supervisors=[(i, f"S{i}") for i in SUPERVISOR_IDS],
            announce_to=stack.TEAM_CHAT,
            operators=roster.operators_yaml,
            queues=roster.queues_yaml,
        )
    )


_ENV = {
    "BITRIX24_WEBHOOK_URL": "http://127.0.0.1:9/rest/1/code/",
    "TELEGRAM_BOT_TOKEN": "4242:bench-token-for-the-fake-bot-api",
}


def parse_seconds(yaml_text: str) -> tuple[float, Any]:
    """One ``parse_config`` of ``yaml_text``: (seconds, the config)."""
    from bot.config import parse_config

    started = time.perf_counter()
    config = parse_config(yaml_text, _ENV, source="scale config")
    return time.perf_counter() - started, config


def didyoumean(config: Any, roster: Roster) -> dict[str, float]:
    """In a fresh directory of ``config``: the first miss (ms), the median ms per miss after it,
    that of misses two letters wrong, and how many of the roster's typos, one and two letters
    wrong, were offered the name meant."""
    from bot.directory import Directory, UnknownName

    directory = Directory.from_config(config)

    def miss(name: str) -> tuple[float, bool]:
        started = time.perf_counter()
        try:
            directory.resolve(name)
        except UnknownName as error:
            offered = [target.key for target in error.candidates]
        else:
            offered = []
        return (time.perf_counter() - started) * 1000, roster.meant.get(name) in offered

    def offered(names: list[str]) -> float:
        return sum(miss(name)[1] for name in names)

    median = _lib().median
    return {
        "first": miss(roster.unknown[0])[0],
        "one": median([miss(name)[0] for name in roster.unknown[1:MISSES]]),
        "two": median([miss(name)[0] for name in roster.two_slips[:MISSES]]),
        "one_offered": offered([name for name in roster.unknown if name in roster.meant]),
        "two_offered": offered(roster.two_slips),
    }


# --------------------------------------------------------------------------------------------
# /reload at 10k: the event loop's longest stall
# --------------------------------------------------------------------------------------------


async def reload_stall_ms(yaml_text: str) -> float:
    """The longest lateness of a 1 ms ticker while the running bot reloads its config."""
    stack = _lib()
    from bot.app import build_app, build_bot
    from bot.config import load_config
    from bot.sandbox.telegram import FakeTelegram

    portal = stack.make_portal()
    with tempfile.TemporaryDirectory(prefix="bench-reload-") as folder:
        path = Path(folder) / "config.yaml"
        path.write_text(yaml_text, encoding="utf-8")
        async with portal, FakeTelegram(stack.TOKEN, bot_username="reload_bench_bot") as tg:
            env = {
                "BITRIX24_WEBHOOK_URL": portal.url,
                "TELEGRAM_BOT_TOKEN": stack.TOKEN,
                "TELEGRAM_API_URL": tg.base_url,
                "STORAGE_PATH": str(Path(folder) / "handoff.sqlite3"),
            }
            config = load_config(path, env)
            app = build_app(config, path=path, env=env)
            try:
                async with stack.polling(app.dispatcher, build_bot(config), tg, app=app):
                    worst = 0.0
                    done = asyncio.Event()

                    async def ticker() -> None:
                        nonlocal worst
                        loop = asyncio.get_running_loop()
                        while not done.is_set():
                            before = loop.time()
                            await asyncio.sleep(0.001)
                            worst = max(worst, loop.time() - before - 0.001)

                    task = asyncio.create_task(ticker())
                    await asyncio.sleep(0.05)
                    worst = 0.0
                    await app.reload()
                    await asyncio.sleep(0.05)
                    done.set()
                    await task
            finally:
                await app.close()
    return worst * 1000


# --------------------------------------------------------------------------------------------
# Memory: the bot as its own process against a minimal bot with handlers
# --------------------------------------------------------------------------------------------

MINIMAL_BOT = """
import asyncio, sys
import aiohttp
from aiogram import Bot, Dispatcher, Router
from aiogram.client.session.aiohttp import AiohttpSession
from aiogram.client.telegram import TelegramAPIServer
from aiogram.filters import Command, CommandObject
from aiogram.types import Message

api_url, token, portal_url = sys.argv[1:4]
router = Router()

@router.message(Command("start"))
async def start(message: Message) -> None:
    await message.answer("Hi")

@router.message(Command("transfer"))
async def transfer(message: Message, command: CommandObject, http: aiohttp.ClientSession) -> None:
    dialog, who = (command.args or "0 @x").split()[:2]
    params = {"CHAT_ID": int(dialog), "USER_ID": 15}
    async with http.post(portal_url + "imopenlines.operator.transfer.json", json=params) as r:
        await r.json(content_type=None)
    await message.answer(f"Moved {dialog} to {who}")

async def main() -> None:
    session = AiohttpSession(api=TelegramAPIServer.from_base(api_url))
    bot = Bot(token, session=session)
    dispatcher = Dispatcher()
    dispatcher.include_router(router)
    async with aiohttp.ClientSession() as http:
        await dispatcher.start_polling(bot, polling_timeout=1, http=http)

asyncio.run(main())
"""


def _vm_hwm_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM")


async def peak_rss_mib(kind: str, operators: int) -> float:
    """Peak RSS of ``kind`` ("ours" or "minimal") as its own process, after a few commands."""
    stack = _lib()
    from bot.sandbox.portal import SimOperator
    from bot.sandbox.telegram import FakeTelegram

    roster = generate(operators)
    yaml_text = _yaml(roster)
    keys = [roster.keys[i] for i in (0, operators // 2, operators - 1)]
    portal = stack.make_portal(
        stack.guest_dialogs(200_001, len(keys)),
        operators=[SimOperator(stack.IRINA, "Irina Volkova")]
        + [SimOperator(FIRST_BITRIX_ID + i, f"Operator {i}") for i in range(min(operators, 3))],
    )
    with tempfile.TemporaryDirectory(prefix="bench-rss-") as folder:
        async with portal, FakeTelegram(stack.TOKEN, bot_username="rss_bench_bot") as tg:
            api_url = tg.base_url
            if kind == "ours":
                path = Path(folder) / "config.yaml"
                path.write_text(yaml_text, encoding="utf-8")
                env = {
                    **os.environ,
                    "BITRIX24_WEBHOOK_URL": portal.url,
                    "TELEGRAM_BOT_TOKEN": stack.TOKEN,
                    "TELEGRAM_API_URL": api_url,
                    "STORAGE_PATH": str(Path(folder) / "handoff.sqlite3"),
                }
                args = ["-m", "bot", "--config", str(path), "--log-level", "WARNING"]
            else:
                env = dict(os.environ)
                args = ["-c", MINIMAL_BOT, api_url, stack.TOKEN, portal.url]
            process = await asyncio.create_subprocess_exec(
                sys.executable,
                *args,
                env=env,
                cwd=str(ROOT),
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.DEVNULL,
            )
            try:
                await tg.wait_for(
                    lambda: bool(tg.calls_to("getUpdates")), timeout=CHILD_TIMEOUT_S, interval=0.1
                )
                user = SUPERVISOR_IDS[0]
                for n, key in enumerate(keys):
                    tg.send_message(f"/transfer {200_001 + n} @{key}", user_id=user)
                await tg.wait_for(
                    lambda: len(tg.messages_to(user)) >= len(keys), timeout=60, interval=0.1
                )
                await asyncio.sleep(1.0)
                return _vm_hwm_mib(process.pid)
            finally:
                process.terminate()
                try:
                    await asyncio.wait_for(process.wait(), 40)
                except TimeoutError:
                    process.kill()
                    await process.wait()


# --------------------------------------------------------------------------------------------


async def run(quick: bool = False, runs: int = 5) -> dict[str, Any]:
    """Measure; returns the ``scale`` figures."""
    stack = _lib()
    started = time.perf_counter()
    runs = 1 if quick else runs
    small, big = (1_000, 3_000) if quick else (10_000, 100_000)
    rosters = {small: generate(small), big: generate(big)}
    texts = {n: _yaml(r) for n, r in rosters.items()}
    parse: dict[int, list[float]] = {}
    for n in (small, big):
        timed = [parse_seconds(texts[n]) for _ in range(runs)]
        parse[n] = [seconds for seconds, _ in timed]
    big_config = timed[-1][1]  # the last parse's: no extra parse of 100k
    del timed
    misses = [didyoumean(big_config, rosters[big]) for _ in range(runs)]
    del big_config
    stalls = [await reload_stall_ms(texts[small]) for _ in range(runs)]
    del rosters, texts
    # every process side by side, each with fakes of its own: a peak RSS does not depend on
    # the CPU share, and starting Python one process after another took minutes
    kinds = (("minimal", 2), ("ours", 2), ("ours", small))
    measured = await asyncio.gather(
        *(peak_rss_mib(kind, operators) for kind, operators in kinds for _ in range(runs))
    )
    rss = {
        f"{kind}_{operators}": list(measured[i * runs : (i + 1) * runs])
        for i, (kind, operators) in enumerate(kinds)
    }
    ratios = [o / m for o, m in zip(rss[f"ours_{small}"], rss["minimal_2"], strict=True)]
    ratios_2 = [o / m for o, m in zip(rss["ours_2"], rss["minimal_2"], strict=True)]
    figures: dict[str, Any] = {
        "n10000": {
            "operators": small,
            "parse_s": stack.spread(parse[small]),
            "reload_stall_ms": stack.spread(stalls, 1),
            "peak_rss_mib": stack.spread(rss[f"ours_{small}"], 1),
        },
        "n100000": {
            "operators": big,
            "parse_s": stack.spread(parse[big]),
            "didyoumean_ms": stack.spread([m["one"] for m in misses]),
            "didyoumean_first_ms": stack.spread([m["first"] for m in misses], 1),
            "didyoumean_offered": misses[0]["one_offered"],
            "didyoumean_two_slips_ms": stack.spread([m["two"] for m in misses]),
            "didyoumean_two_slips_offered": misses[0]["two_offered"],
        },
        "rss_ratio_10k": stack.spread(ratios),
        "rss_ratio_2": stack.spread(ratios_2),
        "minimal_peak_rss_mib": stack.spread(rss["minimal_2"], 1),
        "ours_2_peak_rss_mib": stack.spread(rss["ours_2"], 1),
        "runs": runs,
        "seconds": round(time.perf_counter() - started, 1),
    }
    fmt = stack.fmt
    print(
        f"scale: parse {small} {fmt(figures['n10000']['parse_s']['median'], 3)} s, {big} "
        f"{fmt(figures['n100000']['parse_s']['median'], 3)} s; did-you-mean at {big} "
        f"{fmt(figures['n100000']['didyoumean_ms']['median'], 3)} ms; reload stall at {small} "
        f"{fmt(figures['n10000']['reload_stall_ms']['median'], 1)} ms"
    )
    print(
        f"scale: peak RSS ours {fmt(figures['n10000']['peak_rss_mib']['median'], 1)} MiB at "
        f"{small}, {fmt(figures['ours_2_peak_rss_mib']['median'], 1)} MiB at 2; minimal bot "
        f"{fmt(figures['minimal_peak_rss_mib']['median'], 1)} MiB; ratio "
        f"{fmt(figures['rss_ratio_10k']['median'])} [{figures['seconds']} s]"
    )
    return figures


def _lib() -> Any:
    """bench/_stack.py, imported on first use."""
    try:
        from bench import _stack
    except ModuleNotFoundError:  # run as a script: python bench/scale.py
        import _stack  # type: ignore[no-redef]
    return _stack


def main(argv: list[str] | None = None) -> None:
    """``python bench/scale.py [--quick] [--json]``."""
    _lib().cli(run, KEY, __doc__ or KEY, "1k/3k operators, one run", argv)


if __name__ == "__main__":
    sys.exit(main())
