"""``ohlora train-gan``: the shared setup of every GAN method, and the adversarial method.

How a run goes (``run``):

1. ``--nproc N`` outside torchrun: the recipe is loaded, synthetic data built and the preflight
   run here (so bad input still exits 2), then the same command is relaunched under
   ``torch.distributed.run`` with ``--skip-doctor``. A user's own ``torchrun -m ohlora_cli
   train-gan RECIPE`` works the same way (rank 0 runs the preflight).
2. ``prepare(...) -> RunContext``: recipe loaded and validated, synthetic data built (rank 0),
   process group up, device / precision / batch split resolved, preflight (rank 0, unless
   ``--skip-doctor``), the CSV read and every image header checked, checkpoints located.
   ``--dry-run`` prints the plan and the resolved recipe and stops there. Otherwise
   ``output_dir/recipe.yaml`` is written.
3. ``METHODS[recipe.train.method](ctx)`` trains, saves and, on SIGINT/SIGTERM, saves a
   checkpoint and raises ``Interrupted`` (exit 130):

   - ``adversarial``          -> ``train_adversarial(ctx)`` (this module, Oh-LoRA v1)
   - ``scorer``               -> ``ohlora_cli.gan.scorer.train(ctx)``
   - ``property-regression``  -> ``ohlora_cli.gan.regression.train(ctx)``
4. The process group is torn down.

Building blocks other methods reuse (module level): ``RunContext`` (``.dataset``,
``.batches(step)``, ``.log(record)``, ``.label_info``, ``.amp_dtype``, ``.total_nimg``),
``build_networks``, ``start_networks`` (``model.checkpoint`` with label-layer re-init),
``set_trainable``, ``make_optimizer``, ``lr_factor``, ``update_ema``, ``step_optimizer``
(DDP gradient all-reduce + NaN/Inf guard), ``write_grid``, ``save_state`` / ``restore_state``,
``stop_agreed``, ``label_control_hook``.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import torch

from .. import recipes
from ..console import err, info, out, say, warn
from ..errors import CheckpointError, Interrupted, RecipeError, RunFailed
from ..runtime import builds, dist, quiet
from ..runtime.devices import autocast_dtype, choose_precision, resolve_device
from ..runtime.files import append_jsonl, write_json, write_text
from ..runtime.seeding import capture_rng, restore_rng, seed_everything
from ..runtime.signals import StopRequest
from . import checkpoint as ckpt
from .config import GanRecipe
from .data import GanDataset, LabelTable, iter_batches, read_table, scan_images
from .grid import fixed_z, label_sweep, save_grid
from .label_control import print_table as print_label_control
from .label_control import summary as label_control_summary
from .loss import StyleGANLoss
from .networks import Discriminator, Generator
from .synthetic import ensure_synthetic, label_probe, pending_build

# ------------------------------------------------------------------------------- the context


@dataclass
class RunContext:
    """Everything a method's ``train(ctx)`` needs, resolved once."""

    recipe: GanRecipe
    out: Path
    env: dist.DistEnv
    device: torch.device
    precision: str  # fp32 | bf16 | fp16
    batch_per_device: int  # images per device per forward pass
    accumulation: int  # passes per optimizer step
    resume: bool
    table: LabelTable | None  # None only in a dry run whose synthetic data is not built yet
    recipe_text: str
    resume_from: Path | None = None
    extras: dict = field(default_factory=dict)

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
        """Label names and standardisation (raw-unit mean / std, or None), as checkpoints store them."""
        t = self.table
        return {"names": t.label_names,
                "mean": None if t.mean is None else [float(v) for v in t.mean],
                "std": None if t.std is None else [float(v) for v in t.std]}

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
        if self.is_main:
            append_jsonl(self.out / "stats.jsonl", record)


# --------------------------------------------------------------------------------------- run


