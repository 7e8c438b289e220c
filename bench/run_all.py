"""Run every benchmark in bench/ one after another and print their figures.

    .venv/bin/python bench/run_all.py [NAME ...]     # e.g. smtp_throughput rules_eval

Each script measures a baseline in the same run and prints ratios: the
machine is shared and noisy, so compare ratios and medians, not absolutes.
Results are recorded in docs/benchmarks.md with the command that made them.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
SKIP = {"run_all.py", "soak.py", "fuzz_long.py"}  # long runs: start them on their own


def main() -> int:
    wanted = set(sys.argv[1:])
    scripts = sorted(p for p in HERE.glob("*.py") if p.name not in SKIP and not p.name.startswith("_"))
    failed = 0
    for script in scripts:
        if wanted and script.stem not in wanted:
            continue
        print(f"== {script.name} ==", flush=True)
        t0 = time.monotonic()
        r = subprocess.run([sys.executable, "-u", str(script)])
        print(f"== {script.name}: exit {r.returncode} after {time.monotonic() - t0:.0f} s ==\n", flush=True)
        failed += r.returncode != 0
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
