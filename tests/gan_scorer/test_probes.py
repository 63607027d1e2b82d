"""The scorer path as the doctor's dry-run probes see it: meta-device passes, dtype errors, no graph."""

import pytest
import torch

from ohlora_cli.errors import CheckpointError
from ohlora_cli.gan import label_control
from ohlora_cli.gan import scorer as sc
from ohlora_cli.gan.config import GanRecipe
from ohlora_cli.gan.networks import build_networks


def recipe(method, scorer=None, resolution=256):
    model = {"resolution": resolution, "scorer": scorer}
    return GanRecipe.model_validate({
        "kind": "gan", "output_dir": "unused",
        "data": {"csv": "unused.csv", "label_columns": ["eyes_score", "mouth_score", "pose_score"]},
        "model": model, "train": {"method": method, "batch_size": 4},
    })


@pytest.fixture
def ohlora_scorer(tmp_path):
    labels = ["eyes_score", "hair_color_score", "mouth_score", "pose_score"]
    scorer = sc.PropertyScorer(labels, [sc.default_crop(n) for n in labels], 64, channels=4, hidden=8)
    return sc.save_scorer(scorer, tmp_path / "scorer.safetensors")


def test_scorer_training_step_runs_on_meta_at_full_size():
    images = torch.empty(4, 3, 256, 256, device="meta")
    loss = sc.probe_loss(recipe("scorer"), images, torch.empty(4, 3, device="meta"))
    assert loss.device.type == "meta" and loss.shape == ()
    scorer = sc.probe_scorer(recipe("scorer"))
    assert [c for c in scorer.crops] == [sc.default_crop(n) for n in ("eyes", "mouth", "pose")]


def tiny(r):
    return r.model_copy(update={"model": r.model.model_copy(update={
        "z_dim": 8, "w_dim": 8, "label_dim": 4, "mapping_layers": 1, "fmaps_base": 64, "fmaps_max": 8})})


def test_regression_path_runs_on_meta_and_meets_the_labels_dtype(ohlora_scorer):
    r = recipe("property-regression", scorer=str(ohlora_scorer), resolution=32)
    with torch.device("meta"):
        G, _ = build_networks(r, 3)
    images = torch.empty(2, 3, 32, 32, device="meta")
    good = sc.probe_loss(r, images, torch.empty(2, 3, device="meta"), G=G)
    assert good.device.type == "meta" and good.requires_grad  # the loss reaches G's weights
    # float64 labels (Python floats through the default collate) fail where the real run would
    G, _ = build_networks(tiny(r), 3)
    with pytest.raises(ValueError, match="labels are torch.float64"):
        sc.probe_loss(r, torch.zeros(2, 3, 16, 16), torch.zeros(2, 3, dtype=torch.float64), G=G)


def test_probe_scorer_reads_only_the_header_and_checks_the_labels(ohlora_scorer, tmp_path):
    probe = sc.probe_scorer(recipe("adversarial", scorer=str(ohlora_scorer)))
    assert probe.label_mean.device.type == "meta" and probe.labels[0] == "eyes_score"
    assert sc.probe_scorer(recipe("adversarial")) is None
    other = sc.PropertyScorer(["eyes_score"], [sc.WHOLE], 16, channels=2, hidden=4)
    path = sc.save_scorer(other, tmp_path / "other.safetensors")
    with pytest.raises(CheckpointError, match="does not score mouth_score, pose_score"):
        sc.probe_scorer(recipe("adversarial", scorer=str(path)))
    with pytest.raises(CheckpointError, match="no such file"):
        sc.check_recipe(recipe("property-regression", scorer=str(tmp_path / "none")))


def test_label_control_saves_nothing_for_backward(ohlora_scorer):
    r = recipe("adversarial", scorer=str(ohlora_scorer), resolution=16)
    G, _ = build_networks(tiny(r), 3)
    G.train()
    score = sc.in_label_space(sc.probe_scorer(r, "cpu"), list(r.data.label_columns))
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t.numel()) or t, lambda t: t):
        result = label_control.evaluate(G, score, label_names=list(r.data.label_columns), steps=3, samples=2)
    assert saved == [] and G.training
    assert len(result.r) == 3
