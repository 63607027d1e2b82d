"""train.report_to: [tensorboard] for the GAN engine: the event file in output_dir/tb, read back with
tensorboard's own reader, holds the stats.jsonl figures by optimizer step, the grids and the
label-control plots as they are on disk."""

import importlib.util
import io
import json

import numpy as np
import pytest
from PIL import Image
from snapshots import snapshot
from typer.testing import CliRunner

from ohlora_cli.cli import app

from .conftest import train_gan, write_recipe

pytest.importorskip("tensorboard")
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator  # noqa: E402


def events(folder):
    accumulator = EventAccumulator(str(folder), size_guidance={"images": 0, "scalars": 0})  # 0: keep all
    accumulator.Reload()
    return accumulator


def stats(out):
    return [json.loads(line) for line in (out / "stats.jsonl").read_text().splitlines()]


def decoded(event) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(event.encoded_image_string)).convert("RGB"))


def test_adversarial_run_logs_scalars_grids_and_label_control(blobs, scorer_run, tmp_path):
    out = tmp_path / "out"
    recipe = write_recipe(tmp_path / "r.yaml", output_dir=out, csv_path=blobs / "labels.csv",
                          model={"scorer": str(scorer_run)},
                          train={"method": "adversarial", "kimg": 0.256, "log_kimg": 0.064, "snapshot_kimg": 0.128,
                                 "checkpoint_kimg": 0.128, "report_to": ["tensorboard"],
                                 "label_control": {"every_kimg": 0.128, "steps": 3, "samples": 2}})
    train_gan(recipe)
    assert [p.name for p in sorted((out / "tb").iterdir())][0].startswith("events.out.tfevents.")
    tb = events(out / "tb")
    tags = tb.Tags()
    lines = stats(out)
    ticks = [r for r in lines if "d_loss" in r]
    for key in ("d_loss", "g_loss", "r1", "auroc", "img_per_s", "g_lr", "d_lr", "ema_beta",
                "label_control/brightness/r", "label_control/position/mae", "label_control/mean_r"):
        assert key in tags["scalars"], key
    # every stats line is a point at its optimizer step, with the value stats.jsonl holds
    d_loss = tb.Scalars("d_loss")
    assert [e.step for e in d_loss] == [r["step"] for r in ticks] == [2, 4, 6, 8]
    # TensorBoard keeps the logged value as float32: a relative difference <= 6e-8, under rtol 1e-5
    assert np.allclose([e.value for e in d_loss], [r["d_loss"] for r in ticks])
    control = tb.Scalars("label_control/mean_r")  # at 0.128 kimg (step 4) and at the end (step 8)
    assert [e.step for e in control] == [4, 8]
    assert np.isclose(control[-1].value, lines[-1]["label_control/mean_r"])

    grids = tb.Images("grid")
    assert [e.step for e in grids] == [4, 8]
    assert len(list((out / "grids").glob("*.png"))) == 2
    latest = np.asarray(Image.open(out / "grid-latest.png").convert("RGB"))
    assert np.array_equal(decoded(grids[-1]), latest)  # the captioned grid, as on disk
    plots = tb.Images("label_control")
    assert [e.step for e in plots] == [4, 8]
    on_disk = np.asarray(Image.open(sorted((out / "label_control").glob("*.png"))[-1]).convert("RGB"))
    assert np.array_equal(decoded(plots[-1]), on_disk)


def test_scorer_method_logs_its_epochs(blobs, tmp_path):
    out = tmp_path / "out"
    recipe = write_recipe(tmp_path / "s.yaml", output_dir=out, csv_path=blobs / "labels.csv", standardize=False,
                          train={"method": "scorer", "report_to": ["tensorboard"],
                                 "scorer": {"channels": 4, "hidden": 8, "epochs": 2, "patience": 2}})
    train_gan(recipe)
    tb = events(out / "tb")
    epochs = [r for r in stats(out) if "epoch" in r]
    assert [e.step for e in tb.Scalars("train/loss")] == [r["step"] for r in epochs]
    assert "valid/brightness/r" in tb.Tags()["scalars"]


def test_a_tracker_that_is_not_installed_is_bad_input(blobs, tmp_path, monkeypatch):
    recipe = write_recipe(tmp_path / "r.yaml", output_dir=tmp_path / "out", csv_path=blobs / "labels.csv",
                          train={"report_to": ["tensorboard"]})
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "tensorboard" else real(name, *a))
    result = CliRunner().invoke(app, ["train-gan", recipe, "--dry-run", "--skip-doctor"])
    assert result.exit_code == 2, result.output
    assert "train.report_to: tensorboard is not installed" in result.output
    assert "pip install 'ohlora-cli[tensorboard]'" in result.output
    assert not (tmp_path / "out").exists()


@pytest.mark.skipif(importlib.util.find_spec("wandb") is not None, reason="wandb is installed here")
def test_wandb_without_wandb_is_bad_input(blobs, tmp_path):
    recipe = write_recipe(tmp_path / "r.yaml", output_dir=tmp_path / "out", csv_path=blobs / "labels.csv",
                          train={})
    result = CliRunner().invoke(app, ["train-gan", recipe, "--set", "train.report_to=[wandb]", "--skip-doctor"])
    assert result.exit_code == 2, result.output
    assert "train.report_to: wandb is not installed" in result.output and "pip install wandb" in result.output
    assert not (tmp_path / "out").exists()


def test_dry_run_with_tensorboard_writes_nothing(blobs, tmp_path):
    recipe = write_recipe(tmp_path / "r.yaml", output_dir=tmp_path / "out", csv_path=blobs / "labels.csv",
                          train={"report_to": ["tensorboard"]})
    before = snapshot(tmp_path, blobs)
    result = CliRunner().invoke(app, ["train-gan", recipe, "--dry-run"])
    assert result.exit_code == 0, result.output
    assert "report_to:\n  - tensorboard" in result.output  # the resolved recipe it would run
    assert snapshot(tmp_path, blobs) == before
