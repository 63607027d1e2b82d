"""The GAN engine: what every ``train.method`` shares, and the one training loop of the StyleGAN methods.

How a run goes (``ohlora_cli.commands.train_gan`` drives it):

1. ``plan_run(recipe, ...) -> RunContext``: device, precision, the batch split, where the run
   resumes, and every check that needs no data (output_dir, ``model.checkpoint``, the scorer's
   keys). Writes nothing.
2. ``start_processes(ctx)`` joins the process group (under torchrun); ``build_data(ctx)`` builds a
   missing synthetic dataset (a dry run says what it would build); the command runs the doctor's
   preflight; ``read_data(ctx)`` reads the CSV and checks every image header.
3. ``open_run(ctx, report)`` claims output_dir and writes ``recipe.yaml`` (or, on a resume with a
   changed recipe, ``recipe-resume-N.yaml``), ``doctor.json`` and ``run.json`` (``runtime.run``).
4. ``ohlora_cli.gan.methods.METHODS[train.method](ctx)`` trains. The adversarial and
   property-regression methods are a list of ``Phase`` and a loss with
   ``accumulate_gradients(phase, ...)`` handed to ``train_loop`` (NVlabs' shape); the scorer fits
   a CNN on the images with the same building blocks.

Building blocks (module level): ``start_networks``, ``set_trainable``, ``make_optimizer``,
``make_scaler`` (a disabled GradScaler when AMP is off: one code path), ``lr_factor``,
``update_ema``, ``step_optimizer`` (DDP gradient all-reduce + NaN/Inf guard), ``stop_agreed`` /
``stop_if_agreed``, ``write_grid``, ``save_state`` / ``restore_state``, ``label_control_hook``,
``Interval``, ``TrainProgress``.
"""

from __future__ import annotations

import copy
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import torch

from .. import recipes
from ..console import err, info, say, warn
from ..errors import CheckpointError, Interrupted, RecipeError, RunFailed
from ..runtime import dist
from ..runtime.devices import autocast_dtype, choose_precision, resolve_device, use_cpu_threads
from ..runtime.files import append_jsonl
from ..runtime.report import ReportWriter
from ..runtime.run import RunFolder, resuming
from ..runtime.seeding import capture_rng, restore_rng, seed_everything
from ..runtime.signals import StopRequest
from ..runtime.trackers import Trackers, check_report_to
from . import checkpoint as ckpt
from . import label_control
from .config import GanRecipe
from .data import GanDataset, LabelTable, iter_batches, read_table, scan_images
from .grid import fixed_z, label_sweep, save_grid, sweep_captions, sweep_values
from .networks import Generator, build_networks
from .scorer import check_recipe as check_scorer_recipe
from .scorer import in_label_space, load_scorer, state_path
from .synthetic import ensure_synthetic, label_probe, pending_build

# ------------------------------------------------------------------------------- the context


@dataclass
class RunContext:
    """Everything a method's ``train(ctx)`` needs, resolved once."""

    recipe: GanRecipe
    out: Path
    folder: RunFolder
    env: dist.DistEnv
    device: torch.device
    precision: str  # fp32 | bf16 | fp16
    batch_per_device: int  # images per device per forward pass
    accumulation: int  # passes per optimizer step
    resume: bool
    recipe_text: str
    world: int  # processes the run will have (the planned count for an --nproc parent)
    build_data: bool = False  # data.synthetic is still to be built
    table: LabelTable | None = None  # None until read_data (and in a dry run whose data is not built)
    scan: dict | None = None
    resume_from: Path | None = None
    trackers: Trackers | None = field(default=None, repr=False)  # train.report_to's, opened on rank 0
    tracked_step: int = 0  # the optimizer step of the last stats line sent to the trackers
    reporter: ReportWriter | None = field(default=None, repr=False)  # report.html, rank 0, once the run opened

    @property
    def is_main(self) -> bool:
        return self.env.is_main

    @property
    def amp_dtype(self) -> torch.dtype | None:
        return autocast_dtype(self.precision)

    @property
    def total_nimg(self) -> int:
        return int(round(self.recipe.train.kimg * 1000))

    @property
    def label_info(self) -> dict:
        """Label names and standardisation (raw-unit mean / std, or None), as checkpoints store them;
        for a run on raw labels, their mean and sd in the data (``spread``), what ``generate`` centres on."""
        t = self.table
        spread = t.raw_spread()
        return {"names": t.label_names,
                "mean": None if t.mean is None else [float(v) for v in t.mean],
                "std": None if t.std is None else [float(v) for v in t.std],
                "spread": None if spread is None else {"mean": [float(v) for v in spread[0]],
                                                       "sd": [float(v) for v in spread[1]]}}

    @cached_property
    def dataset(self) -> GanDataset:
        """Images uint8 ``(3, R, R)`` and float32 labels (standardised when asked); ``.labels`` is
        the whole label table, ``.label_mean`` / ``.label_std`` the standardisation or None."""
        return GanDataset(self.table, self.recipe.model.resolution, cache_mb=self.recipe.data.cache_mb)

    def batches(self, start_step: int):
        """This rank's ``(images uint8, labels float32)`` for steps ``start_step, ...`` (global
        batch ``train.batch_size``, split across ranks; same order whatever the resume point)."""
        return iter_batches(self.dataset, seed=self.recipe.seed, start_step=start_step,
                            global_batch=self.recipe.train.batch_size, rank=self.env.rank,
                            world=self.env.world_size, num_workers=self.recipe.data.num_workers)

    def log(self, record: dict) -> None:
        """A stats.jsonl line (rank 0), also sent to the trackers of ``train.report_to`` (plotted by
        optimizer step: the record's ``step``, else the last one seen)."""
        if not self.is_main:
            return
        append_jsonl(self.folder.stats, record)
        if self.open_trackers() is not None:
            self.tracked_step = int(record.get("step", self.tracked_step))
            self.trackers.scalars(record, self.tracked_step)
        if self.reporter is not None and not record.get("done"):  # the end's: finish_report, with everything
            self.reporter.maybe()

    def finish_report(self) -> Path | None:
        """report.html with everything the run wrote (rank 0); said where it is."""
        if self.reporter is None:
            return None
        path = self.reporter.write()
        say(f"report: {path}")
        return path

    def open_trackers(self) -> Trackers | None:
        """The run's trackers (rank 0, opened on first use, so a dry run opens none), or None."""
        if self.trackers is None and self.is_main and self.recipe.train.report_to:
            self.trackers = Trackers(self.recipe.train.report_to, self.out, run_name=self.out.name,
                                              config=self.recipe.model_dump(mode="json"))
        return self.trackers

    def track_image(self, tag: str, path: Path | None, step: int) -> None:
        """A PNG the run wrote (grid, label-control plot), to the trackers when there are any."""
        if path is not None and self.open_trackers() is not None:
            self.trackers.image(tag, path, step)

    def close_trackers(self) -> None:
        if self.trackers is not None:
            self.trackers.close()
            self.trackers = None


