"""``train.method: scorer``: fit the property-score CNN (``ohlora_cli.gan.scorer``) on a GAN recipe's
CSV and images, with the engine's building blocks (context, optimizer step, stop agreement, scaler).
It trains in epochs over the images rather than in kimg of generated ones, so it has its own loop:
train, validate, log, keep the best, stop early.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import torch
from rich.table import Table
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from ...console import info, out, say
from ...errors import CheckpointError, DataError, Interrupted, RunFailed
from ...runtime.files import atomic_path
from ...runtime.seeding import capture_rng, restore_rng, seed_everything
from ...runtime.signals import StopRequest
from ..checkpoint import optimizer_state, optimizer_tensors
from ..engine import RunContext, make_scaler, step_optimizer, stop_agreed
from ..scorer import (
    FILENAME,
    STATE_FORMAT,
    PropertyScorer,
    build_scorer,
    regression_metrics,
    save_scorer,
    scorer_loss,
    state_path,
)


def split_rows(n: int, valid_fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(train rows, validation rows): a fixed shuffle from ``seed``; at least one row each."""
    if n < 2:
        raise DataError(f"the scorer needs at least 2 rows (1 to train, 1 to validate), the CSV has {n}")
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    n_valid = min(max(1, round(n * valid_fraction)), n - 1)
    return order[n_valid:].sort().values, order[:n_valid].sort().values


def _images(dataset, rows: torch.Tensor, device: torch.device) -> torch.Tensor:
    """uint8 images of ``rows`` from the GAN dataset -> float32 in [-1, 1] on ``device``."""
    if getattr(dataset, "cache", None) is not None:
        batch = dataset.cache[rows]
    else:
        batch = torch.stack([dataset[int(i)][0] for i in rows])
    return batch.to(device, non_blocking=True).float() / 127.5 - 1.0


def _epoch_order(rows: torch.Tensor, seed: int, epoch: int) -> torch.Tensor:
    perm = torch.randperm(len(rows), generator=torch.Generator().manual_seed(seed * 100003 + epoch + 1))
    return rows[perm]


def _save_state(path: Path, scorer: PropertyScorer, optimizer, counters: dict, scaler) -> None:
    tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in scorer.state_dict().items()}
    meta = {"format": STATE_FORMAT, "counters": json.dumps(counters),
            "scaler": json.dumps(scaler.state_dict())}
    optimizer_tensors("opt", optimizer, tensors, meta)
    rng = capture_rng()
    tensors["rng.torch"] = rng["torch"]
    meta["rng"] = json.dumps({"python": rng["python"], "numpy": rng["numpy"]})
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=meta)


def _load_state(path: Path, scorer: PropertyScorer, optimizer, scaler, *, world_size: int) -> dict:
    try:
        with safe_open(str(path), framework="pt") as fh:
            meta = fh.metadata() or {}
        if meta.get("format") != STATE_FORMAT:
            raise ValueError("not a scorer training state")
        tensors = load_file(str(path))
        scorer.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
        optimizer.load_state_dict(optimizer_state("opt", tensors, meta))
        counters = json.loads(meta["counters"])
        rng = json.loads(meta["rng"])
    except (SafetensorError, OSError, ValueError, KeyError, RuntimeError) as exc:
        raise CheckpointError(f"{path}: cannot resume the scorer from it ({type(exc).__name__}: {exc})",
                              hint="Resume with the recipe the run started with, or delete the file to start over.") from exc
    if scaler.is_enabled() and json.loads(meta.get("scaler", "{}")):
        scaler.load_state_dict(json.loads(meta["scaler"]))
    if world_size == 1 and counters.get("world_size", 1) == 1:
        rng["torch"] = tensors["rng.torch"]
        restore_rng(rng)
    return counters


