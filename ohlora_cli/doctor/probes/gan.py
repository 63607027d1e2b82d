"""Dry-run probes of the ``train-gan`` pipeline (check ids: recipe-data, dtype-mismatch, grad-inference).

- ``data``: the CSV and every image header read by the trainer's own code (bad rows, cells and
  files raise DataError naming file / row / column, which the registry shows as a FAIL row); the
  images that will be resized; label scales against the -2..+2 sweeps; ``model.checkpoint``
  read and checked against the recipe's networks on the meta device.
- ``dtype_mismatch``: G and D at full size on the meta device (no weights, no memory), one real
  batch from the real dataset through the real DataLoader collate, and the training step's
  D and G phases (forward, R1, backward). A forward pre-hook on every module compares the dtypes
  of its floating inputs with its own weights and names the first module where they differ.
- ``grad_inference``: a shrunken copy of G (same architecture, small widths, CPU) goes through
  the pipeline's own sampling function (``grid.label_sweep``) twice, and through one training
  forward that tracks ``w_avg``. Autograd's saved-tensor hook must see nothing during sampling,
  no output or buffer may carry ``grad_fn``, and live tensor memory must not grow between calls.

Import-light: the GAN engine's modules and torch are imported inside the probes, when they run.
"""

from __future__ import annotations

import gc

from ...errors import DataError
from ..registry import Finding, Status

TABLE = "gan:table"


def _table(recipe, ctx):
    if TABLE not in ctx.cache:
        from ...gan.data import read_table

        try:
            ctx.cache[TABLE] = read_table(recipe.data)
        except DataError:
            rows = _data_rows(recipe.data.csv)
            if rows == 1 and recipe.train.batch_size > 1:  # say the first thing to fix: one row is no dataset
                raise DataError(f"{recipe.data.csv}: 1 data row, and train.batch_size is {recipe.train.batch_size}: "
                                "one example cannot fill a batch (nor can its labels be standardised)",
                                hint="Add rows (one per image), or lower train.batch_size.") from None
            raise
    return ctx.cache[TABLE]


def _data_rows(csv_path) -> int | None:
    """Data rows under the CSV's header (None when it cannot be read)."""
    import csv

    try:
        with open(csv_path, newline="", encoding="utf-8-sig") as fh:
            return max(sum(1 for row in csv.reader(fh) if any(cell.strip() for cell in row)) - 1, 0)
    except (OSError, UnicodeDecodeError, csv.Error):
        return None


def _synthetic_pending(recipe) -> bool:
    """data.synthetic has not built its data yet (the probes read only what exists)."""
    from ...gan.synthetic import pending_build

    return pending_build(recipe.data)


# ------------------------------------------------------------------------------------ data


def data(recipe, ctx) -> list[Finding]:
    from ...gan.data import scan_images

    check = "recipe-data"
    if _synthetic_pending(recipe):
        return [Finding(check, Status.PASS, f"data.csv {recipe.data.csv} will be built on first use "
                        f"(data.synthetic: {recipe.data.synthetic}, {recipe.data.synthetic_count} images)",
                        where="data.synthetic")]
    table = _table(recipe, ctx)
    res = recipe.model.resolution
    scan = scan_images(table, res)
    findings = [Finding(check, Status.PASS, f"{table.csv}: {len(table)} rows, labels {', '.join(table.label_names)} "
                        "finite; every image file present and readable", where="data.csv")]
    if scan["resized"]:
        sizes = ", ".join(f"{w}x{h} ({n})" for (w, h), n in scan["sizes"].items() if (w, h) != (res, res))
        findings.append(Finding(check, Status.WARN, f"{scan['resized']} of {len(table)} images are not {res}x{res} "
                                f"({sizes}); they will be converted to RGB and resized on load", where="model.resolution",
                                hint="Resize the images beforehand to save the work every run, or set model.resolution."))
    if len(table) < recipe.train.batch_size:
        findings.append(Finding(
            check, Status.WARN, f"{len(table)} data rows, fewer than train.batch_size {recipe.train.batch_size}: "
            "every batch repeats images", where="train.batch_size",
            hint=f"Lower train.batch_size to at most {len(table)}, or add rows."))
    spread = table.raw_spread()  # None when the labels are standardised
    if spread is not None:
        far = [f"{n} mean {m:.3g}, sd {sd:.3g}" for n, m, sd in zip(table.label_names, *spread, strict=True)
               if not 0.25 <= sd <= 4 or abs(m) > 4]
        if far:
            findings.append(Finding(
                check, Status.WARN, f"raw labels far from z-scores ({'; '.join(far)}): the generator's label input "
                "sees them at this scale, which can leave the labels steering little (gan-demo on raw labels, sd "
                "0.08 and 0.13: pixel read-back r 0.07 / 0.10, against 0.89 / 0.92 standardised)",
                where="data.standardize_labels",
                hint="Set data.standardize_labels: true (the statistics are saved in the checkpoint)."))
    if recipe.model.checkpoint:
        from ...gan.checkpoint import check_start_checkpoint

        check_start_checkpoint(recipe, len(table.label_names))
        findings.append(Finding(check, Status.PASS, f"model.checkpoint {recipe.model.checkpoint} fits the recipe's "
                                "networks (label-dependent layers will be re-initialised)", where="model.checkpoint"))
    return findings


