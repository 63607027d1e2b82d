"""StyleGAN (v1) generator ``G`` and discriminator ``D`` with Oh-LoRA's label conditioning.

Module and parameter names, buffers and arithmetic follow GenForce's StyleGAN (equalised
learning rate with ``weight * wscale``, the mapping's ``lr_mul``, ``[1, 2, 1]`` blur, fused
up/down-scaling from 128 px, per-layer noise buffers, minibatch stddev), so GenForce state dicts
load key for key: ``mapping.dense0.weight``, ``mapping.label_weight``, ``truncation.w_avg``,
``synthesis.layer0.const``, ``synthesis.output6.weight``, ``layer14.weight`` ...

Conditioning (CONTEXT.md section 1):
- G: ``embedding = labels @ mapping.label_weight`` (bias-free, ``(label_size, label_dim)``) is
  concatenated to ``z`` before pixel-norm and the dense layers, so ``dense0`` takes
  ``z_dim + label_dim`` inputs (GenForce's own conditional G is the case ``label_dim == z_dim``).
- D: the labels are concatenated to the input of the final dense layer
  (``features + label_size -> 1``). Optionally (``label_projection``) a bias-free
  ``label_projection`` ``(label_size, features)`` adds ``sum(labels * (h @ P.T))`` to the logit:
  with the concatenation alone the logit is ``f(image) + v . labels``, which cannot tell whether
  an image fits its labels.

Progressive growing is not implemented: the ``lod`` buffers are kept for key compatibility and
must be 0, and the lower-resolution ``output*`` (G) / ``input*`` (D) layers are kept but unused
(``unused_prefixes()`` lists them so the trainer freezes them).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

INIT_RES = 4
WSCALE_GAIN = math.sqrt(2.0)
FUSED_SCALE_MIN_RES = 128  # GenForce's fused_scale='auto'


def channels(res: int, fmaps_base: int, fmaps_max: int) -> int:
    return min(fmaps_base // res, fmaps_max)


def _num_blocks(resolution: int) -> int:
    """Blocks from 4 px to ``resolution`` (4 px -> 1, 256 px -> 7)."""
    return int(math.log2(resolution)) - 1


def _leaky(x: torch.Tensor) -> torch.Tensor:
    return F.leaky_relu(x, 0.2)


class PixelNorm(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x / torch.sqrt(x.square().mean(dim=1, keepdim=True) + 1e-8)


class InstanceNorm(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x - x.mean(dim=(2, 3), keepdim=True)
        return x / torch.sqrt(x.square().mean(dim=(2, 3), keepdim=True) + 1e-8)


class Blur(nn.Module):
    """Depthwise [1, 2, 1] x [1, 2, 1] / 16 filter (buffer ``kernel``, as GenForce)."""

    def __init__(self, num_channels: int):
        super().__init__()
        k = torch.tensor([1.0, 2.0, 1.0])
        k = torch.outer(k, k) / 16.0
        self.register_buffer("kernel", k.expand(num_channels, 1, 3, 3).clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.kernel.to(x.dtype), padding=1, groups=x.shape[1])


class DenseBlock(nn.Module):
    """Fully connected layer with equalised learning rate: ``weight * wscale``, ``bias * lr_mul``."""

    def __init__(self, in_features: int, out_features: int, *, gain: float = WSCALE_GAIN,
                 lr_mul: float = 1.0, activation: bool = True):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_features, in_features) / lr_mul)
        self.wscale = gain / math.sqrt(in_features) * lr_mul
        self.bias = nn.Parameter(torch.zeros(out_features))
        self.bscale = lr_mul
        self.activation = activation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.linear(x.flatten(1), self.weight * self.wscale, self.bias * self.bscale)
        return _leaky(x) if self.activation else x


# ----------------------------------------------------------------------------------- generator


class MappingNetwork(nn.Module):
    """z (and labels) -> w: optional label embedding, pixel-norm, ``num_layers`` dense layers."""

    def __init__(self, z_dim: int, w_dim: int, hidden: int, num_layers: int, label_size: int,
                 label_dim: int, lr_mul: float):
        super().__init__()
        self.z_dim, self.label_size, self.label_dim = z_dim, label_size, label_dim
        self.norm = PixelNorm()
        for i in range(num_layers):
            in_features = z_dim + (label_dim if label_size else 0) if i == 0 else hidden
            out_features = w_dim if i == num_layers - 1 else hidden
            self.add_module(f"dense{i}", DenseBlock(in_features, out_features, lr_mul=lr_mul))
        self.num_layers = num_layers
        if label_size:
            self.label_weight = nn.Parameter(torch.zeros(label_size, label_dim))

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        if z.ndim != 2 or z.shape[1] != self.z_dim:
            raise ValueError(f"z must have shape (N, {self.z_dim}), got {tuple(z.shape)}")
        if self.label_size:
            _check_labels(labels, z.shape[0], self.label_size, self.label_weight.dtype, "generator")
            z = torch.cat([z, labels @ self.label_weight], dim=1)
        x = self.norm(z)
        for i in range(self.num_layers):
            x = getattr(self, f"dense{i}")(x)
        return x


def _check_labels(labels, batch: int, label_size: int, dtype: torch.dtype, who: str) -> None:
    if labels is None:
        raise ValueError(f"the {who} is conditioned on {label_size} labels; pass labels of shape (N, {label_size})")
    if labels.shape != (batch, label_size):
        raise ValueError(f"labels must have shape ({batch}, {label_size}), got {tuple(labels.shape)}")
    autocast = labels.device.type in ("cpu", "cuda") and torch.is_autocast_enabled(labels.device.type)
    if labels.dtype != dtype and not autocast:  # (autocast has no 'meta' device type to ask about)
        raise ValueError(
            f"labels are {labels.dtype} but the {who}'s weights are {dtype}: "
            f"cast them with labels.to({dtype}) (a float64 label batch usually comes from Python floats "
            "through the default collate)"
        )


class Truncation(nn.Module):
    """Holds ``w_avg`` (the tracked mean of w) and broadcasts w to one code per layer (``wp``)."""

    def __init__(self, w_dim: int, num_layers: int):
        super().__init__()
        self.num_layers = num_layers
        self.register_buffer("w_avg", torch.zeros(w_dim))

    def forward(self, w: torch.Tensor, psi: float = 1.0, cutoff: int | None = None) -> torch.Tensor:
        wp = w.unsqueeze(1).repeat(1, self.num_layers, 1) if w.ndim == 2 else w
        if psi != 1.0:
            layers = self.num_layers if cutoff is None else cutoff
            avg = self.w_avg.to(wp.dtype)
            truncated = avg + (wp[:, :layers] - avg) * psi
            wp = torch.cat([truncated, wp[:, layers:]], dim=1)
        return wp


class NoiseInput(nn.Module):
    """Per-pixel noise scaled per channel; ``noise`` is the fixed buffer used in eval mode."""

    def __init__(self, res: int, num_channels: int):
        super().__init__()
        self.register_buffer("noise", torch.randn(1, 1, res, res))
        self.weight = nn.Parameter(torch.zeros(num_channels))

    def forward(self, x: torch.Tensor, random: bool) -> torch.Tensor:
        noise = torch.randn(x.shape[0], 1, *x.shape[2:], device=x.device, dtype=x.dtype) if random else self.noise
        return x + noise.to(x.dtype) * self.weight.view(1, -1, 1, 1).to(x.dtype)


class StyleMod(nn.Module):
    """AdaIN's affine part: ``x * (scale + 1) + shift`` from ``w``."""

    def __init__(self, w_dim: int, num_channels: int):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(num_channels * 2, w_dim))
        self.wscale = 1.0 / math.sqrt(w_dim)
        self.bias = nn.Parameter(torch.zeros(num_channels * 2))
        self.num_channels = num_channels

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        style = F.linear(w, self.weight * self.wscale, self.bias).view(-1, 2, self.num_channels, 1, 1)
        return x * (style[:, 0] + 1) + style[:, 1]