def run(recipe: str, overrides: list[str], *, dry_run: bool, resume: bool, skip_doctor: bool,
        nproc: int | None) -> None:
    if dist.wants_relaunch(nproc):
        _launch_distributed(recipe, overrides, dry_run=dry_run, resume=resume, skip_doctor=skip_doctor, nproc=nproc)
        return
    ctx = prepare(recipe, overrides, dry_run=dry_run, resume=resume, skip_doctor=skip_doctor, gpus=nproc)
    if ctx is None:
        return
    try:
        METHODS[ctx.recipe.train.method](ctx)
    finally:
        dist.destroy_process_group()


def _adversarial(ctx: RunContext) -> None:
    train_adversarial(ctx)


def _scorer(ctx: RunContext) -> None:
    from . import scorer

    scorer.train(ctx)


def _regression(ctx: RunContext) -> None:
    from . import regression

    regression.train(ctx)


METHODS: dict[str, Callable[[RunContext], None]] = {
    "adversarial": _adversarial,
    "scorer": _scorer,
    "property-regression": _regression,
}


def _launch_distributed(recipe: str, overrides: list[str], *, dry_run: bool, resume: bool, skip_doctor: bool,
                        nproc: int) -> None:
    """Check everything here (right exit codes, one preflight), then relaunch under torchrun."""
    ctx = prepare(recipe, overrides, dry_run=dry_run, resume=resume, skip_doctor=skip_doctor, gpus=nproc,
                  planned_world=nproc)
    if ctx is None:
        return
    args = ["train-gan", recipe, *[a for o in overrides for a in ("--set", o)], "--skip-doctor"]
    args += (["--resume"] if resume else []) + (["--verbose"] if quiet.verbose() else [])
    info(f"launching {nproc} processes with torchrun (train.batch_size {ctx.recipe.train.batch_size} stays global)")
    dist.relaunch(nproc, args)


def prepare(recipe_arg: str, overrides: list[str], *, dry_run: bool, resume: bool, skip_doctor: bool,
            gpus: int | None = None, planned_world: int | None = None) -> RunContext | None:
    """Steps 2 of the module docstring. Returns None after a dry run, which writes nothing."""
    recipe = recipes.load(recipe_arg, overrides, expect_kind="gan")
    env = dist.dist_env()
    planned = planned_world or env.world_size
    out_dir = Path(recipe.output_dir)
    device = resolve_device(recipe.train.device, local_rank=env.local_rank)
    precision = choose_precision(recipe.train.precision, device)
    batch_per_device, accumulation = dist.split_batch(recipe.train.batch_size, planned,
                                                      max_per_device=recipe.train.max_device_batch)
    # What the run will write, checked before anything is: output_dir is a new folder or an ohlora
    # run's, and the synthetic data is built only into a folder it may build into.
    builds.check_output_dir(out_dir)
    build_data = pending_build(recipe.data)

    from .scorer import check_recipe, state_path  # scorer.py imports this module

    resume_from = None
    if recipe.train.method == "scorer":  # its resumable state is not a checkpoint-*.safetensors
        found = state_path(out_dir) if state_path(out_dir).is_file() else None
    else:
        found = ckpt.latest_checkpoint(out_dir)
    if resume:
        if found is None:
            raise CheckpointError(f"--resume: {out_dir}/checkpoints holds no checkpoint to continue from",
                                  hint="Run without --resume to start, or point output_dir at the earlier run.")
        resume_from = found
        if recipe.train.method != "scorer":  # scorer.train validates its own state file
            ckpt.read_metadata(found)
    elif found is not None:
        raise RecipeError(
            f"output_dir: {out_dir} already holds a run ({found.name})",
            hint=f"Pass --resume to continue it, or start elsewhere: --set output_dir={out_dir}-2",
        )
    if recipe.model.checkpoint and not resume:
        _check_start_checkpoint(recipe, len(recipe.data.label_columns))
    check_recipe(recipe)  # model.scorer's header and the scorer keys, before any weights load

    if planned_world is None:
        dist.init_process_group(env, device.type)
        if device.type == "cuda":
            torch.cuda.set_device(device)
    if build_data and dry_run:
        if env.is_main:
            info(f"would build the synthetic '{recipe.data.synthetic}' dataset ({recipe.data.synthetic_count} "
                 f"images) at {recipe.data.csv} (a dry run builds nothing)")
    elif build_data and env.is_main and ensure_synthetic(recipe.data, recipe.model.resolution, seed=recipe.seed):
        info(f"built the synthetic '{recipe.data.synthetic}' dataset ({recipe.data.synthetic_count} images) "
             f"at {recipe.data.csv}")
    _barrier(env)

    report = _preflight(recipe, gpus=gpus) if env.is_main and not skip_doctor else None
    table = scan = None
    if not (dry_run and build_data):
        table = read_table(recipe.data)
        scan = scan_images(table, recipe.model.resolution)
        if scan["resized"] and env.is_main and not dist.relaunched():  # said once, not again by rank 0
            sizes = ", ".join(f"{w}x{h}" for (w, h) in scan["sizes"] if (w, h) != (recipe.model.resolution,) * 2)
            warn(f"{scan['resized']} of {len(table)} images ({sizes}) will be converted to RGB and resized to "
                 f"{recipe.model.resolution}x{recipe.model.resolution} (model.resolution)")

    ctx = RunContext(recipe=recipe, out=out_dir, env=env, device=device, precision=precision,
                     batch_per_device=batch_per_device, accumulation=accumulation, resume=resume,
                     table=table, recipe_text=recipes.dump(recipe), resume_from=resume_from)
    if dry_run:
        if env.is_main:
            _print_plan(ctx, planned, scan)
        return None
    if env.is_main:
        builds.claim_output_dir(out_dir)
        write_text(out_dir / "recipe.yaml", ctx.recipe_text)
        if report is not None:
            write_json(out_dir / "doctor.json", report.to_dict())
    quiet.log_to(out_dir / "train.log")
    return ctx


