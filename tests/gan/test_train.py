"""Training on the CPU with tiny models: artifacts, freezing, resume equivalence, faults."""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
import yaml
from bounds import HANG_S
from PIL import Image
from safetensors import safe_open

from ohlora_cli.commands import train_gan
from ohlora_cli.errors import CheckpointError, DataError, RecipeError, RunFailed
from ohlora_cli.gan import checkpoint as ckpt
from ohlora_cli.gan import load_generator
from ohlora_cli.gan.engine import step_optimizer
from ohlora_cli.gan.grid import fixed_z, label_sweep, save_grid
from ohlora_cli.gan.loss import StyleGANLoss

from .conftest import tiny_D, tiny_G, tiny_recipe, write_dataset


def run(recipe, *overrides, resume=False, dry_run=False):
    train_gan.run(str(recipe), list(overrides), dry_run=dry_run, resume=resume, skip_doctor=True, nproc=None)


def stats(folder):
    return [json.loads(line) for line in (folder / "run" / "stats.jsonl").read_text().splitlines()]


def raw_spread(csv_path, columns=("a", "b")):
    """Each label column's mean and (population) sd, read from the CSV."""
    import pandas as pd

    table = pd.read_csv(csv_path)[list(columns)].to_numpy(np.float64)
    return table.mean(0), table.std(0)


def tensors(path):
    with safe_open(str(path), framework="pt") as fh:
        return {k: fh.get_tensor(k) for k in fh.keys()}


def test_training_run_writes_every_artifact(tmp_path, capsys):
    recipe = tiny_recipe(tmp_path)
    run(recipe)
    out = tmp_path / "run"
    shown = capsys.readouterr().out  # paths come out whole, whatever their length
    assert f"checkpoint {out / 'checkpoints' / 'checkpoint-00000008.safetensors'}; grid {out / 'grid-latest.png'}" in shown
    assert f"load it: ohlora_cli.gan.load_generator('{out}')" in shown
    records = stats(tmp_path)
    ticks = [r for r in records if "d_loss" in r]
    assert len(ticks) == 4 and records[-1]["done"] is True
    for key in ("kimg", "d_loss", "g_loss", "r1", "auroc", "img_per_s", "sec_per_kimg", "g_lr"):
        assert key in ticks[-1]
    assert all(0 <= r["auroc"] <= 1 for r in ticks)
    assert (out / "recipe.yaml").read_text().startswith("kind: gan")
    grids = sorted((out / "grids").glob("*.png"))
    assert len(grids) == 2
    saved = ckpt.list_checkpoints(out)
    assert [p.name for p in saved] == ["checkpoint-00000004.safetensors", "checkpoint-00000008.safetensors"]
    G = load_generator(out)
    # 2 labels x 2 rows, 7 columns, cells upscaled to 64, below a top margin (the column values) and
    # right of a left margin (the label each row sweeps): the cells are G_ema's sweep, pixel for pixel
    grid = np.asarray(Image.open(out / "grid-latest.png").convert("RGB"))
    top, left = grid.shape[0] - 4 * 64, grid.shape[1] - 7 * 64
    assert top > 0 and left > 0
    center, scale = raw_spread(tmp_path / "data" / "labels.csv")  # raw labels: swept around the data
    images, rows, cols = label_sweep(G, fixed_z(G, 2, seed=3), steps=7, center=center, scale=scale)
    cells = np.asarray(Image.open(save_grid(images, rows, cols, tmp_path / "cells.png")))
    assert np.array_equal(grid[top:, left:], cells)
    assert (grid[:top, left:] < 128).any() and (grid[top:, :left] < 128).any()  # captions are drawn
    assert not G.training and G.label_dim == 2 and G.label_names == ["a", "b"]
    images = G(torch.randn(3, 8), torch.zeros(3, 2))
    assert images.shape == (3, 3, 8, 8) and images.abs().max() <= 1
    names = tensors(saved[-1])
    assert {"G.mapping.label_weight", "G_ema.truncation.w_avg", "D.label_projection", "rng.torch"} <= set(names)
    assert any(k.startswith("opt_G.") for k in names) and any(k.startswith("opt_D.") for k in names)


