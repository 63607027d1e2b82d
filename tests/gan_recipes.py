"""The one GAN recipe builder of the tests: a recipe file from the sections' dicts."""

from __future__ import annotations

from pathlib import Path

import yaml


def write_gan_recipe(path: Path, *, output_dir, csv_path, label_columns, model: dict, train: dict, seed: int = 0,
                     data: dict | None = None) -> Path:
    recipe = {
        "kind": "gan", "output_dir": str(output_dir), "seed": seed,
        "data": {"csv": str(csv_path), "label_columns": list(label_columns), **(data or {})},
        "model": model,
        "train": train,
    }
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    return path
