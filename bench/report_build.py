"""How long report.html takes to build (``ohlora_cli.runtime.report.write_report``).

Cases: a run folder given with ``--run`` (e.g. a finished 16-kimg ``ohlora train-gan`` demo), and a
synthetic GAN run folder whose stats.jsonl has 10,000 lines (label control for two labels in each,
three grids). Each is built ``--repeat`` times in this process after one warm-up build (the
first build also pays matplotlib's import, reported apart).

Usage: python bench/report_build.py [--run runs/gan-demo] [--repeat 3]
Prints a table and one JSON line.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import tempfile
import time
from pathlib import Path


def synthetic_run(folder: Path, lines: int) -> Path:
    import numpy as np
    from PIL import Image

    folder.mkdir(parents=True)
    (folder / ".ohlora.json").write_text(json.dumps({"made_by": "run", "ohlora": "bench"}))
    (folder / "recipe.yaml").write_text("kind: gan\ntrain:\n  batch_size: 16\n")
    (folder / "run.json").write_text(json.dumps({"kind": "gan"}))
    with open(folder / "stats.jsonl", "w") as fh:
        for i in range(1, lines + 1):
            fh.write(json.dumps({"kimg": i / 10, "step": i * 6, "d_loss": 1 + math.sin(i / 50), "g_loss": 1.2,
                                 "r1": 0.05, "auroc": 0.7, "img_per_s": 120.0, "label_control/a/r": 0.5,
                                 "label_control/b/r": 0.4}) + "\n")
    (folder / "grids").mkdir()
    rng = np.random.default_rng(0)
    for k in range(3):
        Image.fromarray(rng.integers(0, 255, (256, 512, 3), dtype=np.uint8)).save(folder / "grids" / f"grid-{k:09.3f}kimg.png")
    return folder


def timed(folder: Path, repeat: int) -> dict:
    from ohlora_cli.runtime.report import write_report

    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        path = write_report(folder)
        times.append(time.perf_counter() - start)
    lines = sum(1 for _ in open(folder / "stats.jsonl"))
    return {"stats_lines": lines, "median_s": round(statistics.median(times), 3), "max_s": round(max(times), 3),
            "page_kb": round(path.stat().st_size / 1024, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, help="an existing run folder (e.g. a 16-kimg train-gan demo)")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    start = time.perf_counter()
    import matplotlib.figure  # noqa: F401  (what the first build of a process pays once)

    results = {"matplotlib_import_s": round(time.perf_counter() - start, 3)}
    with tempfile.TemporaryDirectory() as tmp:
        cases = {"synthetic 10,000 lines": synthetic_run(Path(tmp) / "synthetic", 10_000)}
        if args.run:
            cases = {f"run {args.run}": args.run, **cases}
        from ohlora_cli.runtime.report import write_report

        write_report(next(iter(cases.values())))  # warm-up: fonts, the Agg backend
        for name, folder in cases.items():
            results[name] = timed(folder, args.repeat)
    print(f"{'case':<40} {'lines':>7} {'median s':>9} {'max s':>7} {'page KiB':>9}")
    for name, r in results.items():
        if isinstance(r, dict):
            print(f"{name:<40} {r['stats_lines']:>7} {r['median_s']:>9} {r['max_s']:>7} {r['page_kb']:>9}")
    print(f"(matplotlib import, once per process: {results['matplotlib_import_s']} s)")
    print(json.dumps({"bench": "report_build", **results}))


if __name__ == "__main__":
    main()
