"""Shared helpers for the GAN tests: tiny recipes, tiny networks, tiny datasets (all built here)."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import yaml
from gan_recipes import write_gan_recipe
from PIL import Image

from ohlora_cli.gan.networks import Discriminator, Generator

TINY = dict(z_dim=8, w_dim=8, label_dim=4, mapping_layers=2, fmaps_base=64, fmaps_max=8)


def tiny_G(resolution=8, label_size=2, **kw):
    return Generator(resolution, label_size=label_size, **{**TINY, **kw})


def tiny_D(resolution=8, label_size=2, **kw):
    cfg = {k: v for k, v in {**TINY, **kw}.items() if k in ("fmaps_base", "fmaps_max", "mbstd_group", "label_projection")}
    return Discriminator(resolution, label_size=label_size, **cfg)


def write_dataset(folder: Path, n=24, resolution=8, labels=("a", "b"), seed=0) -> Path:
    """Random RGB PNGs and a labels CSV whose image paths are relative to the CSV's folder."""
    rng = np.random.default_rng(seed)
    (folder / "img").mkdir(parents=True, exist_ok=True)
    csv_path = folder / "labels.csv"
    with open(csv_path, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["img_path", *labels])
        for i in range(n):
            Image.fromarray(rng.integers(0, 255, (resolution, resolution, 3), dtype=np.uint8)).save(folder / f"img/{i}.png")
            writer.writerow([f"img/{i}.png", *[f"{v:.3f}" for v in rng.normal(size=len(labels))]])
    return csv_path


def tiny_recipe(folder: Path, *, csv_path: Path | None = None, extra: str = "", resolution=8, kimg=0.064) -> Path:
    """A recipe file for a tiny CPU run; ``extra`` is YAML for more ``train:`` keys."""
    csv_path = csv_path or write_dataset(folder / "data", resolution=resolution)
    model = {"resolution": resolution, "z_dim": 8, "w_dim": 8, "label_dim": 4, "mapping_layers": 2, "fmaps_base": 64,
             "fmaps_max": 8, "label_projection": True}
    train = {"batch_size": 8, "kimg": kimg, "device": "cpu", "g_lr": 0.002, "d_lr": 0.002, "r1_gamma": 0.1,
             "g_trainable": ["*"], "d_trainable": ["*"], "log_kimg": 0.016, "snapshot_kimg": 0.032,
             "checkpoint_kimg": 0.032, "keep_checkpoints": 0, **(yaml.safe_load(extra) or {})}
    return write_gan_recipe(folder / "recipe.yaml", output_dir=folder / "run", csv_path=csv_path,
                            label_columns=["a", "b"], model=model, train=train, seed=3,
                            data={"standardize_labels": False})  # raw labels: what these tests exercise


