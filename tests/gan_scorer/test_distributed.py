"""Both methods under DDP: 2 CPU processes (gloo) launched with --nproc 2; batch_size stays global."""

import json
import os
import subprocess
import sys

from bounds import HANG_S

from ohlora_cli.gan import checkpoint as ckpt
from ohlora_cli.gan import scorer as sc

from .conftest import write_recipe


def launch(recipe):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "ohlora_cli", "train-gan", recipe, "--nproc", "2", "--skip-doctor"],
                          capture_output=True, text=True, env=env, timeout=HANG_S)


def test_two_process_scorer_and_regression(blobs, scorer_run, shuffled_run, tmp_path):
    scorer_recipe = write_recipe(tmp_path / "s.yaml", output_dir=tmp_path / "scorer", csv_path=blobs / "labels.csv",
                                 standardize=False, train={"method": "scorer", "scorer": {
                                     "channels": 4, "hidden": 8, "epochs": 2, "lr": 0.002}})
    done = launch(scorer_recipe)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "batch 32 = 2 x 16" in " ".join(done.stderr.split())
    lines = [json.loads(x) for x in (tmp_path / "scorer" / "stats.jsonl").read_text().splitlines()]
    assert [x.get("epoch") for x in lines] == [0, 1, None]  # rank 0 alone writes
    sc.load_scorer(tmp_path / "scorer")

    reg_recipe = write_recipe(
        tmp_path / "r.yaml", output_dir=tmp_path / "reg", csv_path=blobs / "labels.csv",
        model={"checkpoint": str(ckpt.latest_checkpoint(shuffled_run)), "scorer": str(scorer_run)},
        train={"method": "property-regression", "kimg": 0.128, "log_kimg": 0.064,
               "label_control": {"steps": 3, "samples": 2},
               "regression": {"adversarial_weight": 0.5, "keep_weight": 1.0}})
    done = launch(reg_recipe)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = [json.loads(x) for x in (tmp_path / "reg" / "stats.jsonl").read_text().splitlines()]
    assert [x["kimg"] for x in lines] == [0.064, 0.128, 0.128]
    assert lines[-1]["done"] and "label_control/mean_r" in lines[-1]
    counters = ckpt.read_checkpoint(ckpt.latest_checkpoint(tmp_path / "reg")).json("counters")
    assert counters["world_size"] == 2 and counters["step"] == 4  # 128 images at a global batch of 32
