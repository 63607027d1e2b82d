"""``ohlora train-gan``: recipe -> plan -> preflight -> relaunch under torchrun | train.

1. The recipe is loaded and the run planned (``gan.engine.plan_run``: every check that needs no
   data; nothing is written).
2. Under torchrun, the process group comes up; a missing synthetic dataset is built (rank 0; a dry
   run says what it would build); the doctor's preflight runs (rank 0, unless ``--skip-doctor``);
   the CSV is read and every image header checked.
3. ``--dry-run`` prints the plan (stderr) and the resolved recipe (stdout) and stops: it writes nothing.
4. output_dir is claimed (``recipe.yaml``, ``doctor.json``). With ``--nproc N`` outside torchrun
   the same command is relaunched under torchrun; otherwise ``train.method`` trains.

The engine is imported inside ``run``, after the recipe checks, so a bad recipe is answered
before torch loads.
"""

from __future__ import annotations

import math

from ..console import err, out, say
from ..runtime import dist
from .launch import command_line, flags, relaunch, with_resume_point
from .preflight import run_preflight
from .recipe import load_checked


def run(recipe_arg: str, overrides: list[str], *, dry_run: bool, resume: bool, skip_doctor: bool,
        nproc: int | None) -> None:
    recipe = load_checked(recipe_arg, overrides, "gan")  # a bad recipe fails before torch loads
    from ..gan import engine

    relaunching = dist.wants_relaunch(nproc)
    ctx = engine.plan_run(recipe, resume=resume, planned_world=nproc if relaunching else None)
    done = engine.finished_already(ctx)
    if done and not dry_run:
        if ctx.is_main:
            say(done)
        return
    if not relaunching:
        engine.start_processes(ctx)
    finished = False
    try:
        _run(ctx, recipe_arg, overrides, dry_run=dry_run, resume=resume, skip_doctor=skip_doctor,
             nproc=nproc, relaunching=relaunching)
        finished = True
    except Exception as exc:  # a full disk, denied write, out of memory, a killed rank: named, with the resume point
        named = with_resume_point(exc, command_line("train-gan", recipe_arg, overrides, nproc=nproc),
                                  *engine.last_complete(ctx), where=ctx.out)
        if named is exc:
            raise
        raise named from exc
    finally:
        ctx.close_trackers()  # whichever method ran, and however it ended
        dist.destroy_process_group(together=finished)  # a failed rank: the others may never reach a barrier


def _run(ctx, recipe_arg: str, overrides: list[str], *, dry_run: bool, resume: bool,
         skip_doctor: bool, nproc: int | None, relaunching: bool) -> None:
    from ..gan import engine
    from ..gan.methods import METHODS

    recipe = ctx.recipe
    engine.build_data(ctx, dry_run=dry_run)
    report = run_preflight(recipe, gpus=nproc, skip=skip_doctor, is_main=ctx.is_main)
    engine.read_data(ctx, dry_run=dry_run)
    if dry_run:
        if ctx.is_main:
            print_plan(ctx)
        return
    engine.open_run(ctx, report)
    if relaunching:
        relaunch("train-gan", recipe_arg, overrides, nproc=nproc, flags=flags(resume=resume),
                 batch_size=recipe.train.batch_size)
        return
    METHODS[recipe.train.method](ctx)
    if recipe.train.method == "scorer" and ctx.is_main:  # the StyleGAN methods' loop ends with it
        ctx.finish_report()


def print_plan(ctx) -> None:
    from rich.table import Table

    from ..gan import checkpoint as ckpt

    r, t, world = ctx.recipe, ctx.recipe.train, ctx.world
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
                     f"{ctx.scan['resized']} images to resize")
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
    err.print(plan)  # the plan on stderr, the resolved recipe alone on stdout: --dry-run > my.yaml is a recipe
    out.print(ctx.recipe_text, highlight=False, markup=False, soft_wrap=True)
