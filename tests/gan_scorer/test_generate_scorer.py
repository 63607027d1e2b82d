"""``ohlora generate --scorer``: each image's measured scores beside the requested labels."""

import csv

import numpy as np
import torch
from typer.testing import CliRunner

from ohlora_cli.cli import app
from ohlora_cli.gan import load_generator
from ohlora_cli.gan.generate import Request, render
from ohlora_cli.gan.scorer import in_label_space, load_scorer

runner = CliRunner()


def test_out_dir_has_measured_scores_in_label_units(shuffled_run, scorer_run, tmp_path):
    result = runner.invoke(app, ["generate", str(shuffled_run), "-n", 4, "--labels", "brightness=1,position=-0.5",
                                 "--out-dir", str(tmp_path / "d"), "--scorer", str(scorer_run)])
    assert result.exit_code == 0, result.output
    assert "measured by the scorer" in result.output
    with open(tmp_path / "d" / "images.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert list(rows[0]) == ["file", "seed", "brightness", "position", "brightness_raw", "position_raw",
                             "brightness_measured", "position_measured"]
    G = load_generator(shuffled_run)
    score = in_label_space(load_scorer(scorer_run), G.label_names, label_mean=G.label_mean, label_std=G.label_std)
    images = render(G, Request(labels=torch.tensor([[1.0, -0.5]] * 4), seeds=[0, 1, 2, 3], rows=2, cols=2))
    want = score(images).numpy()
    got = np.array([[float(r["brightness_measured"]), float(r["position_measured"])] for r in rows])
    # the same render and scorer on the same batch; only the CSV's 6 significant digits differ (<= 5e-6 here)
    assert np.allclose(got, want, atol=1e-5)


def test_sweep_grid_prints_requested_against_measured(shuffled_run, scorer_run, tmp_path):
    result = runner.invoke(app, ["generate", str(shuffled_run), "--sweep", "brightness", "--steps", 3, "-n", 2,
                                 "-o", str(tmp_path / "s.png"), "--scorer", str(scorer_run)])
    assert result.exit_code == 0, result.output
    assert "brightness requested" in result.output and "+0" in result.output


def test_a_missing_scorer_is_refused_before_anything_is_written(shuffled_run, tmp_path):
    result = runner.invoke(app, ["generate", str(shuffled_run), "-o", str(tmp_path / "s.png"),
                                 "--scorer", str(tmp_path / "nothing")])
    assert result.exit_code == 2, result.output
    assert "--scorer:" in result.output and "Point --scorer at" in result.output
    assert not (tmp_path / "s.png").exists()
