"""Synthetic labelled datasets for the demo and the tests (``data.synthetic``).

``blobs``: one soft coloured blob on a grey background. Two labels steer the picture:
``brightness`` (the background level, 0.05 to 0.45) and ``position`` (the blob's horizontal
centre as a fraction of the width, 0.2 to 0.8). The blob's hue and height vary freely, so a
generator also has to use its latent. Labels come from a clipped normal, so z-scores from -2 to
+2 stay in range. The hues keep a constant channel sum, so both labels can be read off the pixels
by a linear model (what the learning test and ``label_probe`` rely on).

torch (through ``grid``) loads only for ``label_probe``: the doctor reads ``pending_build``
without it.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
from PIL import Image

from ..runtime import builds

BLOB_LABELS = ["brightness", "position"]


def blob_images(labels: np.ndarray, resolution: int, rng: np.random.Generator) -> np.ndarray:
    """``labels`` (N, 2) = brightness, position -> uint8 images (N, R, R, 3)."""
    n = len(labels)
    ys, xs = np.mgrid[0:resolution, 0:resolution].astype(np.float32) / (resolution - 1)
    cx = labels[:, 1].reshape(n, 1, 1)
    cy = rng.uniform(0.3, 0.7, size=(n, 1, 1))
    blob = np.exp(-((xs - cx) ** 2 + (ys - cy) ** 2) / (2 * 0.12**2))
    hue = rng.uniform(0, 1, size=(n, 1))
    colour = 0.5 + 0.4 * np.cos(2 * np.pi * (hue + np.array([0.0, 1 / 3, 2 / 3])))  # channel sum 1.5
    image = labels[:, 0].reshape(n, 1, 1, 1) + 0.6 * blob[..., None] * colour[:, None, None, :]
    image = image + rng.normal(0, 0.01, size=image.shape)
    return (np.clip(image, 0, 1) * 255).round().astype(np.uint8)


SYNTHETIC = "data.synthetic"


def _dataset_what(csv_path: Path, count: int) -> str:
    return f"the synthetic 'blobs' dataset ({count} images, {csv_path.name})"


def _rule(csv_path: Path, count: int, key: str) -> dict:
    return {"made_by": SYNTHETIC, "key": key, "what": _dataset_what(csv_path, count), "same": {"csv": csv_path.name},
            "why": f"{csv_path} does not exist, so ",
            "demo_hint": " (data.synthetic builds the demo's data: delete it when you train on your own images)"}


def build_blobs(csv_path: str | Path, *, count: int, resolution: int, seed: int = 0, key: str = "data.csv") -> bool:
    """Write ``count`` PNGs under ``images/`` and the labels CSV (columns img_path, brightness,
    position) into the CSV's folder, which must not exist yet (or hold an earlier build of the same
    CSV, see ``runtime.builds``). Built in a temporary folder and renamed into place, so a crash
    never leaves half a dataset. False when a concurrent process built it first."""
    csv_path = Path(csv_path)
    rng = np.random.default_rng(seed)
    brightness = np.clip(0.25 + 0.08 * rng.standard_normal(count), 0.05, 0.45)
    position = np.clip(0.5 + 0.13 * rng.standard_normal(count), 0.2, 0.8)
    labels = np.stack([brightness, position], axis=1).astype(np.float32)

    def write(folder: Path) -> None:
        images = blob_images(labels, resolution, rng)
        (folder / "images").mkdir()
        with open(folder / csv_path.name, "x", newline="", encoding="utf-8") as fh:
            writer = csv.writer(fh)
            writer.writerow(["img_path", *BLOB_LABELS])
            for i, (image, (b, p)) in enumerate(zip(images, labels, strict=True)):
                name = f"images/{i:05d}.png"
                Image.fromarray(image).save(folder / name)
                writer.writerow([name, f"{b:.4f}", f"{p:.4f}"])

    return builds.build_folder(csv_path.parent, write, **_rule(csv_path, count, key))


def pending_build(data_cfg) -> bool:
    """Whether ``data.synthetic`` will build its dataset (``data.csv`` is missing). Reads only; a
    RecipeError (exit 2) when the CSV's folder is not one the builder may build into (it exists
    and ohlora did not make it: a mistyped ``data.csv`` next to real data, say)."""
    csv_path = Path(data_cfg.csv).expanduser()
    if not data_cfg.synthetic or csv_path.is_file():
        return False
    builds.check_build_folder(csv_path.parent, **_rule(csv_path, data_cfg.synthetic_count, "data.csv"))
    return True


def ensure_synthetic(data_cfg, resolution: int, seed: int = 0) -> bool:
    """Build ``data.synthetic`` at ``data.csv`` when it is pending; True when this call built it."""
    if not pending_build(data_cfg):
        return False
    return build_blobs(Path(data_cfg.csv).expanduser(), count=data_cfg.synthetic_count, resolution=resolution,
                       seed=seed)


def fit_pixel_ridge(images: np.ndarray, labels: np.ndarray, alpha: float = 10.0):
    """Ridge regression from pixels to labels: ``images`` uint8 (N, 3, R, R), ``labels`` (N, L).

    Returns ``predict(images_in_minus1_1: np.ndarray (M, 3, R, R)) -> (M, L)``. A model-free
    judge of whether generated images show the labels they were asked for.
    """
    x = images.reshape(len(images), -1).astype(np.float64) / 127.5 - 1
    y = labels.astype(np.float64)
    x_mean, y_mean = x.mean(axis=0), y.mean(axis=0)
    xc = x - x_mean
    if xc.shape[0] < xc.shape[1]:  # fewer images than pixels: the dual form solves an N x N system
        weights = xc.T @ np.linalg.solve(xc @ xc.T + alpha * np.eye(xc.shape[0]), y - y_mean)
    else:
        weights = np.linalg.solve(xc.T @ xc + alpha * np.eye(xc.shape[1]), xc.T @ (y - y_mean))

    def predict(batch: np.ndarray) -> np.ndarray:
        return (batch.reshape(len(batch), -1).astype(np.float64) - x_mean) @ weights + y_mean

    return predict


def label_probe(G, images: np.ndarray, labels: np.ndarray, *, samples: int = 32, steps: int = 9,
                seed: int = 0, center=None, scale=None) -> list[float]:
    """Per label: the correlation between requested values (-2..+2 sd around ``center`` as the grids
    sweep, default -2..+2 with the other labels at 0; fixed z) and what a pixel ridge regressor
    fitted on the real ``images`` / ``labels`` reads off G's images."""
    import torch

    from .grid import label_sweep

    predict = fit_pixel_ridge(images, labels)
    z = torch.randn(samples, G.z_dim, generator=torch.Generator().manual_seed(seed))
    generated, _, _ = label_sweep(G, z, steps=steps, center=center, scale=scale)
    measured = predict(generated.numpy()).reshape(G.label_dim, samples, steps, G.label_dim)
    wanted = np.broadcast_to(np.linspace(-2, 2, steps), (samples, steps))
    return [float(np.corrcoef(wanted.ravel(), measured[k, :, :, k].ravel())[0, 1]) for k in range(G.label_dim)]
