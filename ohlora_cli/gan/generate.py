"""Images from a trained generator with chosen labels: what ``ohlora generate`` runs.

**Units.** Label values are in the generator's own label units, the units it was trained on:
z-scores when the run standardised its labels (``data.standardize_labels``: 0 is the data's mean,
1 one standard deviation; ``G.label_mean`` / ``G.label_std`` convert), else the raw values of the
CSV. Labels not given are the data's mean (0 when standardised), and a sweep goes from -2 to +2
standard deviations around it unless ``--from`` / ``--to`` say otherwise. A value more than
``Z_LIMIT`` standard deviations from the mean is refused: the generator never saw one and its
images there say nothing about the label. A file that does not record the data's spread (a
GenForce ``.pth``, a raw-label run from before it was recorded) is checked for finite values only,
with 0 for labels not given and -2..+2 for a sweep.

**Seeds.** Every image's z comes from its own seed, ``seed + i`` for image i (a sweep: for row i),
or the i-th of ``--seeds``, so any image can be drawn again alone: ``--seeds S`` with its labels.

The generator runs in eval mode under ``no_grad`` and only detached CPU images leave ``render``.
"""

from __future__ import annotations

import csv
import difflib
import math
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..errors import BadInputError
from ..runtime.files import atomic_path
from .grid import save_grid, sweep_captions, to_uint8

Z_LIMIT = 4.0
CSV_NAME = "images.csv"


def label_names(G) -> list[str]:
    """The generator's label names (a GenForce file has none: ``label0``, ``label1``, ...)."""
    return list(G.label_names) if getattr(G, "label_names", None) else [f"label{i}" for i in range(G.label_dim)]


def standardised(G) -> bool:
    return G.label_dim > 0 and getattr(G, "label_std", None) is not None


def spread(G) -> tuple[list[float], list[float]] | None:
    """Each label's mean and sd in the data, in the generator's units: 0 and 1 when standardised,
    the CSV's for a run on raw labels; None when the file does not record them."""
    if standardised(G):
        return [0.0] * G.label_dim, [1.0] * G.label_dim
    recorded = getattr(G, "label_spread", None)
    return (list(recorded["mean"]), list(recorded["sd"])) if recorded else None


def units(G) -> str:
    """How the generator's label values read, in words."""
    if standardised(G):
        return "z-scores: the run standardised its labels, raw = mean + z x std"
    if spread(G) is not None:
        return "raw units: the CSV's values, the run did not standardise its labels; labels not given: the data's mean"
    return "raw units: the CSV's values, the run did not standardise its labels"


def parse_labels(text: str | None, G, *, option: str = "--labels") -> dict[str, float]:
    """``"eyes=1.5,mouth=-1"`` -> ``{"eyes": 1.5, "mouth": -1.0}``, each name and value checked."""
    if not text or not text.strip():
        return {}
    names = label_names(G)
    _needs_labels(G, option)
    values: dict[str, float] = {}
    for part in text.split(","):
        name, sep, raw = part.partition("=")
        name = name.strip()
        if not sep or not name:
            raise BadInputError(f"{option}: '{part.strip()}' is not NAME=VALUE",
                                hint=f"Write {option} {names[0]}=1.5{',' + names[1] + '=-1' if len(names) > 1 else ''}.")
        if name not in names:
            raise BadInputError(f"{option}: unknown label '{name}'{did_you_mean(name, names)}",
                                hint=f"This generator's labels: {', '.join(names)}.")
        if name in values:
            raise BadInputError(f"{option}: label '{name}' is given twice")
        try:
            value = float(raw)
        except ValueError:
            raise BadInputError(f"{option}: {name}={raw.strip()!r} is not a number") from None
        check_value(G, name, value, option)
        values[name] = value
    return values


def did_you_mean(name: str, names: list[str]) -> str:
    """'; did you mean 'eyes_score'?' for the closest label name (case and a missing suffix
    forgiven), or ''."""
    lowered = {n.lower(): n for n in names}
    close = difflib.get_close_matches(name.lower(), list(lowered), n=1, cutoff=0.6)
    close = close or [n for n in lowered if n.startswith(name.lower()) or name.lower().startswith(n)][:1]
    return f"; did you mean '{lowered[close[0]]}'?" if close else ""


