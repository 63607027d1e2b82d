"""Distributed data parallel setup: torchrun's environment, process groups, self-relaunch.

We never use DataParallel. Several processes come from torchrun (``--nproc N`` relaunches the
same command under ``torch.distributed.run``); ``train.batch_size`` stays global.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from dataclasses import dataclass

from ..errors import Interrupted, RankFailed, RecipeError


@dataclass(frozen=True)
class DistEnv:
    rank: int = 0
    local_rank: int = 0
    world_size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def dist_env() -> DistEnv:
    """Read torchrun's variables (plain python: one process)."""
    return DistEnv(
        rank=int(os.environ.get("RANK", 0)),
        local_rank=int(os.environ.get("LOCAL_RANK", 0)),
        world_size=int(os.environ.get("WORLD_SIZE", 1)),
    )


def launcher() -> str:
    """'torchrun' when started by torchrun/accelerate (LOCAL_RANK and WORLD_SIZE set), else 'python'."""
    return "torchrun" if "LOCAL_RANK" in os.environ and "WORLD_SIZE" in os.environ else "python"


def split_batch(global_batch: int, world_size: int, *, max_per_device: int | None = None,
                key: str = "train.batch_size") -> tuple[int, int]:
    """Split a global batch into (per-device batch, gradient accumulation steps).

    per_device x world_size x accumulation == global_batch exactly, or a RecipeError says why not.
    """
    if global_batch % world_size:
        raise RecipeError(
            f"{key}: {global_batch} is not divisible by the {world_size} data-parallel processes",
            hint=f"Use a multiple of {world_size}, or fewer processes.",
        )
    per_rank = global_batch // world_size
    accumulation = 1
    if max_per_device:
        while per_rank % accumulation or per_rank // accumulation > max_per_device:
            accumulation += 1
    return per_rank // accumulation, accumulation


def init_process_group(env: DistEnv, device_type: str) -> None:
    if not env.distributed:
        return
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device_type == "cuda" else "gloo")


def destroy_process_group(*, together: bool = True) -> None:
    """Leave the process group. ``together`` (a clean finish): a barrier first, so no rank tears its
    connections down while another is still finishing (rank 0 writes the last checkpoint and the
    summary alone); gloo has aborted a rank at exit ("terminate called without an active
    exception") without it. A rank that failed leaves at once: the others may never reach a
    barrier, and its closed connections make their next collective fail instead of hang."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        try:
            if together:
                dist.barrier()
        finally:
            dist.destroy_process_group()


RELAUNCHED = "OHLORA_RELAUNCHED"  # set for the ranks that ``relaunch`` starts


def wants_relaunch(nproc: int | None) -> bool:
    """True when ``--nproc N`` (N > 1) asks this plain process to relaunch itself under torchrun;
    a RecipeError when the process already runs under torchrun (one launcher at a time)."""
    if nproc and launcher() == "torchrun":
        raise RecipeError("--nproc: this process was already started by torchrun",
                          hint="Drop --nproc when you launch with torchrun yourself.")
    return bool(nproc and nproc > 1)


def relaunched() -> bool:
    """True in the ranks of an ``--nproc`` relaunch: the parent has already printed the plan."""
    return os.environ.get(RELAUNCHED) == "1"


def relaunch(nproc: int, args: list[str]) -> None:
    """Run ``ohlora ARGS`` under ``torch.distributed.run`` with N local processes and wait.

    Ctrl-C reaches torchrun and the ranks directly (one process group), so the parent only waits
    for them to save; a SIGTERM sent to the parent alone is passed on to torchrun. torchrun
    reports any failed rank as exit 1, so a stop we saw is mapped back to 130 here.
    """
    wants_relaunch(nproc)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
           "-m", "ohlora_cli", *args]
    stopped = []
    proc = subprocess.Popen(cmd, env={**os.environ, RELAUNCHED: "1"})

    def on_signal(signum, frame):
        stopped.append(signum)
        if signum == signal.SIGTERM:
            proc.send_signal(signal.SIGTERM)

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        code = proc.wait()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if code == 130 or (code and stopped):
        raise Interrupted("the distributed run was interrupted; its last checkpoint is in output_dir",
                          hint="Continue with the same command plus --resume.")
    if code == 2:
        raise RecipeError("the distributed run stopped on bad input (see the messages above)")
    if code:
        raise RankFailed(f"the distributed run failed: a rank failed or was killed (torchrun exit code {code}); "
                         "see the ranks' messages above")