# ---------------------------------------------------------------------------- dtype-mismatch


class _Mismatch(Exception):
    pass


def _dtype_hooks(named_modules):
    """Forward pre-hooks that raise _Mismatch at the first module whose floating inputs differ in
    dtype from its own floating weights."""
    import torch

    handles = []
    for prefix, root in named_modules:
        for name, module in root.named_modules():
            own = [p for p in module.parameters(recurse=False) if p.is_floating_point()]
            if not own:
                continue

            def hook(mod, args, kwargs, *, where=f"{prefix}.{name}".rstrip("."), weight=own[0].dtype):
                for i, arg in enumerate([*args, *kwargs.values()]):
                    if torch.is_tensor(arg) and arg.is_floating_point() and arg.dtype != weight:
                        raise _Mismatch(where, i, arg.dtype, weight)

            handles.append(module.register_forward_pre_hook(hook, with_kwargs=True))
    return handles


def _checkpoint_dtypes(path) -> set:
    from pathlib import Path

    from ...gan import checkpoint as ckpt

    nets = ckpt.read_networks(Path(path))
    return {str(t.dtype).removeprefix("torch.") for state in nets.values() for t in state.values() if t.is_floating_point()}


def dtype_mismatch(recipe, ctx) -> list[Finding]:
    import torch

    from ...gan.data import GanDataset, iter_batches
    from ...gan.loss import StyleGANLoss
    from ...gan.networks import build_networks
    from ...runtime import dist

    check = "dtype-mismatch"
    if _synthetic_pending(recipe):
        return [Finding(check, Status.SKIP, "the synthetic dataset is built on first use; probe it after that",
                        where="data.synthetic")]
    table = _table(recipe, ctx)
    world = ctx.gpus if ctx.gpus and ctx.gpus > 1 else 1
    per_device, _ = dist.split_batch(recipe.train.batch_size, world, max_per_device=recipe.train.max_device_batch)
    batch = max(2, min(per_device, 8))
    dataset = GanDataset(table, recipe.model.resolution, cache_mb=0)  # the real __getitem__, no preloading
    images, labels = next(iter_batches(dataset, seed=recipe.seed, start_step=0, global_batch=batch))
    if isinstance(labels, (list, tuple)):  # per-label Python floats: collated column by column
        labels = torch.stack([torch.as_tensor(c) for c in labels], dim=1)
    notes = [f"one real batch of {batch}: images {str(images.dtype).removeprefix('torch.')}, "
             f"labels {str(labels.dtype).removeprefix('torch.')}"]
    if recipe.model.checkpoint:
        stored = _checkpoint_dtypes(recipe.model.checkpoint)
        if stored - {"float32"}:
            notes.append(f"model.checkpoint stores {', '.join(sorted(stored))}: the loader casts it to the "
                         "networks' float32")

    with torch.device("meta"):
        G, D = build_networks(recipe, len(table.label_names))
    t = recipe.train
    loss = StyleGANLoss(G, D, r1_gamma=t.r1_gamma or 1.0, r1_interval=1, style_mixing_prob=t.style_mixing_prob,
                        w_avg_beta=t.w_avg_beta)
    real = images.to("meta").float() / 127.5 - 1  # as the training loop converts them
    real_c = labels.to("meta")
    gen_z = torch.randn(batch, recipe.model.z_dim, device="meta")
    handles = _dtype_hooks([("G", G), ("D", D)])
    try:
        for phase in ("Dboth", "Gmain"):
            G.requires_grad_(phase == "Gmain")
            D.requires_grad_(phase != "Gmain")
            loss.accumulate_gradients(phase, real, real_c, gen_z, real_c, 1.0, lambda x: x.backward())
    except _Mismatch as exc:
        where, index, got, want = exc.args
        origin = ("the labels batch from the dataset (ohlora_cli.gan.data.GanDataset through the DataLoader "
                  "collate)" if got == labels.dtype and index > 0 else f"input {index}")
        return [Finding(check, Status.FAIL,
                        f"{where}: {origin} is {str(got).removeprefix('torch.')} but the module's weights are "
                        f"{str(want).removeprefix('torch.')}",
                        where=where, hint=f"Cast at the dataset boundary: labels.to({want}) "
                        "(torch.tensor(values, dtype=torch.float32)); .double() is not the fix.")]
    finally:
        for h in handles:
            h.remove()
    findings = [Finding(check, Status.PASS, "; ".join(notes) + "; D and G training phases (forward, R1, backward) "
                        f"of the full-size {recipe.model.resolution} px networks run on the meta device with matching "
                        "dtypes", where="data.label_columns")]
    return findings + _scorer_dtypes(recipe, real, real_c, G)


