"""Faults of the machine are named, not called a bug: what failed, where, what it needed, the last
complete checkpoint (left intact) and the command that resumes from it; exit 1.

The disk-full family is injected for real with a file-size limit (``RLIMIT_FSIZE``, SIGXFSZ
ignored) in the training subprocess: a write past it fails with EFBIG exactly where a full disk
fails with ENOSPC (inside safetensors' Rust writer, or Python's). A limit works as root and in any
container, where a read-only folder made with chmod does not stop root and mounting a tiny tmpfs
needs privileges CI does not have. The other faults (ENOSPC, EROFS, EACCES, MemoryError, CUDA out
of memory) go through the same ``describe``, checked on real exception instances.
"""

import errno
import hashlib
import os
import resource
import signal
import subprocess
import sys

import pytest
import torch

from ohlora_cli.runtime.faults import describe, run_fault

from .conftest import tiny_recipe


def limited(limit: int):
    def start():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails (EFBIG), not the process
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return start


def ohlora(*args, limit=None, cwd=None):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "COLUMNS": "200", "OHLORA_DEBUG": ""}
    done = subprocess.run([sys.executable, "-m", "ohlora_cli", *map(str, args)], capture_output=True, text=True,
                          env=env, cwd=cwd, timeout=900, preexec_fn=limited(limit) if limit else None)
    return done.returncode, " ".join((done.stdout + done.stderr).split())


def digest(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_write_that_fails_names_the_file_the_bytes_the_last_checkpoint_and_resume_continues(tmp_path):
    recipe = tiny_recipe(tmp_path, kimg=0.008)
    run = tmp_path / "run"
    code, shown = ohlora("train-gan", recipe, "--skip-doctor")
    assert code == 0, shown
    good = run / "checkpoints" / "checkpoint-00000001.safetensors"
    size, before = good.stat().st_size, digest(good)

    # the next checkpoint cannot be written: it is as large as the first, over the limit
    longer = ["--set", "train.kimg=0.016"]
    code, shown = ohlora("train-gan", recipe, "--skip-doctor", "--resume", *longer, limit=size // 2)
    assert code == 1, shown
    assert "file too large: writing" in shown and "checkpoint-00000002.safetensors needed" in shown
    assert "bytes" in shown and "bug" not in shown and "Traceback" not in shown
    assert f"The last complete checkpoint is {good} (step 1), intact" in shown
    assert f"ohlora train-gan {recipe} --set train.kimg=0.016 --resume" in shown
    assert digest(good) == before  # intact
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == [good.name]  # no half-written file left

    code, shown = ohlora("train-gan", recipe, "--skip-doctor", "--resume", *longer)
    assert code == 0, shown
    assert f"resuming from checkpoint {good} (step 1" in shown
    assert (run / "checkpoints" / "checkpoint-00000002.safetensors").is_file()


@pytest.mark.parametrize("code, words", [
    (errno.ENOSPC, "disk full: writing"),
    (errno.EROFS, "read-only filesystem: writing"),
    (errno.EACCES, "permission denied: writing"),
])
def test_os_errors_of_the_machine_are_named_with_the_file_and_what_it_needed(tmp_path, code, words):
    error = OSError(code, os.strerror(code), str(tmp_path / "run" / "stats.jsonl"))
    error.needed_bytes = 2048
    message, hint = describe(error)
    assert message.startswith(words) and str(tmp_path / "run" / "stats.jsonl") in message
    assert errno.errorcode[code] in message and hint
    if code == errno.ENOSPC:  # what it needed, and what is free (the nearest existing folder's filesystem)
        assert "needed 2.0 KiB (2,048 bytes)" in message and "free on its filesystem" in message


def test_memory_faults_are_named_and_a_run_fault_carries_checkpoint_and_command(tmp_path):
    assert describe(MemoryError())[0].startswith("out of memory")
    try:  # a real allocation that no machine grants: torch reports it as a RuntimeError, named here
        torch.empty(10**15, dtype=torch.uint8)
    except RuntimeError as exc:
        assert describe(exc)[0].startswith("out of memory (RAM)")
    oom = torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
    assert describe(oom)[0].startswith("out of GPU memory")
    assert describe(ValueError("a bug")) is None and describe(OSError(errno.ENOENT, "x")) is None

    ckpt = tmp_path / "checkpoint-00000004.safetensors"
    fault = run_fault(MemoryError(), last_checkpoint=ckpt, step=4, command="ohlora train-gan my.yaml")
    assert fault.exit_code == 1 and f"{ckpt} (step 4)" in str(fault)
    assert fault.hint.endswith("ohlora train-gan my.yaml --resume")
    fault = run_fault(MemoryError(), last_checkpoint=None, step=None, command="ohlora train-gan my.yaml")
    assert "No checkpoint was complete yet" in str(fault) and fault.hint.endswith("run again: ohlora train-gan my.yaml")
