"""``ohlora generate SOURCE``: images from a trained generator with chosen labels.

1. Where the images go is checked before anything loads: ``-o`` a new PNG file, or ``--out-dir``
   a new or empty folder (nothing ohlora did not write is ever written over).
2. The generator is loaded (``gan.load_generator``: a run folder, our checkpoint or a GenForce
   ``.pth``, read without unpickling), the labels and the sweep checked against its names and units.
3. The images are drawn (``gan.generate``), measured by ``--scorer`` when given, and written: the
   grid, or one PNG per image with ``images.csv``.
"""

from __future__ import annotations

import time
from pathlib import Path

from ..console import info, out, say
from ..errors import BadInputError, CheckpointError


def check_outputs(output: Path | None, out_dir: Path | None) -> None:
    """Exactly one destination, and nothing there to write over."""
    if (output is None) == (out_dir is None):
        raise BadInputError("say where the images go: -o FILE.png (one grid) or --out-dir FOLDER (one PNG each)"
                            if output is None else "-o and --out-dir: give one of them, not both")
    if output is not None:
        if output.suffix.lower() != ".png":
            raise BadInputError(f"-o: {output}: the grid is written as PNG; name the file *.png")
        if output.exists():
            raise BadInputError(f"-o: {output} already exists", hint="Name a new file; ohlora never writes over one.")
        return
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        what = "is a file" if not out_dir.is_dir() else "is not empty"
        raise BadInputError(f"--out-dir: {out_dir} {what}",
                            hint="Name a new (or empty) folder; ohlora never writes over files it did not create.")


def run(source: str, *, labels: str | None, n: int | None, seed: int, truncation: float, sweep: str | None,
        start: float | None, stop: float | None, steps: int, output: Path | None, out_dir: Path | None, scorer: str | None,
        device: str) -> None:
    check_outputs(output, out_dir)
    if not Path(source).exists():
        raise BadInputError(f"{source}: no such file or folder",
                            hint="Name a GAN run folder (its output_dir), a checkpoint-*.safetensors, or a GenForce .pth.")
    import torch

    from ..gan import generate as gen
    from ..gan import load_generator
    from ..runtime.devices import resolve_device

    if device == "cuda" and not torch.cuda.is_available():
        raise BadInputError("--device cuda: no CUDA GPU is visible", hint="Use --device auto (or cpu).")
    where = resolve_device(device, key="--device")
    G = load_generator(source, device=where)
    request = gen.plan(G, labels=gen.parse_labels(labels, G), n=n, seed=seed, sweep=sweep, start=start, stop=stop,
                       steps=steps)
    score = _load_scorer(scorer, G, where) if scorer else None
    began = time.perf_counter()
    images = gen.render(G, request, truncation=truncation)
    if where.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - began
    measured = gen.measure(score, images) if score is not None else None
    if output is not None:
        path = gen.write_grid(images, request, output)
        shape = f"a {request.rows} x {request.cols} grid of {request.count} images"
    else:
        path = gen.write_folder(images, request, out_dir, G=G, measured=measured)
        shape = f"{request.count} PNGs and {path.name}"
    say(f"wrote {path}: {shape}, {G.resolution} px, in {seconds:.2f} s on {where.type}")
    if G.label_dim:
        fixed = ", ".join(f"{name} {float(v):+.3g}" for name, v in zip(request.names, request.labels[0].tolist(),
                                                                        strict=True) if name != request.sweep)
        swept = ""
        if request.sweep:
            values = request.labels[:, request.names.index(request.sweep)]
            swept = f"{request.sweep} swept {float(values[0]):+.3g} .. {float(values[-1]):+.3g}; "
        info(f"labels ({gen.units(G)}): {swept}{fixed or 'no other'}")
    if measured is not None:
        _print_measured(request, measured)


def _load_scorer(path: str, G, device):
    from ..gan import generate as gen
    from ..gan.scorer import in_label_space, load_scorer

    if not G.label_dim:
        raise BadInputError("--scorer: this generator has no labels to measure")
    if not getattr(G, "label_names", None):
        raise BadInputError("--scorer: this generator's file does not name its labels (a GenForce .pth), so the "
                            "scorer's columns cannot be matched to them",
                            hint="Use a checkpoint of an ohlora run, which stores its label names.")
    try:
        loaded = load_scorer(path, device, key="--scorer")
    except CheckpointError as exc:
        raise CheckpointError(str(exc), hint="Point --scorer at the output_dir of a train.method: scorer run, or "
                              "at its scorer.safetensors.") from None
    return in_label_space(loaded, gen.label_names(G), label_mean=G.label_mean, label_std=G.label_std, key="--scorer")


def _print_measured(request, measured) -> None:
    """Requested against measured: per column of a sweep (the swept label), else per label."""
    from rich.table import Table

    table = Table(title="measured by the scorer (label units)", title_justify="left")
    if request.sweep is not None:
        k = request.names.index(request.sweep)
        wanted = request.labels[:, k].reshape(request.rows, request.cols)
        got = measured[:, k].reshape(request.rows, request.cols)
        table.add_column(f"{request.sweep} requested", justify="right")
        table.add_column("measured (mean over rows)", justify="right")
        for j in range(request.cols):
            table.add_row(f"{float(wanted[0, j]):+.3g}", f"{float(got[:, j].mean()):+.3f}")
    else:
        table.add_column("label")
        table.add_column("requested", justify="right")
        table.add_column("measured (mean +- std over images)", justify="right")
        for k, name in enumerate(request.names):
            column = measured[:, k]
            spread = float(column.std()) if len(column) > 1 else 0.0
            table.add_row(name, f"{float(request.labels[0, k]):+.3g}", f"{float(column.mean()):+.3f} +- {spread:.3f}")
    out.print(table)