def _needs_labels(G, option: str) -> None:
    if not G.label_dim:
        raise BadInputError(f"{option}: this generator has no labels (an unconditional model)",
                            hint=f"Leave out {option}; -n, --seed and --truncation still apply.")


def check_value(G, name: str, value: float, option: str) -> None:
    """A finite value, within ``Z_LIMIT`` sd of the data's mean when the file records the spread."""
    if not math.isfinite(value):
        raise BadInputError(f"{option}: {name}={value} is not a finite number")
    if standardised(G):
        if abs(value) > Z_LIMIT:
            raise BadInputError(
                f"{option}: {name}={value:g} is out of range: this run's labels are z-scores, and the generator saw "
                f"none beyond +-{Z_LIMIT:g}",
                hint=f"Give a value from -{Z_LIMIT:g} to {Z_LIMIT:g} (0 = the data's mean for {name}, 1 = one "
                     "standard deviation above it).")
        return
    known = spread(G)
    if known is not None:
        k = label_names(G).index(name)
        mean, sd = known[0][k], known[1][k]
        low, high = mean - Z_LIMIT * sd, mean + Z_LIMIT * sd
        if not low <= value <= high:
            raise BadInputError(
                f"{option}: {name}={value:g} is out of range: this run trained on raw labels, {name} with mean "
                f"{mean:.4g} and sd {sd:.4g}, and the generator saw none beyond +-{Z_LIMIT:g} sd",
                hint=f"Give a value from {low:.4g} to {high:.4g}.")


@dataclass
class Request:
    """What to draw: one row of labels and one z seed per image, in grid order (row-major)."""

    labels: torch.Tensor  # (N, label_dim) float32, the generator's label units
    seeds: list[int]
    rows: int
    cols: int
    sweep: str | None = None
    row_captions: list[str] | None = None
    col_captions: list[str] | None = None
    names: list[str] = field(default_factory=list)

    @property
    def count(self) -> int:
        return len(self.seeds)


def plan(G, *, labels: dict[str, float], n: int | None, seed: int, sweep: str | None = None,
         start: float | None = None, stop: float | None = None, steps: int = 7,
         seeds: list[int] | None = None) -> Request:
    """The request: ``n`` images (default 16) with ``labels`` (others at the data's mean), in a
    near-square grid; or with ``sweep``, ``n`` rows (default 4) of one z each, the label going from
    ``start`` to ``stop`` (default: -2 and +2 sd around its mean) over ``steps`` columns."""
    names = label_names(G)
    means, sds = spread(G) or ([0.0] * G.label_dim, [1.0] * G.label_dim)
    base = torch.tensor(means, dtype=torch.float32)
    for name, value in labels.items():
        base[names.index(name)] = value
    if seeds is not None:  # --seeds: one image (a sweep: one row) per seed, in their order
        n = len(seeds)
    if sweep is None:
        count = n or 16
        cols = math.ceil(math.sqrt(count))
        return Request(labels=base.repeat(count, 1), seeds=seeds or [seed + i for i in range(count)],
                       rows=math.ceil(count / cols), cols=cols, names=names)
    _needs_labels(G, "--sweep")
    if sweep not in names:
        raise BadInputError(f"--sweep: unknown label '{sweep}'{did_you_mean(sweep, names)}",
                            hint=f"This generator's labels: {', '.join(names)}.")
    if sweep in labels:
        raise BadInputError(f"--sweep {sweep}: the swept label is also given in --labels",
                            hint="Leave it out of --labels; --from and --to set its range.")
    k = names.index(sweep)
    start = means[k] - 2 * sds[k] if start is None else start
    stop = means[k] + 2 * sds[k] if stop is None else stop
    for option, value in (("--from", start), ("--to", stop)):
        check_value(G, sweep, value, option)
    rows = n or 4
    values = torch.linspace(start, stop, steps, dtype=torch.float64).round(decimals=6).float()  # no -5.96e-08
    grid = base.repeat(rows, steps, 1)
    grid[:, :, names.index(sweep)] = values
    row_captions, col_captions = sweep_captions([sweep], rows, values)
    row_seeds = seeds or [seed + r for r in range(rows)]
    return Request(labels=grid.reshape(-1, G.label_dim), seeds=[s for s in row_seeds for _ in range(steps)],
                   rows=rows, cols=steps, sweep=sweep, row_captions=row_captions, col_captions=col_captions,
                   names=names)