def _barrier(env: dist.DistEnv) -> None:
    if env.distributed and torch.distributed.is_initialized():
        torch.distributed.barrier()


def _preflight(recipe: GanRecipe, *, gpus: int | None):
    """The doctor's preflight (raises PreflightFailed on a failure); its report, or None."""
    try:
        from ..doctor import preflight
    except ImportError:  # the doctor package is built beside this one (issue 3)
        warn("the doctor's preflight is not available in this install; skipped")
        return None
    return preflight(recipe, gpus=gpus)


def _check_start_checkpoint(recipe: GanRecipe, label_size: int) -> None:
    """Read model.checkpoint and check it fits the recipe's networks, on the meta device."""
    path = Path(recipe.model.checkpoint)
    if not path.exists():
        raise CheckpointError(f"model.checkpoint: {path} does not exist", hint="Fix the path (relative to the current directory).")
    nets = ckpt.read_networks(path)  # a run folder: its latest checkpoint
    with torch.device("meta"):
        G, D = build_networks(recipe, label_size)
    for role, net in (("generator_smooth", G), ("generator", G), ("discriminator", D)):
        if role in nets:
            ckpt.load_into(net, nets[role], what=role.replace("_smooth", ""), source=path)


def _print_plan(ctx: RunContext, world: int, scan: dict) -> None:
    from rich.table import Table

    r, t = ctx.recipe, ctx.recipe.train
    steps = math.ceil(ctx.total_nimg / t.batch_size)
    plan = Table(title=f"train-gan plan ({r.source})", show_header=False)
    plan.add_column("what", style="bold")
    plan.add_column("value")
    plan.add_row("method", t.method)
    standardised = " (standardised)" if r.data.standardize_labels else ""
    if ctx.table is None:  # a dry run of a recipe whose synthetic data is not built yet
        plan.add_row("data", f"synthetic '{r.data.synthetic}', {r.data.synthetic_count} images, labels "
                     f"{', '.join(r.data.label_columns)}{standardised}: to be built at {r.data.csv}")
    else:
        plan.add_row("data", f"{len(ctx.table)} rows, labels {', '.join(ctx.table.label_names)}{standardised}; "
                     f"{scan['resized']} images to resize")
    plan.add_row("model", f"{r.model.resolution} px, z {r.model.z_dim}, w {r.model.w_dim}, "
                 f"start: {r.model.checkpoint or 'random init'}")
    plan.add_row("devices", f"{ctx.device.type} x {world} ({dist.launcher()}), precision {ctx.precision}")
    plan.add_row("batch", f"{ctx.batch_per_device} per device x {world} processes x {ctx.accumulation} "
                 f"accumulation = {ctx.batch_per_device * world * ctx.accumulation} (train.batch_size {t.batch_size})")
    plan.add_row("length", f"{t.kimg:g} kimg = {steps} optimizer steps")
    if ctx.resume_from:
        counters = ckpt.read_metadata(ctx.resume_from)["counters"]
        plan.add_row("resume", f"{ctx.resume_from} ({counters})")
    plan.add_row("output_dir", str(ctx.out))
    out.print(plan)
    out.print(ctx.recipe_text, highlight=False, markup=False)


