"""train.report_to: [wandb], where wandb is installed (it is not part of the test extra): both engines
log offline into output_dir/wandb, and nothing reaches the terminal or the current directory."""

import importlib.util
import os
import subprocess
import sys

import pytest
from bounds import HANG_S
from gan_recipes import write_gan_recipe

from ohlora_cli.gan.synthetic import build_blobs

pytestmark = pytest.mark.skipif(importlib.util.find_spec("wandb") is None, reason="wandb is not installed")


def offline_run(tmp_path, args):
    cwd, home = tmp_path / "cwd", tmp_path / "home"
    cwd.mkdir()
    home.mkdir()
    env = {**os.environ, "WANDB_MODE": "offline", "HOME": str(home), "OMP_NUM_THREADS": "1"}
    env.pop("WANDB_DIR", None)
    done = subprocess.run([sys.executable, "-m", "ohlora_cli", *args, "--skip-doctor"], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=HANG_S)
    assert done.returncode == 0, done.stderr[-3000:]
    assert list(cwd.iterdir()) == []
    assert "wandb:" not in done.stdout + done.stderr  # wandb's own lines went to the run's train.log
    runs = list((tmp_path / "run" / "wandb").glob("offline-run-*/run-*.wandb"))
    assert len(runs) == 1
    return runs[0].read_bytes()


def test_gan_logs_its_figures_and_grids(tmp_path):
    build_blobs(tmp_path / "data" / "labels.csv", count=64, resolution=8, seed=0)
    recipe = write_gan_recipe(
        tmp_path / "recipe.yaml", output_dir=tmp_path / "run", csv_path=tmp_path / "data" / "labels.csv",
        label_columns=["brightness", "position"],
        model={"resolution": 8, "z_dim": 8, "w_dim": 8, "label_dim": 4, "mapping_layers": 2, "fmaps_base": 64,
               "fmaps_max": 8},
        train={"batch_size": 8, "kimg": 0.032, "device": "cpu", "log_kimg": 0.016, "snapshot_kimg": 0.016,
               "report_to": ["wandb"]})
    logged = offline_run(tmp_path, ["train-gan", str(recipe)])
    assert all(key in logged for key in (b"d_loss", b"g_loss", b"auroc", b"grid"))
    assert list((tmp_path / "run" / "wandb").glob("offline-run-*/files/media/images/grid_*.png"))


def test_llm_hands_wandb_to_the_trainer(tmp_path):
    out = tmp_path / "run"
    logged = offline_run(tmp_path, ["train-llm", "llm-demo", "--set", f"output_dir={out}", "--set",
                                    f"model.path={out / 'tiny-model'}", "--set", "train.epochs=2",
                                    "--set", "train.report_to=[wandb]"])
    assert b"train/loss" in logged and b"eval/loss" in logged
