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


def command_line(verb: str, recipe: str, overrides: list[str], *, nproc: int | None = None) -> str:
    """The command a user types to run this again (a fault message's resume command)."""
    import shlex

    args = ["ohlora", verb, recipe, *[a for o in overrides for a in ("--set", o)]]
    if nproc:
        args += ["--nproc", str(nproc)]
    return " ".join(shlex.quote(a) for a in args)


def with_resume_point(exc: BaseException, command: str, last, step: int | None, where=None) -> BaseException:
    """A fault of the machine (``runtime.faults``) or a failed rank, with the run's last complete
    checkpoint and the command that resumes from it; anything else unchanged."""
    from ..errors import RankFailed
    from ..runtime.faults import run_fault

    fault = run_fault(exc, last_checkpoint=last, step=step, command=command, where=where)
    if fault is not None:
        return fault
    if isinstance(exc, RankFailed):
        at = f"{last} (step {step})" if last is not None else "none yet"
        exc.args = (f"{exc}. The last complete checkpoint: {at}",)
        exc.hint = f"Once the cause is fixed: {command}{' --resume' if last is not None else ''}"
    return exc


def flags(**chosen: bool) -> list[str]:
    """``flags(resume=True, merge=False)`` -> ``["--resume"]``."""
    return [f"--{name.replace('_', '-')}" for name, on in chosen.items() if on]