def test_default_freezing_is_oh_lora_v1(tmp_path):
    """Default prefixes: G trains its mapping network only, D its last three layers only."""
    recipe = tiny_recipe(tmp_path, kimg=0.016)
    data = yaml.safe_load(recipe.read_text())
    del data["train"]["g_trainable"], data["train"]["d_trainable"]  # the defaults
    data["train"]["checkpoint_kimg"] = 0.008
    recipe.write_text(yaml.safe_dump(data, sort_keys=False))
    run(recipe)
    first, last = (tensors(p) for p in ckpt.list_checkpoints(tmp_path / "run"))
    changed = {k for k in first if k.startswith(("G.", "D.")) and not torch.equal(first[k], last[k])}
    last3 = tuple(f"D.{name}." for name in tiny_D(8).last_layers(3))  # layer2-4 at 8 px (Oh-LoRA: 12-14 at 256)
    assert last3 == ("D.layer2.", "D.layer3.", "D.layer4.")
    assert changed and all(k.startswith(("G.mapping.", "G.truncation.w_avg", "D.label_projection", *last3))
                           for k in changed), changed
    assert any(k.startswith("G.mapping.") for k in changed) and any(k.startswith("D.layer2.") for k in changed)


def test_resume_reproduces_the_uninterrupted_run(tmp_path):
    full = tiny_recipe(tmp_path / "a", extra="style_mixing_prob: 0.9\nr1_interval: 2\nextra_g_steps: 2\nlr_schedule: cosine\n")
    run(full)
    done = ckpt.list_checkpoints(tmp_path / "a" / "run")
    half = tiny_recipe(tmp_path / "b", csv_path=tmp_path / "a" / "data" / "labels.csv",
                       extra="style_mixing_prob: 0.9\nr1_interval: 2\nextra_g_steps: 2\nlr_schedule: cosine\n")
    (tmp_path / "b" / "run" / "checkpoints").mkdir(parents=True)
    shutil.copy(done[0], tmp_path / "b" / "run" / "checkpoints")  # as if stopped after the first checkpoint
    shutil.copy(tmp_path / "a" / "run" / ".ohlora.json", tmp_path / "b" / "run")  # an ohlora run folder
    run(half, resume=True)
    a, b = tensors(done[-1]), tensors(ckpt.latest_checkpoint(tmp_path / "b" / "run"))
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_existing_run_needs_resume_and_resume_needs_a_checkpoint(tmp_path):
    recipe = tiny_recipe(tmp_path, kimg=0.008)
    with pytest.raises(CheckpointError, match="holds no complete checkpoint"):
        run(recipe, resume=True)
    run(recipe)
    with pytest.raises(RecipeError, match="already holds a run"):
        run(recipe)
    run(recipe, "train.kimg=0.016", resume=True)  # continues to the new length
    assert stats(tmp_path)[-1]["kimg"] == 0.016


def test_corrupt_checkpoint_on_resume(tmp_path):
    recipe = tiny_recipe(tmp_path, kimg=0.008)
    run(recipe)
    latest = ckpt.latest_checkpoint(tmp_path / "run")
    latest.write_bytes(latest.read_bytes()[:1000])
    with pytest.raises(CheckpointError, match="checkpoint"):
        run(recipe, resume=True)


def test_dry_run_checks_data_and_writes_nothing(tmp_path, capsys):
    recipe = tiny_recipe(tmp_path)
    run(recipe, dry_run=True)
    shown = capsys.readouterr()
    assert "8 per device x 1 processes x 1 accumulation = 8" in shown.err  # the plan on stderr
    assert "output_dir:" in shown.out  # the resolved recipe alone on stdout
    assert not (tmp_path / "run").exists()
    (tmp_path / "data" / "img" / "5.png").unlink()
    with pytest.raises(DataError, match="1 of 24 image files are missing"):
        run(recipe, dry_run=True)



