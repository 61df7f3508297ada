"""Run every benchmark and write the figures as JSON.

    python bench/run.py                            # full (under 15 minutes on 2 cores)
    python bench/run.py --out bench/results.json   # the committed figures (README table)
    python bench/run.py --quick --out /tmp/r.json  # small runs, one each: checks the benches

Timed figures are ``{"median", "min", "max"}`` over runs; ratios are against baselines measured
in the same run; nothing here asserts a time.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
if __package__ in (None, ""):  # run as a script: make "bench" importable as a package
    sys.path.insert(0, str(HERE.parent))

from bench import burst, overhead, scale, steady  # noqa: E402

DEFAULT_OUT = HERE / "out" / "results.json"  # bench/out is not under version control


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as info:
            for line in info:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


async def main(quick: bool) -> dict[str, Any]:
    """Run each bench in turn; return the combined figures."""
    started = time.monotonic()
    results: dict[str, Any] = {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {
            "cpus": os.cpu_count(),
            "cpu": _cpu_model(),
            "python": platform.python_version(),
            "system": f"{platform.system()} {platform.release()}",
        },
        "quick": quick,
    }
    for name, bench in (("overhead", overhead), ("burst", burst), ("steady", steady)):
        began = time.monotonic()
        print(f"\n== {name} ==", flush=True)
        figures = await bench.run(quick=quick)
        if name == "burst":
            results["telegram"] = figures.pop("telegram")
        results[name] = figures
        print(f"({name} took {time.monotonic() - began:.0f} s)", flush=True)
    print("\n== scale ==", flush=True)
    results["scale"] = await scale.run(quick=quick)
    results["seconds"] = round(time.monotonic() - started, 1)
    return results


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small runs, one each")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"default {DEFAULT_OUT}")
    args = parser.parse_args()
    figures = asyncio.run(main(args.quick))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(figures, indent=2, ensure_ascii=False, allow_nan=False)
    args.out.write_text(text + "\n", encoding="utf-8")
    print(f"\nwrote {args.out} ({figures['seconds']} s)")