# ------------------------------------------------------------------- building blocks (shared)


def build_networks(recipe: GanRecipe, label_size: int) -> tuple[Generator, Discriminator]:
    m = recipe.model
    G = Generator(m.resolution, z_dim=m.z_dim, w_dim=m.w_dim, label_size=label_size, label_dim=m.label_dim,
                  mapping_layers=m.mapping_layers, mapping_fmaps=m.mapping_fmaps, mapping_lr_mul=m.mapping_lr_mul,
                  fmaps_base=m.fmaps_base, fmaps_max=m.fmaps_max)
    D = Discriminator(m.resolution, label_size=label_size, fmaps_base=m.fmaps_base, fmaps_max=m.fmaps_max,
                      mbstd_group=m.mbstd_group, label_projection=m.label_projection)
    return G, D


def start_networks(ctx: RunContext) -> tuple[Generator, Generator, Discriminator]:
    """G, G_ema, D on the device: fresh, or from ``model.checkpoint`` (label layers re-initialised)."""
    G, D = build_networks(ctx.recipe, len(ctx.table.label_names))
    G_ema = copy.deepcopy(G)
    if ctx.recipe.model.checkpoint and not ctx.resume:
        ctx.extras["reinitialised"] = ckpt.load_pretrained(ctx.recipe.model.checkpoint, G, G_ema, D)
    for net in (G, G_ema):
        net.label_names = list(ctx.table.label_names)
        net.label_mean, net.label_std = ctx.label_info["mean"], ctx.label_info["std"]
    return G.to(ctx.device), G_ema.to(ctx.device).eval().requires_grad_(False), D.to(ctx.device)


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
    if train_cfg.lr_schedule == "constant":
        return 1.0
    return 0.5 * (1 + math.cos(math.pi * min(cur_nimg / max(total_nimg, 1), 1.0)))


@torch.no_grad()
def update_ema(G_ema: Generator, G: Generator, *, batch_size: int, cur_nimg: int, train_cfg) -> float:
    """G_ema <- lerp(G, G_ema, beta) with a half-life of ``ema_kimg`` (ramped up); buffers copied."""
    ema_nimg = train_cfg.ema_kimg * 1000
    if train_cfg.ema_rampup is not None:
        ema_nimg = min(ema_nimg, cur_nimg * train_cfg.ema_rampup)
    beta = 0.5 ** (batch_size / ema_nimg) if ema_nimg > 0 else 0.0
    for p_ema, p in zip(G_ema.parameters(), G.parameters(), strict=True):
        p_ema.copy_(p.detach().lerp(p_ema, beta))
    for b_ema, b in zip(G_ema.buffers(), G.buffers(), strict=True):
        b_ema.copy_(b)
    return beta


def step_optimizer(opt: torch.optim.Optimizer, params: list[torch.nn.Parameter], *, distributed: bool,
                   scaler: torch.amp.GradScaler | None = None) -> bool:
    """Average gradients over ranks, then step unless a gradient is NaN/Inf. True when stepped."""
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    if distributed and grads:
        flat = torch.cat([g.flatten() for g in grads])
        torch.distributed.all_reduce(flat)
        flat /= torch.distributed.get_world_size()
        offset = 0
        for p, g in zip(params, grads, strict=True):
            p.grad = flat[offset:offset + g.numel()].view_as(g)
            offset += g.numel()
    if scaler is not None:
        scaler.unscale_(opt)
    finite = all(bool(torch.isfinite(p.grad).all()) for p in params if p.grad is not None)
    if finite:
        (scaler.step if scaler is not None else lambda o: o.step())(opt)
    if scaler is not None:
        scaler.update()
    opt.zero_grad(set_to_none=True)
    return finite


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