# ---------------------------------------------------------------------------- before training


def plan_run(recipe: GanRecipe, *, resume: bool, planned_world: int | None = None) -> RunContext:
    """Step 1 of the module docstring: resolve the run and check what needs no data; writes nothing.
    ``planned_world``: the process count of an ``--nproc`` parent that relaunches itself."""
    env = dist.dist_env()
    world = planned_world or env.world_size
    out_dir = Path(recipe.output_dir)
    device = resolve_device(recipe.train.device, local_rank=env.local_rank)
    precision = choose_precision(recipe.train.precision, device)
    batch_per_device, accumulation = dist.split_batch(recipe.train.batch_size, world,
                                                      max_per_device=recipe.train.max_device_batch)
    # What the run will write, checked before anything is: output_dir is a new folder or an ohlora
    # run's, and the synthetic data is built only into a folder it may build into.
    folder = RunFolder(out_dir)
    folder.check()
    check_report_to(recipe.train.report_to)
    build = pending_build(recipe.data)
    resume_from = _resume_point(recipe, folder, resume)
    if recipe.model.checkpoint and not resume:
        ckpt.check_start_checkpoint(recipe, len(recipe.data.label_columns))
    check_scorer_recipe(recipe)  # model.scorer's header and the scorer keys, before any weights load
    return RunContext(recipe=recipe, out=out_dir, folder=folder, env=env, device=device, precision=precision,
                      batch_per_device=batch_per_device, accumulation=accumulation, resume=resume,
                      recipe_text=recipes.dump(recipe), world=world, build_data=build, resume_from=resume_from)


def _resume_point(recipe: GanRecipe, folder: RunFolder, resume: bool) -> Path | None:
    if recipe.train.method == "scorer":  # its resumable state is not a checkpoint-*.safetensors
        found = state_path(folder.path) if state_path(folder.path).is_file() else None
    else:
        found = ckpt.latest_checkpoint(folder.path)
    found = folder.resume_point(found, resume=resume)
    if found is not None and recipe.train.method != "scorer":  # the scorer method validates its own state file
        ckpt.read_metadata(found)
    return found


def finished_already(ctx: RunContext) -> str | None:
    """On ``--resume`` of a run whose checkpoint already reached ``train.kimg``: what to say (where
    it ended, and how to train further), else None."""
    if ctx.resume_from is None or ctx.recipe.train.method == "scorer":
        return None
    counters = json.loads(ckpt.read_metadata(ctx.resume_from)["counters"])
    if counters["cur_nimg"] < ctx.total_nimg:
        return None
    kimg = counters["cur_nimg"] / 1000
    return (f"{ctx.out} already finished: checkpoint {ctx.resume_from} is at {kimg:g} kimg (step {counters['step']}), "
            f"train.kimg is {ctx.recipe.train.kimg:g}. Nothing to train; to train further, resume with a longer "
            f"run: --resume --set train.kimg={2 * max(kimg, ctx.recipe.train.kimg):g}")


def last_complete(ctx: RunContext) -> tuple[Path | None, int | None]:
    """The run's last complete checkpoint (writes are atomic: any listed one is whole) and its step."""
    if ctx.recipe.train.method == "scorer":
        path = state_path(ctx.out)
        return (path, None) if path.is_file() else (None, None)
    path = ckpt.latest_checkpoint(ctx.out)
    if path is None:
        return None, None
    try:
        return path, int(json.loads(ckpt.read_metadata(path)["counters"])["step"])
    except (CheckpointError, KeyError, ValueError, TypeError):
        return path, None


def start_processes(ctx: RunContext) -> None:
    """Join the process group (a no-op in a single process) and pick this rank's GPU (or its CPU
    threads)."""
    dist.init_process_group(ctx.env, ctx.device.type)
    use_cpu_threads(ctx.device, ctx.recipe.train.cpu_threads)
    if ctx.device.type == "cuda":
        torch.cuda.set_device(ctx.device)


def build_data(ctx: RunContext, *, dry_run: bool) -> None:
    """Build a missing ``data.synthetic`` dataset (rank 0; a dry run only says it would)."""
    data = ctx.recipe.data
    if ctx.build_data and ctx.is_main:
        what = f"the synthetic '{data.synthetic}' dataset ({data.synthetic_count} images) at {data.csv}"
        if dry_run:
            info(f"would build {what} (a dry run builds nothing)")
        elif ensure_synthetic(data, ctx.recipe.model.resolution, seed=ctx.recipe.seed):
            info(f"built {what}")
    if ctx.env.distributed and torch.distributed.is_initialized():
        torch.distributed.barrier()


