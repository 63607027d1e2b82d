"""How fast the demo learns label control: kimg and seconds to r >= 0.8 for every label.

Trains the gan-demo recipe (synthetic blobs, 16 px) on the CPU with a checkpoint every
``--every`` kimg, then reads each checkpoint's G_ema with the pixel ridge probe (the learning
test's judge: requested label sweep -2..+2 vs what a ridge regressor fitted on real pixels sees).

Usage: python bench/gan_learns.py [--kimg 24] [--every 2] [--threads 1] [--set KEY=VALUE ...]
  e.g. --set model.label_projection=false  (Oh-LoRA's concatenation-only discriminator)
Prints a table and one JSON line. Target: r >= 0.8 for both labels within 4 minutes here.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--kimg", type=float, default=24)
    parser.add_argument("--every", type=float, default=2)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--set", action="append", default=[], dest="overrides")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from rich.console import Console
    from rich.table import Table

    from ohlora_cli import recipes
    from ohlora_cli.commands import train_gan as train
    from ohlora_cli.gan import checkpoint as ckpt
    from ohlora_cli.gan.data import GanDataset, read_table
    from ohlora_cli.gan.synthetic import label_probe

    with tempfile.TemporaryDirectory() as tmp:
        overrides = [f"output_dir={tmp}/run", f"data.csv={tmp}/blobs/labels.csv", f"train.kimg={args.kimg}",
                     f"train.checkpoint_kimg={args.every}", "train.keep_checkpoints=0", *args.overrides]
        start = time.time()
        train.run("gan-demo", overrides, dry_run=False, resume=False, skip_doctor=True, nproc=None)
        wall = time.time() - start
        recipe = recipes.load("gan-demo", overrides)
        dataset = GanDataset(read_table(recipe.data), recipe.model.resolution)
        stats = [json.loads(line) for line in Path(tmp, "run", "stats.jsonl").read_text().splitlines()]
        seconds_at = {round(s["kimg"], 3): s["time_s"] for s in stats if "time_s" in s}
        rows = []
        for path in ckpt.list_checkpoints(Path(tmp, "run")):
            counters = json.loads(ckpt.read_metadata(path)["counters"])
            r = label_probe(ckpt.load_generator(path), dataset.cache.numpy(), dataset.labels.numpy(), seed=recipe.seed)
            kimg = round(counters["kimg"], 3)
            near = min(seconds_at, key=lambda k: abs(k - kimg))
            rows.append({"kimg": kimg, "seconds": seconds_at[near], "r": [round(v, 3) for v in r]})

    table = Table(title=f"gan-demo label control ({' '.join(args.overrides) or 'recipe as shipped'})")
    for col in ("kimg", "seconds", *recipe.data.label_columns):
        table.add_column(col, justify="right")
    for row in rows:
        table.add_row(f"{row['kimg']:g}", f"{row['seconds']:.0f}", *[f"{v:.2f}" for v in row["r"]])
    Console().print(table)
    reached = next((row for row in rows if min(row["r"]) >= 0.8), None)
    print(json.dumps({
        "bench": "gan_learns", "overrides": args.overrides, "threads": args.threads, "wall_s": round(wall, 1),
        "kimg_to_r08": reached["kimg"] if reached else None, "seconds_to_r08": reached["seconds"] if reached else None,
        "final_r": rows[-1]["r"] if rows else None, "curve": rows,
    }))


if __name__ == "__main__":
    sys.exit(main())