def train(ctx: RunContext) -> dict:
    """``train.method: scorer``: fit the property-score CNN on the recipe's CSV and images.

    Setup, then epochs of (train, validate, log, keep the best, stop early), then the final table.
    Writes ``output_dir/scorer.safetensors`` (the best epoch: what ``model.scorer`` takes),
    ``stats.jsonl`` (a line per epoch: losses, per-label validation r and MAE) and the resumable
    ``checkpoints/scorer-state.safetensors``. The scorer always learns the labels' raw units
    (``data.standardize_labels`` does not matter to it). Returns the best epoch's validation metrics.
    """
    fit = _Fit(ctx)
    settings = ctx.recipe.train.scorer
    start = time.perf_counter()
    with StopRequest() as stop:
        while fit.counters["epoch"] < settings.epochs:
            epoch = fit.counters["epoch"]
            train_loss, seen, seconds = fit.train_epoch(stop)
            valid_loss, metrics, improved = fit.validate(epoch)
            ctx.log({"epoch": epoch, "step": (epoch + 1) * fit.steps_per_epoch, "train/loss": round(train_loss, 6),
                     "valid/loss": round(valid_loss, 6), **metrics, "best_epoch": fit.counters["best_epoch"],
                     "img_per_s": round(seen / seconds, 1), "time_s": round(time.perf_counter() - start, 1)})
            if ctx.is_main:
                rs = "  ".join(f"{name} {metrics[f'valid/{name}/r']:.3f}" for name in fit.scorer.labels)
                info(f"epoch {epoch}: train {train_loss:.4f}  valid {valid_loss:.4f}  r: {rs}{'  (best)' if improved else ''}")
            fit.save_progress()
            if epoch - fit.counters["best_epoch"] >= settings.patience:
                if ctx.is_main:
                    info(f"early stop: no validation improvement in {settings.patience} epochs")
                break

    # ---- final table (the best epoch)
    best = dict(fit.counters["best_metrics"])
    ctx.log({"done": True, "best_epoch": fit.counters["best_epoch"], "valid/loss": round(fit.counters["best_loss"], 6),
             **best, "time_s": round(time.perf_counter() - start, 1)})
    if ctx.is_main:
        _print_table(fit.scorer, best, fit.counters["best_epoch"], fit.best_path)
    return best


