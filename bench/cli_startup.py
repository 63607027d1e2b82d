"""Start-up time of the ``ohlora`` command: median wall time of ``--help`` over several runs.

Usage: python bench/cli_startup.py [--runs 15]
Prints a table and one JSON line. Target: both ohlora figures under 0.3 s on a 2-core machine.
``accelerate --help`` is measured beside them when accelerate is installed, for scale.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path


def console_script(name: str) -> str | None:
    """The script installed beside this interpreter (no pyenv/conda shim in front of it)."""
    beside = Path(sys.executable).parent / name
    return str(beside) if beside.exists() else shutil.which(name)


def median_seconds(cmd: list[str], runs: int) -> float:
    subprocess.run(cmd, capture_output=True, check=True)  # warm the file cache
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run(cmd, capture_output=True, check=True)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=15)
    args = parser.parse_args()

    ohlora = console_script("ohlora")
    if ohlora is None:
        sys.exit("ohlora is not installed: pip install -e .")
    cases = {
        "ohlora --help": [ohlora, "--help"],
        "ohlora train-llm --help": [ohlora, "train-llm", "--help"],
    }
    accelerate = console_script("accelerate")
    if accelerate:
        cases["accelerate --help"] = [accelerate, "--help"]

    results = {name: median_seconds(cmd, args.runs) for name, cmd in cases.items()}
    width = max(map(len, results))
    print(f"{'command':<{width}}  median s  (runs={args.runs})")
    for name, seconds in results.items():
        print(f"{name:<{width}}  {seconds:8.3f}")
    target = 0.3
    ok = all(results[name] < target for name in cases if name.startswith("ohlora"))
    print(json.dumps({"bench": "cli_startup", "runs": args.runs, "median_s": results,
                      "target_s": target, "meets_target": ok}))


if __name__ == "__main__":
    main()