class SynthesisConv(nn.Module):
    """One synthesis layer: [upsample] conv [blur] or the learned constant, then noise, bias,
    leaky ReLU, instance norm and style modulation. ``to_rgb=True`` is the 1x1 output layer."""

    def __init__(self, in_ch: int, out_ch: int, res: int, w_dim: int, *, const: bool = False,
                 upsample: bool = False, to_rgb: bool = False):
        super().__init__()
        self.const_input, self.to_rgb = const, to_rgb
        self.bias = nn.Parameter(torch.zeros(out_ch))
        self.bscale = 1.0
        if not to_rgb:
            self.apply_noise = NoiseInput(res, out_ch)
            self.normalize = InstanceNorm()
            self.style = StyleMod(w_dim, out_ch)
        if const:
            self.const = nn.Parameter(torch.ones(1, in_ch, res, res))
            return
        kernel = 1 if to_rgb else 3
        self.fused = upsample and res >= FUSED_SCALE_MIN_RES
        self.upsample = upsample and not self.fused
        if upsample:
            self.blur = Blur(out_ch)
        self.weight = nn.Parameter(torch.randn(out_ch, in_ch, kernel, kernel))
        self.wscale = (1.0 if to_rgb else WSCALE_GAIN) / math.sqrt(in_ch * kernel * kernel)
        self.padding = kernel // 2

    def forward(self, x: torch.Tensor | None, w: torch.Tensor | None, random_noise: bool = False) -> torch.Tensor:
        if self.const_input:
            x = self.const.repeat(w.shape[0], 1, 1, 1).to(w.dtype)
        else:
            weight = self.weight * self.wscale
            if self.fused:  # upsample x2 and 3x3 conv in one transposed conv (GenForce's fused_scale)
                weight = F.pad(weight, (1, 1, 1, 1))
                weight = weight[:, :, 1:, 1:] + weight[:, :, :-1, 1:] + weight[:, :, 1:, :-1] + weight[:, :, :-1, :-1]
                x = F.conv_transpose2d(x, weight.permute(1, 0, 2, 3), stride=2, padding=1)
            else:
                if self.upsample:
                    x = F.interpolate(x, scale_factor=2, mode="nearest")
                x = F.conv2d(x, weight, padding=self.padding)
            if hasattr(self, "blur"):
                x = self.blur(x)
        if self.to_rgb:
            return x + (self.bias * self.bscale).view(1, -1, 1, 1)
        x = self.apply_noise(x, random_noise)
        x = _leaky(x + (self.bias * self.bscale).view(1, -1, 1, 1))
        return self.style(self.normalize(x), w)