def write_grid(ctx: RunContext, G_ema: Generator, z: torch.Tensor, cur_nimg: int) -> Path:
    images, rows, cols = label_sweep(G_ema, z, steps=ctx.recipe.train.grid_steps)
    path = save_grid(images, rows, cols, ctx.out / "grids" / f"grid-{cur_nimg / 1000:09.3f}kimg.png")
    save_grid(images, rows, cols, ctx.out / "grid-latest.png")
    return path


def save_state(ctx: RunContext, *, step: int, cur_nimg: int, G, G_ema, D, opt_G, opt_D, scalers: dict,
               extra: dict | None = None) -> Path:
    """Atomic checkpoint at ``checkpoints/checkpoint-<step>.safetensors`` (rank 0), then prune."""
    counters = {"step": step, "cur_nimg": cur_nimg, "kimg": cur_nimg / 1000, "world_size": ctx.env.world_size,
                **(extra or {})}
    path = ckpt.checkpoint_path(ctx.out, step)
    ckpt.save_checkpoint(path, G=G, G_ema=G_ema, D=D, opt_G=opt_G, opt_D=opt_D, counters=counters,
                         rng=capture_rng(), labels=ctx.label_info, recipe_text=ctx.recipe_text,
                         scalers={k: s.state_dict() for k, s in scalers.items() if s is not None})
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
        if scaler is not None and saved:
            scaler.load_state_dict(saved)
    counters = state.json("counters")
    rng = state.rng()
    if rng is not None and counters.get("world_size", 1) == ctx.env.world_size == 1:
        restore_rng(rng)
    else:  # each rank had its own streams; start fresh ones that depend on the resume point
        seed_everything(ctx.recipe.seed + 7919 * ctx.env.rank + counters["step"])
    return counters


def label_control_hook(ctx: RunContext, device: torch.device):
    """``(G_ema, cur_nimg) -> metrics dict`` when ``model.scorer`` is set (rank 0), else None."""
    if not ctx.recipe.model.scorer or not ctx.is_main:
        return None
    from . import label_control, scorer

    loaded = scorer.load_scorer(ctx.recipe.model.scorer, device)
    info_ = ctx.label_info
    labels = ctx.table.model_labels  # sweeps centre on the data's labels (raw ones are not -2..+2)

    def evaluate(G_ema: Generator, cur_nimg: int):
        wrapped = scorer.in_label_space(loaded, ctx.table.label_names, label_mean=info_["mean"],
                                        label_std=info_["std"])
        return label_control.evaluate_run(G_ema, wrapped, recipe=ctx.recipe, output_dir=ctx.out,
                                          kimg=cur_nimg / 1000, labels=labels, device=device)

    return evaluate


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


# ------------------------------------------------------------------- the adversarial method


