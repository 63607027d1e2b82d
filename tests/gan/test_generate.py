"""``ohlora generate`` through the CLI: on a run folder trained here, on GenForce-layout files made
here; grids, sweeps, one PNG per image with its CSV, and every refusal (exit 2, no traceback)."""

from __future__ import annotations

import csv
import math

import numpy as np
import pytest
import torch
import yaml
from PIL import Image
from typer.testing import CliRunner

from ohlora_cli.cli import app
from ohlora_cli.commands import train_gan
from ohlora_cli.gan import load_generator
from ohlora_cli.gan.generate import Request, render, z_for
from ohlora_cli.gan.grid import save_grid

from .conftest import tiny_D, tiny_G, tiny_recipe

runner = CliRunner()


def generate(*args):
    return runner.invoke(app, ["generate", *map(str, args)])


def trained_run(folder, *, standardize: bool):
    recipe = tiny_recipe(folder, kimg=0.016)
    data = yaml.safe_load(recipe.read_text())
    data["data"]["standardize_labels"] = standardize
    recipe.write_text(yaml.safe_dump(data, sort_keys=False))
    train_gan.run(str(recipe), [], dry_run=False, resume=False, skip_doctor=True, nproc=None)
    return folder / "run"


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A tiny conditional run (8 px, labels a and b, standardised)."""
    return trained_run(tmp_path_factory.mktemp("gen"), standardize=True)


def pixels(path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


def expected_cells(tmp_path, G, labels, seeds, rows, cols) -> np.ndarray:
    """What the generator draws for these labels and seeds, as an uncaptioned grid."""
    request = Request(labels=torch.tensor(labels, dtype=torch.float32), seeds=seeds, rows=rows, cols=cols)
    images = render(G, request)
    missing = rows * cols - len(seeds)
    images = torch.cat([images, torch.ones(missing, *images.shape[1:])]) if missing else images
    return pixels(save_grid(images, rows, cols, tmp_path / "expected.png"))


def test_grid_of_a_run_folder(run_dir, tmp_path):
    result = generate(run_dir, "-n", 5, "--labels", "a=1.5", "--seed", 3, "-o", tmp_path / "g.png")
    assert result.exit_code == 0, result.output
    assert f"wrote {tmp_path / 'g.png'}: a 2 x 3 grid of 5 images, 8 px" in result.output
    assert "a +1.5, b +0" in result.output and "z-scores" in result.output
    grid = pixels(tmp_path / "g.png")
    assert grid.shape == (2 * 64, 3 * 64, 3)  # 8 px cells upscaled to 64, no captions
    G = load_generator(run_dir)
    want = expected_cells(tmp_path, G, [[1.5, 0.0]] * 5, [3, 4, 5, 6, 7], 2, 3)
    assert np.array_equal(grid, want)  # the generator's own images for seeds 3..7, in order
    cells = grid[:, :2 * 64]
    assert cells.min() < cells.max() and cells.std() > 5  # real images, not a flat fill
    assert (grid[64:, 128:] == 255).all()  # the sixth cell is empty: white


def test_sweep_is_captioned_and_in_order(run_dir, tmp_path):
    result = generate(run_dir, "--sweep", "b", "--from", -1, "--to", 1, "--steps", 5, "-n", 2,
                      "--labels", "a=-0.5", "-o", tmp_path / "s.png")
    assert result.exit_code == 0, result.output
    grid = pixels(tmp_path / "s.png")
    top, left = grid.shape[0] - 2 * 64, grid.shape[1] - 5 * 64
    assert top > 0 and left > 0  # margins for the values and the label name
    G = load_generator(run_dir)
    values = [-1.0, -0.5, 0.0, 0.5, 1.0]
    labels = [[-0.5, v] for _ in range(2) for v in values]
    want = expected_cells(tmp_path, G, labels, [0] * 5 + [1] * 5, 2, 5)
    assert np.array_equal(grid[top:, left:], want)
    header = grid[:top, left:].min(axis=2)
    assert all((header[:, j * 64:(j + 1) * 64] < 128).sum() > 5 for j in range(5))  # a value over each column
    assert all((grid[top + i * 64:top + (i + 1) * 64, :left].min(axis=2) < 128).sum() > 5 for i in range(2))


def test_out_dir_writes_each_image_with_its_seed_and_labels(run_dir, tmp_path):
    result = generate(run_dir, "-n", 3, "--seed", 7, "--labels", "a=-1", "--out-dir", tmp_path / "d")
    assert result.exit_code == 0, result.output
    with open(tmp_path / "d" / "images.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    G = load_generator(run_dir)
    assert [r["file"] for r in rows] == ["seed0007.png", "seed0008.png", "seed0009.png"]  # named by seed
    assert [int(r["seed"]) for r in rows] == [7, 8, 9]
    assert all(float(r["a"]) == -1 and float(r["b"]) == 0 for r in rows)
    # the CSV's 6 significant digits: a relative error <= 5e-6, under rel_tol 1e-5
    assert math.isclose(float(rows[0]["a_raw"]), G.label_mean[0] - G.label_std[0], rel_tol=1e-5)
    assert math.isclose(float(rows[0]["b_raw"]), G.label_mean[1], rel_tol=1e-5)
    first = pixels(tmp_path / "d" / "seed0008.png")
    assert first.shape == (8, 8, 3)  # the generator's resolution, not upscaled
    # one image drawn again alone from its seed is the same image: the same seed and labels; its pixels
    # may differ by one level, since a batch of 1 and a batch of 3 take other float32 kernels (up to
    # 1e-5 apart) and a value on a rounding edge can fall either way
    again = generate(run_dir, "-n", 1, "--seed", 8, "--labels", "a=-1", "--out-dir", tmp_path / "again")
    assert again.exit_code == 0, again.output
    assert np.abs(pixels(tmp_path / "again" / "seed0008.png").astype(int) - first).max() <= 1


def test_raw_labels_centre_on_the_data(tmp_path):
    """A run on raw labels records their mean and sd: labels not given are the data's mean, a sweep
    goes from -2 to +2 sd around it, and a value more than 4 sd away is refused with the range."""
    run = trained_run(tmp_path, standardize=False)
    G = load_generator(run)
    with open(tmp_path / "data" / "labels.csv", newline="") as fh:
        table = np.array([[float(r["a"]), float(r["b"])] for r in csv.DictReader(fh)])
    mean, sd = table.mean(0), table.std(0)
    # float64 statistics of the labels as stored (float32: ~6e-8 relative), under approx's 1e-6
    assert G.label_spread["mean"] == pytest.approx(mean) and G.label_spread["sd"] == pytest.approx(sd)

    result = generate(run, "-n", 2, "--labels", f"a={mean[0] + 1:.3f}", "--out-dir", tmp_path / "d")
    assert result.exit_code == 0, result.output
    assert "raw units" in result.output and "labels not given: the data's mean" in result.output
    with open(tmp_path / "d" / "images.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert list(rows[0]) == ["file", "seed", "a", "b"]  # no _raw columns: the labels are raw already
    # the CSV's 6 significant digits of a mean near 0.5: <= 5e-7
    assert float(rows[0]["b"]) == pytest.approx(mean[1], abs=1e-5)  # b was not given

    result = generate(run, "--sweep", "a", "-n", 1, "--steps", 5, "-o", tmp_path / "s.png")
    assert result.exit_code == 0, result.output
    low, high = mean[0] - 2 * sd[0], mean[0] + 2 * sd[0]
    assert f"a swept {low:+.3g} .. {high:+.3g}" in result.output
    values = [[low + (high - low) * j / 4, mean[1]] for j in range(5)]
    assert np.array_equal(pixels(tmp_path / "s.png")[-64:, -5 * 64:],
                          expected_cells(tmp_path, G, values, [0] * 5, 1, 5))

    far = mean[0] + 4.5 * sd[0]
    result = generate(run, "--labels", f"a={far:.4f}", "-o", tmp_path / "x.png")
    assert result.exit_code == 2 and "--labels: a=" in result.output
    assert "is out of range: this run trained on raw labels" in result.output and "Traceback" not in result.output
    assert f"Give a value from {mean[0] - 4 * sd[0]:.4g} to {mean[0] + 4 * sd[0]:.4g}" in result.output


@pytest.mark.parametrize("args, message", [
    (["--labels", "eyes=1"], "--labels: unknown label 'eyes'"),
    (["--labels", "A=1"], "--labels: unknown label 'A'; did you mean 'a'?"),
    (["--sweep", "B"], "--sweep: unknown label 'B'; did you mean 'b'?"),
    (["--labels", "a=4.5"], "--labels: a=4.5 is out of range"),
    (["--labels", "a=nan"], "--labels: a=nan is not a finite number"),
    (["--labels", "a=high"], "--labels: a='high' is not a number"),
    (["--labels", "a"], "--labels: 'a' is not NAME=VALUE"),
    (["--labels", "a=1,a=2"], "--labels: label 'a' is given twice"),
    (["--sweep", "c"], "--sweep: unknown label 'c'"),
    (["--sweep", "a", "--labels", "a=1"], "the swept label is also given in --labels"),
    (["--sweep", "a", "--to", "6"], "--to: a=6 is out of range"),
])
def test_bad_labels_exit_2_naming_the_label(run_dir, tmp_path, args, message):
    result = generate(run_dir, *args, "-o", tmp_path / "x.png")
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert "Traceback" not in result.output and not (tmp_path / "x.png").exists()
    if "unknown label" in message:
        assert "This generator's labels: a, b." in result.output


def test_where_the_images_go_is_checked_first(run_dir, tmp_path):
    taken = tmp_path / "taken.png"
    taken.write_bytes(b"mine")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "notes.txt").write_text("mine")
    cases = [
        ([run_dir], "say where the images go"),
        ([run_dir, "-o", taken], "already exists"),
        ([run_dir, "-o", tmp_path / "a.jpg"], "name the file *.png"),
        ([run_dir, "-o", tmp_path / "a.png", "--out-dir", tmp_path / "d"], "not both"),
        ([run_dir, "--out-dir", tmp_path / "full"], "is not empty"),
        ([tmp_path / "missing.pth", "-o", tmp_path / "a.png"], "no such file or folder"),
        ([tmp_path / "full", "-o", tmp_path / "a.png"], "a folder with no checkpoints"),
    ]
    if not torch.cuda.is_available():
        cases.append(([run_dir, "-o", tmp_path / "a.png", "--device", "cuda"], "no CUDA GPU is visible"))
    for args, message in cases:
        result = generate(*args)
        assert result.exit_code == 2, (args, result.output)
        assert message in result.output, (args, result.output)
    assert taken.read_bytes() == b"mine" and (tmp_path / "full" / "notes.txt").read_text() == "mine"
    assert not (tmp_path / "a.png").exists() and not (tmp_path / "d").exists()


def test_seeds_take_ranges_and_name_the_files(run_dir, tmp_path):
    result = generate(run_dir, "--seeds", "2-4,9", "--labels", "a=1", "--out-dir", tmp_path / "d")
    assert result.exit_code == 0, result.output
    with open(tmp_path / "d" / "images.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [(r["file"], int(r["seed"])) for r in rows] == [
        ("seed0002.png", 2), ("seed0003.png", 3), ("seed0004.png", 4), ("seed0009.png", 9)]
    alone = generate(run_dir, "--seed", 9, "-n", 1, "--labels", "a=1", "--out-dir", tmp_path / "alone")
    assert alone.exit_code == 0, alone.output
    assert np.array_equal(pixels(tmp_path / "alone" / "seed0009.png"), pixels(tmp_path / "d" / "seed0009.png"))
    sweep = generate(run_dir, "--seeds", "5,1", "--sweep", "a", "--steps", 3, "--out-dir", tmp_path / "s")
    assert sweep.exit_code == 0, sweep.output
    names = sorted(p.name for p in (tmp_path / "s").glob("*.png"))
    assert names == [f"seed{s:04d}-c{c:02d}.png" for s in (1, 5) for c in range(3)]


@pytest.mark.parametrize("seeds, message", [
    ("3-1", "--seeds: '3-1' is not a range of non-negative seeds, low to high"),
    ("1,x", "--seeds: 'x' is not a seed or a range"),
    ("1-3,2", "--seeds: seed 2 is given twice"),
])
def test_bad_seeds_exit_2(run_dir, tmp_path, seeds, message):
    result = generate(run_dir, "--seeds", seeds, "-o", tmp_path / "x.png")
    assert result.exit_code == 2 and message in result.output, result.output
    assert not (tmp_path / "x.png").exists()


def test_force_replaces_the_named_grid_and_nothing_else(run_dir, tmp_path):
    grid = tmp_path / "samples.png"
    assert generate(run_dir, "-n", 2, "-o", grid).exit_code == 0
    first = grid.read_bytes()
    again = generate(run_dir, "-n", 2, "--seed", 5, "-o", grid)
    assert again.exit_code == 2 and "--force" in again.output and grid.read_bytes() == first
    forced = generate(run_dir, "-n", 2, "--seed", 5, "-o", grid, "--force")
    assert forced.exit_code == 0, forced.output
    assert grid.read_bytes() != first
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "notes.txt").write_text("mine")
    refused = generate(run_dir, "--out-dir", tmp_path / "full", "--force")
    assert refused.exit_code == 2 and "--out-dir takes a new or empty folder" in refused.output
    assert [p.name for p in (tmp_path / "full").iterdir()] == ["notes.txt"]


def genforce_file(path, *, label_size: int, layout: str):
    torch.manual_seed(0)
    G, G_ema, D = tiny_G(label_size=label_size), tiny_G(label_size=label_size), tiny_D(label_size=label_size)
    with torch.no_grad():
        for p in G_ema.parameters():
            p.normal_()
        G_ema.truncation.w_avg.normal_()
    if layout == "zoo":
        torch.save({"generator": G.state_dict(), "generator_smooth": G_ema.state_dict(),
                    "discriminator": D.state_dict()}, path)
    else:  # a bare state dict of one network, as Oh-LoRA saved its fine-tuned generators
        torch.save({f"module.{k}": v for k, v in G_ema.state_dict().items()}, path)
    return path


def test_genforce_model_zoo_file(tmp_path):
    path = genforce_file(tmp_path / "stylegan_zoo.pth", label_size=0, layout="zoo")
    result = generate(path, "-n", 4, "--truncation", 0.7, "-o", tmp_path / "g.png")
    assert result.exit_code == 0, result.output
    grid = pixels(tmp_path / "g.png")
    assert grid.shape == (128, 128, 3)
    G = load_generator(path)  # generator_smooth, the EMA weights
    images = render(G, Request(labels=torch.zeros(4, 0), seeds=[0, 1, 2, 3], rows=2, cols=2), truncation=0.7)
    assert np.array_equal(grid, pixels(save_grid(images, 2, 2, tmp_path / "want.png")))
    assert grid.min() < grid.max()
    untruncated = render(G, Request(labels=torch.zeros(4, 0), seeds=[0, 1, 2, 3], rows=2, cols=2))
    assert not torch.equal(images, untruncated)  # --truncation reached the generator
    result = generate(path, "--labels", "a=1", "-o", tmp_path / "x.png")
    assert result.exit_code == 2 and "this generator has no labels" in result.output


def test_genforce_bare_conditional_generator_has_numbered_labels_in_raw_units(tmp_path):
    path = genforce_file(tmp_path / "ohlora_v1.pth", label_size=2, layout="bare")
    result = generate(path, "--sweep", "label1", "--from", -10, "--to", 10, "--steps", 3, "-n", 1,
                      "--labels", "label0=7", "--out-dir", tmp_path / "d")
    assert result.exit_code == 0, result.output
    assert "raw units" in result.output
    with open(tmp_path / "d" / "images.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [(float(r["label0"]), float(r["label1"])) for r in rows] == [(7, -10), (7, 0), (7, 10)]
    G = load_generator(path)
    want = render(G, Request(labels=torch.tensor([[7.0, -10.0], [7.0, 0.0], [7.0, 10.0]]), seeds=[0, 0, 0],
                             rows=1, cols=3))
    got = np.stack([pixels(tmp_path / "d" / r["file"]) for r in rows])
    assert np.array_equal(got, ((want.clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).numpy())
    assert not np.array_equal(got[0], got[2])  # the label reaches the images


def test_z_is_drawn_per_seed():
    assert torch.equal(z_for([5, 6], 8)[1], z_for([6], 8)[0])