def _scorer_dtypes(recipe, images, labels, G) -> list[Finding]:
    """The scorer path (scorer training step, property-regression loss, or the label-control scores)
    on the same meta batch; [] when the run has no scorer."""
    from ...errors import BadInputError
    from ...gan import scorer

    check, method = "dtype-mismatch", recipe.train.method
    where = "train.method" if method == "scorer" else "model.scorer"
    try:
        result = scorer.probe_loss(recipe, images, labels, G=G)
    except BadInputError as exc:
        return [Finding(check, Status.FAIL, str(exc), where=where, hint=exc.hint, bad_input=True)]
    except (RuntimeError, ValueError) as exc:  # dtype errors of the scorer path, as the run would raise them
        return [Finding(check, Status.FAIL, f"the scorer path ({method}) fails on a real batch: {exc}", where=where,
                        hint="Feed the scorer float32 images in [-1, 1] and float32 labels, as the data pipeline "
                             "delivers them.")]
    if result is None:
        return []
    return [Finding(check, Status.PASS, f"scorer path ({method}): ok on the meta device with matching dtypes",
                    where=where)]


# ---------------------------------------------------------------------------- grad-inference


def _live_tensor_bytes() -> int:
    """Bytes held by live CPU tensors (a census of the garbage collector's objects)."""
    import warnings

    import torch

    gc.collect()
    total = 0
    with warnings.catch_warnings():  # isinstance() on some torch module objects warns about deprecations
        warnings.simplefilter("ignore")
        tensors = [obj for obj in gc.get_objects() if isinstance(obj, torch.Tensor)]
    for tensor in tensors:
        try:
            if tensor.device.type == "cpu":
                total += tensor.element_size() * tensor.nelement()
        except Exception:  # objects that fail on inspection are not ours
            continue
    return total


