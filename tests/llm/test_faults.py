"""train-llm: a checkpoint the machine cannot write is named as such (not "a bug in ohlora"), with
the last complete checkpoint, left intact, and the command that resumes; --resume continues from it.

Injected for real with a file-size limit (RLIMIT_FSIZE, SIGXFSZ ignored) in the training process,
set between the adapter's size and the optimizer state's: the Trainer's torch.save of
optimizer.pt fails as on a full disk (torch reports no OS error; the message says what it knows).
Why a limit and not a full tmpfs or chmod: see tests/gan/test_faults.py.
"""

import hashlib
import os
import resource
import signal
import subprocess
import sys

from llm_helpers import write_recipe


def limited(limit: int):
    def start():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return start


def ohlora(*args, limit=None):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "COLUMNS": "200", "OHLORA_DEBUG": ""}
    done = subprocess.run([sys.executable, "-m", "ohlora_cli", *map(str, args)], capture_output=True, text=True,
                          env=env, timeout=900, preexec_fn=limited(limit) if limit else None)
    return done.returncode, " ".join((done.stdout + done.stderr).split())


def test_a_checkpoint_that_cannot_be_written_names_the_last_good_one_and_resume_continues(tmp_path):
    recipe = write_recipe(tmp_path)
    run = tmp_path / "run"
    quick = ["--skip-doctor", "--set", "generate.every_epoch=false", "--set", "train.eval=false",
             "--set", "generate.show=0"]
    code, shown = ohlora("train-llm", recipe, *quick, "--set", "train.max_steps=2")
    assert code == 0, shown
    good = run / "checkpoints" / "checkpoint-2"
    files = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in good.iterdir()}
    adapter, optimizer = (good / "adapter_model.safetensors").stat().st_size, (good / "optimizer.pt").stat().st_size
    assert adapter < optimizer

    code, shown = ohlora("train-llm", recipe, *quick, "--resume", "--set", "train.max_steps=4",
                         limit=(adapter + optimizer) // 2)
    assert code == 1, shown
    assert "bug" not in shown and "Traceback" not in shown
    assert "failed" in shown and str(run) in shown  # what failed, and where
    assert f"The last complete checkpoint is {good} (step 2), intact" in shown
    assert "--set train.max_steps=4 --resume" in shown
    assert {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in good.iterdir()} == files

    code, shown = ohlora("train-llm", recipe, *quick, "--resume", "--set", "train.max_steps=4")
    assert code == 0, shown
    assert f"resuming from checkpoint {good} (step 2)" in shown
    assert (run / "checkpoints" / "checkpoint-4" / "trainer_state.json").is_file()