def read_data(ctx: RunContext, *, dry_run: bool) -> None:
    """Read the CSV and check every image header (not possible in a dry run before the build)."""
    if dry_run and ctx.build_data:
        return
    r = ctx.recipe.model.resolution
    ctx.table = read_table(ctx.recipe.data)
    ctx.scan = scan_images(ctx.table, r)
    if ctx.scan["resized"] and ctx.is_main and not dist.relaunched():  # said once, not again by rank 0
        sizes = ", ".join(f"{w}x{h}" for (w, h) in ctx.scan["sizes"] if (w, h) != (r, r))
        warn(f"{ctx.scan['resized']} of {len(ctx.table)} images ({sizes}) will be converted to RGB and resized to "
             f"{r}x{r} (model.resolution)")


def open_run(ctx: RunContext, report=None) -> None:
    """Claim output_dir and write the resolved recipe, the preflight's report and ``run.json``
    (rank 0; ``runtime.run``); library output goes to ``train.log`` from here."""
    if ctx.is_main:
        ctx.folder.open(ctx.recipe_text, report=report, resume=ctx.resume, log=False)
        ctx.reporter = ReportWriter(ctx.out)
        t = ctx.recipe.train
        ctx.folder.write_run_info({
            "kind": "gan", "method": t.method, "device": str(ctx.device), "precision": ctx.precision,
            "world_size": ctx.world, "batch_per_device": ctx.batch_per_device, "accumulation": ctx.accumulation,
            "global_batch": ctx.batch_per_device * ctx.world * ctx.accumulation, "kimg": t.kimg,
            "total_steps": math.ceil(ctx.total_nimg / t.batch_size), "recipe": ctx.folder.recipe_file.name,
            "resumed_from": str(ctx.resume_from) if ctx.resume_from else None})
    ctx.folder.open_log()


# ------------------------------------------------------------------- building blocks (shared)


def start_networks(ctx: RunContext) -> tuple[Generator, Generator, torch.nn.Module]:
    """G, G_ema, D on the device: fresh, or from ``model.checkpoint`` (label layers re-initialised)."""
    G, D = build_networks(ctx.recipe, len(ctx.table.label_names))
    G_ema = copy.deepcopy(G)
    if ctx.recipe.model.checkpoint and not ctx.resume:
        ckpt.load_pretrained(ctx.recipe.model.checkpoint, G, G_ema, D)
    for net in (G, G_ema):
        net.label_names = list(ctx.table.label_names)
        net.label_mean, net.label_std = ctx.label_info["mean"], ctx.label_info["std"]
        net.label_spread = ctx.label_info["spread"]
    return G.to(ctx.device), G_ema.to(ctx.device).eval().requires_grad_(False), D.to(ctx.device)


def starting_generator(ctx: RunContext) -> Generator:
    """The generator as the run started (before any step): ``model.checkpoint`` loaded into a
    network initialised from ``seed`` exactly as ``start_networks`` does, so a resumed run gets
    the same one. Frozen, eval mode."""
    seed_everything(ctx.recipe.seed)
    G_start, _ = build_networks(ctx.recipe, len(ctx.table.label_names))
    if ctx.recipe.model.checkpoint:
        path = Path(ctx.recipe.model.checkpoint)
        nets = ckpt.read_networks(path)
        state = nets.get("generator") or nets.get("generator_smooth")
        ckpt.load_into(G_start, state, what="generator", source=path)
    return G_start.to(ctx.device).eval().requires_grad_(False)


def make_scaler(precision: str) -> torch.amp.GradScaler:
    """fp16's loss scaler; disabled (a no-op that still steps the optimizer) for fp32 and bf16, so
    the loop has one code path (as nanoGPT does)."""
    return torch.amp.GradScaler("cuda", enabled=precision == "fp16")


def step_optimizer(opt: torch.optim.Optimizer, params: list[torch.nn.Parameter], *, distributed: bool,
                   scaler: torch.amp.GradScaler | None = None) -> bool:
    """Average gradients over ranks, then step unless a gradient is NaN/Inf. True when stepped."""
    scaler = scaler if scaler is not None else make_scaler("fp32")
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    if distributed and grads:
        flat = torch.cat([g.flatten() for g in grads])
        torch.distributed.all_reduce(flat)
        flat /= torch.distributed.get_world_size()
        offset = 0
        for p, g in zip(params, grads, strict=True):
            p.grad = flat[offset:offset + g.numel()].view_as(g)
            offset += g.numel()
    scaler.unscale_(opt)
    present = [p.grad for p in params if p.grad is not None]
    # one device-to-host sync for the whole check, not one per parameter
    finite = bool(torch.stack([torch.isfinite(g).all() for g in present]).all()) if present else True
    if finite:
        scaler.step(opt)
    scaler.update()
    opt.zero_grad(set_to_none=True)
    return finite


def write_grid(ctx: RunContext, G_ema: Generator, z: torch.Tensor, cur_nimg: int) -> Path:
    """The snapshot grid (and ``grid-latest.png``): each row sweeps one label, whose name is drawn
    left of the row, from -2 to +2 sd around the data's mean (-2..+2 when standardised); each
    column's value above it."""
    steps = ctx.recipe.train.grid_steps
    center, scale = ctx.table.raw_spread() or (None, None)
    images, rows, cols = label_sweep(G_ema, z, steps=steps, center=center, scale=scale)
    captions = {}
    if G_ema.label_dim:
        names = G_ema.label_names or [f"label{i}" for i in range(G_ema.label_dim)]
        row_captions, col_captions = sweep_captions(names, len(z), sweep_values(steps), center=center, scale=scale)
        captions = {"row_captions": row_captions, "col_captions": col_captions}
    path = save_grid(images, rows, cols, ctx.out / "grids" / f"grid-{cur_nimg / 1000:09.3f}kimg.png", **captions)
    save_grid(images, rows, cols, ctx.out / "grid-latest.png", **captions)
    return path


