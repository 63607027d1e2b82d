"""Relaunching a checked command under torchrun (``--nproc N``): the one place that rebuilds its
command line. The parent has validated the recipe, built the data and run the preflight, so the
ranks get the same verb, recipe and overrides with ``--skip-doctor``."""

from __future__ import annotations

from ..console import info
from ..runtime import dist, quiet


def relaunch(verb: str, recipe: str, overrides: list[str], *, nproc: int, flags: list[str],
             batch_size: int | None = None) -> None:
    args = [verb, recipe, *[a for o in overrides for a in ("--set", o)], "--skip-doctor", *flags]
    if quiet.verbose():
        args.append("--verbose")
    if batch_size is not None:
        info(f"launching {nproc} processes with torchrun (train.batch_size {batch_size} stays global)")
    dist.relaunch(nproc, args)


def flags(**chosen: bool) -> list[str]:
    """``flags(resume=True, merge=False)`` -> ``["--resume"]``."""
    return [f"--{name.replace('_', '-')}" for name, on in chosen.items() if on]
