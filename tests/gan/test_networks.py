"""Networks: shapes, GenForce key layout and arithmetic, label conditioning, checkpoint loading."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from ohlora_cli.errors import CheckpointError
from ohlora_cli.gan import load_generator
from ohlora_cli.gan.checkpoint import load_pretrained
from ohlora_cli.gan.networks import Discriminator, Generator

from .conftest import tiny_D, tiny_G


@pytest.mark.parametrize("resolution", [8, 16, 32])
@pytest.mark.parametrize("label_size", [0, 3])
def test_shapes(resolution, label_size):
    G, D = tiny_G(resolution, label_size), tiny_D(resolution, label_size, label_projection=True)
    c = torch.randn(4, label_size) if label_size else None
    images = G.eval()(torch.randn(4, 8), c)
    assert images.shape == (4, 3, resolution, resolution)
    assert images.min() >= -1 and images.max() <= 1
    assert D(images, c).shape == (4, 1)
    assert (G.z_dim, G.label_dim, G.resolution) == (8, label_size, resolution)


def test_genforce_256_key_layout():
    """The keys and shapes of GenForce's StyleGAN at 256 px (celeba_partial-256x256)."""
    with torch.device("meta"):
        G, D = Generator(256), Discriminator(256)
    g, d = G.state_dict(), D.state_dict()
    expected_g = {
        "mapping.dense0.weight": (512, 512), "mapping.dense7.bias": (512,), "truncation.w_avg": (512,),
        "synthesis.lod": (), "synthesis.layer0.const": (1, 512, 4, 4), "synthesis.layer0.bias": (512,),
        "synthesis.layer0.apply_noise.noise": (1, 1, 4, 4), "synthesis.layer0.apply_noise.weight": (512,),
        "synthesis.layer0.style.weight": (1024, 512), "synthesis.layer1.weight": (512, 512, 3, 3),
        "synthesis.layer2.blur.kernel": (512, 1, 3, 3), "synthesis.layer10.weight": (128, 256, 3, 3),
        "synthesis.layer12.weight": (64, 128, 3, 3), "synthesis.layer13.style.bias": (128,),
        "synthesis.output6.weight": (3, 64, 1, 1), "synthesis.output0.bias": (3,),
    }
    expected_d = {
        "lod": (), "input0.weight": (64, 3, 1, 1), "input6.weight": (512, 3, 1, 1), "layer0.weight": (64, 64, 3, 3),
        "layer1.weight": (128, 64, 3, 3), "layer1.blur.kernel": (64, 1, 3, 3), "layer12.weight": (512, 513, 3, 3),
        "layer13.weight": (512, 8192), "layer14.weight": (1, 512), "layer14.bias": (1,),
    }
    for key, shape in expected_g.items():
        assert tuple(g[key].shape) == shape, key
    for key, shape in expected_d.items():
        assert tuple(d[key].shape) == shape, key
    assert len([k for k in g if k.startswith("mapping.dense") and k.endswith("weight")]) == 8
    assert D.last_layers(3) == ["layer12", "layer13", "layer14"]


def test_conditioning_layers():
    G, D = Generator(8, z_dim=16, label_size=7, label_dim=16, fmaps_max=8), Discriminator(8, label_size=7, fmaps_max=8)
    assert tuple(G.mapping.label_weight.shape) == (7, 16)
    assert tuple(G.mapping.dense0.weight.shape) == (512, 32)  # z_dim + label_dim
    assert tuple(D.get_parameter(f"{D.final_name}.weight").shape) == (1, 8 + 7)  # features + labels -> 1
    assert "label_projection" not in dict(D.named_parameters())


def test_fused_scale_matches_the_plain_path():
    """GenForce fuses up/down-scaling into the conv from 128 px. D: conv + 2x2 average == one
    stride-2 conv. G: the transposed conv is nearest upsampling + conv with the kernel flipped
    (transposed-convolution semantics, as in the TF original GenForce converted)."""
    from ohlora_cli.gan.networks import DiscriminatorConv, SynthesisConv

    torch.manual_seed(0)
    up = SynthesisConv(4, 5, 128, 8, upsample=True).double()  # float64: equal in real arithmetic
    assert up.fused
    x, w = torch.randn(2, 4, 64, 64, dtype=torch.float64), torch.randn(2, 8, dtype=torch.float64)
    fused = up(x, w)
    up.fused, up.upsample = False, True
    with torch.no_grad():
        up.weight.copy_(up.weight.flip(2, 3))
    assert torch.allclose(fused, up(x, w), rtol=1e-9, atol=1e-12)

    down = DiscriminatorConv(4, 5, downsample=True, fused=True).double()
    x = torch.randn(2, 4, 8, 8, dtype=torch.float64)
    fused = down(x)
    down.fused, down.downsample = False, True
    assert torch.allclose(fused, down(x), rtol=1e-9, atol=1e-12)


