"""train.method: scorer, trained for real on the synthetic blobs."""

import json

import numpy as np
import torch
from PIL import Image

from ohlora_cli.gan import scorer as sc
from ohlora_cli.gan import synthetic


def stats(out_dir):
    return [json.loads(line) for line in (out_dir / "stats.jsonl").read_text().splitlines()]


def test_scorer_learns_every_label_on_held_out_images(scorer_run, tmp_path):
    lines = stats(scorer_run)
    epochs = [line for line in lines if "epoch" in line]
    assert len(epochs) >= 3
    for key in ("train/loss", "valid/loss", "valid/brightness/r", "valid/brightness/mae",
                "valid/position/r", "valid/position/mae"):
        assert key in epochs[0]
    assert epochs[-1]["valid/loss"] < epochs[0]["valid/loss"]
    final = lines[-1]
    assert final["done"] and final["valid/brightness/r"] >= 0.9 and final["valid/position/r"] >= 0.9

    # images it never saw, drawn afresh from the task (another seed)
    fresh = tmp_path / "fresh"
    synthetic.build_blobs(fresh / "fresh.csv", count=200, resolution=16, seed=7)
    rows = [line.split(",") for line in (fresh / "fresh.csv").read_text().splitlines()[1:]]
    images = torch.stack([
        torch.from_numpy(np.asarray(Image.open(fresh / row[0])).copy()).permute(2, 0, 1) for row in rows
    ]).float() / 127.5 - 1
    truth = torch.tensor([[float(row[1]), float(row[2])] for row in rows])
    scorer = sc.load_scorer(scorer_run)
    with torch.no_grad():
        measured = scorer(images)
    metrics = sc.regression_metrics(measured, truth, scorer.labels, prefix="fresh")
    assert metrics["fresh/brightness/r"] >= 0.9, metrics
    assert metrics["fresh/position/r"] >= 0.9, metrics
    assert metrics["fresh/brightness/mae"] < 0.1 and metrics["fresh/position/mae"] < 0.05, metrics


def test_scorer_checkpoint_describes_itself(scorer_run, blobs):
    meta = sc.read_scorer_metadata(scorer_run / sc.FILENAME)
    assert meta["config"]["labels"] == ["brightness", "position"]
    assert meta["config"]["crops"] == [{"top": 0.0, "bottom": 1.0, "left": 0.0, "right": 1.0}] * 2
    assert meta["metrics"]["valid/position/r"] >= 0.9
    scorer = sc.load_scorer(scorer_run)
    # raw units: the training split's statistics travel with it
    table = np.loadtxt(blobs / "labels.csv", delimiter=",", skiprows=1, usecols=(1, 2))
    # the training split's statistics against the whole table's: a sampling tolerance, far above rounding
    assert torch.allclose(scorer.label_mean, torch.tensor(table.mean(0), dtype=torch.float32), atol=0.02)
    assert torch.allclose(scorer.label_std, torch.tensor(table.std(0), dtype=torch.float32), rtol=0.15)
    assert (scorer_run / "checkpoints" / "scorer-state.safetensors").is_file()
    assert (scorer_run / "recipe.yaml").is_file()