def label_control_hook(ctx: RunContext, device: torch.device):
    """``(G_ema, cur_nimg) -> LabelControlResult`` when ``model.scorer`` is set (rank 0), else None."""
    if not ctx.recipe.model.scorer or not ctx.is_main:
        return None
    loaded = load_scorer(ctx.recipe.model.scorer, device)
    info_ = ctx.label_info
    labels = ctx.table.model_labels  # sweeps centre on the data's labels (raw ones are not -2..+2)

    def evaluate(G_ema: Generator, cur_nimg: int):
        wrapped = in_label_space(loaded, ctx.table.label_names, label_mean=info_["mean"], label_std=info_["std"])
        return label_control.evaluate_run(G_ema, wrapped, recipe=ctx.recipe, output_dir=ctx.out,
                                          kimg=cur_nimg / 1000, labels=labels, device=device)

    return evaluate


def control_plot(ctx: RunContext, cur_nimg: int) -> Path:
    """Where ``label_control.evaluate_run`` draws the plot of the evaluation at ``cur_nimg``."""
    return ctx.out / "label_control" / f"label-control-{label_control.kimg_tag(cur_nimg / 1000)}.png"


def _matches(name: str, prefixes: list[str]) -> bool:
    return any(p == "*" or name == p or name.startswith(p + ".") for p in prefixes)


def set_trainable(net: torch.nn.Module, prefixes: list[str], *, key: str) -> list[torch.nn.Parameter]:
    """``requires_grad`` on the parameters under the given module-name prefixes only (``*`` = all,
    minus the layers that never reach the output). Returns them; an empty match is a RecipeError."""
    unused = net.unused_prefixes()
    names = [n for n, _ in net.named_parameters()]
    unknown = [p for p in prefixes if p != "*" and not any(_matches(n, [p]) for n in names)]
    if unknown:
        tops = sorted({n.split(".")[0] for n in names})
        raise RecipeError(f"{key}: no parameters under {', '.join(unknown)}", hint=f"Module names here: {', '.join(tops)}.")
    chosen = []
    for name, param in net.named_parameters():
        on = _matches(name, prefixes) and not _matches(name, unused)
        param.requires_grad_(on)
        if on:
            chosen.append(param)
    return chosen


def make_optimizer(params: list[torch.nn.Parameter], lr: float, train_cfg) -> torch.optim.Optimizer:
    betas = tuple(train_cfg.betas)  # a list breaks Adam on torch >= 2.6
    if train_cfg.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=lr, betas=betas, weight_decay=train_cfg.weight_decay, eps=1e-8)
    return torch.optim.Adam(params, lr=lr, betas=betas, eps=1e-8)


def lr_factor(train_cfg, cur_nimg: int, total_nimg: int) -> float:
    if train_cfg.lr_scheduler == "constant":
        return 1.0
    return 0.5 * (1 + math.cos(math.pi * min(cur_nimg / max(total_nimg, 1), 1.0)))


@torch.no_grad()
def update_ema(G_ema: Generator, G: Generator, *, batch_size: int, cur_nimg: int, train_cfg) -> float:
    """G_ema <- lerp(G, G_ema, beta) with a half-life of ``ema_kimg`` (ramped up); buffers copied."""
    ema_nimg = train_cfg.ema_kimg * 1000
    if train_cfg.ema_rampup is not None:
        ema_nimg = min(ema_nimg, cur_nimg * train_cfg.ema_rampup)
    beta = 0.5 ** (batch_size / ema_nimg) if ema_nimg > 0 else 0.0
    ema_params, params = list(G_ema.parameters()), [p.detach() for p in G.parameters()]
    if len(ema_params) != len(params):
        raise ValueError("G_ema and G have different parameters")
    torch._foreach_lerp_(ema_params, params, 1.0 - beta)  # p_ema <- beta p_ema + (1 - beta) p, in one launch
    for b_ema, b in zip(G_ema.buffers(), G.buffers(), strict=True):
        b_ema.copy_(b)
    return beta


def stop_agreed(stop: StopRequest, env: dist.DistEnv, device: torch.device) -> bool:
    """Any rank asked to stop -> all stop together (so every rank reaches the checkpoint)."""
    if not env.distributed:
        return stop.requested
    flag = torch.tensor([1.0 if stop.requested else 0.0], device=device)
    torch.distributed.all_reduce(flag)
    return bool(flag.item() > 0)


def stop_if_agreed(stop: StopRequest, env: dist.DistEnv, device: torch.device, save: Callable[[dict], Path | None],
                   cur_nimg: int) -> None:
    """The kimg-based loops' Ctrl-C / SIGTERM: once every rank agrees, save a checkpoint and raise
    Interrupted (exit 130)."""
    if stop_agreed(stop, env, device):
        path = save({"interrupted": True})
        raise Interrupted(
            f"stopped by {stop.signal_name or 'a signal'} at {cur_nimg / 1000:g} kimg; "
            f"checkpoint saved{f' to {path}' if path else ''}",
            hint="Continue with the same command plus --resume.",
        )


def set_lr(factor: float, *optimizers_and_lrs: tuple[torch.optim.Optimizer | None, float]) -> None:
    """Scale each optimizer's base learning rate by the schedule's factor (None: no optimizer)."""
    for opt, lr in optimizers_and_lrs:
        for group in (opt.param_groups if opt is not None else []):
            group["lr"] = lr * factor


def save_state(ctx: RunContext, *, step: int, cur_nimg: int, G, G_ema, D, opt_G, opt_D, scalers: dict,
               extra: dict | None = None) -> Path:
    """Atomic checkpoint at ``checkpoints/checkpoint-<step>.safetensors`` (rank 0), then prune."""
    counters = {"step": step, "cur_nimg": cur_nimg, "kimg": cur_nimg / 1000, "world_size": ctx.env.world_size,
                **(extra or {})}
    path = ckpt.checkpoint_path(ctx.out, step)
    ckpt.save_checkpoint(path, G=G, G_ema=G_ema, D=D, opt_G=opt_G, opt_D=opt_D, counters=counters,
                         rng=capture_rng(), labels=ctx.label_info, recipe_text=ctx.recipe_text,
                         scalers={k: s.state_dict() for k, s in scalers.items() if s.is_enabled()})
    ckpt.prune_checkpoints(ctx.out, ctx.recipe.train.keep_checkpoints)
    return path


