"""Faults of the machine, not of ohlora nor of the user's input: a full disk, a file-size limit,
permission denied, a read-only folder, out of memory (CPU or GPU). ``describe`` names one (what
failed, where, what it needed); ``run_fault`` adds the run's last complete checkpoint and the
command that resumes it. Exit 1 (``RunFailed``). Nothing here imports torch: a GPU's
OutOfMemoryError is recognised by its type's name.
"""

from __future__ import annotations

import errno
import os
import re
import resource
import shutil
from pathlib import Path

from ..errors import RunFailed


class EnvironmentFault(RunFailed):
    """The machine ran out of something, or refused a write: not a bug, not bad input."""


DISK_FULL = {errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)}
DENIED = {errno.EACCES, errno.EPERM}
# "(os error 28)": how a Rust library (safetensors) renders the OS error it met
RUST_OS_ERROR = re.compile(r"\(os error (\d+)\)")


def os_error_of(exc: BaseException) -> OSError | None:
    """The OSError behind ``exc``: itself, one it was raised from, or one a Rust library
    (safetensors) rendered into its message."""
    seen = 0
    while exc is not None and seen < 8:
        if isinstance(exc, OSError) and exc.errno is not None:
            return exc
        if type(exc).__name__ == "SafetensorError":
            found = RUST_OS_ERROR.search(str(exc))
            if found:
                code = int(found.group(1))
                return OSError(code, os.strerror(code))
        exc, seen = exc.__cause__ or exc.__context__, seen + 1
    return None


# torch's CPU allocator failing raises a RuntimeError that says so (and how much it asked for)
CPU_ALLOCATOR = re.compile(r"DefaultCPUAllocator: can't allocate memory(?:: you tried to allocate (\d+) bytes)?")


def out_of_memory(exc: BaseException) -> str | None:
    """'cpu' or 'gpu' when ``exc`` is an out-of-memory error, else None."""
    if isinstance(exc, MemoryError) or (isinstance(exc, RuntimeError) and CPU_ALLOCATOR.search(str(exc))):
        return "cpu"
    if any(t.__name__ == "OutOfMemoryError" for t in type(exc).__mro__):  # torch.cuda.OutOfMemoryError
        return "gpu"
    return None


def _bytes(n: int) -> str:
    for unit, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= size:
            return f"{n / size:.1f} {unit} ({n:,} bytes)"
    return f"{n:,} bytes"


def _free(path: Path | None) -> str:
    """'; N bytes are free there' for the nearest existing folder of ``path``."""
    folder = path
    while folder is not None and not folder.exists():
        folder = folder.parent if folder.parent != folder else None
    if folder is None:
        return ""
    try:
        return f"; {_bytes(shutil.disk_usage(folder).free)} free on its filesystem"
    except OSError:
        return ""


def torch_write_failed(exc: BaseException) -> bool:
    """torch.save's writer failing (it reports no OS error: a full disk or a file-size limit shows as
    'unexpected pos' or 'file write failed' from its C++ side)."""
    return isinstance(exc, RuntimeError) and ("inline_container" in str(exc) or "PytorchStreamWriter" in str(exc))


def describe(exc: BaseException, where: Path | None = None) -> tuple[str, str] | None:
    """(message, hint) for a fault of the machine, or None when ``exc`` is not one. ``where``: the
    folder being written (for the free space, when the error does not name a file)."""
    memory = out_of_memory(exc)
    if memory == "gpu":
        first = str(exc).splitlines()[0] if str(exc) else ""
        return (f"out of GPU memory ({first})" if first else "out of GPU memory",
                "Lower train.batch_size's per-device share (train.max_device_batch) or the model size, use "
                "precision bf16 / fp16, or free the GPU of other processes (nvidia-smi).")
    if memory == "cpu":
        asked = CPU_ALLOCATOR.search(str(exc))
        need = f": an allocation of {_bytes(int(asked.group(1)))} failed" if asked and asked.group(1) else ""
        return (f"out of memory (RAM){need}",
                "Lower data.cache_mb or train.batch_size, or free memory used by other processes.")
    err = os_error_of(exc)
    if err is None and torch_write_failed(exc):
        limit = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
        cap = "" if limit == resource.RLIM_INFINITY else f"; this process's file-size limit is {_bytes(limit)} (ulimit -f)"
        return (f"writing a checkpoint in {where or 'output_dir'} failed (torch.save: {str(exc).splitlines()[0]})"
                f"{_free(where)}{cap}",
                "The disk is likely full or a file-size limit was hit: free space or raise the limit, then resume.")
    if err is None:
        return None
    name = errno.errorcode.get(err.errno, str(err.errno))
    path = Path(err.filename) if err.filename else None
    target = f"writing {path}" if path else "writing a file"
    needed = getattr(err, "needed_bytes", None) or getattr(exc, "needed_bytes", None)
    need = f" needed {_bytes(needed)}" if needed else ""
    if err.errno in DISK_FULL:
        return (f"disk full: {target}{need}{_free(path)} ({name})",
                "Free space on that filesystem (or move output_dir to a larger one), then resume.")
    if err.errno == errno.EFBIG:
        limit = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
        cap = "" if limit == resource.RLIM_INFINITY else f" of {_bytes(limit)}"
        return (f"file too large: {target}{need}, over this process's file-size limit{cap} (ulimit -f) or the "
                f"filesystem's largest file ({name})",
                "Raise the limit (ulimit -f unlimited) or move output_dir to a filesystem that holds larger files, "
                "then resume.")
    if err.errno == errno.EROFS:
        return (f"read-only filesystem: {target} ({name})",
                "Point output_dir at a writable folder (remount or copy the run folder there), then resume.")
    if err.errno in DENIED:
        return (f"permission denied: {target} ({name})",
                "Give this user write access to that folder (or point output_dir elsewhere), then resume.")
    return None


def run_fault(exc: BaseException, *, last_checkpoint: Path | None, step: int | None,
              command: str, where: Path | None = None) -> EnvironmentFault | None:
    """``describe`` plus what a run needs to continue: its last complete checkpoint and the command
    that resumes from it (``command`` plus ``--resume``). None when ``exc`` is not a fault of the
    machine."""
    described = describe(exc, where)
    if described is None:
        return None
    message, hint = described
    if last_checkpoint is not None:
        at = f" (step {step})" if step is not None else ""
        message += f". The last complete checkpoint is {last_checkpoint}{at}, intact"
        hint = f"{hint.rstrip('.')}: {command} --resume"
    else:
        message += ". No checkpoint was complete yet"
        hint = f"{hint.rstrip('.').removesuffix(', then resume')}, then run again: {command}"
    return EnvironmentFault(message, hint=hint)