def test_gradient_accumulation_matches_the_full_batch():
    """Two half batches at gain 1/2 leave the gradients of one full batch, in both phases
    (D with R1, and G). Minibatch stddev is off: it mixes samples within a pass by design; the
    noise strengths are left out: their gradients follow the random noise drawn in each pass.
    In float64: the equivalence is exact in real arithmetic, and float32 sums taken in another order
    by another CPU's kernels differed by more than 1e-4 (relative); float64 leaves ~1e-13."""
    torch.manual_seed(0)
    default = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)  # the networks' parameters and every tensor the loss draws
    try:
        G, D = tiny_G(), tiny_D(mbstd_group=0)
        real, c, z = torch.rand(8, 3, 8, 8) * 2 - 1, torch.randn(8, 2), torch.randn(8, 8)
        _compare_accumulated_gradients(G, D, real, c, z)
    finally:
        torch.set_default_dtype(default)


def _compare_accumulated_gradients(G, D, real, c, z):
    assert all(p.dtype == torch.float64 for p in [*G.parameters(), *D.parameters()])

    def grads(phase, parts):
        net, other = (D, G) if phase.startswith("D") else (G, D)
        net.zero_grad(set_to_none=True)
        net.requires_grad_(True)
        other.requires_grad_(False)
        loss = StyleGANLoss(G, D, r1_gamma=1.0, r1_interval=1, style_mixing_prob=0.0, w_avg_beta=0.995)
        n = len(real) // parts
        for i in range(parts):
            part = slice(i * n, (i + 1) * n)
            loss.accumulate_gradients(phase, real[part], c[part], z[part], c[part], 1 / parts, lambda x: x.backward())
        return {name: p.grad.clone() for name, p in net.named_parameters()
                if p.grad is not None and "apply_noise" not in name}

    for phase in ("Dboth", "Gmain"):
        full, halves = grads(phase, 1), grads(phase, 2)
        assert full and full.keys() == halves.keys()
        for name in full:
            torch.testing.assert_close(halves[name], full[name], rtol=1e-9, atol=1e-12, msg=f"{phase} {name}")


def test_training_with_accumulation(tmp_path, capsys):
    recipe = tiny_recipe(tmp_path, kimg=0.032)
    run(recipe, "train.max_device_batch=3", dry_run=True)
    assert "2 per device x 1 processes x 4 accumulation = 8" in capsys.readouterr().err  # 8 = 4 passes of 2
    run(recipe, "train.max_device_batch=4", dry_run=True)
    assert "4 per device x 1 processes x 2 accumulation = 8" in capsys.readouterr().err
    run(recipe, "train.max_device_batch=4")
    ticks = [r for r in stats(tmp_path) if "d_loss" in r]
    assert ticks and ticks[-1]["kimg"] == pytest.approx(0.032)
    assert all(math.isfinite(r["d_loss"]) and math.isfinite(r["g_loss"]) for r in ticks)


def test_dry_run_reads_the_scorer_header(tmp_path):
    recipe = tiny_recipe(tmp_path)
    with pytest.raises(CheckpointError, match="model.scorer"):
        run(recipe, f"model.scorer={tmp_path / 'missing'}", dry_run=True)
    with pytest.raises(RecipeError, match="model.scorer: train.method property-regression needs"):
        run(recipe, "train.method=property-regression", dry_run=True)