def restore_state(ctx: RunContext, *, G, G_ema, D, opt_G, opt_D, scalers: dict) -> dict:
    """Load ``ctx.resume_from`` into the networks, optimizers, scalers and RNG; returns counters."""
    state = ckpt.read_checkpoint(ctx.resume_from)
    for prefix, net in (("G", G), ("G_ema", G_ema), ("D", D)):
        tensors = state.section(prefix)
        try:
            net.load_state_dict(tensors)
        except RuntimeError as exc:
            raise CheckpointError(f"{state.path}: {prefix} does not fit this recipe's model ({str(exc).splitlines()[0]})",
                                  hint="Resume with the recipe the run started with (output_dir/recipe.yaml).") from exc
    for prefix, opt in (("opt_G", opt_G), ("opt_D", opt_D)):
        saved = state.optimizer_state(prefix)
        if opt is not None and saved is not None:
            try:
                opt.load_state_dict(saved)
            except (ValueError, KeyError) as exc:
                raise CheckpointError(f"{state.path}: {prefix} state does not fit ({exc})",
                                      hint="Resume with the recipe the run started with (same trainable layers).") from exc
    for name, scaler in scalers.items():
        saved = state.json("scalers", {}).get(name)
        if scaler.is_enabled() and saved:
            scaler.load_state_dict(saved)
    counters = state.json("counters")
    rng = state.rng()
    if rng is not None and counters.get("world_size", 1) == ctx.env.world_size == 1:
        restore_rng(rng)
    else:  # each rank had its own streams; start fresh ones that depend on the resume point
        seed_everything(ctx.recipe.seed + 7919 * ctx.env.rank + counters["step"])
    return counters


def auroc(real: torch.Tensor, fake: torch.Tensor) -> float:
    """Area under the ROC curve of D's logits, reals as positives (ties count half)."""
    if real.numel() == 0 or fake.numel() == 0:
        return float("nan")
    scores = torch.cat([real, fake]).double()
    order = scores.argsort()
    ranks = torch.empty_like(scores)
    ranks[order] = torch.arange(1, len(scores) + 1, dtype=scores.dtype)
    for value in scores.unique()[scores.unique(return_counts=True)[1] > 1]:  # average tied ranks
        tied = scores == value
        ranks[tied] = ranks[tied].mean()
    n_real, n_fake = real.numel(), fake.numel()
    return float((ranks[:n_real].sum() - n_real * (n_real + 1) / 2) / (n_real * n_fake))


# ------------------------------------------------------------------------------- the one loop


@dataclass(frozen=True)
class Phase:
    """One optimizer step of a training step: the loss phase it runs, the network whose parameters
    train (the other is frozen meanwhile), and how often (``every``: lazy regularisation)."""

    name: str  # the loss's phase: "Dmain", "Dboth", "Dreg", "Gmain"
    net: str  # "G" or "D"
    every: int = 1

    @property
    def needs_reals(self) -> bool:
        return self.net == "D"


def adversarial_phases(t, precision: str, *, train_D: bool = True) -> list[Phase]:
    """D (logistic loss, R1 in the same pass or lazily every ``r1_interval`` steps), then G. With
    fp16, R1 always has its own pass (``Dreg``, every ``r1_interval`` steps, every step included)."""
    if not train_D:
        return [Phase("Gmain", "G")]
    lazy_r1 = t.r1_gamma > 0 and (t.r1_interval > 1 or precision == "fp16")
    d_phase = "Dmain" if lazy_r1 or t.r1_gamma == 0 else "Dboth"
    phases = [Phase(d_phase, "D")]
    if lazy_r1:
        phases.append(Phase("Dreg", "D", every=t.r1_interval))
    return [*phases, Phase("Gmain", "G")]


@dataclass
class Networks:
    """G, its EMA and D on the device, with what trains and how (optimizers, scalers, base lrs)."""

    G: Generator
    G_ema: Generator
    D: torch.nn.Module
    params: dict  # "G" / "D" -> list of trainable parameters ([] for a frozen D)
    opts: dict  # "G" / "D" -> optimizer, or None
    scalers: dict  # "G" / "D" -> GradScaler (disabled when AMP is off)
    lrs: dict  # "G" / "D" -> base learning rate
    G_start: Generator | None = None  # the generator as the run started (frozen), when asked for
    counters: dict = field(default_factory=lambda: {"step": 0, "cur_nimg": 0, "nonfinite_streak": 0})


def setup_networks(ctx: RunContext, *, train_D: bool = True, keep_start: bool = False) -> Networks:
    """Networks initialised alike on every rank (from ``model.checkpoint`` or fresh), the trainable
    parameters chosen, optimizers and scalers made, the run's state restored on ``--resume``; then
    one random stream per rank."""
    r, t = ctx.recipe, ctx.recipe.train
    seed_everything(r.seed)
    G, G_ema, D = start_networks(ctx)
    G_start = starting_generator(ctx) if keep_start else None
    seed_everything(r.seed + ctx.env.rank)
    params = {"G": set_trainable(G, t.g_trainable, key="train.g_trainable"),
              "D": set_trainable(D, t.d_trainable or D.last_layers(3), key="train.d_trainable") if train_D else []}
    D.requires_grad_(False)  # each network trains only inside its own phases
    if not params["G"] or (train_D and not params["D"]):
        raise RecipeError("train.g_trainable / train.d_trainable select no trainable parameters")
    lrs = {"G": t.g_lr, "D": t.d_lr}
    opts = {net: make_optimizer(params[net], lrs[net], t) if params[net] else None for net in ("G", "D")}
    scalers = {net: make_scaler(ctx.precision) for net in ("G", "D")}
    nets = Networks(G, G_ema, D, params, opts, scalers, lrs, G_start)
    if ctx.resume:
        saved = restore_state(ctx, G=G, G_ema=G_ema, D=D, opt_G=opts["G"], opt_D=opts["D"], scalers=scalers)
        nets.counters.update(step=saved["step"], cur_nimg=saved["cur_nimg"],
                             nonfinite_streak=saved.get("nonfinite_streak", 0))
        if ctx.is_main:
            resuming(ctx.resume_from, saved["step"], f"{saved['cur_nimg'] / 1000:g} kimg")
    return nets


