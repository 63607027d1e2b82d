"""Snapshot grids: fixed z, each row sweeps one label from -2 to +2 standard deviations around the
data's mean (the others at their mean): -2..+2 itself when the labels are standardised.

``label_sweep`` is the pipeline's sampling function: the generator runs in eval mode under
``torch.no_grad()`` and only detached CPU images leave it (the seed's second failure was test
images generated in train mode with autograd on, growing memory every call).

``save_grid`` writes the PNG; given row and column labels it draws them in margins (the label
each row sweeps, the value of each column) with PIL's built-in bitmap font, scaled up by whole
pixels so it stays crisp beside 16 px cells and readable beside 256 px ones.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from ..runtime.files import atomic_path

CELL_MIN = 64  # upscale small images so a grid is viewable


def fixed_z(G, rows: int, seed: int) -> torch.Tensor:
    """The grid's latents, from their own generator so training's random streams are untouched."""
    return torch.randn(rows, G.z_dim, generator=torch.Generator().manual_seed(seed))


def sweep_values(steps: int) -> torch.Tensor:
    """The snapshot grid's columns: -2 to +2 standard deviations from each label's centre."""
    return torch.linspace(-2.0, 2.0, steps)


def sweep_labels(label_size: int, rows_per_label: int, steps: int, *, center=None, scale=None) -> torch.Tensor:
    """Labels of the grid, row-major: (label_size * rows_per_label * steps, label_size). Rows of label
    k sweep it over ``center[k] + t * scale[k]`` for t in ``sweep_values`` (-2..+2), the other labels
    held at their centre; by default centre 0 and scale 1, i.e. standardised labels."""
    t = sweep_values(steps)
    center = torch.zeros(label_size) if center is None else torch.as_tensor(center, dtype=torch.float32)
    scale = torch.ones(label_size) if scale is None else torch.as_tensor(scale, dtype=torch.float32)
    labels = center.repeat(label_size, rows_per_label, steps, 1)
    for k in range(label_size):
        labels[k, :, :, k] = center[k] + t * scale[k]
    return labels.reshape(-1, label_size)


@torch.no_grad()
def label_sweep(G, z: torch.Tensor, *, steps: int, chunk: int = 64, center=None,
                scale=None) -> tuple[torch.Tensor, int, int]:
    """Images ``(rows * steps, 3, R, R)`` on the CPU, with ``rows`` and ``steps``.

    Conditional G: ``rows = label_dim * len(z)`` (row ``k * len(z) + i`` sweeps label k for z[i],
    around ``center`` by ``scale`` as ``sweep_labels`` says).
    Unconditional G: ``rows = len(z)``, one z per cell.
    """
    was_training = G.training
    G.eval()
    device = next(G.parameters()).device
    dtype = next(G.parameters()).dtype
    try:
        if G.label_dim:
            labels = sweep_labels(G.label_dim, len(z), steps, center=center, scale=scale)
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


def value_caption(value: float) -> str:
    """A label value as a column caption: signed, three significant digits (``-0.667``, ``+2``, ``+123``);
    float noise around zero (``linspace``'s -5.96e-08) reads ``+0``."""
    return f"{round(float(value), 6) + 0.0:+.3g}"


def sweep_captions(label_names: list[str], rows_per_label: int, values, *, center=None,
                   scale=None) -> tuple[list[str], list[str]]:
    """Row captions (the label each row sweeps) and column captions (the value of each column).
    With ``center`` and ``scale`` (raw labels, each row sweeping its own range) the columns read in
    standard deviations from the data's mean, and each row names its label's mean and sd."""
    if center is not None:
        label_names = [f"{name} (mean {float(c):.3g}, sd {float(s):.3g})"
                       for name, c, s in zip(label_names, center, scale, strict=True)]
    rows = [name for name in label_names for _ in range(rows_per_label)]
    unit = "" if center is None else " sd"
    return rows, [value_caption(v) + unit for v in values]


def _text(lines: list[str], scale: int, align_right: bool = False) -> Image.Image:
    """The lines in PIL's bitmap font, black on white, one per row of ``line_px``, scaled by ``scale``."""
    font = ImageFont.load_default_imagefont()
    widths = [int(font.getbbox(line)[2]) if line else 0 for line in lines]
    line_px = 12
    image = Image.new("L", (max(widths, default=0) + 4, line_px * len(lines)), 255)
    draw = ImageDraw.Draw(image)
    for i, (line, width) in enumerate(zip(lines, widths, strict=True)):
        x = image.width - 2 - width if align_right else 2
        draw.text((x, i * line_px), line, fill=0, font=font)
    return image.resize((image.width * scale, image.height * scale), Image.Resampling.NEAREST)


def _caption_strip(captions: list[str], cell: int, scale: int, *, vertical: bool) -> Image.Image:
    """One caption per cell, centred on it: a column (row labels) or a row (column values)."""
    pieces = [_text([c], scale, align_right=vertical) for c in captions]
    if vertical:
        width = max(p.width for p in pieces)
        strip = Image.new("L", (width, cell * len(captions)), 255)
        for i, piece in enumerate(pieces):
            strip.paste(piece, (width - piece.width, i * cell + max(0, (cell - piece.height) // 2)))
    else:
        height = max(p.height for p in pieces)
        strip = Image.new("L", (cell * len(captions), height), 255)
        for i, piece in enumerate(pieces):
            strip.paste(piece.crop((0, 0, min(piece.width, cell), piece.height)),
                        (i * cell + max(0, (cell - piece.width) // 2), 0))
    return strip


def save_grid(images: torch.Tensor, rows: int, cols: int, path: str | Path, *,
              row_captions: list[str] | None = None, col_captions: list[str] | None = None) -> Path:
    """Write the ``rows x cols`` grid as a PNG (cells upscaled to at least ``CELL_MIN`` px), with the
    captions in a left and a top margin when given."""
    pixels = to_uint8(images)
    n, r = pixels.shape[0], pixels.shape[1]
    assert n == rows * cols, (n, rows, cols)
    grid = pixels.reshape(rows, cols, r, r, 3).transpose(0, 2, 1, 3, 4).reshape(rows * r, cols * r, 3)
    scale = max(1, CELL_MIN // r)
    image = Image.fromarray(grid)
    if scale > 1:
        image = image.resize((cols * r * scale, rows * r * scale), Image.Resampling.NEAREST)
    if row_captions is not None or col_captions is not None:
        image = _with_captions(image, r * scale, row_captions, col_captions)
    path = Path(path)
    with atomic_path(path) as tmp:
        image.save(tmp, format="PNG")
    return path


def _with_captions(image: Image.Image, cell: int, row_captions, col_captions) -> Image.Image:
    text_scale = max(1, cell // 128)  # 2x beside 256 px cells, 1x beside small ones
    left = _caption_strip(row_captions, cell, text_scale, vertical=True) if row_captions else None
    top = _caption_strip(col_captions, cell, text_scale, vertical=False) if col_captions else None
    x0, y0 = (left.width if left else 0), (top.height if top else 0)
    canvas = Image.new("RGB", (image.width + x0, image.height + y0), (255, 255, 255))
    canvas.paste(image, (x0, y0))
    if left is not None:
        canvas.paste(left.convert("RGB"), (0, y0))
    if top is not None:
        canvas.paste(top.convert("RGB"), (x0, 0))
    return canvas
