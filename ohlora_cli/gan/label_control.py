"""Label-control evaluation: do the labels really steer the face? (Oh-LoRA's pass test)

For every label: fixed z, the label swept from -2 to +2 (the others at their centre), the images
scored by a property-score CNN, and the correlation and mean absolute error between the
requested and the measured value reported. Both GAN methods call this every
``train.label_control.every_kimg`` and at the end; it also draws a PNG of measured vs requested
per label (with PIL: no plotting library needed).

The sweep is in the generator's label space. With standardised labels (Oh-LoRA's z-scores) that
is -2..+2 itself; with raw labels pass ``center`` / ``scale`` (the dataset's mean and std) and the
sweep becomes ``center + t * scale`` for t in -2..+2.

rich and the file helpers are imported where they are used, so the metrics load light.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

PREFIX = "label_control"


@dataclass
class LabelControlResult:
    """Per-label sweep results. ``requested`` / ``measured``: (steps * samples,) arrays per label."""

    labels: list[str]
    steps: list[float]
    requested: list[np.ndarray] = field(default_factory=list)
    measured: list[np.ndarray] = field(default_factory=list)
    r: list[float] = field(default_factory=list)
    mae: list[float] = field(default_factory=list)
    center: list[float] = field(default_factory=list)
    scale: list[float] = field(default_factory=list)

    @property
    def metrics(self) -> dict[str, float]:
        """Flat, JSON-ready: ``label_control/<label>/r``, ``.../mae``, ``label_control/mean_r``, ..."""
        out: dict[str, float] = {}
        for name, r, mae in zip(self.labels, self.r, self.mae, strict=True):
            out[f"{PREFIX}/{name}/r"] = round(r, 4)
            out[f"{PREFIX}/{name}/mae"] = round(mae, 4)
        out[f"{PREFIX}/mean_r"] = round(float(np.mean(self.r)), 4)
        out[f"{PREFIX}/min_r"] = round(float(np.min(self.r)), 4)
        out[f"{PREFIX}/mean_mae"] = round(float(np.mean(self.mae)), 4)
        return out


def _pearson(x: np.ndarray, y: np.ndarray) -> float:
    x = x - x.mean()
    y = y - y.mean()
    denom = float(np.sqrt((x * x).sum() * (y * y).sum()))
    return float((x * y).sum() / denom) if denom > 0 else 0.0


def _as_images(out) -> torch.Tensor:
    if isinstance(out, dict):  # GenForce-style generators return {"image": ...}
        out = out["image"]
    return out


@torch.no_grad()
def evaluate(G: Callable, scorer: Callable, *, label_names: list[str] | None = None,
             z_dim: int | None = None, label_dim: int | None = None, steps: int = 9, samples: int = 16,
             seed: int = 0, center=None, scale=None, device: str | torch.device | None = None,
             batch: int = 64, png: str | Path | None = None) -> LabelControlResult:
    """Sweep each label from -2 to +2 with fixed z and measure it with ``scorer``.

    ``G(z, labels)`` -> images in [-1, 1]; ``scorer(images)`` -> (N, label_dim) scores in G's label
    space and order (``scorer.in_label_space`` builds one). ``G`` runs in eval mode under
    ``no_grad`` (its previous mode is restored); nothing it returns keeps a graph.
    """
    z_dim = int(z_dim if z_dim is not None else G.z_dim)
    label_dim = int(label_dim if label_dim is not None else G.label_dim)
    names = list(label_names) if label_names is not None else [f"label{i}" for i in range(label_dim)]
    if len(names) != label_dim:
        raise ValueError(f"{len(names)} label names for a generator with label_dim {label_dim}")
    if device is None:
        params = list(G.parameters()) if hasattr(G, "parameters") else []
        device = params[0].device if params else torch.device("cpu")
    center_t = torch.zeros(label_dim) if center is None else torch.as_tensor(center, dtype=torch.float32).flatten()
    scale_t = torch.ones(label_dim) if scale is None else torch.as_tensor(scale, dtype=torch.float32).flatten()

    gen = torch.Generator().manual_seed(int(seed))
    z = torch.randn(samples, z_dim, generator=gen)
    t = torch.linspace(-2.0, 2.0, steps)
    result = LabelControlResult(labels=names, steps=t.tolist(), center=center_t.tolist(), scale=scale_t.tolist())

    modules = [m for m in (G, scorer) if isinstance(m, torch.nn.Module)]
    was_training = [m.training for m in modules]
    for m in modules:
        m.eval()
    try:
        for i in range(label_dim):
            labels = center_t.repeat(steps * samples, 1)
            requested = (center_t[i] + t * scale_t[i]).repeat_interleave(samples)
            labels[:, i] = requested
            zs = z.repeat(steps, 1)
            measured = []
            for start in range(0, len(zs), batch):
                images = _as_images(G(zs[start:start + batch].to(device), labels[start:start + batch].to(device)))
                measured.append(scorer(images.float())[:, i].detach().float().cpu())
            got = torch.cat(measured).numpy().astype(np.float64)
            want = requested.numpy().astype(np.float64)
            result.requested.append(want)
            result.measured.append(got)
            result.r.append(_pearson(want, got))
            result.mae.append(float(np.abs(got - want).mean()))
    finally:
        for m, mode in zip(modules, was_training, strict=True):
            m.train(mode)
    if png is not None:
        save_plot(result, png)
    return result


def evaluate_run(G, scorer, *, recipe, output_dir: str | Path, kimg: float, labels=None,
                 device=None) -> LabelControlResult:
    """What a training run calls (rank 0): settings from ``train.label_control``, the PNG under
    ``output_dir/label_control/``. ``labels``: the run's label table in G's label space; the sweep
    is then ``mean + t * std`` of each column (exactly -2..+2 when the labels are standardised).
    Returns the result; merge ``result.metrics`` into stats.jsonl."""
    settings = recipe.train.label_control
    center = scale = None
    if labels is not None:
        table = torch.as_tensor(labels, dtype=torch.float64)
        center, scale = table.mean(0).float(), table.std(0, unbiased=False).clamp(min=1e-12).float()
    png = Path(output_dir) / "label_control" / f"label-control-{kimg_tag(kimg)}.png"
    return evaluate(G, scorer, label_names=list(recipe.data.label_columns), steps=settings.steps,
                    samples=settings.samples, seed=recipe.seed, center=center, scale=scale,
                    device=device, png=png)


def kimg_tag(kimg: float) -> str:
    """``12.5`` -> ``"0012.500"``: sorts by name in training order."""
    return f"{kimg:08.3f}"


def summary(result: LabelControlResult) -> str:
    """One short line for a progress display: ``ctrl r 0.93 (min 0.88)``."""
    metrics = result.metrics
    return f"ctrl r {metrics[f'{PREFIX}/mean_r']:.2f} (min {metrics[f'{PREFIX}/min_r']:.2f})"


def table_rows(result: LabelControlResult) -> list[tuple[str, str, str]]:
    """Rows (label, r, MAE) for a final summary table."""
    return [(name, f"{r:.3f}", f"{mae:.3f}") for name, r, mae in zip(result.labels, result.r, result.mae, strict=True)]


def print_table(result: LabelControlResult, *, title: str = "Label control (requested vs measured)") -> None:
    from rich.table import Table

    from ..console import out

    table = Table(title=title)
    table.add_column("label")
    table.add_column("r", justify="right")
    table.add_column("MAE", justify="right")
    for row in table_rows(result):
        table.add_row(*row)
    metrics = result.metrics
    table.add_row("[bold]mean[/bold]", f"{metrics[f'{PREFIX}/mean_r']:.3f}", f"{metrics[f'{PREFIX}/mean_mae']:.3f}")
    out.print(table)


# --------------------------------------------------------------------------------------------
# Plot: one panel per label, measured (y) against requested (x), in sweep units t = -2..+2
# --------------------------------------------------------------------------------------------

PANEL = 220
MARGIN = 34
LIMIT = 3.0  # axes run from -LIMIT to +LIMIT sweep units; points beyond are drawn on the border


def save_plot(result: LabelControlResult, path: str | Path) -> Path:
    from PIL import Image, ImageDraw, ImageFont

    from ..runtime.files import atomic_path

    n = len(result.labels)
    cols = min(n, 4)
    rows = (n + cols - 1) // cols
    cell = PANEL + 2 * MARGIN
    image = Image.new("RGB", (cols * cell, rows * cell), "white")
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default()

    for k, name in enumerate(result.labels):
        x0 = (k % cols) * cell + MARGIN
        y0 = (k // cols) * cell + MARGIN

        def to_px(u: float, v: float, x0=x0, y0=y0) -> tuple[float, float]:
            u = min(max(u, -LIMIT), LIMIT)
            v = min(max(v, -LIMIT), LIMIT)
            return x0 + (u + LIMIT) / (2 * LIMIT) * PANEL, y0 + (LIMIT - v) / (2 * LIMIT) * PANEL

        draw.rectangle([x0, y0, x0 + PANEL, y0 + PANEL], outline=(90, 90, 90))
        for tick in (-2, -1, 0, 1, 2):
            px, py = to_px(tick, tick)
            draw.line([px, y0, px, y0 + PANEL], fill=(232, 232, 232))
            draw.line([x0, py, x0 + PANEL, py], fill=(232, 232, 232))
            if tick % 2 == 0:
                draw.text((px - 4, y0 + PANEL + 3), str(tick), fill="black", font=font)
                draw.text((x0 - 16, py - 6), str(tick), fill="black", font=font)
        draw.line([to_px(-LIMIT, -LIMIT), to_px(LIMIT, LIMIT)], fill=(150, 150, 150), width=1)

        center, scale = result.center[k], result.scale[k] or 1.0
        want = (result.requested[k] - center) / scale
        got = (result.measured[k] - center) / scale
        for u, v in zip(want, got, strict=True):
            px, py = to_px(float(u), float(v))
            draw.ellipse([px - 1.5, py - 1.5, px + 1.5, py + 1.5], fill=(70, 110, 200))
        means = [to_px(float(s), float(got[np.isclose(want, s)].mean())) for s in result.steps]
        draw.line(means, fill=(210, 50, 40), width=2)

        title = f"{name}  r={result.r[k]:.2f}  MAE={result.mae[k]:.2f}"
        draw.text((x0, y0 - 16), title, fill="black", font=font)
        draw.text((x0 + PANEL - 50, y0 + PANEL + 14), "requested", fill=(90, 90, 90), font=font)
        draw.text((x0 - 30, y0 - 28), "measured", fill=(90, 90, 90), font=font)

    path = Path(path)
    with atomic_path(path) as tmp:
        image.save(tmp, format="PNG")
    return path