def test_start_from_a_label_free_genforce_checkpoint(tmp_path, capsys):
    G, D = tiny_G(8, 0), tiny_D(8, 0)
    path = tmp_path / "stylegan.pth"
    torch.save({"generator": G.state_dict(), "generator_smooth": G.state_dict(), "discriminator": D.state_dict()}, path)
    recipe = tiny_recipe(tmp_path, kimg=0.008)
    recipe.write_text(recipe.read_text().replace("  label_projection: true\n", f"  label_projection: true\n  checkpoint: {path}\n"))
    run(recipe)
    assert "re-initialised" in capsys.readouterr().err
    start = tensors(ckpt.latest_checkpoint(tmp_path / "run"))
    assert torch.equal(start["D.input1.weight"], D.state_dict()["input1.weight"])  # loaded; frozen: unused at lod 0
    assert torch.equal(start["G.synthesis.output0.weight"], G.state_dict()["synthesis.output0.weight"])



def test_start_from_a_run_folder_uses_its_latest_checkpoint(tmp_path):
    first = tiny_recipe(tmp_path / "a", kimg=0.008)
    run(first)
    earlier = tensors(ckpt.latest_checkpoint(tmp_path / "a" / "run"))
    second = tiny_recipe(tmp_path / "b", csv_path=tmp_path / "a" / "data" / "labels.csv", kimg=0.008)
    with pytest.raises(CheckpointError, match="a folder with no checkpoints"):
        run(second, f"model.checkpoint={tmp_path / 'b'}", dry_run=True)
    run(second, f"model.checkpoint={tmp_path / 'a' / 'run'}", "train.g_lr=1e-9", "train.d_lr=1e-9")
    start = tensors(ckpt.latest_checkpoint(tmp_path / "b" / "run"))
    for key in ("G.mapping.dense1.weight", "D.layer4.weight"):  # the first run moved them ~1e-3 from the
        assert torch.allclose(start[key], earlier[key], atol=1e-6), key  # same-seed init; this one ~1e-9

def test_nonfinite_gradients_are_skipped_then_stop_the_run(tmp_path, monkeypatch):
    p = torch.nn.Parameter(torch.ones(3))
    opt = torch.optim.SGD([p], lr=1.0)
    p.grad = torch.tensor([1.0, float("nan"), 0.0])
    assert step_optimizer(opt, [p], distributed=False) is False
    assert torch.equal(p.detach(), torch.ones(3)) and p.grad is None

    from ohlora_cli.gan.loss import StyleGANLoss

    original = StyleGANLoss.run_D
    monkeypatch.setattr(StyleGANLoss, "run_D", lambda self, img, c, amp=True: original(self, img, c, amp=amp) * float("inf"))
    with pytest.raises(RunFailed, match="NaN/Inf gradients"):
        run(tiny_recipe(tmp_path, extra="max_nonfinite_steps: 3\n"))


def _cli(*args, cwd, env=None):
    return subprocess.Popen([sys.executable, "-m", "ohlora_cli", *args], cwd=cwd, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, "OMP_NUM_THREADS": "1", **(env or {})})


def test_sigint_saves_a_checkpoint_and_exits_130(tmp_path):
    recipe = tiny_recipe(tmp_path, kimg=50)
    proc = _cli("train-gan", str(recipe), "--skip-doctor", cwd=tmp_path)
    stats_file = tmp_path / "run" / "stats.jsonl"
    deadline = time.time() + HANG_S
    while not stats_file.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=HANG_S)
    assert proc.returncode == 130, err
    assert "interrupted" in err and "--resume" in err and "Traceback" not in err
    saved = ckpt.latest_checkpoint(tmp_path / "run")
    counters = json.loads(ckpt.read_metadata(saved)["counters"])
    assert counters["interrupted"] and counters["cur_nimg"] > 0
    finish = _cli("train-gan", str(recipe), "--skip-doctor", "--resume", "--set", f"train.kimg={counters['kimg'] + 0.008}",
                  cwd=tmp_path)
    _, err = finish.communicate(timeout=HANG_S)
    assert finish.returncode == 0, err