@dataclass
class Hooks:
    """What a method adds to the loop."""

    title: str  # the progress bar's
    sample_labels: Callable[[int], torch.Tensor]  # requested labels for n generated images
    progress: Callable[[Tick], str]  # the losses shown on the progress bar
    figures: tuple = ()  # stats keys every log line has (None when a tick had none)
    extra_g: tuple[int, float] | None = None  # (at most N more G steps while g_loss >= ratio x d_loss)
    label_control: Callable | None = None  # (G_ema, cur_nimg) -> LabelControlResult, rank 0
    nonfinite_hint: str = "Lower train.g_lr / train.d_lr, raise train.r1_gamma, or use precision fp32."


def train_loop(ctx: RunContext, nets: Networks, loss, phases: list[Phase], hooks: Hooks) -> None:
    """The training loop of the StyleGAN methods. Per step: each due phase accumulates its gradients
    over the micro-batches and steps its optimizer; then EMA, counters, stats, label control, grids
    and checkpoints. At the end a checkpoint and the run's summary. Ctrl-C / SIGTERM save a
    checkpoint and raise Interrupted (exit 130). ``_Loop``'s methods are the parts of a step, in
    the order they run."""
    _Loop(ctx, nets, loss, phases, hooks).run()


class _Loop:
    def __init__(self, ctx: RunContext, nets: Networks, loss, phases: list[Phase], hooks: Hooks):
        self.ctx, self.nets, self.loss, self.phases, self.hooks = ctx, nets, loss, phases, hooks
        t, c = ctx.recipe.train, nets.counters
        self.t, self.c = t, c
        self.batches = ctx.batches(c["step"]) if any(p.needs_reals for p in phases) else None
        self.grid_z = fixed_z(nets.G, t.grid_rows_per_label, ctx.recipe.seed)
        self.log_at, self.grid_at = Interval(t.log_kimg, c["cur_nimg"]), Interval(t.snapshot_kimg, c["cur_nimg"])
        self.save_at = Interval(t.checkpoint_kimg, c["cur_nimg"])
        self.control_at = Interval(t.label_control.every_kimg, c["cur_nimg"])
        self.tick = Tick(c["cur_nimg"], hooks.figures)
        self.skipped_nets: set[str] = set()  # networks whose optimizer step was skipped in this step
        self.progress: TrainProgress | None = None
        self.start_time = time.time()

    def run(self) -> None:
        ctx, c = self.ctx, self.c
        self.progress = TrainProgress(ctx, c["cur_nimg"], self.hooks.title) if ctx.is_main else None
        try:
            with StopRequest() as stop:
                while c["cur_nimg"] < ctx.total_nimg:
                    stop_if_agreed(stop, ctx.env, ctx.device, self.save, c["cur_nimg"])
                    self.step()
            path = self.save()
            if ctx.is_main:
                self.progress, progress = None, self.progress
                if progress is not None:
                    progress.stop()
                _finish(ctx, self.nets, path, self.hooks, round(time.time() - self.start_time, 1))
        finally:
            if self.progress is not None:
                self.progress.stop()

    def step(self) -> None:
        ctx, nets, t, c = self.ctx, self.nets, self.t, self.c
        real_img, real_c = self.reals()
        factor = lr_factor(t, c["cur_nimg"], ctx.total_nimg)
        set_lr(factor, *((nets.opts[n], nets.lrs[n]) for n in ("G", "D")))
        figures: dict[str, list] = {}
        stepped = True
        self.skipped_nets.clear()
        for phase in self.phases:
            if c["step"] % phase.every == 0:
                got, ok = self.run_phase(phase, real_img, real_c)
                for k, v in got.items():
                    figures.setdefault(k, []).extend(v)
                stepped = stepped and ok
        extra, ok = self.extra_g_steps(figures, real_img, real_c)
        if stepped and ok:
            c["nonfinite_streak"] = 0
        elif not self.scalers_backing_off():
            c["nonfinite_streak"] += 1
        if c["nonfinite_streak"] >= t.max_nonfinite_steps:
            raise RunFailed(f"{c['nonfinite_streak']} optimizer steps in a row had NaN/Inf gradients "
                            f"(at {c['cur_nimg'] / 1000:g} kimg)", hint=self.hooks.nonfinite_hint)
        ema_beta = update_ema(nets.G_ema, nets.G, batch_size=t.batch_size, cur_nimg=c["cur_nimg"], train_cfg=t)
        c["cur_nimg"] += t.batch_size
        c["step"] += 1
        self.tick.add(figures, extra, stepped and ok)
        self.report(factor, ema_beta)

    def reals(self):
        """This step's real images in [-1, 1] and their labels, on the device (None: no phase needs them)."""
        if self.batches is None:
            return None, None
        real_img, real_c = next(self.batches)
        device = self.ctx.device
        return real_img.to(device, non_blocking=True).float() / 127.5 - 1, real_c.to(device, non_blocking=True)

    def run_phase(self, phase: Phase, real_img, real_c) -> tuple[dict, bool]:
        """Accumulate one phase's gradients over the micro-batches, then step its optimizer."""
        ctx, nets = self.ctx, self.nets
        other = nets.D if phase.net == "G" else nets.G
        other.requires_grad_(False)
        for p in nets.params[phase.net]:
            p.requires_grad_(True)
        scaler = nets.scalers[phase.net]
        chunk = ctx.batch_per_device
        figures: dict[str, list] = {}
        for i in range(ctx.accumulation):
            part = slice(i * chunk, (i + 1) * chunk)
            gen_z = torch.randn(chunk, ctx.recipe.model.z_dim, device=ctx.device)
            gen_c = self.hooks.sample_labels(chunk)
            got = self.loss.accumulate_gradients(phase.name, None if real_img is None else real_img[part],
                                                 None if real_c is None else real_c[part], gen_z, gen_c,
                                                 1.0 / ctx.accumulation, lambda x: scaler.scale(x).backward())
            for k, v in got.items():
                figures.setdefault(k, []).append(v)
        stepped = step_optimizer(nets.opts[phase.net], nets.params[phase.net], distributed=ctx.env.distributed,
                                 scaler=scaler)
        if not stepped:
            self.skipped_nets.add(phase.net)
        return figures, stepped

    def scalers_backing_off(self) -> bool:
        """fp16: each network whose step was skipped has a loss scaler still halving from its start
        (scale >= 1): an overflow there is the scaler finding its scale, not a diverging run, and does
        not count towards train.max_nonfinite_steps. Gradients that stay NaN/Inf drive the scale
        below 1 within 17 steps; from then on they count."""
        scalers = [self.nets.scalers[net] for net in self.skipped_nets]
        return bool(scalers) and all(s.is_enabled() and s.get_scale() >= 1 for s in scalers)

    def extra_g_steps(self, figures: dict, real_img, real_c) -> tuple[int, bool]:
        """Oh-LoRA v1: up to N more G steps while ``g_loss >= ratio x d_loss`` (G lags behind D)."""
        if not self.hooks.extra_g or not self.hooks.extra_g[0]:
            return 0, True
        most, ratio = self.hooks.extra_g
        d_loss, g_loss = self.mean(figures["d_loss"]), self.mean(figures["g_loss"])
        extra, stepped = 0, True
        while extra < most and g_loss >= ratio * d_loss:
            more: dict = {}
            for phase in (p for p in self.phases if p.net == "G"):
                got, ok = self.run_phase(phase, real_img, real_c)
                more.update(got)
                stepped = stepped and ok
            g_loss = self.mean(more["g_loss"])
            extra += 1
        return extra, stepped

    def report(self, factor: float, ema_beta: float) -> None:
        """Progress bar, stats line (with label control when due), grid and checkpoint."""
        ctx, nets, c = self.ctx, self.nets, self.c
        last = c["cur_nimg"] >= ctx.total_nimg
        if self.progress is not None:
            self.progress.advance(c["cur_nimg"], lambda: self.hooks.progress(self.tick), force=last)
        if self.log_at.due(c["cur_nimg"]) or last:
            lrs = {f"{n.lower()}_lr": nets.lrs[n] * factor for n in ("G", "D") if nets.opts[n] is not None}
            record = self.tick.record(c["step"], c["cur_nimg"], lrs, ema_beta, self.start_time, mean_fn=self.mean)
            control = None
            if self.control_at.due(c["cur_nimg"]) and self.hooks.label_control is not None and not last:
                result = self.hooks.label_control(nets.G_ema, c["cur_nimg"])
                record.update(result.metrics)
                control = control_plot(ctx, c["cur_nimg"])
                if self.progress is not None:
                    self.progress.control = label_control.summary(result)
            ctx.log(record)
            if self.progress is not None:
                self.progress.log_line(record, self.hooks.figures, ctx.total_nimg)
            ctx.track_image("label_control", control, c["step"])
        if ctx.is_main and (self.grid_at.due(c["cur_nimg"]) or last):
            ctx.track_image("grid", write_grid(ctx, nets.G_ema, self.grid_z, c["cur_nimg"]), c["step"])
        if self.save_at.due(c["cur_nimg"]) and not last:
            self.save()

    def save(self, extra: dict | None = None) -> Path | None:
        ctx, nets, c = self.ctx, self.nets, self.c
        if not ctx.is_main:
            return None
        return save_state(ctx, step=c["step"], cur_nimg=c["cur_nimg"], G=nets.G, G_ema=nets.G_ema, D=nets.D,
                          opt_G=nets.opts["G"], opt_D=nets.opts["D"], scalers=nets.scalers,
                          extra={"nonfinite_streak": c["nonfinite_streak"], **(extra or {})})

    def mean(self, values) -> float:
        """The mean over this rank's values and every rank's."""
        value = torch.stack([v.float() for v in values]).mean()
        if self.ctx.env.distributed:
            torch.distributed.all_reduce(value)
            value /= self.ctx.env.world_size
        return float(value)


