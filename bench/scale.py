"""Scale: a 10,000-operator directory — config load time, name resolution, peak memory.

* ``load_s``: ``parse_config`` of the generated YAML text (best of 3).
* ``resolve_us``: ``Directory.resolve`` per call over a mix of known names (keys, aliases,
  Telegram usernames with and without ``@``, upper case, ``#queue``, ``user:ID``,
  ``queue:ID``); the median of batches.
* ``suggest_us``: ``resolve`` of unknown names (typos and gibberish), which computes the
  "did you mean" suggestions; median per call, after a first miss that builds the spelling
  index (``suggest_first_ms``, reported apart).
* Peak RSS (VmHWM) of two child processes, each polling a FakeTelegram of its own for the same
  time: our bot with the 10k config (and a portal simulator) after handling a few commands,
  and an idle aiogram bot (a ``Dispatcher`` with no routers).

    python bench/scale.py [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

KEY = "scale"
OPERATORS = 10_000
QUEUES = 50
FIRST_BITRIX_ID = 100_000
CHILD_TIMEOUT_S = 120.0
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
    for key in rng.sample(keys, min(len(keys), 60)):
        at = rng.randrange(2, len(key) - 1)
        typo = key[:at] + "q" + key[at + 1 :]  # one letter wrong: "did you mean" finds it
        unknown.append(typo if len(unknown) % 2 else f"@{typo}")
    unknown += ["zzqvx", "@nobody_here", "#noline", "qwertyuiop"]
    rng.shuffle(unknown)
    return Roster("".join(op_lines), "".join(q_lines), known, unknown, keys)


# --------------------------------------------------------------------------------------------
# In process: load and resolve
# --------------------------------------------------------------------------------------------


def measure_in_process(operators: int, *, repeats: int, batches: int) -> dict[str, Any]:
    """Load, resolve and suggest timings, in this process."""
    from bot.directory import Directory, Kind, ResolveError, UnknownName
    from bot.messages import Messages
    from bot.replies import Replies, split_message

    stack = _lib()
    roster = generate(operators)
    yaml_text = stack.config_yaml(
        supervisors=[(i, f"S{i}") for i in SUPERVISOR_IDS],
        announce_to=stack.TEAM_CHAT,
        operators=roster.operators_yaml,
        queues=roster.queues_yaml,
    )
    env = {
        "BITRIX24_WEBHOOK_URL": "http://127.0.0.1:9/rest/1/code/",
        "TELEGRAM_BOT_TOKEN": stack.TOKEN,
    }
    from bot.config import parse_config

    loads = []
    config = None
    for _ in range(repeats):
        started = time.perf_counter()
        config = parse_config(yaml_text, env, source="scale config")
        loads.append(time.perf_counter() - started)
    assert config is not None and len(config.operators) == operators

    started = time.perf_counter()
    directory = Directory.from_config(config)
    directory_ms = (time.perf_counter() - started) * 1000

    for name in roster.known[:50]:  # each must resolve: the mix is of known names only
        directory.resolve(name)
    per_call = []
    for _ in range(batches):
        started = time.perf_counter()
        for name in roster.known:
            directory.resolve(name)
        per_call.append((time.perf_counter() - started) / len(roster.known) * 1e6)

    def miss(name: str) -> int:
        """How many suggestions ``resolve`` made for ``name`` (-1: it was not a miss)."""
        try:
            directory.resolve(name)
        except UnknownName as err:
            return len(err.candidates)
        except ResolveError:
            return -1
        return -1

    started = time.perf_counter()
    miss(roster.unknown[0])  # builds the spelling index
    suggest_first_ms = (time.perf_counter() - started) * 1000
    unknown = roster.unknown[1 : 1 + (15 if repeats == 1 else 60)]
    suggest = []
    misses = found = 0
    for name in unknown:
        started = time.perf_counter()
        candidates = miss(name)
        suggest.append((time.perf_counter() - started) * 1e6)
        misses += candidates >= 0
        found += candidates > 0

    replies = Replies(Messages(config.messages, config.admin_contact), directory)
    started = time.perf_counter()
    listing = split_message(replies.listing(Kind.OPERATOR, "en"))
    listing_ms = (time.perf_counter() - started) * 1000

    return {
        "load_s": round(min(loads), 3),
        "load_runs_s": [round(x, 3) for x in loads],
        "directory_build_ms": round(directory_ms, 1),
        "resolve_us": round(statistics.median(per_call), 2),
        "resolve_names": len(roster.known),
        "resolve_batches": batches,
        "suggest_us": round(statistics.median(suggest), 1),
        "suggest_p90_us": round(stack.percentile(suggest, 90), 1),
        "suggest_first_ms": round(suggest_first_ms, 1),
        "suggest_calls": len(suggest),
        "suggest_with_candidates": found,
        "suggest_misses": misses,
        "operators_listing_messages": len(listing),
        "operators_listing_ms": round(listing_ms, 1),
        "config_kib": round(len(yaml_text.encode()) / 1024, 1),
    }


# --------------------------------------------------------------------------------------------
# Child processes: peak RSS
# --------------------------------------------------------------------------------------------

IDLE_CHILD = """
import asyncio, json, sys
from aiogram import Dispatcher
from bot.sandbox.telegram import FakeTelegram

