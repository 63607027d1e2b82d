"""Trainer callbacks: stats.jsonl, rich progress, answers at each epoch's end, Ctrl-C -> save and stop."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import torch
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from transformers import TrainerCallback

from ..console import err
from ..runtime.files import append_jsonl, write_text
from .generate import generate_answers


class StatsCallback(TrainerCallback):
    """One JSON object per logging interval (and per evaluation) in ``stats.jsonl``."""

    def __init__(self, path: Path):
        self.path = path

    def on_log(self, args, state, control, logs=None, **kwargs):
        if state.is_world_process_zero and logs:
            record = {"step": state.global_step, "epoch": round(state.epoch or 0.0, 4)}
            record.update({k: v for k, v in logs.items() if isinstance(v, (int, float))})
            append_jsonl(self.path, record)


class RichProgressCallback(TrainerCallback):
    """A rich progress bar on stderr instead of the Trainer's tqdm bars.

    Redrawn from the training loop at most twice a second, with no refresh thread of its own
    competing with the Trainer's Python loop for the GIL."""

    REDRAW_S = 0.5

    def __init__(self):
        self.progress: Progress | None = None
        self.task = None
        self.last_loss: float | None = None
        self.drawn_at = 0.0

    def on_train_begin(self, args, state, control, **kwargs):
        if not state.is_world_process_zero:
            return
        self.progress = Progress(
            TextColumn("[bold]train-llm[/bold]"), BarColumn(), MofNCompleteColumn(),
            TextColumn("epoch {task.fields[epoch]:.2f}  loss {task.fields[loss]}"), TimeRemainingColumn(),
            console=err, transient=False, auto_refresh=False,
            redirect_stdout=False, redirect_stderr=False,  # library output stays in train.log (runtime.quiet)
        )
        self.task = self.progress.add_task("steps", total=state.max_steps, completed=state.global_step,
                                           epoch=state.epoch or 0.0, loss="-")
        self.progress.start()
        self.drawn_at = time.monotonic()

    def on_step_end(self, args, state, control, **kwargs):
        now = time.monotonic()
        if self.progress is not None and (now - self.drawn_at >= self.REDRAW_S or state.global_step >= state.max_steps):
            loss = f"{self.last_loss:.4f}" if self.last_loss is not None else "-"
            self.progress.update(self.task, completed=state.global_step, epoch=state.epoch or 0.0, loss=loss,
                                 refresh=True)
            self.drawn_at = now

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs and "loss" in logs:
            self.last_loss = float(logs["loss"])
        if self.progress is not None and logs and "eval_loss" in logs:
            self.progress.console.print(f"epoch {state.epoch:.2f}: eval_loss {logs['eval_loss']:.4f}",
                                        highlight=False)

    def on_train_end(self, args, state, control, **kwargs):
        if self.progress is not None:
            self.progress.stop()
            self.progress = None


class SampleCallback(TrainerCallback):
    """At each epoch's end, answer the validation prompts (no_grad, stop on the end marker)."""

    def __init__(self, folder: Path, rows, prompts: list[str], *, end_marker, max_new_tokens: int):
        self.folder, self.rows, self.prompts = folder, rows, prompts
        self.end_marker, self.max_new_tokens = end_marker, max_new_tokens

    def on_epoch_end(self, args, state, control, model=None, processing_class=None, **kwargs):
        if not state.is_world_process_zero or not self.prompts:
            return
        answers = generate_answers(model, processing_class, self.prompts, end_marker=self.end_marker,
                                   max_new_tokens=self.max_new_tokens)
        epoch = math.ceil(round(state.epoch or 0.0, 4))
        lines = []
        for row, answer in zip(self.rows, answers, strict=True):
            lines.append({"row": row.number, "input": row.input, "expected": row.output, **answer,
                          "step": state.global_step, "epoch": epoch})
        write_text(self.folder / f"epoch-{epoch:03d}.jsonl",
                   "".join(json.dumps(line, ensure_ascii=False) + "\n" for line in lines))


class StopCallback(TrainerCallback):
    """Ctrl-C / SIGTERM: save a checkpoint at the end of the current step, then stop training.

    Under DDP every rank must stop on the same step, so the flag is all-reduced each step.
    """

    def __init__(self, stop, distributed: bool):
        self.stop, self.distributed = stop, distributed

    def on_step_end(self, args, state, control, **kwargs):
        requested = self.stop.requested
        if self.distributed:
            flag = torch.tensor([1.0 if requested else 0.0], device=args.device)
            torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
            requested = bool(flag.item())
        if requested:
            control.should_save = True
            control.should_training_stop = True
        return control