def _finish(ctx: RunContext, nets: Networks, path: Path | None, hooks: Hooks, seconds: float) -> None:
    """The run's summary (rank 0): a stats line, label control measured once more, the demo's
    model-free read-back, and where everything is."""
    c, names = nets.counters, ctx.table.label_names
    summary = {"done": True, "kimg": c["cur_nimg"] / 1000, "step": c["step"], "seconds": seconds}
    result = hooks.label_control(nets.G_ema, c["cur_nimg"]) if hooks.label_control is not None else None
    if result is not None:
        summary.update(result.metrics)
    probe = None
    if ctx.recipe.data.synthetic and ctx.dataset.cache is not None:  # a second opinion that is not the scorer
        center, scale = ctx.table.raw_spread() or (None, None)
        probe = label_probe(nets.G_ema, ctx.dataset.cache.numpy(), ctx.dataset.labels.numpy(), seed=ctx.recipe.seed,
                            center=center, scale=scale)
        summary.update({f"pixel_probe/{n}/r": round(v, 4) for n, v in zip(names, probe, strict=True)})
    ctx.log(summary)
    if result is not None:
        ctx.track_image("label_control", control_plot(ctx, c["cur_nimg"]), c["step"])
        label_control.print_table(result)
    if probe is not None:
        say("label control, read back by a pixel ridge regressor (r, requested vs seen): "
            + ", ".join(f"{n} {v:.2f}" for n, v in zip(names, probe, strict=True)))
    control = ""
    if result is not None:
        control = f"; label control {control_plot(ctx, c['cur_nimg'])}"
    say(f"trained {c['cur_nimg'] / 1000:g} kimg in {seconds:g} s; checkpoint {path}; "
        f"grid {ctx.out / 'grid-latest.png'}{control}")
    say(f"load it: ohlora_cli.gan.load_generator('{ctx.out}'), or ohlora generate {ctx.out} -o samples.png")
    ctx.finish_report()
    if "tensorboard" in ctx.recipe.train.report_to:
        say(f"see it: tensorboard --logdir {ctx.out / 'tb'}")


