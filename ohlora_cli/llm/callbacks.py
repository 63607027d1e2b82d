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
    """Progress on stderr instead of the Trainer's tqdm bars. On a terminal, a rich bar, redrawn from
    the training loop at most twice a second, with no refresh thread of its own competing with the
    Trainer's Python loop for the GIL. Elsewhere (a log file, a pipe), one plain line per logging
    interval: step, epoch, loss, learning rate, tokens/s, ETA; no control characters."""

    REDRAW_S = 0.5

    def __init__(self):
        self.progress: Progress | None = None
        self.task = None
        self.last_loss: float | None = None
        self.drawn_at = 0.0
        self.plain = False
        self.started_at, self.start_step = 0.0, 0
        self.logged_at, self.logged_tokens = 0.0, 0

    def on_train_begin(self, args, state, control, **kwargs):
        if not state.is_world_process_zero:
            return
        now = time.monotonic()
        self.started_at, self.start_step = now, state.global_step
        self.logged_at, self.logged_tokens = now, state.num_input_tokens_seen or 0
        self.plain = not err.is_terminal
        if self.plain:
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
        self.drawn_at = now

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
            if self.plain and state.is_world_process_zero:
                self.log_line(state, logs)
        if logs and "eval_loss" in logs and state.is_world_process_zero and (self.plain or self.progress is not None):
            line = f"epoch {state.epoch:.2f}: eval_loss {logs['eval_loss']:.4f}"
            if self.progress is not None:
                self.progress.console.print(line, highlight=False)
            else:
                print(f"train-llm  {line}", file=err.file, flush=True)

    def log_line(self, state, logs: dict) -> None:
        now = time.monotonic()
        tokens = state.num_input_tokens_seen or 0
        speed = (tokens - self.logged_tokens) / max(now - self.logged_at, 1e-6)
        self.logged_at, self.logged_tokens = now, tokens
        done = state.global_step - self.start_step
        eta = (now - self.started_at) / done * (state.max_steps - state.global_step) if done > 0 else float("nan")
        parts = ["train-llm", f"step {state.global_step}/{state.max_steps}", f"epoch {state.epoch or 0.0:.2f}",
                 f"loss {logs['loss']:.4f}"]
        if isinstance(logs.get("learning_rate"), (int, float)):
            parts.append(f"lr {logs['learning_rate']:.3g}")
        if tokens:
            parts.append(f"{speed:.0f} tokens/s")
        parts.append(f"ETA {_format_seconds(eta)}")
        print("  ".join(parts), file=err.file, flush=True)

    def on_train_end(self, args, state, control, **kwargs):
        if self.progress is not None:
            self.progress.stop()
            self.progress = None


def _format_seconds(seconds: float) -> str:
    """h:mm:ss, or '-' when unknown."""
    if not math.isfinite(seconds):
        return "-"
    seconds = int(round(max(seconds, 0)))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


class ReportCallback(TrainerCallback):
    """report.html rebuilt after logging intervals (throttled by ``runtime.report.ReportWriter``)."""

    def __init__(self, writer):
        self.writer = writer

    def on_log(self, args, state, control, logs=None, **kwargs):
        if state.is_world_process_zero:
            self.writer.maybe()


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
