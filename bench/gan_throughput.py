"""Training throughput of train-gan (images per second through the real training loop).

CPU: the demo architecture at 16, 32 and 64 px. GPU (when one is visible): the full Oh-LoRA v1
configuration at 256 px (GenForce StyleGAN widths, 7 labels, batch 16, R1 every step, style
mixing 0.9, G mapping + D last 3 layers training, bf16 where the GPU has it), from random
weights on synthetic images (no checkpoint download; the speed is the same).

Usage: python bench/gan_throughput.py [--threads 2] [--cpu-only] [--gpu-kimg 2]
Prints a table and one JSON line. Targets: 256 px on one H100 >= 100 img/s (NVlabs StyleGAN2
reference: about 80 img/s on an A100).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

CPU_CASES = [  # (resolution, kimg, extra overrides)
    (16, 2.0, []),
    (32, 1.0, ["model.fmaps_base=1024"]),
    (64, 0.5, ["model.fmaps_base=2048"]),
]


def seven_label_blobs(folder: Path, count: int) -> Path:
    """256 px blobs with Oh-LoRA's seven score columns (two real, five random z-scores)."""
    import csv

    import numpy as np

    from ohlora_cli import recipes
    from ohlora_cli.gan.synthetic import build_blobs

    names = recipes.load("gan-ohlora-v1").data.label_columns
    build_blobs(folder / "blobs.csv", count=count, resolution=256)
    rows = list(csv.reader(open(folder / "blobs.csv", newline="")))[1:]
    rng = np.random.default_rng(0)
    path = folder / "scores.csv"
    with open(path, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["img_path", *names])
        for row in rows:
            writer.writerow([row[0], *[f"{v:.3f}" for v in rng.standard_normal(len(names))]])
    return path


def measure(recipe: str, overrides: list[str], tmp: str, name: str) -> dict:
    from ohlora_cli.commands import train_gan as train

    out = Path(tmp) / name
    start = time.time()
    train.run(recipe, [f"output_dir={out}", *overrides], dry_run=False, resume=False, skip_doctor=True, nproc=None)
    wall = time.time() - start
    ticks = [json.loads(line) for line in (out / "stats.jsonl").read_text().splitlines()]
    ticks = [t for t in ticks if "img_per_s" in t]
    steady = ticks[1:] or ticks  # the first interval includes warm-up (cudnn autotune, allocator)
    return {"img_per_s": round(sum(t["img_per_s"] for t in steady) / len(steady), 1),
            "sec_per_kimg": round(sum(t["sec_per_kimg"] for t in steady) / len(steady), 2), "wall_s": round(wall, 1)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--cpu-only", action="store_true")
    parser.add_argument("--gpu-kimg", type=float, default=2.0)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from rich.console import Console
    from rich.table import Table

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for res, kimg, extra in CPU_CASES:
            overrides = [f"model.resolution={res}", f"data.csv={tmp}/blobs{res}/labels.csv", "data.synthetic_count=256",
                         f"train.kimg={kimg}", f"train.log_kimg={kimg / 4}", f"train.snapshot_kimg={kimg}",
                         f"train.checkpoint_kimg={kimg}", "train.device=cpu", *extra]
            rows.append({"device": "cpu", "config": f"demo {res} px", "batch": 16, "threads": args.threads,
                         **measure("gan-demo", overrides, tmp, f"cpu{res}")})
        if torch.cuda.is_available() and not args.cpu_only:
            name = torch.cuda.get_device_name(0)
            csv_path = seven_label_blobs(Path(tmp) / "blobs256", count=512)
            for precision in ("auto", "fp32"):
                overrides = [f"data.csv={csv_path}", "data.num_workers=0", "model.checkpoint=null", "train.device=cuda",
                             f"train.precision={precision}", f"train.kimg={args.gpu_kimg}",
                             f"train.log_kimg={args.gpu_kimg / 4}", f"train.snapshot_kimg={args.gpu_kimg}",
                             f"train.checkpoint_kimg={args.gpu_kimg}"]
                rows.append({"device": name, "config": f"Oh-LoRA v1 256 px ({precision})", "batch": 16,
                             "threads": args.threads, **measure("gan-ohlora-v1", overrides, tmp, f"gpu256{precision}")})

    table = Table(title="train-gan throughput (steady state, real training loop)")
    for col in ("device", "config", "batch", "threads", "img/s", "s/kimg", "wall s"):
        table.add_column(col, justify="right" if col not in ("device", "config") else "left")
    for row in rows:
        table.add_row(row["device"], row["config"], str(row["batch"]), str(row["threads"]), f"{row['img_per_s']:.1f}",
                      f"{row['sec_per_kimg']:.1f}", f"{row['wall_s']:.0f}")
    Console().print(table)
    print(json.dumps({"bench": "gan_throughput", "rows": rows}))


if __name__ == "__main__":
    main()