class Interval:
    """Fires when ``cur_nimg`` crosses a multiple of ``kimg`` (0 or less: never)."""

    def __init__(self, kimg: float, cur_nimg: int):
        self.every = max(1, int(round(kimg * 1000))) if kimg > 0 else 0
        self.next = (cur_nimg // self.every + 1) * self.every if self.every else math.inf

    def due(self, cur_nimg: int) -> bool:
        if cur_nimg < self.next:
            return False
        self.next = (cur_nimg // self.every + 1) * self.every
        return True


class Tick:
    """Figures gathered between two stats lines."""

    def __init__(self, cur_nimg: int, keys: tuple = ()):
        self.keys = keys
        self.reset(cur_nimg, time.time())

    def reset(self, cur_nimg: int, now: float) -> None:
        self.start_nimg, self.start_time = cur_nimg, now
        self.values: dict[str, list] = {k: [] for k in self.keys}
        self.real, self.fake = [], []
        self.extra = self.skipped = 0

    def add(self, figures: dict, extra: int, stepped: bool) -> None:
        for key, values in figures.items():
            if key == "real_logits":
                self.real += [x.flatten().float().cpu() for x in values]
            elif key == "fake_logits":
                self.fake += [x.flatten().float().cpu() for x in values]
            else:
                self.values.setdefault(key, []).extend(values)
        self.extra += extra
        self.skipped += 0 if stepped else 1

    def last(self, key: str) -> float:
        values = self.values.get(key)
        return float(values[-1]) if values else float("nan")

    def record(self, step: int, cur_nimg: int, lrs: dict, ema_beta: float, start_time: float, *, mean_fn) -> dict:
        now = time.time()
        seconds = max(now - self.start_time, 1e-9)
        images = cur_nimg - self.start_nimg
        figures = {k: (round(mean_fn(v), 5) if v else None) for k, v in sorted(self.values.items())}
        record = {"kimg": round(cur_nimg / 1000, 3), "step": step, **figures}
        if self.real:
            record["auroc"] = round(auroc(torch.cat(self.real), torch.cat(self.fake)), 4)
        record.update({"img_per_s": round(images / seconds, 1), "sec_per_kimg": round(seconds / max(images, 1) * 1000, 2),
                       **lrs, "ema_beta": round(ema_beta, 6), "extra_g_steps": self.extra,
                       "skipped_steps": self.skipped, "time_s": round(now - start_time, 1)})
        self.reset(cur_nimg, now)
        return record


class TrainProgress:
    """Progress on stderr. On a terminal, a rich bar: kimg done / total, img/s, the method's losses,
    and the last label-control figure (``control``, set when the run measures it), redrawn from the
    training loop at most twice a second, with no refresh thread of its own (as train-llm's).
    Elsewhere (a log file, a pipe), one plain line per logging interval (``log_line``) with the
    same figures and no control characters."""

    def __init__(self, ctx: RunContext, cur_nimg: int, title: str):
        self.title, self.control = title, ""
        self.start_time, self.start_nimg = time.time(), cur_nimg
        self.last_time, self.last_nimg = self.start_time, cur_nimg
        self.plain = not err.is_terminal
        self.progress = None
        if self.plain:
            return
        from rich.progress import (
            BarColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self.progress = Progress(
            TextColumn(f"[bold]{title}[/bold]"), BarColumn(),
            TextColumn("{task.completed:.2f}/{task.total:.2f} kimg"), TextColumn("{task.fields[speed]:>9}"),
            TextColumn("{task.fields[losses]}"), TextColumn("{task.fields[control]}"),
            TimeElapsedColumn(), TimeRemainingColumn(), console=err, transient=False, auto_refresh=False,
        )
        self.task = self.progress.add_task("train", total=ctx.total_nimg / 1000, completed=cur_nimg / 1000,
                                           speed="", losses="", control="")
        self.progress.start()

    def advance(self, cur_nimg: int, losses: Callable[[], str], *, force: bool = False) -> None:
        """``losses`` is called only when the bar redraws (at most twice a second)."""
        if self.progress is None:
            return
        now = time.time()
        if now - self.last_time < 0.5 and not force:
            return
        speed = (cur_nimg - self.last_nimg) / max(now - self.last_time, 1e-6)
        self.progress.update(self.task, completed=cur_nimg / 1000, speed=f"{speed:.0f} img/s", losses=losses(),
                             control=self.control, refresh=True)
        self.last_time, self.last_nimg = now, cur_nimg

    def log_line(self, record: dict, keys: tuple, total_nimg: int) -> None:
        """Off a terminal: the stats line's figures as one plain line (on a terminal the bar shows them)."""
        if not self.plain:
            return
        cur_nimg = int(round(record["kimg"] * 1000))
        done, elapsed = cur_nimg - self.start_nimg, time.time() - self.start_time
        eta = elapsed / done * (total_nimg - cur_nimg) if done > 0 else float("nan")
        shown = [k for k in record if k in keys or k.endswith("_loss")]
        figures = "  ".join(f"{k} {record[k]:.4f}" for k in shown if isinstance(record[k], (int, float)))
        parts = [self.title, f"{record['kimg']:.3f}/{total_nimg / 1000:.3f} kimg", f"step {record['step']}",
                 f"{record.get('img_per_s', 0):.0f} img/s", figures, self.control, f"ETA {format_seconds(eta)}"]
        print("  ".join(p for p in parts if p), file=err.file, flush=True)

    def stop(self) -> None:
        if self.progress is not None:
            self.progress.stop()


def format_seconds(seconds: float) -> str:
    """h:mm:ss, or '-' when unknown."""
    if not math.isfinite(seconds):
        return "-"
    seconds = int(round(max(seconds, 0)))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"
