"""Print the README's performance table (markdown) from a results file.

    python bench/table.py [bench/results.json]

The README's "Performance" section holds exactly what this prints for ``bench/results.json``
(a test checks it).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results.json"

# (dotted key, what it is, goal from issue 14, digits)
ROWS: tuple[tuple[str, str, str, int], ...] = (
    (
        "overhead.rtt0.p50_ratio",
        "p50 latency vs fair baseline (same storage), portal 0 ms",
        "≤ 1.15",
        2,
    ),
    (
        "overhead.rtt50.p50_ratio",
        "p50 latency vs fair baseline (same storage), portal 50 ms",
        "≤ 1.03",
        2,
    ),
    (
        "overhead.rtt0.p50_ratio_vs_keeps_nothing",
        "p50 latency vs the same baseline keeping no updates, portal 0 ms",
        "",
        2,
    ),
    ("overhead.fsyncs_per_command", "fdatasync + fsync per command (strace)", "≤ 1", 2),
    ("burst.n2000.vs_floor", "2,000-command burst vs batched floor (X=50, 2/s)", "≤ 1.2", 2),
    ("burst.n2000.limit_errors_shown", "burst: limit errors shown to users", "0", 0),
    ("burst.n2000.duplicate_calls", "burst: dialogs transferred twice", "0", 0),
    ("telegram.vs_floor", "2,000 replies vs Telegram's floor (30/s, 1/s a chat)", "≤ 1.3", 2),
    ("telegram.telegram_429", "Telegram 429s provoked", "0", 0),
    ("steady.rate5.ours.p99_s", "5 commands/s for 60 s, ours: p99 s", "", 2),
    ("steady.rate5.bare.p99_s", "same, bare aiogram + aiohttp bot: p99 s", "", 2),
    ("steady.rate5.limiter.p99_s", "same, aiolimiter + retries: p99 s", "", 2),
    ("steady.rate5.fast_bitrix24.p99_s", "same, fast_bitrix24: p99 s", "", 2),
    ("steady.rate5.ours.limit_errors_shown", "5/s, ours: limit errors shown", "0", 0),
    ("steady.rate5.bare.limit_errors_shown", "5/s, bare bot: limit errors shown", "", 0),
    ("steady.rate5.limiter.limit_errors_shown", "5/s, aiolimiter: limit errors shown", "", 0),
    ("steady.rate5.limiter.unanswered", "5/s, aiolimiter: unanswered 30 s after the last", "", 0),
    ("steady.rate5.ours.claimed_not_done", "5/s, ours: ✅ but not moved", "0", 0),
    ("steady.rate5.fast_bitrix24.claimed_not_done", "5/s, fast_bitrix24: ✅ but not moved", "", 0),
    ("steady.rate20.ours.p99_s", "20 commands/s for 30 s, ours: p99 s", "", 2),
    ("scale.n10000.parse_s", "config parse, 10k operators, s", "≤ 0.5", 3),
    ("scale.n100000.parse_s", "config parse, 100k operators, s", "≤ 5", 2),
    ("scale.n100000.didyoumean_ms", "did-you-mean at 100k operators, ms", "≤ 5", 3),
    ("scale.n100000.didyoumean_offered", "did-you-mean: the name meant offered, of 60", "", 0),
    (
        "scale.n100000.didyoumean_two_slips_ms",
        "did-you-mean, two letters wrong (none one slip away), ms",
        "",
        3,
    ),
    ("scale.n100000.didyoumean_two_slips_offered", "same: the name meant offered, of 60", "", 0),
    ("scale.n10000.reload_stall_ms", "longest event-loop stall in /reload, 10k, ms", "≤ 20", 1),
    ("scale.rss_ratio_10k", "peak RSS, 10k operators vs minimal bot", "", 2),
)


def lookup(results: dict[str, Any], dotted: str) -> Any:
    """``results["a"]["b"]…`` for ``"a.b…"``."""
    value: Any = results
    for part in dotted.split("."):
        value = value[part]
    return value


def _cell(value: Any, digits: int) -> tuple[str, str]:
    if value is None:
        return "n/a", ""
    if isinstance(value, dict):
        low, high = value["min"], value["max"]
        return f"{value['median']:.{digits}f}", f"{low:.{digits}f}–{high:.{digits}f}"
    if isinstance(value, float) and digits:
        return f"{value:.{digits}f}", ""
    return str(round(value)) if isinstance(value, float) else str(value), ""


def table(results: dict[str, Any]) -> str:
    """The markdown: a line on the machine and the runs, then one row per figure."""
    machine = results["machine"]
    lines = [
        f"Measured {results['when'][:10]} on {machine['cpus']} CPUs ({machine['cpu']}), "
        f"Python {machine['python']}, {machine['system']}; `python bench/run.py` took "
        f"{results['seconds'] / 60:.1f} min. Timed figures: median of "
        f"{results['overhead']['runs']} runs (burst: {results['burst']['n2000']['runs']}, steady: "
        f"{results['steady']['runs']}) with min–max; "
        "counts: the most in any run.",
        "",
        "| figure | median | min–max | goal |",
        "|---|---|---|---|",
    ]
    for key, label, goal, digits in ROWS:
        median, spread = _cell(lookup(results, key), digits)
        lines.append(f"| {label} (`{key}`) | {median} | {spread} | {goal} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    path = Path(sys.argv[1]) if len(sys.argv) > 1 else RESULTS
    print(table(json.loads(path.read_text(encoding="utf-8"))), end="")
