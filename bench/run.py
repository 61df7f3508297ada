"""Run every benchmark and write ``bench/results.json``.

    python bench/run.py            # the full set (a few minutes on 2 cores)
    python bench/run.py --quick    # smaller runs, to check the benches themselves work

Figures are ratios against baselines measured in the same run; nothing here asserts a time.
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

from bench import announce, burst, overhead, scale  # noqa: E402

BENCHES = (overhead, burst, scale, announce)


async def main(quick: bool) -> dict[str, Any]:
    """Run each bench in turn; return the combined figures."""
    results: dict[str, Any] = {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "quick": quick,
    }
    for bench in BENCHES:
        started = time.monotonic()
        print(f"\n== {bench.KEY} ==", flush=True)
        results[bench.KEY] = await bench.run(quick=quick)
        print(f"({bench.KEY} took {time.monotonic() - started:.0f} s)", flush=True)
    return results


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller runs")
    parser.add_argument("--out", type=Path, default=HERE / "results.json")
    args = parser.parse_args()
    figures = asyncio.run(main(args.quick))
    args.out.write_text(json.dumps(figures, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"\nwrote {args.out}")
