"""Snapshot grids: fixed z, each row sweeps one label from -2 to +2 (the others at 0).

``label_sweep`` is the pipeline's sampling function: the generator runs in eval mode under
``torch.no_grad()`` and only detached CPU images leave it (the seed's second failure was test
images generated in train mode with autograd on, growing memory every call).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ..runtime.files import atomic_path

CELL_MIN = 64  # upscale small images so a grid is viewable


def fixed_z(G, rows: int, seed: int) -> torch.Tensor:
    """The grid's latents, from their own generator so training's random streams are untouched."""
    return torch.randn(rows, G.z_dim, generator=torch.Generator().manual_seed(seed))


def sweep_labels(label_size: int, rows_per_label: int, steps: int) -> torch.Tensor:
    """Labels of the grid, row-major: (label_size * rows_per_label * steps, label_size)."""
    values = torch.linspace(-2.0, 2.0, steps)
    labels = torch.zeros(label_size, rows_per_label, steps, label_size)
    for k in range(label_size):
        labels[k, :, :, k] = values
    return labels.reshape(-1, label_size)


@torch.no_grad()
def label_sweep(G, z: torch.Tensor, *, steps: int, chunk: int = 64) -> tuple[torch.Tensor, int, int]:
    """Images ``(rows * steps, 3, R, R)`` on the CPU, with ``rows`` and ``steps``.

    Conditional G: ``rows = label_dim * len(z)`` (row ``k * len(z) + i`` sweeps label k for z[i]).
    Unconditional G: ``rows = len(z)``, one z per cell.
    """
    was_training = G.training
    G.eval()
    device = next(G.parameters()).device
    dtype = next(G.parameters()).dtype
    try:
        if G.label_dim:
            labels = sweep_labels(G.label_dim, len(z), steps)
            zs = z.repeat_interleave(steps, dim=0).repeat(G.label_dim, 1)
            rows = G.label_dim * len(z)
        else:
            labels = None
            zs = torch.randn(len(z) * steps, G.z_dim, generator=torch.Generator().manual_seed(0))
            rows = len(z)
        out = []
        for start in range(0, len(zs), chunk):
            c = None if labels is None else labels[start:start + chunk].to(device, dtype)
            out.append(G(zs[start:start + chunk].to(device, dtype), c).float().cpu())
        return torch.cat(out), rows, steps
    finally:
        G.train(was_training)


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """[-1, 1] float ``(N, 3, R, R)`` -> uint8 ``(N, R, R, 3)``."""
    return ((images.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()


def save_grid(images: torch.Tensor, rows: int, cols: int, path: str | Path) -> Path:
    pixels = to_uint8(images)
    n, r = pixels.shape[0], pixels.shape[1]
    assert n == rows * cols, (n, rows, cols)
    grid = pixels.reshape(rows, cols, r, r, 3).transpose(0, 2, 1, 3, 4).reshape(rows * r, cols * r, 3)
    scale = max(1, CELL_MIN // r)
    image = Image.fromarray(grid)
    if scale > 1:
        image = image.resize((cols * r * scale, rows * r * scale), Image.Resampling.NEAREST)
    path = Path(path)
    with atomic_path(path) as tmp:
        image.save(tmp, format="PNG")
    return path
