"""train.method: property-regression (Oh-LoRA v2), and label control in both GAN methods."""

import json

import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from ohlora_cli.cli import app
from ohlora_cli.gan import checkpoint as ckpt
from ohlora_cli.gan import load_generator
from ohlora_cli.gan.config import GanData
from ohlora_cli.gan.data import GanDataset, read_table
from ohlora_cli.gan.synthetic import label_probe

from .conftest import train_gan, write_recipe


def stats(out_dir):
    return [json.loads(line) for line in (out_dir / "stats.jsonl").read_text().splitlines()]


def control_r(record):
    return {label: record[f"label_control/{label}/r"] for label in ("brightness", "position")}


def test_adversarial_run_reports_label_control(shuffled_run):
    lines = stats(shuffled_run)
    timed = [line for line in lines if "label_control/mean_r" in line and not line.get("done")]
    assert [line["kimg"] for line in timed] == [0.512]  # every 0.5 kimg (the end has its own line)
    assert lines[-1]["done"] and "label_control/brightness/mae" in lines[-1]
    pngs = sorted((shuffled_run / "label_control").glob("label-control-*.png"))
    assert len(pngs) == 2
    # trained on shuffled labels: the labels barely steer the images
    assert lines[-1]["label_control/mean_r"] < 0.5, control_r(lines[-1])


def test_property_regression_raises_label_control(blobs, scorer_run, shuffled_run, tmp_path):
    before = stats(shuffled_run)[-1]
    start = ckpt.latest_checkpoint(shuffled_run)
    recipe = write_recipe(tmp_path / "reg.yaml", output_dir=tmp_path / "out", csv_path=blobs / "labels.csv",
                          model={"checkpoint": str(start), "scorer": str(scorer_run)},
                          train={"method": "property-regression", "kimg": 6, "g_lr": 0.01,
                                 "checkpoint_kimg": 3,
                                 "label_control": {"every_kimg": 2, "steps": 5, "samples": 8}})
    train_gan(recipe)
    out = tmp_path / "out"
    lines = stats(out)
    assert all("property_loss" in line for line in lines if not line.get("done"))
    assert lines[-2]["property_loss"] < lines[0]["property_loss"]
    timed = [line["label_control/mean_r"] for line in lines if "label_control/mean_r" in line]
    assert len(timed) == 3  # at 2 and 4 kimg, and at the end
    after = lines[-1]
    assert after["done"]
    assert min(control_r(after).values()) >= 0.8, (control_r(before), control_r(after))
    assert after["label_control/mean_r"] > before["label_control/mean_r"] + 0.3
    # a second opinion that is not the scorer: a pixel ridge regressor fitted on the real images
    table = read_table(GanData(csv=str(blobs / "labels.csv"), label_columns=["brightness", "position"],
                               standardize_labels=True))
    dataset = GanDataset(table, 16)
    seen_before = label_probe(load_generator(shuffled_run), dataset.cache.numpy(), dataset.labels.numpy())
    seen_after = label_probe(load_generator(out), dataset.cache.numpy(), dataset.labels.numpy())
    assert max(abs(r) for r in seen_before) < 0.3 and min(seen_after) >= 0.6, (seen_before, seen_after)
    # the same artifacts as the adversarial method
    assert (out / "grid-latest.png").is_file() and (out / "recipe.yaml").is_file()
    assert len(list((out / "label_control").glob("*.png"))) == 3
    G = load_generator(out)
    assert G.label_names == ["brightness", "position"]
    with torch.no_grad():
        images = G(torch.randn(2, G.z_dim), torch.zeros(2, 2))
    assert images.shape == (2, 3, 16, 16)
    first = load_file(str(start))
    last = load_file(str(ckpt.latest_checkpoint(out)))
    assert torch.equal(first["D.layer4.weight"], last["D.layer4.weight"])  # no adversarial term: D untouched


def all_terms_recipe(path, blobs, scorer_run, shuffled_run, kimg):
    return write_recipe(path, output_dir=path.parent / "out", csv_path=blobs / "labels.csv",
                        model={"checkpoint": str(ckpt.latest_checkpoint(shuffled_run)), "scorer": str(scorer_run)},
                        train={"method": "property-regression", "kimg": kimg, "log_kimg": 0.032,
                               "g_trainable": ["mapping"],
                               "checkpoint_kimg": 10, "label_control": {"steps": 3, "samples": 2},
                               "regression": {"label_sampling": "dataset", "adversarial_weight": 0.5,
                                              "keep_weight": 2.0}})


def test_all_loss_terms_and_resume_equivalence(blobs, scorer_run, shuffled_run, tmp_path):
    straight = tmp_path / "straight"
    straight.mkdir()
    train_gan(all_terms_recipe(straight / "r.yaml", blobs, scorer_run, shuffled_run, kimg=0.256))
    lines = stats(straight / "out")
    first = lines[0]
    assert first["step"] == 1 and first["keep_loss"] == 0.0  # G == G_start, same noise and mixing replayed
    assert lines[-2]["keep_loss"] > 0 and "adv_loss" in first and "d_loss" in first and "r1" in lines[3]

    split = tmp_path / "split"
    split.mkdir()
    recipe = all_terms_recipe(split / "r.yaml", blobs, scorer_run, shuffled_run, kimg=0.128)
    train_gan(recipe)
    train_gan(recipe, "train.kimg=0.256", resume=True)
    a = load_file(str(ckpt.latest_checkpoint(straight / "out")))
    b = load_file(str(ckpt.latest_checkpoint(split / "out")))
    for prefix in ("G.", "G_ema.", "D.", "opt_G.", "opt_D."):
        keys = [k for k in a if k.startswith(prefix)]
        assert keys
        for key in keys:
            assert torch.equal(a[key], b[key]), key
    start = load_file(str(ckpt.latest_checkpoint(shuffled_run)))
    assert not torch.equal(start["D.layer4.weight"], a["D.layer4.weight"])  # D trains with the adversarial term
    # freezing as in the adversarial method: G trains only what train.g_trainable names
    assert not torch.equal(start["G.mapping.dense0.weight"], a["G.mapping.dense0.weight"])
    assert torch.equal(start["G.synthesis.layer3.weight"], a["G.synthesis.layer3.weight"])


runner = CliRunner()


@pytest.mark.parametrize("case, expected", [
    ("no-scorer", "model.scorer: train.method property-regression needs a property-score CNN"),
    ("missing", "no such file"),
    ("wrong-labels", "does not score hue"),
])
def test_bad_scorer_settings_exit_2(blobs, scorer_run, tmp_path, case, expected):
    (tmp_path / "hue.csv").write_text(
        (blobs / "labels.csv").read_text().replace("position", "hue", 1).replace("images/", f"{blobs}/images/"))
    model = {"no-scorer": {}, "missing": {"scorer": str(tmp_path / "nope")},
             "wrong-labels": {"scorer": str(scorer_run)}}[case]
    recipe = write_recipe(tmp_path / "r.yaml", output_dir=tmp_path / "out",
                          csv_path=tmp_path / "hue.csv" if case == "wrong-labels" else blobs / "labels.csv",
                          model=model, train={"method": "property-regression", "kimg": 0.1})
    if case == "wrong-labels":
        text = (tmp_path / "r.yaml").read_text().replace("- position", "- hue")
        (tmp_path / "r.yaml").write_text(text)
    result = runner.invoke(app, ["train-gan", recipe, "--skip-doctor"])
    assert result.exit_code == 2, result.output
    assert expected in result.output
    assert "Traceback" not in result.output
