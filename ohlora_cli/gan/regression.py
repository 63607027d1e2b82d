"""``train.method: property-regression`` (Oh-LoRA "v2"): the generator learns its labels from a
frozen property-score CNN instead of (or besides) a discriminator.

Each step samples z and requested labels (``normal``: N(mean, std) of the dataset's labels per
column; ``dataset``: rows of the dataset), generates images and minimises

    property_weight    * MSE(scorer(G(z, labels)), labels)        (in standardised units)
  + adversarial_weight * softplus(-D(G(z, labels), labels))       (D then trains as in adversarial)
  + keep_weight        * MSE(G(z, labels), G_start(z, labels))    (G_start: the starting generator)

Freezing (``train.g_trainable`` / ``train.d_trainable``), optimizers, schedule, style mixing,
``w_avg`` tracking, EMA, grids, checkpoints, ``--resume``, Ctrl-C and DDP are the adversarial
method's, reused from ``gan.train``. The scorer is ``model.scorer`` (a ``train.method: scorer``
run); label control is measured with it every ``train.label_control.every_kimg`` and at the end.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from ..console import info, say
from ..errors import RecipeError, RunFailed
from ..runtime.seeding import seed_everything
from ..runtime.signals import StopRequest
from . import checkpoint as ckpt
from . import label_control, scorer
from .grid import fixed_z
from .loss import StyleGANLoss
from .networks import Generator
from .synthetic import label_probe
from .train import (
    RunContext,
    TrainProgress,
    build_networks,
    lr_factor,
    make_optimizer,
    restore_state,
    save_state,
    set_lr,
    set_trainable,
    start_networks,
    step_optimizer,
    stop_if_agreed,
    update_ema,
    write_grid,
)


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


def property_loss(score, images: torch.Tensor, labels: torch.Tensor, label_std: torch.Tensor) -> torch.Tensor:
    """Oh-LoRA v2's loss: MSE between the frozen scorer's reading of the images and the requested
    labels, in units of each label's spread (``label_std``), so every label weighs alike. The
    scorer sees the images clamped to [-1, 1], as they are saved and as label control sees them
    (no credit for pixels pushed out of range)."""
    return ((score(images.clamp(-1, 1)).float() - labels) / label_std).square().mean()


class _Interval:
    """Fires when ``cur_nimg`` crosses a multiple of ``kimg`` (0: never)."""

    def __init__(self, kimg: float, cur_nimg: int):
        self.every = max(1, int(round(kimg * 1000))) if kimg > 0 else 0
        self.next = (cur_nimg // self.every + 1) * self.every if self.every else math.inf

    def due(self, cur_nimg: int) -> bool:
        if cur_nimg < self.next:
            return False
        self.next = (cur_nimg // self.every + 1) * self.every
        return True


def train(ctx: RunContext) -> None:
    """Setup, train loop, save, cleanup: written out in one function."""
    r, t, reg = ctx.recipe, ctx.recipe.train, ctx.recipe.train.regression
    device, env = ctx.device, ctx.env
    scorer.check_recipe(r)
    if reg.property_weight == 0 and reg.adversarial_weight == 0:
        raise RecipeError("train.regression: property_weight and adversarial_weight are both 0: nothing to learn")

    # ---- setup (networks initialised alike on every rank, then one random stream per rank)
    seed_everything(r.seed)
    G, G_ema, D = start_networks(ctx)
    G_start = starting_generator(ctx) if reg.keep_weight > 0 else None
    seed_everything(r.seed + env.rank)
    names, label_info = list(ctx.table.label_names), ctx.label_info
    frozen_scorer = scorer.load_scorer(r.model.scorer, device)
    score = scorer.in_label_space(frozen_scorer, names, label_mean=label_info["mean"], label_std=label_info["std"])
    label_pool = ctx.dataset.labels.to(device)  # G's label space: standardised when asked
    pool_mean = label_pool.double().mean(0).float()
    pool_std = label_pool.double().std(0, unbiased=False).float().clamp(min=1e-12)

    G_params = set_trainable(G, t.g_trainable, key="train.g_trainable")
    adversarial = reg.adversarial_weight > 0
    D_params = set_trainable(D, t.d_trainable or D.last_layers(3), key="train.d_trainable") if adversarial else []
    D.requires_grad_(False)  # trains only inside its own phase
    if not G_params or (adversarial and not D_params):
        raise RecipeError("train.g_trainable / train.d_trainable select no trainable parameters")
    opt_G = make_optimizer(G_params, t.g_lr, t)
    opt_D = make_optimizer(D_params, t.d_lr, t) if adversarial else None
    fp16 = ctx.precision == "fp16"
    scalers = {"G": torch.amp.GradScaler("cuda") if fp16 else None,
               "D": torch.amp.GradScaler("cuda") if fp16 and adversarial else None}
    step, cur_nimg, nonfinite_streak = 0, 0, 0
    if ctx.resume:
        counters = restore_state(ctx, G=G, G_ema=G_ema, D=D, opt_G=opt_G, opt_D=opt_D, scalers=scalers)
        step, cur_nimg = counters["step"], counters["cur_nimg"]
        nonfinite_streak = counters.get("nonfinite_streak", 0)
        if ctx.is_main:
            info(f"resuming from {ctx.resume_from} at {cur_nimg / 1000:g} kimg (step {step})")
    loss = StyleGANLoss(G, D, r1_gamma=t.r1_gamma, r1_interval=t.r1_interval, style_mixing_prob=t.style_mixing_prob,
                        w_avg_beta=t.w_avg_beta, amp_dtype=ctx.amp_dtype, distributed=env.distributed)
    keep = None
    if G_start is not None:  # same style mixing and noise as G's pass: replayed from the same RNG state
        keep = StyleGANLoss(G_start, D, r1_gamma=0, r1_interval=1, style_mixing_prob=t.style_mixing_prob,
                            w_avg_beta=1.0, amp_dtype=ctx.amp_dtype, distributed=False)
    lazy_r1 = t.r1_interval > 1 and t.r1_gamma > 0
    d_phase = "Dmain" if lazy_r1 or t.r1_gamma == 0 or fp16 else "Dboth"
    batches = ctx.batches(step) if adversarial else None
    grid_z = fixed_z(G, t.grid_rows_per_label, r.seed)
    log_at, grid_at = _Interval(t.log_kimg, cur_nimg), _Interval(t.snapshot_kimg, cur_nimg)
    save_at, control_at = _Interval(t.checkpoint_kimg, cur_nimg), _Interval(t.label_control.every_kimg, cur_nimg)
    chunk, z_dim, label_size = ctx.batch_per_device, r.model.z_dim, len(names)
    rng_devices = [device] if device.type == "cuda" else []

    def sample_labels(n: int) -> torch.Tensor:
        if reg.label_sampling == "dataset":
            return label_pool[torch.randint(len(label_pool), (n,), device=device)]
        return pool_mean + pool_std * torch.randn(n, label_size, device=device)

    def control(cur: int) -> label_control.LabelControlResult:
        return label_control.evaluate_run(G_ema, score, recipe=r, output_dir=ctx.out, kimg=cur / 1000,
                                          labels=label_pool, device=device)

    def save(extra=None) -> Path | None:
        if not ctx.is_main:
            return None
        return save_state(ctx, step=step, cur_nimg=cur_nimg, G=G, G_ema=G_ema, D=D, opt_G=opt_G, opt_D=opt_D,
                          scalers=scalers, extra={"nonfinite_streak": nonfinite_streak, **(extra or {})})

    def mean(values: list[torch.Tensor]) -> float | None:
        if not values:
            return None
        value = torch.stack([v.float() for v in values]).mean()
        if env.distributed:
            torch.distributed.all_reduce(value)
            value /= env.world_size
        return round(float(value), 5)

    def d_step(real_img, real_c) -> tuple[dict, bool]:
        G.requires_grad_(False)
        for p in D_params:
            p.requires_grad_(True)
        scaler = scalers["D"]
        backward = (lambda x: scaler.scale(x).backward()) if scaler is not None else (lambda x: x.backward())
        phases = [d_phase] + (["Dreg"] if lazy_r1 and step % t.r1_interval == 0 else [])
        figures: dict[str, list] = {}
        stepped = True
        for name in phases:
            for i in range(ctx.accumulation):
                part = slice(i * chunk, (i + 1) * chunk)
                gen_z = torch.randn(chunk, z_dim, device=device)
                got = loss.accumulate_gradients(name, real_img[part], real_c[part], gen_z, sample_labels(chunk),
                                                1.0 / ctx.accumulation, backward)
                for k, v in got.items():
                    figures.setdefault(k, []).append(v)
            stepped = step_optimizer(opt_D, D_params, distributed=env.distributed, scaler=scaler) and stepped
        for p in D_params:
            p.requires_grad_(False)
        return figures, stepped

    def g_step() -> tuple[dict, bool]:
        for p in G_params:
            p.requires_grad_(True)
        scaler = scalers["G"]
        figures: dict[str, list] = {}
        for _ in range(ctx.accumulation):
            gen_z = torch.randn(chunk, z_dim, device=device)
            gen_c = sample_labels(chunk)
            terms = {}
            if keep is not None:
                with torch.random.fork_rng(devices=rng_devices), torch.no_grad():
                    reference = keep.run_G(gen_z, gen_c, update_w_avg=False)
            images = loss.run_G(gen_z, gen_c, update_w_avg=True)
            with loss.autocast(device.type):
                terms["property_loss"] = property_loss(score, images, gen_c, pool_std)
            total = reg.property_weight * terms["property_loss"]
            if adversarial:
                terms["adv_loss"] = F.softplus(-loss.run_D(images, gen_c)).mean()
                total = total + reg.adversarial_weight * terms["adv_loss"]
            if keep is not None:
                terms["keep_loss"] = F.mse_loss(images.float(), reference.float())
                total = total + reg.keep_weight * terms["keep_loss"]
            total = total / ctx.accumulation
            (scaler.scale(total) if scaler is not None else total).backward()
            terms["g_loss"] = total.detach() * ctx.accumulation
            for k, v in terms.items():
                figures.setdefault(k, []).append(v.detach())
        stepped = step_optimizer(opt_G, G_params, distributed=env.distributed, scaler=scaler)
        return figures, stepped

    # ---- train
    start_time = tick_time = time.time()
    tick_nimg = cur_nimg
    tick: dict[str, list] = {}
    progress = TrainProgress(ctx, cur_nimg, "property-regression") if ctx.is_main else None
    try:
        with StopRequest() as stop:
            while cur_nimg < ctx.total_nimg:
                stop_if_agreed(stop, env, device, save, cur_nimg)
                factor = lr_factor(t, cur_nimg, ctx.total_nimg)
                set_lr(factor, (opt_G, t.g_lr), (opt_D, t.d_lr))
                stepped = True
                if adversarial:
                    real_img, real_c = next(batches)
                    real_img = real_img.to(device, non_blocking=True).float() / 127.5 - 1
                    d_figures, stepped = d_step(real_img, real_c.to(device, non_blocking=True))
                    for k in ("d_loss", "r1"):
                        tick.setdefault(k, []).extend(d_figures.get(k, []))
                g_figures, g_stepped = g_step()
                for k, v in g_figures.items():
                    tick.setdefault(k, []).extend(v)
                stepped = stepped and g_stepped
                nonfinite_streak = 0 if stepped else nonfinite_streak + 1
                if nonfinite_streak >= t.max_nonfinite_steps:
                    raise RunFailed(
                        f"{nonfinite_streak} optimizer steps in a row had NaN/Inf gradients (at {cur_nimg / 1000:g} kimg)",
                        hint="Lower train.g_lr, or use train.precision fp32.",
                    )
                ema_beta = update_ema(G_ema, G, batch_size=t.batch_size, cur_nimg=cur_nimg, train_cfg=t)
                cur_nimg += t.batch_size
                step += 1
                last = cur_nimg >= ctx.total_nimg
                if progress is not None:
                    prop = tick.get("property_loss")
                    progress.advance(cur_nimg, lambda prop=prop: f"prop {float(prop[-1]):.4f}" if prop else "")
                if log_at.due(cur_nimg) or last:
                    now = time.time()
                    record = {"kimg": round(cur_nimg / 1000, 3), "step": step,
                              **{k: mean(v) for k, v in sorted(tick.items())},
                              "img_per_s": round((cur_nimg - tick_nimg) / max(now - tick_time, 1e-9), 1),
                              "g_lr": t.g_lr * factor, "ema_beta": round(ema_beta, 6),
                              "time_s": round(now - start_time, 1)}
                    tick, tick_time, tick_nimg = {}, now, cur_nimg
                    if control_at.due(cur_nimg) and not last and ctx.is_main:
                        result = control(cur_nimg)
                        record.update(result.metrics)
                        if progress is not None:
                            progress.control = label_control.summary(result)
                    ctx.log(record)
                if ctx.is_main and (grid_at.due(cur_nimg) or last):
                    write_grid(ctx, G_ema, grid_z, cur_nimg)
                if save_at.due(cur_nimg) and not last:
                    save()

        # ---- save and cleanup
        path = save()
        if ctx.is_main:
            seconds = round(time.time() - start_time, 1)
            result = control(cur_nimg)
            summary = {"done": True, "kimg": cur_nimg / 1000, "step": step, "seconds": seconds, **result.metrics}
            if r.data.synthetic and ctx.dataset.cache is not None:  # a second opinion that is not the scorer
                probe = label_probe(G_ema, ctx.dataset.cache.numpy(), ctx.dataset.labels.numpy(), seed=r.seed)
                summary.update({f"pixel_probe/{n}/r": round(v, 4) for n, v in zip(names, probe, strict=True)})
            ctx.log(summary)
            if progress is not None:
                progress.stop()
                progress = None
            label_control.print_table(result)
            if "pixel_probe/" + names[0] + "/r" in summary:
                say("label control, read back by a pixel ridge regressor (r, requested vs seen): "
                    + ", ".join(f"{n} {summary[f'pixel_probe/{n}/r']:.2f}" for n in names))
            say(f"trained {cur_nimg / 1000:g} kimg in {seconds:g} s; checkpoint {path}; "
                f"grid {ctx.out / 'grid-latest.png'}; label control "
                f"{ctx.out / 'label_control' / f'label-control-{label_control.kimg_tag(cur_nimg / 1000)}.png'}")
            say(f"load it: ohlora_cli.gan.load_generator('{ctx.out}')")
    finally:
        if progress is not None:
            progress.stop()