def test_bad_data_exits_2_with_one_message(tmp_path):
    recipe = tiny_recipe(tmp_path)
    csv_path = tmp_path / "data" / "labels.csv"
    lines = csv_path.read_text().splitlines()
    lines[2] = lines[2].rsplit(",", 1)[0] + ",high"
    csv_path.write_text("\n".join(lines) + "\n")
    proc = _cli("train-gan", str(recipe), "--skip-doctor", cwd=tmp_path)
    _, err = proc.communicate(timeout=HANG_S)
    assert proc.returncode == 2
    assert f"{csv_path}:3: column 'b': 'high' is not a number" in err.replace("\n", "")
    assert "Traceback" not in err


def test_two_process_gloo_run(tmp_path):
    """--nproc 2 relaunches under torchrun (gloo on CPU); batch 8 stays global (4 per rank)."""
    recipe = tiny_recipe(tmp_path, kimg=0.032)
    proc = _cli("train-gan", str(recipe), "--nproc", "2", "--skip-doctor", cwd=tmp_path)
    out, err = proc.communicate(timeout=HANG_S)
    assert proc.returncode == 0, err[-3000:]
    records = stats(tmp_path)
    assert records[-1]["done"] and records[-1]["step"] == 4  # 32 images / global batch 8
    assert len([r for r in records if r.get("done")]) == 1  # rank 0 logs alone
    saved = ckpt.latest_checkpoint(tmp_path / "run")
    assert json.loads(ckpt.read_metadata(saved)["counters"])["world_size"] == 2
    assert load_generator(saved)(torch.randn(2, 8), torch.zeros(2, 2)).shape == (2, 3, 8, 8)


def test_ohlora_v1_recipe_selects_oh_lora_layers(tmp_path, capsys):
    from ohlora_cli import recipes
    from ohlora_cli.gan.engine import set_trainable
    from ohlora_cli.gan.networks import build_networks

    recipe = recipes.load("gan-ohlora-v1")
    with torch.device("meta"):
        G, D = build_networks(recipe, len(recipe.data.label_columns))
    g = set_trainable(G, recipe.train.g_trainable, key="train.g_trainable")
    d = set_trainable(D, recipe.train.d_trainable, key="train.d_trainable")
    assert {n for n, p in G.named_parameters() if p.requires_grad} == {n for n, _ in G.named_parameters() if n.startswith("mapping.")}
    assert {n.split(".")[0] for n, p in D.named_parameters() if p.requires_grad} == {"layer12", "layer13", "layer14"}
    assert len(g) == 17 and len(d) == 6  # 8 dense layers x (weight, bias) + label_weight; 3 layers x 2
    assert D.last_layers(3) == recipe.train.d_trainable

    csv_path = write_dataset(tmp_path, n=4, resolution=32, labels=recipe.data.label_columns)
    run("gan-ohlora-v1", f"data.csv={csv_path}", "model.checkpoint=null", f"output_dir={tmp_path / 'run'}", dry_run=True)
    shown = capsys.readouterr()
    assert "16 per device x 1 processes x 1 accumulation = 16" in shown.err and "183 kimg" in shown.err  # the plan
    assert "4 of 4 images" in shown.err  # 32 px images will be resized to 256


def test_label_control_hook_runs_with_a_scorer(tmp_path, capsys):
    """With model.scorer set, the adversarial loop evaluates label control during and after training,
    and its progress bar shows the last figure."""
    from ohlora_cli import recipes
    from ohlora_cli.gan import scorer

    recipe_path = tiny_recipe(tmp_path, kimg=0.032)
    path = scorer.save_scorer(scorer.build_scorer(recipes.load(str(recipe_path))), tmp_path / "scorer.safetensors")
    text = recipe_path.read_text().replace("  label_projection: true\n", f"  label_projection: true\n  scorer: {path}\n")
    recipe_path.write_text(text + "  label_control:\n    every_kimg: 0.016\n    steps: 3\n    samples: 2\n")
    run(recipe_path)
    records = stats(tmp_path)
    assert any("label_control/mean_r" in r for r in records if not r.get("done"))
    assert "label_control/a/r" in records[-1] and records[-1]["done"]
    assert list((tmp_path / "run" / "label_control").glob("*.png"))
    assert "ctrl r " in capsys.readouterr().err


