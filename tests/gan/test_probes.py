"""Doctor probes of GAN recipes, with injected faults."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ohlora_cli import recipes
from ohlora_cli.doctor.probes import gan as probes
from ohlora_cli.doctor.registry import Context, Status
from ohlora_cli.errors import DataError
from ohlora_cli.gan import data as gan_data
from ohlora_cli.gan import grid

from .conftest import tiny_D, tiny_G, tiny_recipe


def load(tmp_path, **kw):
    return recipes.load(str(tiny_recipe(tmp_path, **kw)))


def ctx(recipe):
    return Context(scope="recipe", recipe=recipe)


def statuses(findings):
    return [(f.check, f.status) for f in findings]


def test_clean_recipe_passes_every_probe(tmp_path):
    recipe = load(tmp_path)
    for probe in (probes.data, probes.dtype_mismatch, probes.grad_inference):
        findings = probe(recipe, ctx(recipe))
        assert findings and all(f.status == Status.PASS for f in findings), findings


def test_data_probe_names_the_bad_row(tmp_path):
    recipe = load(tmp_path)
    csv_path = tmp_path / "data" / "labels.csv"
    lines = csv_path.read_text().splitlines()
    lines[6] = lines[6].rsplit(",", 1)[0] + ",inf"
    csv_path.write_text("\n".join(lines) + "\n")
    try:
        probes.data(recipe, ctx(recipe))
    except DataError as exc:  # the registry turns it into a FAIL row (bad input)
        assert f"{csv_path}:7: column 'b': 'inf' is not finite" in str(exc)
    else:
        raise AssertionError("no DataError")


def test_data_probe_warns_about_resizing_and_raw_label_scales(tmp_path):
    from PIL import Image

    recipe = recipes.load(str(tiny_recipe(tmp_path)), ["data.standardize_labels=false"])
    Image.new("RGB", (30, 30)).save(tmp_path / "data" / "img" / "0.png")
    csv_path = tmp_path / "data" / "labels.csv"
    lines = csv_path.read_text().splitlines()
    lines[1] = lines[1].rsplit(",", 1)[0] + ",250"
    csv_path.write_text("\n".join(lines) + "\n")
    findings = probes.data(recipe, ctx(recipe))
    warned = {f.where: f for f in findings if f.status == Status.WARN}
    assert "30x30 (1)" in warned["model.resolution"].message
    assert "data.standardize_labels" in warned


@pytest.mark.parametrize("fault", ["python floats", "numpy float64"])
def test_dtype_probe_catches_a_float64_dataset(tmp_path, monkeypatch, fault):
    recipe = load(tmp_path)
    original = gan_data.GanDataset.__getitem__

    def float64_labels(self, i):  # the seed's Dataset: Python floats (or pandas .values) -> float64 batches
        image, labels = original(self, i)
        if fault == "python floats":
            return image, [float(v) for v in labels]
        return image, torch.from_numpy(labels.numpy().astype(np.float64))

    monkeypatch.setattr(gan_data.GanDataset, "__getitem__", float64_labels)
    (finding,) = probes.dtype_mismatch(recipe, ctx(recipe))
    assert finding.status == Status.FAIL and finding.check == "dtype-mismatch"
    assert finding.where == "G.mapping"
    assert "float64" in finding.message and "float32" in finding.message and "collate" in finding.message
    assert "labels.to(torch.float32)" in finding.hint


def test_dtype_probe_reports_a_float64_checkpoint_it_converts(tmp_path):
    G, D = tiny_G(8, 0).double(), tiny_D(8, 0).double()
    path = tmp_path / "f64.pth"
    torch.save({"generator": G.state_dict(), "discriminator": D.state_dict()}, path)
    recipe = load(tmp_path)
    recipe.model.checkpoint = str(path)
    (finding,) = probes.dtype_mismatch(recipe, ctx(recipe))
    assert finding.status == Status.PASS
    assert "stores float64" in finding.message and "casts it to the networks' float32" in finding.message
    assert any(f.where == "model.checkpoint" and f.status == Status.PASS for f in probes.data(recipe, ctx(recipe)))


def test_grad_inference_probe_catches_sampling_with_autograd(tmp_path, monkeypatch):
    recipe = load(tmp_path)

    def leaky_sweep(G, z, *, steps, chunk=64):  # train mode, no torch.no_grad(): the seed's helper
        labels = grid.sweep_labels(G.label_dim, len(z), steps)
        zs = z.repeat_interleave(steps, dim=0).repeat(G.label_dim, 1)
        return G(zs, labels), G.label_dim * len(z), steps

    monkeypatch.setattr(grid, "label_sweep", leaky_sweep)
    (finding,) = probes.grad_inference(recipe, ctx(recipe))
    assert finding.status == Status.FAIL and "saved" in finding.message and "no_grad" in finding.hint


def test_synthetic_dataset_not_built_yet(tmp_path):
    recipe = recipes.load("gan-demo", [f"data.csv={tmp_path}/blobs/labels.csv"])
    assert statuses(probes.data(recipe, ctx(recipe))) == [("recipe-data", Status.PASS)]
    assert statuses(probes.dtype_mismatch(recipe, ctx(recipe))) == [("dtype-mismatch", Status.SKIP)]


def scorer_recipes(tmp_path):
    """The two scorer paths: training a scorer, and an adversarial run measured by a saved one."""
    from ohlora_cli.gan import scorer as sc

    training = load(tmp_path / "s", extra="method: scorer\nscorer: {channels: 2, hidden: 4}\n")
    measured = load(tmp_path / "m")
    saved = sc.PropertyScorer(["a", "b"], [sc.WHOLE, sc.WHOLE], 8, channels=2, hidden=4)
    measured.model.scorer = str(sc.save_scorer(saved, tmp_path / "scorer.safetensors"))
    return training, measured


def test_clean_scorer_paths_pass_and_are_probed(tmp_path):
    for recipe in scorer_recipes(tmp_path):
        dtype = probes.dtype_mismatch(recipe, ctx(recipe))
        grad = probes.grad_inference(recipe, ctx(recipe))
        assert all(f.status == Status.PASS for f in dtype + grad), dtype + grad
        assert any("scorer path" in f.message for f in dtype)
        assert any("label control" in f.message for f in grad)


def test_dtype_probe_catches_a_float64_scorer_step(tmp_path, monkeypatch):
    from ohlora_cli.gan import scorer as sc

    training, _ = scorer_recipes(tmp_path)

    def float64_loss(scorer, images, labels):  # images.double(): "more precise" targets, wrong dtype
        return sc.F.mse_loss(scorer(images.double(), standardized=True), labels.double())

    monkeypatch.setattr(sc, "scorer_loss", float64_loss)
    findings = probes.dtype_mismatch(training, ctx(training))
    failed = [f for f in findings if f.status == Status.FAIL]
    assert [f.where for f in failed] == ["train.method"] and "double" in failed[0].message


def test_grad_inference_probe_catches_label_control_with_autograd(tmp_path, monkeypatch):
    from ohlora_cli.gan import label_control

    _, measured = scorer_recipes(tmp_path)

    def leaky_evaluate(G, scorer, *, label_names, steps, samples):  # no torch.no_grad() around the scoring
        z = torch.randn(samples * steps, G.z_dim)
        return scorer(G(z, torch.zeros(len(z), G.label_dim)))

    monkeypatch.setattr(label_control, "evaluate", leaky_evaluate)
    failed = [f for f in probes.grad_inference(measured, ctx(measured)) if f.status == Status.FAIL]
    assert len(failed) == 1 and "label control saved" in failed[0].message and "no_grad" in failed[0].hint


def test_own_data_labels_are_standardised_unless_the_recipe_says_so(tmp_path):
    """The default agrees with the doctor: a recipe for one's own data that says nothing about
    standardize_labels trains on z-scores, so the doctor has no raw-label scale to warn about."""
    import json

    import yaml
    from typer.testing import CliRunner

    from ohlora_cli.cli import app

    path = tiny_recipe(tmp_path)
    data = yaml.safe_load(path.read_text())
    del data["data"]["standardize_labels"]
    csv_path = tmp_path / "data" / "labels.csv"
    lines = csv_path.read_text().splitlines()
    csv_path.write_text("\n".join([lines[0]] + [line.rsplit(",", 1)[0] + f",{250 + i}" for i, line in
                                                enumerate(lines[1:])]) + "\n")  # label b: mean ~260, sd ~7
    path.write_text(yaml.safe_dump(data))
    assert recipes.load(str(path)).data.standardize_labels is True
    result = CliRunner().invoke(app, ["doctor", str(path), "--json", "--select", "recipe-data"])
    assert result.exit_code == 0, result.output
    assert not [f for f in json.loads(result.stdout)["findings"] if f["where"] == "data.standardize_labels"]
    raw = CliRunner().invoke(app, ["doctor", str(path), "data.standardize_labels=false", "--json",
                                   "--select", "recipe-data"])
    assert [f["status"] for f in json.loads(raw.stdout)["findings"] if f["where"] == "data.standardize_labels"] == [
        "warn"]
