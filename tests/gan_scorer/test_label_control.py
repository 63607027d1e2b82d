"""label_control.evaluate on generators whose answer is known in advance."""

import numpy as np
import pytest
import torch
from PIL import Image

from ohlora_cli import recipes
from ohlora_cli.gan import engine, label_control
from ohlora_cli.gan.engine import label_control_hook
from ohlora_cli.gan.networks import build_networks

from .conftest import write_recipe


class BrightnessG(torch.nn.Module):
    """Channel k of the image is labels[:, k] * gain[k] (plus some z noise): the label steers it."""

    z_dim, label_dim = 4, 3

    def __init__(self, gain):
        super().__init__()
        self.gain = torch.nn.Parameter(torch.tensor(gain))
        self.w_avg_updates = 0

    def forward(self, z, labels):
        if self.training:
            self.w_avg_updates += 1
        value = labels * self.gain * 0.3 + 0.02 * z[:, :3]
        return value.view(-1, 3, 1, 1).expand(-1, 3, 8, 8)


def brightness_scorer(images):
    return images.mean(dim=(2, 3)) / 0.3


def test_perfect_control_scores_r_one_and_small_mae(tmp_path):
    G = BrightnessG([1.0, 1.0, 1.0]).train()
    result = label_control.evaluate(G, brightness_scorer, label_names=["a", "b", "c"], steps=5,
                                    samples=8, png=tmp_path / "lc.png")
    assert all(r > 0.99 for r in result.r)
    assert all(mae < 0.2 for mae in result.mae)
    assert G.training and G.w_avg_updates == 0  # ran in eval mode, mode restored afterwards
    metrics = result.metrics
    assert set(metrics) >= {"label_control/a/r", "label_control/c/mae", "label_control/mean_r",
                            "label_control/min_r", "label_control/mean_mae"}
    with Image.open(tmp_path / "lc.png") as png:
        assert png.format == "PNG" and png.width > png.height  # three panels in a row


def test_ignored_and_reversed_labels_are_caught():
    result = label_control.evaluate(BrightnessG([1.0, 0.0, -1.0]), brightness_scorer, steps=9, samples=16)
    r = result.r
    assert r[0] > 0.99 and abs(r[1]) < 0.3 and r[2] < -0.99
    assert result.mae[1] > 1.0  # asked for -2..+2, got about 0


def test_sweep_is_centered_and_scaled_for_raw_labels():
    result = label_control.evaluate(BrightnessG([1.0, 1.0, 1.0]), lambda im: brightness_scorer(im),
                                    steps=3, samples=2, center=[5.0, 0.0, 0.0], scale=[2.0, 1.0, 1.0])
    assert sorted(set(np.round(result.requested[0], 4))) == [1.0, 5.0, 9.0]  # 5 +- 2 x 2


def test_no_graph_is_kept():
    G = BrightnessG([1.0, 1.0, 1.0])
    calls = []

    def scorer(images):
        calls.append(images.requires_grad)
        return brightness_scorer(images)

    label_control.evaluate(G, scorer, steps=3, samples=2)
    assert calls and not any(calls)


def test_label_names_must_match():
    with pytest.raises(ValueError, match="2 label names"):
        label_control.evaluate(BrightnessG([1.0] * 3), brightness_scorer, label_names=["a", "b"])


def test_training_runs_sweep_raw_labels_around_the_data(blobs, scorer_run, tmp_path):
    recipe = write_recipe(tmp_path / "r.yaml", output_dir=tmp_path / "out", csv_path=blobs / "labels.csv",
                          model={"scorer": str(scorer_run)}, standardize=False,
                          train={"method": "adversarial", "label_control": {"steps": 3, "samples": 2}})
    ctx = engine.plan_run(recipes.load(str(recipe), expect_kind="gan"), resume=False)
    engine.read_data(ctx, dry_run=False)
    G, _ = build_networks(ctx.recipe, 2)
    result = label_control_hook(ctx, torch.device("cpu"))(G, 0)
    raw = ctx.table.labels  # brightness and position in CSV units, not around 0 +- 1
    # the same table's statistics; float32 storage of the labels (~1e-7 relative) is all that can part them
    assert np.allclose(result.center, raw.mean(0), atol=1e-5)
    assert np.allclose(result.scale, raw.std(0), atol=1e-5)