def status(field):
    with open("/proc/self/status", encoding="ascii") as f:
        for line in f:
            if line.startswith(field + ":"):
                return round(int(line.split()[1]) / 1024, 1)
    return None

async def main(seconds):
    async with FakeTelegram() as fake:
        bot = fake.make_bot()
        dispatcher = Dispatcher()
        task = asyncio.create_task(
            dispatcher.start_polling(bot, handle_signals=False, polling_timeout=10)
        )
        await fake.wait_for(lambda: bool(fake.calls_to("getUpdates")), timeout=15)
        await asyncio.sleep(seconds)
        await dispatcher.stop_polling()
        await task
    print(json.dumps({"peak_rss_mib": status("VmHWM"), "rss_mib": status("VmRSS")}))

asyncio.run(main(float(sys.argv[1])))
"""


async def child_ours(operators: int, seconds: float) -> dict[str, Any]:
    """Our bot with the big config, a few commands, then polling for ``seconds``."""
    stack = _lib()
    from bot.sandbox.portal import SimOperator

    roster = generate(operators)
    yaml_text = stack.config_yaml(
        supervisors=[(i, f"S{i}") for i in SUPERVISOR_IDS],
        announce_to=stack.TEAM_CHAT,
        operators=roster.operators_yaml,
        queues=roster.queues_yaml,
    )
    targets = [0, 1, operators // 2, operators - 2, operators - 1]
    keys = [roster.keys[i] for i in targets]
    unknown = roster.unknown[0]
    del roster
    portal = stack.make_portal(
        stack.guest_dialogs(200_001, len(targets)),
        operators=[SimOperator(stack.IRINA, "Irina Volkova")]
        + [SimOperator(FIRST_BITRIX_ID + i, f"Operator {i}") for i in targets],
    )
    handled = 0
    async with stack.running_stack(yaml_text, portal=portal) as running:
        del yaml_text
        tg = running.telegram
        commands = [f"/transfer {200_001 + n} @{key}" for n, key in enumerate(keys)]
        commands.append(f"/transfer 200001 {unknown}")  # "did you mean": the spelling index
        for n, text in enumerate(commands):
            tg.send_message(text, user_id=SUPERVISOR_IDS[n % len(SUPERVISOR_IDS)])
        await tg.wait_for(
            lambda: sum(len(tg.messages_to(u)) for u in SUPERVISOR_IDS) >= len(commands),
            timeout=30,
            interval=0.1,
        )
        await running.settle(30)
        handled = sum(len(tg.messages_to(u)) for u in SUPERVISOR_IDS)
        moved = sum(1 for c in portal.calls_to("imopenlines.operator.transfer") if c.status == 200)
        await asyncio.sleep(seconds)
        peak, rss = stack.peak_rss_mib(), stack.rss_mib()
    return {
        "peak_rss_mib": peak,
        "rss_mib": rss,
        "commands": len(commands),
        "replies": handled,
        "moved": moved,
    }


Child = tuple[list[str], asyncio.subprocess.Process]


async def _start(args: list[str]) -> Child:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        cwd=str(ROOT),
    )
    return args, process


async def _result(child: Child) -> dict[str, Any]:
    args, process = child
    try:
        out, err = await asyncio.wait_for(process.communicate(), CHILD_TIMEOUT_S)
    except TimeoutError:
        process.kill()
        await process.wait()
        raise RuntimeError(f"child {args[:3]} took longer than {CHILD_TIMEOUT_S:g} s") from None
    lines = out.decode().strip().splitlines()
    if process.returncode != 0 or not lines:
        raise RuntimeError(
            f"child {args[:3]} failed ({process.returncode}): {err.decode()[-2000:]}"
        )
    result: dict[str, Any] = json.loads(lines[-1])
    return result


async def start_children(operators: int, seconds: float) -> tuple[Child, Child]:
    """Two children, started at once (peak memory does not care, and each spends seconds
    importing aiogram): our bot with the big config, and an idle aiogram bot."""
    args = ["--child", "ours", "--operators", str(operators), "--seconds", str(seconds)]
    ours = await _start([str(SCRIPT), *args])
    idle = await _start(["-c", IDLE_CHILD, str(seconds)])
    return ours, idle


async def children_rss(children: tuple[Child, Child]) -> dict[str, Any]:
    """What the children report: peak RSS and what the bot did."""
    ours, idle = await asyncio.gather(*(_result(child) for child in children))
    return {"ours": ours, "idle": idle}


# --------------------------------------------------------------------------------------------


async def run(quick: bool = False) -> dict[str, Any]:
    """Measure; returns the figures (the ``scale`` entry of results.json)."""
    stack = _lib()
    started = time.perf_counter()
    operators = 1_000 if quick else OPERATORS
    seconds = 0.5 if quick else 2.0
    # a quick run overlaps the children with the timings (which then mean little); a full
    # run keeps the timings alone on the machine
    children = await start_children(operators, seconds) if quick else None
    timings = measure_in_process(operators, repeats=1 if quick else 3, batches=5 if quick else 20)
    rss = await children_rss(children or await start_children(operators, seconds))
    ours_mib, idle_mib = rss["ours"]["peak_rss_mib"], rss["idle"]["peak_rss_mib"]
    figures: dict[str, Any] = {
        "operators": operators,
        "queues": QUEUES,
        **timings,
        "rss_ratio_vs_idle": stack.ratio(ours_mib, idle_mib),
        "ours_peak_rss_mib": ours_mib,
        "idle_peak_rss_mib": idle_mib,
        "ours_rss_after_mib": rss["ours"]["rss_mib"],
        "idle_rss_after_mib": rss["idle"]["rss_mib"],
        "child_commands": rss["ours"]["commands"],
        "child_replies": rss["ours"]["replies"],
        "child_transfers": rss["ours"]["moved"],
        "polling_s": seconds,
        "seconds": round(time.perf_counter() - started, 1),
    }
    _print(figures)
    return figures


def _print(f: dict[str, Any]) -> None:
    fmt = _lib().fmt
    print(f"scale: {f['operators']} operators, {f['queues']} queues ({f['config_kib']} KiB YAML)")
    print(
        f"  parse_config        {fmt(f['load_s'], 3)} s best "
        f"(runs: {', '.join(fmt(x, 3) for x in f['load_runs_s'])})"
    )
    print(f"  Directory build     {fmt(f['directory_build_ms'], 1)} ms")
    print(
        f"  resolve (known)     {fmt(f['resolve_us'])} us/call "
        f"(median of {f['resolve_batches']} batches x {f['resolve_names']} names)"
    )
    print(
        f"  resolve (unknown)   {fmt(f['suggest_us'], 0)} us/call median, "
        f"p90 {fmt(f['suggest_p90_us'], 0)} us, over {f['suggest_calls']} names "
        f"({f['suggest_misses']} misses, {f['suggest_with_candidates']} with suggestions); "
        "first miss "
        f"{fmt(f['suggest_first_ms'], 1)} ms (builds the index)"
    )
    print(
        f"  /operators listing  {f['operators_listing_messages']} Telegram messages "
        f"(rendered in {fmt(f['operators_listing_ms'], 1)} ms)"
    )
    print(
        f"  peak RSS            ours {fmt(f['ours_peak_rss_mib'], 1)} MiB, idle aiogram bot "
        f"{fmt(f['idle_peak_rss_mib'], 1)} MiB, ratio {fmt(f['rss_ratio_vs_idle'])} "
        f"(after {f['child_replies']}/{f['child_commands']} commands, "
        f"{f['polling_s']:g} s polling)"
    )
    print(
        f"  RSS at the end      ours {fmt(f['ours_rss_after_mib'], 1)} MiB, idle "
        f"{fmt(f['idle_rss_after_mib'], 1)} MiB"
    )
    print(
        f"scale: {f['operators']} operators load in {fmt(f['load_s'], 2)} s, resolve "
        f"{fmt(f['resolve_us'])} us, suggest {fmt(f['suggest_us'], 0)} us, peak RSS "
        f"{fmt(f['ours_peak_rss_mib'], 1)} MiB = {fmt(f['rss_ratio_vs_idle'])}x an idle bot "
        f"[{f['seconds']} s]"
    )


def _lib() -> Any:
    """bench/_stack.py, imported on first use (the idle child must not load the bot)."""
    try:
        from bench import _stack
    except ModuleNotFoundError:  # run as a script: python bench/scale.py
        import _stack  # type: ignore[no-redef]
    return _stack


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a small run (a few seconds)")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON too")
    parser.add_argument("--child", choices=["ours"], help=argparse.SUPPRESS)
    parser.add_argument("--operators", type=int, default=OPERATORS, help=argparse.SUPPRESS)
    parser.add_argument("--seconds", type=float, default=2.0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child == "ours":
        print(json.dumps(asyncio.run(child_ours(args.operators, args.seconds))))
        return
    figures = asyncio.run(run(quick=args.quick))
    if args.json:
        print(json.dumps({KEY: figures}, ensure_ascii=False))


if __name__ == "__main__":
    sys.exit(main())
