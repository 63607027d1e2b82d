"""Ctrl-C saves a checkpoint and exits 130; --resume continues the step count from it."""

import json
import os
import signal
import subprocess
import sys
import time

from bounds import HANG_S
from llm_helpers import write_recipe
from typer.testing import CliRunner

from ohlora_cli.cli import app


def logged_steps(run):
    path = run / "stats.jsonl"
    if not path.is_file():
        return []
    return [json.loads(line)["step"] for line in path.read_text().splitlines() if '"loss"' in line]


def test_ctrl_c_saves_and_resume_continues(tmp_path):
    recipe = write_recipe(tmp_path, extra="")
    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "ohlora_cli", "train-llm", str(recipe), "--skip-doctor",
           "--set", "train.max_steps=5000", "--set", "generate.every_epoch=false", "--set", "train.eval=false"]
    with open(tmp_path / "log.txt", "w") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "OHLORA_DEBUG": ""})
        deadline = time.time() + HANG_S
        while max(logged_steps(run), default=0) < 3:
            assert proc.poll() is None, (tmp_path / "log.txt").read_text()
            assert time.time() < deadline, "training did not start"
            time.sleep(0.2)
        proc.send_signal(signal.SIGINT)
        code = proc.wait(timeout=HANG_S)
    output = (tmp_path / "log.txt").read_text()
    assert code == 130, output
    assert "interrupted" in output and "--resume" in output
    checkpoints = sorted(int(p.name.split("-")[1]) for p in (run / "checkpoints").glob("checkpoint-*"))
    assert checkpoints, output
    stopped_at = checkpoints[-1]
    assert 3 <= stopped_at < 5000
    assert (run / "checkpoints" / f"checkpoint-{stopped_at}" / "trainer_state.json").is_file()

    # the same command without --resume would overwrite the run: refused, nothing lost
    again = CliRunner().invoke(app, ["train-llm", str(recipe), "--skip-doctor"])
    message = " ".join(again.output.split())  # rich wraps long lines
    assert again.exit_code == 2 and "already holds a run" in message and "--resume" in message
    assert (run / "checkpoints" / f"checkpoint-{stopped_at}" / "trainer_state.json").is_file()

    resume = ["train-llm", str(recipe), "--skip-doctor", "--resume", "--set", f"train.max_steps={stopped_at + 4}",
              "--set", "generate.every_epoch=false", "--set", "train.eval=false"]
    result = CliRunner().invoke(app, resume)
    assert result.exit_code == 0, result.output
    shown = " ".join(result.output.split())
    assert f"resuming from checkpoint {run / 'checkpoints' / f'checkpoint-{stopped_at}'} (step {stopped_at})" in shown
    # the changed recipe is listed and kept beside the first segment's, which stays as it was
    assert f"train.max_steps 5000 -> {stopped_at + 4}" in shown and "recipe-resume-1.yaml" in shown
    assert "max_steps: 5000" in (run / "recipe.yaml").read_text()
    assert f"max_steps: {stopped_at + 4}" in (run / "recipe-resume-1.yaml").read_text()
    steps = logged_steps(run)
    after = steps[steps.index(stopped_at) + 1:] if stopped_at in steps else [s for s in steps if s > stopped_at]
    assert after == [stopped_at + 1, stopped_at + 2, stopped_at + 3, stopped_at + 4]
    plan = json.loads((run / "run.json").read_text())
    assert plan["resumed_from"].endswith(f"checkpoint-{stopped_at}")
    assert (run / "adapter" / "adapter_model.safetensors").is_file()

    # resuming the finished run: said so, with how to train further; nothing trained or written
    finished = CliRunner().invoke(app, resume)
    shown = " ".join(finished.output.split())
    assert finished.exit_code == 0, shown
    assert "already finished" in shown and f"step {stopped_at + 4} of {stopped_at + 4}" in shown
    assert "train.max_steps" in shown and "resuming from" not in shown
    assert logged_steps(run) == steps and not (run / "recipe-resume-2.yaml").exists()


def test_resume_without_checkpoint_is_bad_input(tmp_path):
    recipe = write_recipe(tmp_path)
    result = CliRunner().invoke(app, ["train-llm", str(recipe), "--skip-doctor", "--resume"])
    assert result.exit_code == 2
    assert "no complete checkpoint" in result.output