def grad_inference(recipe, ctx) -> list[Finding]:
    import torch

    from ...gan.grid import fixed_z, label_sweep
    from ...gan.loss import StyleGANLoss
    from ...gan.networks import Discriminator, Generator

    check = "grad-inference"
    m, t = recipe.model, recipe.train
    label_size = len(recipe.data.label_columns)
    res = min(m.resolution, 32)
    G = Generator(res, z_dim=min(m.z_dim, 16), w_dim=min(m.w_dim, 16), label_size=label_size,
                  label_dim=min(m.label_dim, 8), mapping_layers=min(m.mapping_layers, 2), fmaps_base=8 * res, fmaps_max=8)
    D = Discriminator(res, label_size=label_size, fmaps_base=8 * res, fmaps_max=8)
    G.train()  # as the trainer leaves it between snapshots
    z = fixed_z(G, 2, recipe.seed)

    saved = []

    def pack(tensor):
        saved.append(tensor.nelement() * tensor.element_size())
        return tensor

    sizes = []
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda x: x):
        for _ in range(2):
            images, _, _ = label_sweep(G, z, steps=3)
            sizes.append(_live_tensor_bytes())
            del images
    carried = [name for name, b in G.named_buffers() if b.grad_fn is not None]
    findings = []
    if saved or carried:
        return [Finding(check, Status.FAIL, f"the snapshot sampler saved {len(saved)} tensors ({sum(saved)} bytes) for "
                        f"backward; buffers with history: {', '.join(carried) or 'none'}", where="ohlora_cli.gan.grid.label_sweep",
                        hint="Generate under torch.no_grad() with G.eval(); keep only .detach().cpu() images.")]
    growth = max(0, sizes[1] - sizes[0])
    findings.append(Finding(check, Status.PASS if growth == 0 else Status.WARN,
                            f"snapshot sampling (grid.label_sweep) twice: 0 tensors saved for backward, outputs "
                            f"without grad_fn, {growth} bytes retained per call", where="ohlora_cli.gan.grid.label_sweep"))

    loss = StyleGANLoss(G, D, r1_gamma=0, r1_interval=1, style_mixing_prob=t.style_mixing_prob, w_avg_beta=t.w_avg_beta)
    D.requires_grad_(False)
    gen_c = torch.zeros(2, label_size)
    loss.accumulate_gradients("Gmain", None, None, torch.randn(2, G.z_dim), gen_c, 1.0, lambda x: x.backward())
    w_avg = G.truncation.w_avg
    if w_avg.grad_fn is not None or w_avg.requires_grad:
        return [*findings, Finding(check, Status.FAIL, "truncation.w_avg carries autograd history after a training "
                                   "forward (it chains every step's graph)", where="ohlora_cli.gan.loss.StyleGANLoss.track_w_avg",
                                   hint="Update w_avg from w.detach() under torch.no_grad().")]
    findings.append(Finding(check, Status.PASS, "a training forward updates truncation.w_avg from a detached w "
                            "(no history kept in the buffer)", where="ohlora_cli.gan.loss.StyleGANLoss.track_w_avg"))
    return findings + _label_control_grad(recipe, G)


def _label_control_grad(recipe, G) -> list[Finding]:
    """Label control is the run's inference on the scorer: it must save nothing for backward."""
    import torch

    from ...errors import BadInputError
    from ...gan import label_control, scorer

    check = "grad-inference"
    try:
        probe = scorer.probe_scorer(recipe, "cpu")
    except BadInputError as exc:
        return [Finding(check, Status.FAIL, str(exc), where="model.scorer", hint=exc.hint, bad_input=True)]
    if probe is None:
        return []
    score = scorer.in_label_space(probe, list(recipe.data.label_columns))
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t.nelement() * t.element_size()) or t,
                                                  lambda t: t):
        label_control.evaluate(G, score, label_names=list(recipe.data.label_columns), steps=3, samples=1)
    where = "ohlora_cli.gan.label_control.evaluate"
    if saved:
        return [Finding(check, Status.FAIL, f"label control saved {len(saved)} tensors ({sum(saved)} bytes) for "
                        "backward", where=where, hint="Run G and the scorer under torch.no_grad() with both in eval mode.")]
    return [Finding(check, Status.PASS, "label control (G sweep scored by the scorer): 0 tensors saved for backward",
                    where=where)]