class SynthesisNetwork(nn.Module):
    def __init__(self, resolution: int, w_dim: int, fmaps_base: int, fmaps_max: int, image_channels: int = 3):
        super().__init__()
        self.register_buffer("lod", torch.zeros(()))
        self.num_blocks = _num_blocks(resolution)
        for b in range(self.num_blocks):
            res = INIT_RES * 2**b
            ch = channels(res, fmaps_base, fmaps_max)
            if b == 0:
                first = SynthesisConv(ch, ch, res, w_dim, const=True)
            else:
                first = SynthesisConv(channels(res // 2, fmaps_base, fmaps_max), ch, res, w_dim, upsample=True)
            self.add_module(f"layer{2 * b}", first)
            self.add_module(f"layer{2 * b + 1}", SynthesisConv(ch, ch, res, w_dim))
            self.add_module(f"output{b}", SynthesisConv(ch, image_channels, res, w_dim, to_rgb=True))
        self.num_layers = 2 * self.num_blocks

    def forward(self, wp: torch.Tensor, random_noise: bool = False) -> torch.Tensor:
        x = None
        for i in range(self.num_layers):
            x = getattr(self, f"layer{i}")(x, wp[:, i], random_noise)
        return getattr(self, f"output{self.num_blocks - 1}")(x, None)


class Generator(nn.Module):
    """``G(z, labels)`` -> images of shape ``(N, 3, R, R)``, clamped to [-1, 1] in eval mode
    (training sees the raw output, as GenForce's).

    ``label_dim`` is the number of labels (the width of ``labels``); ``label_embed_dim`` the
    width of ``labels @ label_weight``. ``config`` holds the constructor arguments.
    """

    def __init__(self, resolution: int, *, z_dim: int = 512, w_dim: int = 512, label_size: int = 0,
                 label_dim: int = 16, mapping_layers: int = 8, mapping_fmaps: int | None = None,
                 mapping_lr_mul: float = 0.01, fmaps_base: int = 16384, fmaps_max: int = 512):
        super().__init__()
        if resolution < 8 or resolution > 1024 or resolution & (resolution - 1):
            raise ValueError(f"resolution must be a power of two from 8 to 1024, got {resolution}")
        self.config = dict(
            resolution=resolution, z_dim=z_dim, w_dim=w_dim, label_size=label_size, label_dim=label_dim,
            mapping_layers=mapping_layers, mapping_fmaps=mapping_fmaps or w_dim,
            mapping_lr_mul=mapping_lr_mul, fmaps_base=fmaps_base, fmaps_max=fmaps_max,
        )
        self.resolution, self.z_dim, self.w_dim = resolution, z_dim, w_dim
        self.label_dim = label_size  # the Python API: labels have shape (N, G.label_dim)
        self.label_embed_dim = label_dim if label_size else 0
        self.mapping = MappingNetwork(z_dim, w_dim, mapping_fmaps or w_dim, mapping_layers, label_size,
                                      label_dim, mapping_lr_mul)
        self.synthesis = SynthesisNetwork(resolution, w_dim, fmaps_base, fmaps_max)
        self.num_ws = self.synthesis.num_layers
        self.truncation = Truncation(w_dim, self.num_ws)
        # Label statistics when the labels were standardised (set by the trainer / loader).
        self.label_names: list[str] = []
        self.label_mean: list[float] | None = None
        self.label_std: list[float] | None = None
        # A run on raw labels: their mean and sd in the data ({"mean": [...], "sd": [...]}), or None.
        self.label_spread: dict | None = None

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None, *, truncation_psi: float = 1.0,
                truncation_cutoff: int | None = None, random_noise: bool = False) -> torch.Tensor:
        w = self.mapping(z, labels)
        wp = self.truncation(w, truncation_psi, truncation_cutoff)
        images = self.synthesis(wp, random_noise)
        return images if self.training else images.clamp(-1, 1)

    def unused_prefixes(self) -> list[str]:
        """Layers kept for GenForce key compatibility that never reach the output (lod 0)."""
        return [f"synthesis.output{b}" for b in range(self.synthesis.num_blocks - 1)]

    def label_dependent(self) -> list[str]:
        """Parameters whose shape depends on the labels (re-initialised from a label-free checkpoint)."""
        return ["mapping.dense0.weight", "mapping.label_weight"]


# ------------------------------------------------------------------------------- discriminator


class MinibatchStd(nn.Module):
    """Appends the mean standard deviation over groups of samples as one extra channel."""

    def __init__(self, group_size: int):
        super().__init__()
        self.group_size = group_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        g = min(self.group_size, n)
        while n % g:  # the largest group size that divides the batch (GenForce needs it to)
            g -= 1
        y = x.view(g, -1, 1, c, h, w)
        y = (y - y.mean(dim=0)).square().mean(dim=0)
        y = torch.sqrt(y + 1e-8).mean(dim=(2, 3, 4), keepdim=True).mean(dim=2)
        return torch.cat([x, y.repeat(g, 1, h, w)], dim=1)


class DiscriminatorConv(nn.Module):
    """[minibatch std] [blur] conv (+bias) [downsample] leaky ReLU."""

    def __init__(self, in_ch: int, out_ch: int, *, kernel: int = 3, downsample: bool = False,
                 fused: bool = False, mbstd_group: int = 0):
        super().__init__()
        self.mbstd = MinibatchStd(mbstd_group) if mbstd_group > 1 else None
        if self.mbstd is not None:
            in_ch += 1
        if downsample:
            self.blur = Blur(in_ch)
        self.fused = downsample and fused
        self.downsample = downsample and not fused
        self.weight = nn.Parameter(torch.randn(out_ch, in_ch, kernel, kernel))
        self.wscale = WSCALE_GAIN / math.sqrt(in_ch * kernel * kernel)
        self.bias = nn.Parameter(torch.zeros(out_ch))
        self.bscale = 1.0
        self.padding = kernel // 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.mbstd is not None:
            x = self.mbstd(x)
        if hasattr(self, "blur"):
            x = self.blur(x)
        weight = self.weight * self.wscale
        bias = self.bias * self.bscale
        if self.fused:  # 3x3 conv and downsample x2 in one stride-2 conv
            weight = F.pad(weight, (1, 1, 1, 1))
            weight = (weight[:, :, 1:, 1:] + weight[:, :, :-1, 1:] + weight[:, :, 1:, :-1] + weight[:, :, :-1, :-1]) * 0.25
            x = F.conv2d(x, weight, bias, stride=2, padding=1)
        else:
            x = F.conv2d(x, weight, bias, padding=self.padding)
            if self.downsample:
                x = F.avg_pool2d(x, 2)
        return _leaky(x)


class Discriminator(nn.Module):
    """``D(images, labels)`` -> logits of shape ``(N, 1)``."""

    def __init__(self, resolution: int, *, label_size: int = 0, fmaps_base: int = 16384, fmaps_max: int = 512,
                 mbstd_group: int = 4, label_projection: bool = False, image_channels: int = 3):
        super().__init__()
        if resolution < 8 or resolution > 1024 or resolution & (resolution - 1):
            raise ValueError(f"resolution must be a power of two from 8 to 1024, got {resolution}")
        self.config = dict(resolution=resolution, label_size=label_size, fmaps_base=fmaps_base,
                           fmaps_max=fmaps_max, mbstd_group=mbstd_group, label_projection=label_projection)
        self.resolution, self.label_dim = resolution, label_size
        self.register_buffer("lod", torch.zeros(()))
        self.num_blocks = _num_blocks(resolution)
        for b in range(self.num_blocks):
            res = resolution // 2**b
            ch = channels(res, fmaps_base, fmaps_max)
            self.add_module(f"input{b}", DiscriminatorConv(image_channels, ch, kernel=1))
            if res > INIT_RES:
                self.add_module(f"layer{2 * b}", DiscriminatorConv(ch, ch))
                self.add_module(f"layer{2 * b + 1}", DiscriminatorConv(
                    ch, channels(res // 2, fmaps_base, fmaps_max), downsample=True,
                    fused=res >= FUSED_SCALE_MIN_RES))
            else:
                self.add_module(f"layer{2 * b}", DiscriminatorConv(ch, ch, mbstd_group=mbstd_group))
                hidden = channels(res // 2, fmaps_base, fmaps_max)
                self.add_module(f"layer{2 * b + 1}", DenseBlock(ch * res * res, hidden))
        self.final_name = f"layer{2 * self.num_blocks}"
        self.add_module(self.final_name, DenseBlock(hidden + label_size, 1, gain=1.0, activation=False))
        if label_size and label_projection:
            self.label_projection = nn.Parameter(torch.zeros(label_size, hidden))

    def forward(self, images: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        expected = (3, self.resolution, self.resolution)
        if images.ndim != 4 or tuple(images.shape[1:]) != expected:
            raise ValueError(f"images must have shape (N, {', '.join(map(str, expected))}), got {tuple(images.shape)}")
        x = self.input0(images)
        for i in range(2 * self.num_blocks):
            x = getattr(self, f"layer{i}")(x)
        if not self.label_dim:
            return getattr(self, self.final_name)(x)
        weight_dtype = getattr(self, self.final_name).weight.dtype
        _check_labels(labels, images.shape[0], self.label_dim, weight_dtype, "discriminator")
        logits = getattr(self, self.final_name)(torch.cat([x, labels.to(x.dtype)], dim=1))
        if hasattr(self, "label_projection"):
            logits = logits + (labels.to(x.dtype) * (x @ self.label_projection.to(x.dtype).T)).sum(1, keepdim=True)
        return logits

    def unused_prefixes(self) -> list[str]:
        return [f"input{b}" for b in range(1, self.num_blocks)]

    def label_dependent(self) -> list[str]:
        return [f"{self.final_name}.weight", f"{self.final_name}.bias", "label_projection"]

    def last_layers(self, count: int = 3) -> list[str]:
        """Names of the last ``count`` layers (Oh-LoRA v1 trains layer12-14 at 256 px)."""
        last = 2 * self.num_blocks
        return [f"layer{i}" for i in range(last - count + 1, last + 1)]


def build_networks(recipe, label_size: int) -> tuple[Generator, Discriminator]:
    """G and D as a GAN recipe's ``model`` section describes them, with ``label_size`` labels."""
    m = recipe.model
    G = Generator(m.resolution, z_dim=m.z_dim, w_dim=m.w_dim, label_size=label_size, label_dim=m.label_dim,
                  mapping_layers=m.mapping_layers, mapping_fmaps=m.mapping_fmaps, mapping_lr_mul=m.mapping_lr_mul,
                  fmaps_base=m.fmaps_base, fmaps_max=m.fmaps_max)
    D = Discriminator(m.resolution, label_size=label_size, fmaps_base=m.fmaps_base, fmaps_max=m.fmaps_max,
                      mbstd_group=m.mbstd_group, label_projection=m.label_projection)
    return G, D