def test_float64_labels_get_a_clear_error():
    G = tiny_G()
    with pytest.raises(ValueError, match=r"labels are torch.float64 .* cast them"):
        G(torch.randn(2, 8), torch.randn(2, 2, dtype=torch.float64))


@pytest.mark.parametrize("form", ["zoo", "training", "bare"])
def test_genforce_round_trip(tmp_path, form):
    """A GenForce-layout .pth built with our code loads in all three forms, with identical outputs."""
    torch.manual_seed(0)
    G, G_smooth, D = tiny_G(16, 3), tiny_G(16, 3), tiny_D(16, 3)
    with torch.no_grad():
        G.truncation.w_avg.normal_()
        G_smooth.truncation.w_avg.normal_()
    nets = {"generator": G.state_dict(), "generator_smooth": G_smooth.state_dict(), "discriminator": D.state_dict()}
    data = {"zoo": nets, "training": {"models": nets, "optimizers": {}}, "bare": G_smooth.state_dict()}[form]
    path = tmp_path / "stylegan.pth"
    torch.save(data, path)
    loaded = load_generator(path)
    z, c = torch.randn(5, 8), torch.randn(5, 3)
    assert not loaded.training and (loaded.z_dim, loaded.label_dim, loaded.resolution) == (8, 3, 16)
    assert torch.equal(loaded(z, c), G_smooth.eval()(z, c))  # the EMA copy (generator_smooth)


def test_label_free_checkpoint_reinitialises_exactly_the_label_layers(tmp_path):
    torch.manual_seed(0)
    G0, D0 = tiny_G(8, 0), tiny_D(8, 0)
    path = tmp_path / "uncond.pth"
    torch.save({"generator": G0.state_dict(), "generator_smooth": G0.state_dict(), "discriminator": D0.state_dict()}, path)
    G, G_ema, D = tiny_G(8, 2), tiny_G(8, 2), tiny_D(8, 2, label_projection=True)
    reinit = load_pretrained(path, G, G_ema, D)
    assert sorted(reinit) == sorted(["G.mapping.dense0.weight", "G.mapping.label_weight",
                                     f"D.{D.final_name}.weight", "D.label_projection"])
    for net, source, prefix in ((G, G0, "G."), (D, D0, "D.")):
        own, old = net.state_dict(), source.state_dict()
        for key in old:
            if prefix + key not in reinit:
                assert torch.equal(own[key], old[key]), key
    assert torch.equal(G_ema.mapping.dense0.weight, G.mapping.dense0.weight)


def test_mismatched_checkpoint_is_a_checkpoint_error(tmp_path):
    path = tmp_path / "g16.pth"
    torch.save({"generator": tiny_G(16, 0).state_dict()}, path)
    with pytest.raises(CheckpointError, match="does not fit the recipe's model"):
        load_pretrained(path, tiny_G(8, 2), tiny_G(8, 2), tiny_D(8, 2))


@pytest.mark.parametrize("content", [b"not a checkpoint at all", b"PK\x03\x04truncated zip"])
def test_corrupt_files_are_checkpoint_errors(tmp_path, content):
    for name in ("bad.pth", "bad.safetensors"):
        path = tmp_path / name
        path.write_bytes(content)
        with pytest.raises(CheckpointError):
            load_generator(path)


def test_pickled_objects_are_refused(tmp_path):
    path = tmp_path / "evil.pth"
    torch.save({"generator": tiny_G().state_dict(), "note": F.softplus}, path)  # needs full unpickling
    with pytest.raises(CheckpointError, match="weights_only=True"):
        load_generator(path)


def test_float64_labels_are_named_on_the_meta_device_too():  # the doctor's dry-run probes use meta
    G = tiny_G(8, 2).to("meta")
    with pytest.raises(ValueError, match="labels are torch.float64"):
        G(torch.empty(2, G.z_dim, device="meta"), torch.empty(2, 2, device="meta", dtype=torch.float64))
