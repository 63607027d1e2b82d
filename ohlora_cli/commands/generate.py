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


def parse_seeds(text: str) -> list[int]:
    """``"0-35,40"`` -> [0, 1, ..., 35, 40] (NVlabs' gen_images.py ``--seeds``): ranges inclusive,
    order kept, each seed once."""
    seeds: list[int] = []
    for part in text.split(","):
        part = part.strip()
        low, dash, high = part.partition("-")
        try:
            first, last = (int(low), int(high)) if dash else (int(part), int(part))
        except ValueError:
            raise BadInputError(f"--seeds: '{part}' is not a seed or a range",
                                hint="Write seeds and inclusive ranges of non-negative integers: --seeds 0-35,40") from None
        if first < 0 or last < first:
            raise BadInputError(f"--seeds: '{part}' is not a range of non-negative seeds, low to high",
                                hint="Write e.g. --seeds 0-35,40 (ranges inclusive).")
        seeds.extend(range(first, last + 1))
        if len(seeds) > MAX_SEEDS:
            raise BadInputError(f"--seeds {text}: more than {MAX_SEEDS:,} images", hint="Draw fewer at a time.")
    repeated = sorted({s for s in seeds if seeds.count(s) > 1})
    if repeated:
        raise BadInputError(f"--seeds: seed {repeated[0]} is given twice (the same image)",
                            hint="Give each seed once.")
    return seeds


MAX_SEEDS = 100_000


def check_outputs(output: Path | None, out_dir: Path | None, *, force: bool = False) -> None:
    """Exactly one destination, and nothing there to write over (``-o FILE --force``: the user
    names that file, and it may be replaced; nothing else ever is)."""
    if (output is None) == (out_dir is None):
        raise BadInputError("say where the images go: -o FILE.png (one grid) or --out-dir FOLDER (one PNG each)"
                            if output is None else "-o and --out-dir: give one of them, not both")
    if output is not None:
        if output.suffix.lower() != ".png":
            raise BadInputError(f"-o: {output}: the grid is written as PNG; name the file *.png")
        if output.is_dir():
            raise BadInputError(f"-o: {output} is a folder", hint="Name a PNG file, or use --out-dir for one PNG each.")
        if output.exists() and not force:
            raise BadInputError(f"-o: {output} already exists",
                                hint="Name a new file, or pass --force to replace this one.")
        return
    if force:
        raise BadInputError("--force replaces the file named by -o; --out-dir takes a new or empty folder",
                            hint="Name a new folder for --out-dir.")
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        what = "is a file" if not out_dir.is_dir() else "is not empty"
        raise BadInputError(f"--out-dir: {out_dir} {what}",
                            hint="Name a new (or empty) folder; ohlora never writes over files it did not create.")


def run(source: str, *, labels: str | None, n: int | None, seed: int, truncation: float, sweep: str | None,
        start: float | None, stop: float | None, steps: int, output: Path | None, out_dir: Path | None, scorer: str | None,
        device: str, seeds: str | None = None, force: bool = False) -> None:
    check_outputs(output, out_dir, force=force)
    seed_list = parse_seeds(seeds) if seeds is not None else None
    if seed_list is not None and n is not None and n != len(seed_list):
        raise BadInputError(f"-n {n} and --seeds {seeds} ({len(seed_list)} seeds): give one of them",
                            hint="--seeds draws one image (a sweep: one row) per seed.")
    if seed_list is not None and seed:
        raise BadInputError("--seed and --seeds: give one of them", hint="--seeds 5-8 draws seeds 5, 6, 7 and 8.")
    if not Path(source).exists():
        raise BadInputError(f"{source}: no such file or folder",
                            hint="Name a GAN run folder (its output_dir), a checkpoint-*.safetensors, or a GenForce .pth.")
    _not_an_llm_run(Path(source))
    import torch

    from ..gan import generate as gen
    from ..gan import load_generator
    from ..runtime.devices import resolve_device

    if device == "cuda" and not torch.cuda.is_available():
        raise BadInputError("--device cuda: no CUDA GPU is visible", hint="Use --device auto (or cpu).")
    where = resolve_device(device, key="--device")
    G = load_generator(source, device=where)
    request = gen.plan(G, labels=gen.parse_labels(labels, G), n=n, seed=seed, sweep=sweep, start=start, stop=stop,
                       steps=steps, seeds=seed_list)
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


def _not_an_llm_run(folder: Path) -> None:
    """A train-llm run folder given to generate: point at chat (reads recipe.yaml's kind only)."""
    recipe = folder / "recipe.yaml"
    if not (folder.is_dir() and recipe.is_file()):
        return
    import yaml

    try:
        kind = (yaml.safe_load(recipe.read_text(encoding="utf-8")) or {}).get("kind")
    except (OSError, ValueError, yaml.YAMLError, AttributeError):
        return  # not readable as a recipe: load_generator says what is wrong with the folder
    if kind == "llm":
        raise BadInputError(f"{folder}: a train-llm run (kind: llm); generate draws images from a GAN run",
                            hint=f"Talk to it: ohlora chat {folder}")


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
