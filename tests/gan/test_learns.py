"""The demo learns label control; a shuffled-label control run does not.

``ohlora train-gan`` (bare: the gan-demo recipe, synthetic blobs at 16 px, 16 kimg) runs in an
empty directory, and, beside it, the same recipe on the same images with the label rows shuffled.
A ridge regressor fitted on the real pixels reads the labels back from each generator's label
sweeps (-2..+2, fixed z): the demo must reach r >= 0.8 for both labels, the control stay below
|r| 0.3. The two runs share the two cores (one thread each) and take a few minutes.
"""

from __future__ import annotations

import csv
import os
import random
import subprocess
import sys

import numpy as np
import pytest
from bounds import HANG_S
from PIL import Image

from ohlora_cli import recipes
from ohlora_cli.gan import load_generator
from ohlora_cli.gan.data import GanDataset, read_table
from ohlora_cli.gan.synthetic import build_blobs, fit_pixel_ridge, label_probe


def _start(args, cwd):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "ohlora_cli", "train-gan", *args], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _probe(cwd, data_csv):
    recipe = recipes.load("gan-demo", [f"data.csv={data_csv}"])
    dataset = GanDataset(read_table(recipe.data), recipe.model.resolution)
    G = load_generator(cwd / recipe.output_dir)
    return label_probe(G, dataset.cache.numpy(), dataset.labels.numpy())


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    demo_dir, control_dir = tmp_path_factory.mktemp("demo"), tmp_path_factory.mktemp("control")
    recipe = recipes.load("gan-demo")
    build_blobs(control_dir / "blobs" / "labels.csv", count=recipe.data.synthetic_count,
                resolution=recipe.model.resolution, seed=recipe.seed)
    with open(control_dir / "blobs" / "labels.csv", newline="") as fh:
        header, *rows = list(csv.reader(fh))
    labels = [row[1:] for row in rows]
    random.Random(0).shuffle(labels)
    with open(control_dir / "blobs" / "shuffled.csv", "w", newline="") as fh:
        csv.writer(fh).writerows([header, *[[row[0], *lab] for row, lab in zip(rows, labels, strict=True)]])

    demo = _start([], demo_dir)  # bare: the embedded demo, data built on first use, doctor preflight on
    control = _start(["gan-demo", "--skip-doctor", "--set", "data.csv=blobs/shuffled.csv",
                      "--set", "data.synthetic=null"], control_dir)
    demo_out, demo_err = demo.communicate(timeout=max(HANG_S, 1500))
    control_out, control_err = control.communicate(timeout=max(HANG_S, 1500))
    assert demo.returncode == 0, demo_err[-3000:]
    assert control.returncode == 0, control_err[-3000:]
    return {"demo": (demo_dir, demo_out), "control": (control_dir, control_out)}


def test_demo_learns_label_control(runs):
    cwd, out = runs["demo"]
    assert (cwd / "runs" / "gan-demo" / "data" / "labels.csv").is_file()  # built on first use
    assert (cwd / "runs" / "gan-demo" / "grid-latest.png").is_file() and (cwd / "runs" / "gan-demo" / "doctor.json").is_file()
    assert "brightness" in out and "position" in out  # the run's own label probe summary
    r = _probe(cwd, cwd / "runs" / "gan-demo" / "data" / "labels.csv")
    assert min(r) >= 0.8, r


def test_shuffled_label_control_learns_nothing(runs):
    cwd, _ = runs["control"]
    r = _probe(cwd, cwd / "blobs" / "shuffled.csv")
    assert max(abs(v) for v in r) < 0.3, r


def test_generate_sweeps_read_back_in_order(runs, tmp_path):
    """``ohlora generate --sweep`` on the demo's run folder: the pixel probe (a ridge regressor fitted on
    the real images) reads each swept label back rising from column to column."""
    cwd, _ = runs["demo"]
    data = cwd / "runs" / "gan-demo" / "data" / "labels.csv"
    recipe = recipes.load("gan-demo", [f"data.csv={data}"])
    assert recipe.data.standardize_labels  # so --from / --to are z-scores
    dataset = GanDataset(read_table(recipe.data), recipe.model.resolution)
    predict = fit_pixel_ridge(dataset.cache.numpy(), dataset.labels.numpy())
    for k, name in enumerate(recipe.data.label_columns):
        out = tmp_path / name
        done = subprocess.run([sys.executable, "-m", "ohlora_cli", "generate", "runs/gan-demo", "--sweep", name,
                               "--from", "-2", "--to", "2", "--steps", "5", "-n", "16", "--out-dir", str(out)],
                              cwd=cwd, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
        assert done.returncode == 0, done.stderr
        with open(out / "images.csv", newline="") as fh:
            rows = list(csv.DictReader(fh))
        images = np.stack([np.asarray(Image.open(out / r["file"]).convert("RGB")) for r in rows])
        seen = predict(images.transpose(0, 3, 1, 2).astype(np.float64) / 127.5 - 1)[:, k].reshape(16, 5)
        requested = np.array([float(r[name]) for r in rows]).reshape(16, 5)
        # the labels asked for, read back from the CSV's text: exact
        assert np.allclose(requested[0], [-2, -1, 0, 1, 2])
        means = seen.mean(axis=0)
        assert np.all(np.diff(means) > 0), (name, means)  # read back in the order requested
        assert np.corrcoef(requested.ravel(), seen.ravel())[0, 1] >= 0.8, name