class _Interval:
    """Fires when ``cur_nimg`` crosses a multiple of ``kimg``."""

    def __init__(self, kimg: float, cur_nimg: int):
        self.every = max(1, int(round(kimg * 1000)))
        self.next = (cur_nimg // self.every + 1) * self.every

    def due(self, cur_nimg: int) -> bool:
        if cur_nimg >= self.next:
            self.next = (cur_nimg // self.every + 1) * self.every
            return True
        return False


def train_adversarial(ctx: RunContext) -> None:
    """Oh-LoRA v1: conditional StyleGAN, non-saturating logistic loss + R1, written out in one
    function: setup, train loop, save, cleanup."""
    r, t = ctx.recipe, ctx.recipe.train
    device, env = ctx.device, ctx.env

    # ---- setup (networks initialised alike on every rank, then one random stream per rank)
    seed_everything(r.seed)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    G, G_ema, D = start_networks(ctx)
    seed_everything(r.seed + env.rank)
    G_params = set_trainable(G, t.g_trainable, key="train.g_trainable")
    D_params = set_trainable(D, t.d_trainable or D.last_layers(3), key="train.d_trainable")
    if not G_params or not D_params:
        raise RecipeError("train.g_trainable / train.d_trainable select no trainable parameters")
    opt_G = make_optimizer(G_params, t.g_lr, t)
    opt_D = make_optimizer(D_params, t.d_lr, t)
    fp16 = ctx.precision == "fp16"
    scalers = {"G": torch.amp.GradScaler("cuda") if fp16 else None, "D": torch.amp.GradScaler("cuda") if fp16 else None}
    step, cur_nimg, nonfinite_streak = 0, 0, 0
    if ctx.resume:
        counters = restore_state(ctx, G=G, G_ema=G_ema, D=D, opt_G=opt_G, opt_D=opt_D, scalers=scalers)
        step, cur_nimg = counters["step"], counters["cur_nimg"]
        nonfinite_streak = counters.get("nonfinite_streak", 0)
        if ctx.is_main:
            info(f"resuming from {ctx.resume_from} at {cur_nimg / 1000:g} kimg (step {step})")
    dataset = ctx.dataset
    if dataset.resized and ctx.is_main:
        warn(f"{dataset.resized} images were resized to {r.model.resolution} px")
    label_pool = dataset.labels.to(device)
    loss = StyleGANLoss(G, D, r1_gamma=t.r1_gamma, r1_interval=t.r1_interval, style_mixing_prob=t.style_mixing_prob,
                        w_avg_beta=t.w_avg_beta, amp_dtype=ctx.amp_dtype, distributed=env.distributed)
    lazy_r1 = t.r1_interval > 1 and t.r1_gamma > 0
    d_phase = "Dmain" if lazy_r1 or t.r1_gamma == 0 or fp16 else "Dboth"
    grid_z = fixed_z(G, t.grid_rows_per_label, r.seed)
    label_control = label_control_hook(ctx, device)
    batches = ctx.batches(step)
    log_at, grid_at, save_at = (_Interval(t.log_kimg, cur_nimg), _Interval(t.snapshot_kimg, cur_nimg),
                                _Interval(t.checkpoint_kimg, cur_nimg))
    control_at = _Interval(t.label_control.every_kimg, cur_nimg) if t.label_control.every_kimg > 0 else None
    tick = _Tick(cur_nimg)
    z_dim, chunk = r.model.z_dim, ctx.batch_per_device

    def save(extra=None) -> Path | None:
        if not ctx.is_main:
            return None
        return save_state(ctx, step=step, cur_nimg=cur_nimg, G=G, G_ema=G_ema, D=D, opt_G=opt_G, opt_D=opt_D,
                          scalers=scalers, extra={"nonfinite_streak": nonfinite_streak, **(extra or {})})

    def phase(name: str, real_img, real_c, opt, params, scaler, net_on, net_off) -> dict:
        net_off.requires_grad_(False)
        for p in params:
            p.requires_grad_(True)
        results: dict[str, list] = {}
        for i in range(ctx.accumulation):
            part = slice(i * chunk, (i + 1) * chunk)
            gen_z = torch.randn(chunk, z_dim, device=device)
            gen_c = label_pool[torch.randint(len(label_pool), (chunk,), device=device)]
            backward = (lambda x: scaler.scale(x).backward()) if scaler is not None else (lambda x: x.backward())
            got = loss.accumulate_gradients(name, real_img[part], real_c[part], gen_z, gen_c,
                                            1.0 / ctx.accumulation, backward)
            for k, v in got.items():
                results.setdefault(k, []).append(v)
        results["stepped"] = step_optimizer(opt, params, distributed=env.distributed, scaler=scaler)
        return results

    def mean(values) -> float:
        value = torch.stack([v.float() for v in values]).mean()
        if env.distributed:
            torch.distributed.all_reduce(value)
            value /= env.world_size
        return float(value)

    # ---- train
    start_time = time.time()
    progress = TrainProgress(ctx, cur_nimg, "train-gan") if ctx.is_main else None
    try:
        with StopRequest() as stop:
            while cur_nimg < ctx.total_nimg:
                stop_if_agreed(stop, env, device, save, cur_nimg)
                real_img, real_c = next(batches)
                real_img = real_img.to(device, non_blocking=True).float() / 127.5 - 1
                real_c = real_c.to(device, non_blocking=True)
                factor = lr_factor(t, cur_nimg, ctx.total_nimg)
                set_lr(factor, (opt_G, t.g_lr), (opt_D, t.d_lr))

                d = phase(d_phase, real_img, real_c, opt_D, D_params, scalers["D"], D, G)
                if lazy_r1 and step % t.r1_interval == 0:
                    reg = phase("Dreg", real_img, real_c, opt_D, D_params, scalers["D"], D, G)
                    d["r1"] = reg.get("r1", [])
                    d["stepped"] = d["stepped"] and reg["stepped"]
                g = phase("Gmain", real_img, real_c, opt_G, G_params, scalers["G"], G, D)
                stepped = d["stepped"] and g["stepped"]
                extra = 0
                if t.extra_g_steps:
                    d_loss, g_loss = mean(d["d_loss"]), mean(g["g_loss"])
                    while extra < t.extra_g_steps and g_loss >= t.extra_g_ratio * d_loss:
                        more = phase("Gmain", real_img, real_c, opt_G, G_params, scalers["G"], G, D)
                        g_loss = mean(more["g_loss"])
                        stepped = stepped and more["stepped"]
                        extra += 1
                nonfinite_streak = 0 if stepped else nonfinite_streak + 1
                if nonfinite_streak >= t.max_nonfinite_steps:
                    raise RunFailed(
                        f"{nonfinite_streak} optimizer steps in a row had NaN/Inf gradients (at {cur_nimg / 1000:g} kimg)",
                        hint="Lower train.g_lr / train.d_lr, raise train.r1_gamma, or use precision fp32.",
                    )
                ema_beta = update_ema(G_ema, G, batch_size=t.batch_size, cur_nimg=cur_nimg, train_cfg=t)
                cur_nimg += t.batch_size
                step += 1
                tick.add(d, g, extra, stepped)

                last = cur_nimg >= ctx.total_nimg
                if progress is not None:
                    progress.advance(cur_nimg, lambda: "D {:.3f}  G {:.3f}".format(*tick.losses()), force=last)
                if log_at.due(cur_nimg) or last:
                    record = tick.record(step, cur_nimg, factor, t, ema_beta, start_time, mean_fn=mean)
                    if control_at is not None and control_at.due(cur_nimg) and label_control and not last:
                        result = label_control(G_ema, cur_nimg)
                        record.update(result.metrics)
                        if progress is not None:
                            progress.control = label_control_summary(result)
                    ctx.log(record)
                if ctx.is_main and (grid_at.due(cur_nimg) or last):
                    write_grid(ctx, G_ema, grid_z, cur_nimg)
                if save_at.due(cur_nimg) and not last:
                    save()

        # ---- save and cleanup
        path = save()
        if ctx.is_main:
            summary = {"done": True, "kimg": cur_nimg / 1000, "step": step, "seconds": round(time.time() - start_time, 1)}
            if r.data.synthetic and dataset.cache is not None:  # the demo checks itself
                probe = label_probe(G_ema, dataset.cache.numpy(), dataset.labels.numpy(), seed=r.seed)
                summary.update({f"pixel_probe/{n}/r": round(v, 4) for n, v in zip(ctx.table.label_names, probe, strict=True)})
                say("label control, read back by a pixel ridge regressor (r, requested vs seen): "
                    + ", ".join(f"{n} {v:.2f}" for n, v in zip(ctx.table.label_names, probe, strict=True)))
            if label_control is not None:
                result = label_control(G_ema, cur_nimg)
                summary.update(result.metrics)
                print_label_control(result)
            ctx.log(summary)
            if progress is not None:
                progress.stop()
                progress = None
            say(f"trained {cur_nimg / 1000:g} kimg in {summary['seconds']:g} s; checkpoint {path}; "
                f"grid {ctx.out / 'grid-latest.png'}")
            say(f"load it: ohlora_cli.gan.load_generator('{ctx.out}')")
    finally:
        if progress is not None:
            progress.stop()


class _Tick:
    """Figures gathered between two stats lines."""

    def __init__(self, cur_nimg: int):
        self.reset(cur_nimg, time.time())

    def reset(self, cur_nimg: int, now: float) -> None:
        self.start_nimg, self.start_time = cur_nimg, now
        self.values: dict[str, list] = {"d_loss": [], "g_loss": [], "r1": []}
        self.real, self.fake = [], []
        self.extra = self.skipped = 0
        self.last_d = self.last_g = float("nan")

    def add(self, d: dict, g: dict, extra: int, stepped: bool) -> None:
        for key, source in (("d_loss", d), ("g_loss", g), ("r1", d)):
            self.values[key] += source.get(key, [])
        self.real += [x.flatten().float().cpu() for x in d.get("real_logits", [])]
        self.fake += [x.flatten().float().cpu() for x in d.get("fake_logits", [])]
        self.extra += extra
        self.skipped += 0 if stepped else 1
        self._dirty = True

    def losses(self) -> tuple[float, float]:
        if getattr(self, "_dirty", False):
            d, g = self.values["d_loss"][-1:], self.values["g_loss"][-1:]
            self.last_d = float(d[0]) if d else float("nan")
            self.last_g = float(g[0]) if g else float("nan")
            self._dirty = False
        return self.last_d, self.last_g

    def record(self, step: int, cur_nimg: int, factor: float, t, ema_beta: float, start_time: float,
               *, mean_fn) -> dict:
        now = time.time()
        seconds = max(now - self.start_time, 1e-9)
        images = cur_nimg - self.start_nimg
        figures = {k: (round(mean_fn(v), 5) if v else None) for k, v in self.values.items()}
        record = {
            "kimg": round(cur_nimg / 1000, 3), "step": step, **figures,
            "auroc": round(auroc(torch.cat(self.real), torch.cat(self.fake)), 4) if self.real else None,
            "img_per_s": round(images / seconds, 1), "sec_per_kimg": round(seconds / max(images, 1) * 1000, 2),
            "g_lr": t.g_lr * factor, "d_lr": t.d_lr * factor, "ema_beta": round(ema_beta, 6),
            "extra_g_steps": self.extra, "skipped_steps": self.skipped, "time_s": round(now - start_time, 1),
        }
        self.reset(cur_nimg, now)
        return record


class TrainProgress:
    """Rich progress bar on stderr: kimg done / total, img/s, the method's losses, and the last
    label-control figure (``control``, set when the run measures it). Redrawn from the training
    loop at most twice a second, with no refresh thread of its own (as train-llm's)."""

    def __init__(self, ctx: RunContext, cur_nimg: int, title: str):
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
            redirect_stdout=False, redirect_stderr=False,  # library output stays in train.log (runtime.quiet)
        )
        self.task = self.progress.add_task("train", total=ctx.total_nimg / 1000, completed=cur_nimg / 1000,
                                           speed="", losses="", control="")
        self.control = ""
        self.last_time, self.last_nimg = time.time(), cur_nimg
        self.progress.start()

    def advance(self, cur_nimg: int, losses: Callable[[], str], *, force: bool = False) -> None:
        """``losses`` is called only when the bar redraws (at most twice a second)."""
        now = time.time()
        if now - self.last_time < 0.5 and not force:
            return
        speed = (cur_nimg - self.last_nimg) / max(now - self.last_time, 1e-6)
        self.progress.update(self.task, completed=cur_nimg / 1000, speed=f"{speed:.0f} img/s", losses=losses(),
                             control=self.control, refresh=True)
        self.last_time, self.last_nimg = now, cur_nimg

    def stop(self) -> None:
        self.progress.stop()
