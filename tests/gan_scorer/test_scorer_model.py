"""The property-score CNN as a module: crops, label spaces, checkpoint format and its errors."""

import json

import pytest
import torch
from safetensors.torch import save_file

from ohlora_cli.errors import CheckpointError
from ohlora_cli.gan import scorer as sc


def tiny(labels=("eyes_score", "brightness"), resolution=16):
    torch.manual_seed(0)
    return sc.PropertyScorer(list(labels), [sc.default_crop(n) for n in labels], resolution,
                             channels=4, hidden=8, dropout=0.0)


def test_default_crops_follow_ohlora_regions_by_label_name():
    assert sc.default_crop("eyes_score") == sc.Crop(3 / 8, 9 / 16, 1 / 4, 3 / 4)
    assert sc.default_crop("mouth_score") == sc.Crop(5 / 8, 13 / 16, 3 / 8, 5 / 8)
    assert sc.default_crop("pose_score") == sc.Crop(7 / 16, 5 / 8, 11 / 32, 21 / 32)
    assert sc.default_crop("hair_color_score") == sc.WHOLE
    assert sc.default_crop("hair_length_score") == sc.Crop(top=0.5)
    assert sc.default_crop("background_mean_score") == sc.Crop(bottom=0.5)
    assert sc.default_crop("background_std_score") == sc.Crop(bottom=0.5)
    assert sc.default_crop("brightness") == sc.WHOLE


def test_crop_pixels_scale_with_resolution_and_are_never_empty():
    eyes = sc.default_crop("eyes")
    assert eyes.pixels(256) == (96, 144, 64, 192)  # Oh-LoRA's 3H/8 : 9H/16, W/4 : 3W/4
    for size in (4, 8, 16, 1024):
        top, bottom, left, right = sc.Crop(0.5, 0.51, 0.99, 1.0).pixels(size)
        assert 0 <= top < bottom <= size and 0 <= left < right <= size


def test_recipe_crops_override_defaults():
    crops = sc.resolve_crops(["eyes", "x"], {"x": {"top": 0.25, "bottom": 0.75, "left": 0.0, "right": 0.5}})
    assert crops == [sc.default_crop("eyes"), sc.Crop(0.25, 0.75, 0.0, 0.5)]


def test_each_label_reads_only_its_crop():
    scorer = tiny(("background_mean", "hair_length"))  # top half, bottom half
    images = torch.zeros(1, 3, 16, 16, requires_grad=True)
    scorer(images)[0, 0].backward()
    grad = images.grad.abs().sum(dim=(0, 1, 3))
    assert grad[:8].sum() > 0 and grad[8:].sum() == 0


def test_scores_are_differentiable_and_resize_other_resolutions():
    scorer = tiny(resolution=8)
    images = torch.randn(2, 3, 32, 32, requires_grad=True)
    out = scorer(images)
    assert out.shape == (2, 2)
    out.sum().backward()
    assert images.grad is not None and images.grad.abs().sum() > 0


def test_raw_units_and_label_space_mapping():
    scorer = tiny(("a", "b", "c"))
    scorer.label_mean.copy_(torch.tensor([10.0, 20.0, 30.0]))
    scorer.label_std.copy_(torch.tensor([2.0, 4.0, 8.0]))
    images = torch.randn(3, 3, 16, 16)
    z = scorer(images, standardized=True)
    raw = scorer(images)
    # the scorer's own float32 multiply-add, done once more: equal to an ulp
    assert torch.allclose(raw, z * scorer.label_std + scorer.label_mean)
    # a GAN run on columns [c, a] with its own standardisation statistics
    wrapped = sc.in_label_space(scorer, ["c", "a"], label_mean=[31.0, 9.0], label_std=[2.0, 0.5])
    expected = (raw[:, [2, 0]] - torch.tensor([31.0, 9.0])) / torch.tensor([2.0, 0.5])
    # raw outputs reach ~40 (float32 ulp 3.8e-6); two roundings divided by 0.5 stay under 2e-5
    assert torch.allclose(wrapped(images), expected, atol=1e-4)
    with pytest.raises(CheckpointError, match="does not score d"):
        sc.in_label_space(scorer, ["a", "d"])


def test_label_space_wrapper_lives_where_the_scorer_is():
    # On a GPU run the scorer is on CUDA and the wrapper was not moved: its index stayed on the CPU
    # and index_select failed (bench/gpu_check.py, gan-paths on an H200). The meta device stands in
    # for a second device here: every buffer must follow the scorer, and a forward must run there.
    scorer = tiny(("a", "b", "c")).to("meta")
    wrapped = sc.in_label_space(scorer, ["c", "a"], label_mean=[31.0, 9.0], label_std=[2.0, 0.5])
    assert {b.device.type for b in wrapped.buffers()} == {"meta"}
    assert wrapped(torch.empty(2, 3, 16, 16, device="meta")).shape == (2, 2)


def test_checkpoint_round_trip(tmp_path):
    scorer = tiny()
    scorer.label_mean.fill_(3.0)
    path = sc.save_scorer(scorer, tmp_path / "scorer.safetensors", metrics={"valid/eyes_score/r": 0.95})
    loaded = sc.load_scorer(tmp_path)  # a run folder works too
    images = torch.randn(4, 3, 16, 16)
    scorer.eval()
    assert torch.equal(loaded(images), scorer(images))
    assert loaded.labels == scorer.labels and loaded.crops == scorer.crops
    assert not loaded.training and not any(p.requires_grad for p in loaded.parameters())
    assert sc.read_scorer_metadata(path)["metrics"] == {"valid/eyes_score/r": 0.95}
    assert path.read_bytes()[8:9] == b"{"  # a safetensors header, not a pickle


def test_missing_checkpoint_names_the_key(tmp_path):
    with pytest.raises(CheckpointError, match=r"model.scorer: .*nope.safetensors: no such file") as info:
        sc.load_scorer(tmp_path / "nope.safetensors")
    assert "train.method: scorer" in info.value.hint


def test_corrupt_and_foreign_checkpoints_are_refused(tmp_path):
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"\x00" * 64)
    with pytest.raises(CheckpointError, match="not a readable safetensors file"):
        sc.load_scorer(garbage)

    foreign = tmp_path / "foreign.safetensors"
    save_file({"w": torch.zeros(2)}, str(foreign))
    with pytest.raises(CheckpointError, match="not an ohlora scorer checkpoint"):
        sc.load_scorer(foreign)

    good = sc.save_scorer(tiny(), tmp_path / "good.safetensors")
    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(good.read_bytes()[:-100])
    with pytest.raises(CheckpointError):
        sc.load_scorer(truncated)

    # weights that do not fit the description in the header
    meta = sc.read_scorer_metadata(good)
    edited = tmp_path / "edited.safetensors"
    save_file({"nets.0.head.4.weight": torch.zeros(1, 8)}, str(edited), metadata={"ohlora": json.dumps(meta)})
    with pytest.raises(CheckpointError, match="does not match its own description"):
        sc.load_scorer(edited)
