"""``ohlora train-llm``: recipe -> data check and plan -> preflight -> relaunch | train.

The recipe is validated, every data row read and measured in tokens, and the plan derived
(devices, precision, per-device batch and gradient accumulation from the GLOBAL
``train.batch_size``); the doctor's preflight runs; then the engine (``ohlora_cli.llm.train``)
trains: in this process for ``hf``, in a fresh process that imports unsloth first for ``unsloth``
(``commands.unsloth_worker``), under torchrun for ``--nproc N``.

The engine is imported inside ``run``, after the recipe checks, so a bad recipe is answered
before torch loads.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from .. import recipes
from ..console import err, info, out, say, warn
from ..errors import Interrupted, RecipeError, RunFailed
from ..runtime import dist, quiet
from ..runtime.run import RunFolder
from ..runtime.signals import StopRequest
from .launch import command_line, flags, relaunch, with_resume_point
from .preflight import run_preflight
from .recipe import load_checked


def run(recipe: str, overrides: list[str], *, dry_run: bool, resume: bool, skip_doctor: bool,
        nproc: int | None, merge: bool) -> None:
    cfg = load_checked(recipe, overrides, "llm")  # a bad recipe fails before the engine loads
    from ..llm.train import check_data, latest_checkpoint, make_plan

    env = dist.dist_env()
    relaunching = dist.wants_relaunch(nproc)
    folder = RunFolder(cfg.output_dir)
    folder.check()  # a new folder or an ohlora run's: nothing else is written over
    # never start over a run (nothing is lost), never --resume from nothing
    last = folder.resume_point(latest_checkpoint(folder.checkpoints), resume=resume)
    note = None if relaunching else one_gpu_unless_ddp(cfg)
    train_rows, valid_rows, _, _ = check_data(cfg)
    plan = make_plan(cfg, len(train_rows), len(valid_rows), world_size=nproc if relaunching else env.world_size,
                     local_rank=env.local_rank, note=note)
    if env.is_main and not dist.relaunched():  # the ranks of --nproc: the parent printed it
        if dry_run:
            out.print(recipes.dump(cfg), end="", highlight=False, markup=False, soft_wrap=True)
        print_plan(plan)
        if dry_run and plan.build_tiny:
            info(f"would build a tiny {cfg.model.tiny} model and tokenizer at {cfg.model.path} "
                 "(a dry run builds nothing)")
    done = finished_already(last, plan.total_steps)
    if done and not dry_run:
        if env.is_main:
            say(done)
        return
    report = run_preflight(cfg, gpus=nproc if relaunching else None, skip=skip_doctor, is_main=env.is_main)
    if dry_run:
        return
    try:
        _train(cfg, folder, plan, overrides, report, train_rows, valid_rows, env=env,
               relaunching=relaunching, nproc=nproc, resume=resume, merge=merge)
    except Exception as exc:  # a full disk, denied write, out of memory, a killed rank: named, with the resume point
        from ..llm.train import checkpoint_step

        last = latest_checkpoint(folder.checkpoints)
        named = with_resume_point(exc, command_line("train-llm", recipe, overrides, nproc=nproc), last,
                                  checkpoint_step(last) if last else None, where=folder.path)
        if named is exc:
            raise
        raise named from exc


def _train(cfg, folder: RunFolder, plan, overrides: list[str], report, train_rows, valid_rows, *,
           env, relaunching: bool, nproc: int | None, resume: bool, merge: bool) -> None:
    """Claim the folder, then train here, in unsloth's process or under torchrun."""
    from ..llm.train import train

    if env.is_main:
        folder.open(recipes.dump(cfg), report=report, resume=resume)
    if relaunching:
        relaunch("train-llm", str(cfg.source), overrides, nproc=nproc, flags=flags(resume=resume, merge=merge))
        return
    if cfg.model.backend == "unsloth":
        run_unsloth_worker(folder, resume=resume, merge=merge)
        return
    train(cfg, plan, train_rows, valid_rows, resume=resume, merge=merge)


def one_gpu_unless_ddp(cfg) -> str | None:
    """Several GPUs visible to one plain process: train on the first only, never DataParallel.

    Must run before anything initialises CUDA: torch.cuda.device_count() asks NVML without doing so,
    and CUDA_VISIBLE_DEVICES set now still takes effect. (train() checks again on the Trainer's args.)
    """
    if cfg.train.device == "cpu" or dist.launcher() == "torchrun":
        return None
    import torch

    count = torch.cuda.device_count()
    if count <= 1:
        return None
    visible = os.environ.get("CUDA_VISIBLE_DEVICES", "").strip()
    first = visible.split(",")[0] if visible else "0"
    os.environ["CUDA_VISIBLE_DEVICES"] = first
    return (f"{count} GPUs are visible to this single process: training on GPU {first} only, with the batch "
            f"unchanged (never DataParallel). Use --nproc {count} to train on all of them with DDP.")


def print_plan(plan) -> None:
    from rich.table import Table

    table = Table(title="train-llm plan", show_header=False, title_justify="left")
    for key, value in plan.describe():
        table.add_row(key, value)
    err.print(table)  # stderr: with --dry-run, stdout holds the resolved recipe alone (> my.yaml)
    if plan.note:
        warn(plan.note)


def finished_already(last: Path | None, total_steps: int) -> str | None:
    """On ``--resume`` of a run whose checkpoint already reached the planned steps: what to say
    (where it ended, and how to train further), else None."""
    if last is None:
        return None
    from ..llm.train import checkpoint_step

    step = checkpoint_step(last)
    if step is None or step < total_steps:
        return None
    return (f"{last.parent.parent} already finished: checkpoint {last} is at step {step} of {total_steps}. "
            "Nothing to train; to train further, resume with a longer run: --resume --set train.epochs=N "
            "(or train.max_steps=N) above what it had")


def run_unsloth_worker(folder: RunFolder, *, resume: bool, merge: bool) -> None:
    """unsloth patches transformers/trl/peft when imported, so it trains in a process that imports it first."""
    out_dir, resolved = folder.path, folder.recipe_file
    cmd = [sys.executable, "-m", "ohlora_cli.commands.unsloth_worker", str(resolved)]
    cmd += (["--resume"] if resume else []) + (["--merge"] if merge else []) + (["--verbose"] if quiet.verbose() else [])
    # unsloth writes the sources it generates to ./unsloth_compiled_cache unless told otherwise:
    # keep them in the run folder, not in the user's current directory.
    env = {**os.environ, "UNSLOTH_COMPILE_LOCATION": str((out_dir / "unsloth_compiled_cache").resolve())}
    info("[dim]unsloth backend: training in a fresh process that imports unsloth first[/dim]")
    sys.stderr.flush()  # the worker appends to the same train.log
    with StopRequest():  # Ctrl-C reaches the worker too; it saves, exits 130, and we report that
        code = subprocess.call(cmd, env=env)
    if code == 130:
        raise Interrupted(f"training stopped; the checkpoint is in {out_dir / 'checkpoints'}",
                          hint="Continue with --resume.")
    if code == 2:
        raise RecipeError("the unsloth run stopped on bad input (see the message above)")
    if code:
        raise RunFailed(f"the unsloth run failed (exit code {code}; see the messages above)")