class _Fit:
    """One scorer training: its setup, and an epoch's training and validation."""

    def __init__(self, ctx: RunContext):
        recipe, settings, env = ctx.recipe, ctx.recipe.train.scorer, ctx.env
        self.ctx, self.settings, self.device = ctx, settings, ctx.device
        seed_everything(recipe.seed)
        self.raw = torch.from_numpy(ctx.table.labels).float()
        self.train_rows, self.valid_rows = split_rows(len(self.raw), settings.valid_fraction, recipe.seed)
        scorer = build_scorer(recipe)
        mean = self.raw[self.train_rows].double().mean(0)
        std = self.raw[self.train_rows].double().std(0, unbiased=False)
        scorer.label_mean.copy_(mean.float())
        scorer.label_std.copy_(torch.where(std > 1e-12, std, torch.ones_like(std)).float())
        self.scorer = scorer.to(self.device)
        self.params = list(scorer.parameters())
        self.optimizer = torch.optim.AdamW(self.params, lr=settings.lr, weight_decay=settings.weight_decay)
        self.scaler = make_scaler(ctx.precision)
        # train.batch_size is global; a dataset smaller than one batch trains on all of it per step
        self.global_batch = min(recipe.train.batch_size, len(self.train_rows) // env.world_size * env.world_size)
        if self.global_batch < env.world_size:
            raise DataError(f"{recipe.data.csv}: {len(self.train_rows)} training rows cannot feed {env.world_size} "
                            f"processes", hint="Use more rows or fewer processes.")
        self.per_rank = self.global_batch // env.world_size
        self.micro = max(1, min(ctx.batch_per_device, self.per_rank))
        self.steps_per_epoch = len(self.train_rows) // self.global_batch
        self.best_path, self.resume_path = Path(ctx.out) / FILENAME, state_path(ctx.out)
        self.counters = {"epoch": 0, "step_in_epoch": 0, "best_loss": None, "best_epoch": -1, "best_metrics": {},
                         "world_size": env.world_size}
        if ctx.resume:
            self._resume()
        if env.world_size > 1:  # one dropout stream per rank
            seed_everything(recipe.seed + 7919 * env.rank + self.counters["epoch"] * 1000
                            + self.counters["step_in_epoch"])
        if ctx.is_main:
            info(f"scorer: {len(self.train_rows)} training rows, {len(self.valid_rows)} validation rows, "
                 f"{scorer.label_dim} labels, {sum(p.numel() for p in self.params):,} parameters; batch "
                 f"{self.global_batch} = {env.world_size} x {self.per_rank}, device {self.device}")

    def _resume(self) -> None:
        if not self.resume_path.is_file():
            raise CheckpointError(f"--resume: {self.resume_path} does not exist",
                                  hint="Run without --resume to start the scorer training.")
        env = self.ctx.env
        self.counters = _load_state(self.resume_path, self.scorer, self.optimizer, self.scaler,
                                    world_size=env.world_size)
        self.counters["world_size"] = env.world_size
        if self.ctx.is_main:
            info(f"resuming the scorer at epoch {self.counters['epoch']}, step {self.counters['step_in_epoch']}")

    def save_progress(self) -> None:
        if self.ctx.is_main:
            _save_state(self.resume_path, self.scorer, self.optimizer, self.counters, self.scaler)

    def train_epoch(self, stop) -> tuple[float, int, float]:
        """The rest of the current epoch: (mean training loss, images seen, seconds)."""
        ctx, env, device, c = self.ctx, self.ctx.env, self.device, self.counters
        epoch = c["epoch"]
        order = _epoch_order(self.train_rows, ctx.recipe.seed, epoch)
        self.scorer.train()
        loss_sum = torch.zeros((), device=device)
        loss_count, seen, epoch_start = 0, 0, time.perf_counter()
        amp_dtype = ctx.amp_dtype
        while c["step_in_epoch"] < self.steps_per_epoch:
            if stop_agreed(stop, env, device):
                self.save_progress()
                raise Interrupted(f"stopped by {stop.signal_name or 'a signal'} in epoch {epoch}; the best scorer "
                                  f"so far is {self.best_path}", hint="Continue with the same command plus --resume.")
            step = c["step_in_epoch"]
            rows = order[step * self.global_batch:(step + 1) * self.global_batch]
            rows = rows[env.rank * self.per_rank:(env.rank + 1) * self.per_rank]
            for part in rows.split(self.micro):
                with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
                    loss = scorer_loss(self.scorer, _images(ctx.dataset, part, device), self.raw[part].to(device))
                self.scaler.scale(loss * (len(part) / len(rows))).backward()
                loss_sum += loss.detach() * len(part)
                loss_count += len(part)
            step_optimizer(self.optimizer, self.params, distributed=env.distributed, scaler=self.scaler)
            seen += self.global_batch
            c["step_in_epoch"] += 1
        totals = torch.stack([loss_sum, torch.tensor(float(loss_count), device=device)])
        if env.distributed:
            torch.distributed.all_reduce(totals)
        train_loss = float(totals[0] / totals[1].clamp(min=1))
        if not math.isfinite(train_loss):
            raise RunFailed(f"the scorer's training loss became {train_loss} in epoch {epoch}",
                            hint="Lower train.scorer.lr, or use train.precision fp32.")
        return train_loss, seen, time.perf_counter() - epoch_start

    def validate(self, epoch: int) -> tuple[float, dict, bool]:
        """Every rank scores the whole validation split, so all decide alike; the best epoch is saved."""
        ctx, c = self.ctx, self.counters
        pred = _predict(self.scorer, ctx.dataset, self.valid_rows, self.device, ctx.batch_per_device, ctx.amp_dtype)
        target = self.raw[self.valid_rows]
        valid_loss = float((((pred - target) / self.scorer.label_std.cpu()) ** 2).mean())
        metrics = regression_metrics(pred, target, self.scorer.labels)
        improved = c["best_loss"] is None or valid_loss < c["best_loss"]
        c.update(epoch=epoch + 1, step_in_epoch=0)
        if improved:
            c.update(best_loss=valid_loss, best_epoch=epoch, best_metrics=metrics)
            if ctx.is_main:
                save_scorer(self.scorer, self.best_path,
                            metrics={"epoch": epoch, "valid/loss": round(valid_loss, 6), **metrics})
        return valid_loss, metrics, improved


@torch.no_grad()
def _predict(scorer: PropertyScorer, dataset, rows: torch.Tensor, device: torch.device, batch: int,
             amp_dtype=None) -> torch.Tensor:
    """Raw-unit scores of ``rows`` (eval mode), on the CPU."""
    was_training = scorer.training
    scorer.eval()
    out = []
    try:
        for part in rows.split(max(1, batch)):
            with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
                out.append(scorer(_images(dataset, part, device)).float().cpu())
    finally:
        scorer.train(was_training)
    return torch.cat(out)


def _print_table(scorer: PropertyScorer, metrics: dict, best_epoch: int, path: Path) -> None:
    table = Table(title=f"Property-score CNN, validation at the best epoch ({best_epoch})")
    for column, justify in (("label", "left"), ("crop (top, bottom, left, right)", "left"),
                            ("r", "right"), ("MAE", "right")):
        table.add_column(column, justify=justify)
    for name, crop in zip(scorer.labels, scorer.crops, strict=True):
        region = f"{crop.top:.3g}, {crop.bottom:.3g}, {crop.left:.3g}, {crop.right:.3g}"
        table.add_row(name, region, f"{metrics.get(f'valid/{name}/r', float('nan')):.3f}",
                      f"{metrics.get(f'valid/{name}/mae', float('nan')):.3f}")
    out.print(table)
    say(f"scorer saved to {path} (use it as model.scorer)")
