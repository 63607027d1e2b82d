"""Throughput of the property-score CNN and of property-regression, through the real pipeline.

Builds the synthetic blobs task in a temporary folder, runs ``train.method: scorer`` and
``train.method: property-regression`` (``ohlora_cli.commands.train_gan.run``) for a few epochs / kimg at
each size, and reads the img/s the runs themselves logged in ``stats.jsonl``; then times one
label-control evaluation. Prints a table and one JSON line.

    python bench/gan_scorer.py            # CPU: 16 and 64 px (about 3 minutes on 2 cores)
    python bench/gan_scorer.py --gpu      # also 256 px on the GPU, Oh-LoRA-sized networks
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch
import yaml

from ohlora_cli.commands.train_gan import run
from ohlora_cli.gan import label_control, load_generator
from ohlora_cli.gan import scorer as sc
from ohlora_cli.gan.checkpoint import latest_checkpoint

SIZES = {  # resolution -> (scorer channels, hidden), G widths, images, batch, regression kimg
    16: dict(channels=8, hidden=32, fmaps_base=512, fmaps_max=64, z=32, w=64, count=600, batch=32, kimg=0.5),
    64: dict(channels=16, hidden=64, fmaps_base=2048, fmaps_max=64, z=64, w=64, count=600, batch=32, kimg=0.25),
    256: dict(channels=32, hidden=256, fmaps_base=16384, fmaps_max=512, z=512, w=512, count=2000, batch=16, kimg=2),
}


def recipe(path: Path, res: int, spec: dict, device: str, train: dict, model: dict | None = None) -> str:
    data = {
        "kind": "gan", "output_dir": str(path.parent / path.stem), "seed": 0,
        "data": {"csv": str(path.parent / f"blobs{res}" / "labels.csv"), "label_columns": ["brightness", "position"],
                 "standardize_labels": True, "synthetic": "blobs", "synthetic_count": spec["count"]},
        "model": {"resolution": res, "z_dim": spec["z"], "w_dim": spec["w"], "label_dim": 8,
                  "mapping_layers": 2 if res < 256 else 8, "fmaps_base": spec["fmaps_base"],
                  "fmaps_max": spec["fmaps_max"], **(model or {})},
        "train": {"batch_size": spec["batch"], "device": device, "log_kimg": 0.1, "snapshot_kimg": 100,
                  "checkpoint_kimg": 100, **train},
    }
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return str(path)


def logged(out_dir: Path, key: str) -> float:
    lines = [json.loads(x) for x in (out_dir / "stats.jsonl").read_text().splitlines()]
    values = [x[key] for x in lines if key in x][1:] or [x[key] for x in lines if key in x]  # skip warm-up
    return sum(values) / len(values)


def bench(res: int, device: str, root: Path) -> dict:
    spec = SIZES[res]
    scorer_yaml = recipe(root / f"scorer{res}.yaml", res, spec, device, {
        "method": "scorer", "scorer": {"channels": spec["channels"], "hidden": spec["hidden"], "epochs": 3,
                                       "patience": 3, "lr": 0.002}})
    run(scorer_yaml, [], dry_run=False, resume=False, skip_doctor=True, nproc=None)
    scorer_out = root / f"scorer{res}"
    reg_yaml = recipe(root / f"reg{res}.yaml", res, spec, device,
                      {"method": "property-regression", "kimg": spec["kimg"], "g_trainable": ["*"],
                       "label_control": {"steps": 5, "samples": 8}},
                      model={"scorer": str(scorer_out)})
    run(reg_yaml, [], dry_run=False, resume=False, skip_doctor=True, nproc=None)
    reg_out = root / f"reg{res}"

    G = load_generator(latest_checkpoint(reg_out), device=device)
    score = sc.in_label_space(sc.load_scorer(scorer_out, device), G.label_names,
                              label_mean=G.label_mean, label_std=G.label_std)
    start = time.perf_counter()
    label_control.evaluate(G, score, label_names=G.label_names, steps=9, samples=16)
    if device == "cuda":
        torch.cuda.synchronize()
    control_s = time.perf_counter() - start
    return {"device": device, "resolution": res,
            "scorer_params": sum(p.numel() for p in sc.load_scorer(scorer_out).parameters()),
            "scorer_train_img_per_s": round(logged(scorer_out, "img_per_s"), 1),
            "regression_img_per_s": round(logged(reg_out, "img_per_s"), 1),
            "label_control_s": round(control_s, 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gpu", action="store_true", help="add 256 px on the GPU")
    args = parser.parse_args()
    configs = [(16, "cpu"), (64, "cpu")]
    if args.gpu:
        if not torch.cuda.is_available():
            raise SystemExit("--gpu: no CUDA GPU visible")
        configs.append((256, "cuda"))
    synthetic_note = "synthetic blobs, 2 labels, standardised; regression: full G trainable, no adversarial term"
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for res, device in configs:
            rows.append(bench(res, device, Path(tmp)))

    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"property-score CNN and property-regression ({synthetic_note})")
    for column in ("device", "px", "scorer params", "scorer train img/s", "regression img/s",
                   "label control (2 labels x 9 x 16) s"):
        table.add_column(column, justify="right")
    for row in rows:
        table.add_row(row["device"], str(row["resolution"]), f"{row['scorer_params']:,}",
                      f"{row['scorer_train_img_per_s']:.0f}", f"{row['regression_img_per_s']:.0f}",
                      f"{row['label_control_s']:.2f}")
    Console(stderr=True).print(table)
    print(json.dumps({"bench": "gan_scorer", "torch": torch.__version__, "threads": torch.get_num_threads(),
                      "results": rows}))


if __name__ == "__main__":
    main()