def test_cpu_threads_sets_the_runs_torch_threads(tmp_path):
    """train.cpu_threads: a CPU run trains on that many torch threads; without it torch's count is
    left as it was (every test starts at 1: tests/conftest.py)."""
    run(tiny_recipe(tmp_path / "default", kimg=0.016))
    assert torch.get_num_threads() == 1
    run(tiny_recipe(tmp_path / "two", kimg=0.016, extra="cpu_threads: 2"))
    assert torch.get_num_threads() == 2
    assert stats(tmp_path / "two")[-1]["kimg"] == pytest.approx(0.016)


def test_grid_of_raw_labels_sweeps_around_the_data(tmp_path):
    """Labels far from 0 (mean 10, sd 3) and not standardised: the grid sweeps each label from -2 to
    +2 sd around its mean, where G was trained, not -2..+2 in raw units, where it never was."""
    csv_path = write_dataset(tmp_path / "data")
    text = csv_path.read_text().splitlines()
    rows = [line.split(",") for line in text[1:]]
    csv_path.write_text("\n".join([text[0]] + [f"{p},{10 + 3 * float(a):.3f},{10 - 3 * float(b):.3f}"
                                                for p, a, b in rows]) + "\n")
    run(tiny_recipe(tmp_path, csv_path=csv_path, kimg=0.032))
    out = tmp_path / "run"
    G = load_generator(out)
    assert G.label_mean is None  # raw labels: the checkpoint holds no statistics
    center, scale = raw_spread(csv_path)
    assert 8 < center[0] < 12 and 8 < center[1] < 12
    grid = np.asarray(Image.open(out / "grid-latest.png").convert("RGB"))
    top, left = grid.shape[0] - 4 * 64, grid.shape[1] - 7 * 64
    z = fixed_z(G, 2, seed=3)
    around = save_grid(*label_sweep(G, z, steps=7, center=center, scale=scale), tmp_path / "around.png")
    raw = save_grid(*label_sweep(G, z, steps=7), tmp_path / "raw.png")
    assert np.array_equal(grid[top:, left:], np.asarray(Image.open(around)))
    assert not np.array_equal(grid[top:, left:], np.asarray(Image.open(raw)))


def test_pixel_readback_of_a_raw_label_run_sweeps_around_the_data(tmp_path, monkeypatch):
    """The demo's end-of-run read-back on raw labels (brightness has mean ~0.25, sd ~0.08) asks G
    for -2..+2 sd around the data, as the grid does: -2..+2 in raw units lies ~25 sd outside it."""
    from ohlora_cli import recipes
    from ohlora_cli.gan.data import GanDataset, read_table
    from ohlora_cli.gan.synthetic import label_probe

    monkeypatch.chdir(tmp_path)
    overrides = ["data.standardize_labels=false", "train.kimg=0.5", "train.log_kimg=0.5", "output_dir=runs/raw"]
    run("gan-demo", *overrides)
    summary = [json.loads(x) for x in (tmp_path / "runs/raw/stats.jsonl").read_text().splitlines()][-1]
    table = read_table(recipes.load("gan-demo", overrides).data)
    center, scale = table.raw_spread()
    assert 0.1 < center[0] < 0.4 and scale[0] < 0.2
    dataset = GanDataset(table, 16, cache_mb=64)
    images, labels = dataset.cache.numpy(), dataset.labels.numpy()
    G = load_generator(tmp_path / "runs/raw")
    around = label_probe(G, images, labels, center=center, scale=scale)
    # the same probe on the same cache in this process; stats.jsonl's 4 decimals are the difference (<= 5e-5)
    assert [summary["pixel_probe/brightness/r"], summary["pixel_probe/position/r"]] == \
        pytest.approx(around, abs=1e-4)
    assert label_probe(G, images, labels) != pytest.approx(around, abs=1e-3)
