"""The benchmark harness: ``bench/run.py --quick`` writes every figure issue 14 names, in the
right shape; the README's performance table is what ``bench/table.py`` prints. Nothing here
asserts a time."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.table import lookup, table  # noqa: E402

TIMED = (
    "overhead.rtt0.p50_ratio",
    "overhead.rtt50.p50_ratio",
    "overhead.rtt0.p50_ratio_vs_keeps_nothing",
    "burst.n2000.vs_floor",
    *(
        f"steady.rate5.{bot}.{figure}"
        for bot in ("ours", "bare", "limiter", "fast_bitrix24")
        for figure in ("p50_s", "p99_s")
    ),
    "steady.rate20.ours.p99_s",
    "telegram.vs_floor",
    "scale.n10000.parse_s",
    "scale.n100000.parse_s",
    "scale.n100000.didyoumean_ms",
    "scale.n10000.reload_stall_ms",
    "scale.rss_ratio_10k",
)
COUNTS = (
    "overhead.fsyncs_per_command",
    "burst.n2000.limit_errors_shown",
    "burst.n2000.duplicate_calls",
    *(
        f"steady.rate5.{bot}.{figure}"
        for bot in ("ours", "bare", "limiter", "fast_bitrix24")
        for figure in ("limit_errors_shown", "claimed_not_done")
    ),
    "telegram.telegram_429",
)
# a burst of a quick run's size fits the bucket's first 51 requests: its floor is 0 s
UNDEFINED_WHEN_QUICK = {"burst.n2000.vs_floor"}


def _check_shape(results: dict[str, Any]) -> None:
    for key in TIMED:
        value = lookup(results, key)
        if value is None and results["quick"] and key in UNDEFINED_WHEN_QUICK:
            continue
        assert isinstance(value, dict), key
        assert set(value) == {"median", "min", "max"}, key
        assert all(isinstance(value[k], int | float) for k in value), key
        assert value["min"] <= value["median"] <= value["max"], key
    for key in COUNTS:
        value = lookup(results, key)
        assert isinstance(value, int | float), key
        assert value >= 0, key


def test_quick_run_writes_every_figure(tmp_path: Path) -> None:
    out = tmp_path / "results.json"
    done = subprocess.run(
        [sys.executable, "bench/run.py", "--quick", "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads(out.read_text(encoding="utf-8"))
    assert results["quick"] is True
    _check_shape(results)
    # the runs moved what they were asked to, and nothing twice
    for rtt in ("rtt0", "rtt50"):
        overhead = results["overhead"][rtt]
        assert overhead["failed"] == 0, rtt
        assert overhead["baseline_unkept"] == 0, f"{rtt}: the fair baseline kept every update"
    assert results["burst"]["n2000"]["duplicate_calls"] == 0
    steady = results["steady"]["rate5"]["ours"]
    assert steady["moved"] == steady["commands"]
    assert steady["claimed_not_done"] == 0


def test_bounds_switch_off_each_part_and_every_command_is_still_answered() -> None:
    """``bench/bounds.py``: each variant's parts exist in the bot (or it stops, naming the
    one gone), and the bot answers every command with them switched off and back on."""
    done = subprocess.run(
        [sys.executable, "bench/bounds.py", "--quick", "--json"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    figures = json.loads(done.stdout.strip().splitlines()[-1])["bounds"]
    from bench.bounds import VARIANTS

    assert set(figures) == {*VARIANTS, "seconds"}
    for name in VARIANTS:
        assert figures[name]["failed"] == 0, name
        assert figures[name]["samples"] == 20, name
        assert set(figures[name]["gain_ms"]) == {"median", "min", "max"}, name


def test_committed_results_have_every_figure() -> None:
    results = json.loads((ROOT / "bench" / "results.json").read_text(encoding="utf-8"))
    assert results["quick"] is False, "bench/results.json comes from a full run"
    _check_shape(results)


def test_readme_table_is_what_table_py_prints() -> None:
    results = json.loads((ROOT / "bench" / "results.json").read_text(encoding="utf-8"))
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    start = readme.index("<!-- performance table: python bench/table.py -->\n")
    end = readme.index("<!-- end of performance table -->")
    shown = readme[start:end].split("\n", 1)[1]
    if shown != table(results):
        pytest.fail("README's performance table is stale: paste `python bench/table.py`")