def z_for(seeds: list[int], z_dim: int) -> torch.Tensor:
    """One z per seed, each from its own generator: image i is the same whatever else is drawn."""
    return torch.stack([torch.randn(z_dim, generator=torch.Generator().manual_seed(s)) for s in seeds])


@torch.no_grad()
def render(G, request: Request, *, truncation: float = 1.0, batch: int = 16) -> torch.Tensor:
    """Images ``(N, 3, R, R)`` in [-1, 1] on the CPU, float32, in the request's order."""
    was_training = G.training
    G.eval()
    param = next(G.parameters())
    device, dtype = param.device, param.dtype
    z = z_for(request.seeds, G.z_dim)
    out = []
    try:
        for start in range(0, request.count, batch):
            labels = request.labels[start:start + batch].to(device, dtype) if G.label_dim else None
            images = G(z[start:start + batch].to(device, dtype), labels, truncation_psi=truncation)
            out.append(images.float().clamp(-1, 1).cpu())
    finally:
        G.train(was_training)
    return torch.cat(out)


@torch.no_grad()
def measure(scorer, images: torch.Tensor, *, batch: int = 64) -> torch.Tensor:
    """Scores ``(N, label_dim)`` of a scorer in the generator's label space
    (``gan.scorer.in_label_space``), on the CPU."""
    device = next(iter(scorer.buffers())).device
    return torch.cat([scorer(images[i:i + batch].to(device)).float().cpu() for i in range(0, len(images), batch)])


def write_grid(images: torch.Tensor, request: Request, path: str | Path) -> Path:
    """One PNG: the sweep with its captions (the label on each row, the value on each column), or
    the images in a near-square grid, empty cells white."""
    missing = request.rows * request.cols - request.count
    if missing:
        images = torch.cat([images, torch.ones(missing, *images.shape[1:])])
    return save_grid(images, request.rows, request.cols, path, row_captions=request.row_captions,
                     col_captions=request.col_captions)


def write_folder(images: torch.Tensor, request: Request, folder: str | Path, *, G,
                 measured: torch.Tensor | None = None) -> Path:
    """One PNG per image, named by its z seed as NVlabs' gen_images.py does (``seed0003.png``; in a
    sweep ``seed0003-c02.png`` for column 2; the generator's resolution) and ``images.csv``: file,
    z seed, the requested labels (label units; and raw units when they were standardised) and,
    with a scorer, the measured ones (label units)."""
    from PIL import Image

    folder = Path(folder)
    pixels = to_uint8(images)
    header = ["file", "seed", *request.names]
    if standardised(G):
        header += [f"{name}_raw" for name in request.names]
    if measured is not None:
        header += [f"{name}_measured" for name in request.names]
    rows = []
    for i, (seed, labels) in enumerate(zip(request.seeds, request.labels.tolist(), strict=True)):
        name = f"seed{seed:04d}.png" if request.sweep is None else f"seed{seed:04d}-c{i % request.cols:02d}.png"
        with atomic_path(folder / name) as tmp:
            Image.fromarray(pixels[i]).save(tmp, format="PNG")
        row = [name, seed, *(f"{v:.6g}" for v in labels)]
        if standardised(G):
            row += [f"{m + v * s:.6g}" for v, m, s in zip(labels, G.label_mean, G.label_std, strict=True)]
        if measured is not None:
            row += [f"{v:.6g}" for v in measured[i].tolist()]
        rows.append(row)
    table = folder / CSV_NAME
    with atomic_path(table) as tmp, open(tmp, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(header)
        writer.writerows(rows)
    return table
