"""The property-score CNN (Oh-LoRA's "property score CNN"): the model, its loss, loading and saving.
Training it is ``ohlora_cli.gan.methods.scorer`` (``train.method: scorer``).

One small CNN per label column. Each reads its own crop of the image, given as fractions of the
image so that it works at any resolution; by default the crop follows Oh-LoRA's regions, chosen
by the label's name (eyes, mouth and pose regions, hair colour on the whole image, hair length on
the bottom half, background on the top half) and the whole image for any other name.

The scorer always answers in the raw units of the labels it was trained on: internally it
regresses standardised targets and maps them back with the training split's mean and std, which
it keeps as buffers. A GAN run whose labels are standardised maps the answer into its own label
space (``in_label_space``).

Checkpoint: one safetensors file (the weights) whose header metadata holds the JSON description
(labels, crops, architecture, validation metrics). Loading never unpickles anything.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from ..errors import CheckpointError, RecipeError
from ..runtime.files import atomic_path
from ..runtime.run import CHECKPOINTS

FORMAT = "ohlora-scorer"
FORMAT_VERSION = 1
FILENAME = "scorer.safetensors"
STATE_FORMAT = "ohlora-scorer-state"


# --------------------------------------------------------------------------------------------
# Crops
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Crop:
    """A region of the image as fractions of its height (top, bottom) and width (left, right)."""

    top: float = 0.0
    bottom: float = 1.0
    left: float = 0.0
    right: float = 1.0

    def pixels(self, size: int) -> tuple[int, int, int, int]:
        """Row and column bounds at ``size`` pixels; never empty (at least one pixel each way)."""
        top = min(int(math.floor(self.top * size + 1e-6)), size - 1)
        left = min(int(math.floor(self.left * size + 1e-6)), size - 1)
        bottom = max(int(math.ceil(self.bottom * size - 1e-6)), top + 1)
        right = max(int(math.ceil(self.right * size - 1e-6)), left + 1)
        return top, bottom, left, right


WHOLE = Crop()
# Oh-LoRA's regions on its 256 px faces (property score CNN), as fractions of the image.
OHLORA_REGIONS: list[tuple[tuple[str, ...], Crop]] = [
    (("hair_color", "hair_colour", "haircolor"), WHOLE),
    (("hair_length", "hairlength"), Crop(top=0.5)),
    (("eyes", "eye"), Crop(top=3 / 8, bottom=9 / 16, left=1 / 4, right=3 / 4)),
    (("mouth",), Crop(top=5 / 8, bottom=13 / 16, left=3 / 8, right=5 / 8)),
    (("pose",), Crop(top=7 / 16, bottom=5 / 8, left=11 / 32, right=21 / 32)),
    (("background", "back_mean", "back_std"), Crop(bottom=0.5)),
]


def default_crop(label: str) -> Crop:
    """Oh-LoRA's region for a label name (``eyes_score`` -> the eye region), else the whole image."""
    name = label.lower().replace("-", "_").replace(" ", "_")
    for keys, crop in OHLORA_REGIONS:
        if any(key in name for key in keys):
            return crop
    return WHOLE


def resolve_crops(labels: list[str], overrides: dict | None) -> list[Crop]:
    """One crop per label: the recipe's ``train.scorer.crops[label]`` where given, else the default."""
    crops = []
    for label in labels:
        given = (overrides or {}).get(label)
        if given is None:
            crops.append(default_crop(label))
        else:
            values = given if isinstance(given, dict) else given.model_dump()
            crops.append(Crop(**values))
    return crops


# --------------------------------------------------------------------------------------------
# Networks
# --------------------------------------------------------------------------------------------


class LabelCNN(nn.Module):
    """Conv blocks (two 3x3 convs, LeakyReLU, 2x2 max-pool) down to about 4 px, then two dense layers.

    The number of blocks follows the crop's size at the scorer's resolution; an adaptive average
    pool to 4 x 4 keeps the dense layer's size fixed and keeps coarse position information.
    """

    def __init__(self, height: int, width: int, channels: int, hidden: int, dropout: float):
        super().__init__()
        blocks = max(0, min(5, int(math.log2(max(1, min(height, width)))) - 2))
        layers: list[nn.Module] = []
        c_in = 3
        for i in range(max(1, blocks)):
            c_out = channels * min(2**i, 4)
            layers += [
                nn.Conv2d(c_in, c_out, 3, padding=1),
                nn.LeakyReLU(0.2),
                nn.Conv2d(c_out, c_out, 3, padding=1),
                nn.LeakyReLU(0.2),
            ]
            if i < blocks:
                layers.append(nn.MaxPool2d(2))
            c_in = c_out
        layers.append(nn.AdaptiveAvgPool2d(4))
        self.features = nn.Sequential(*layers)
        self.head = nn.Sequential(
            nn.Flatten(),
            nn.Linear(c_in * 16, hidden),
            nn.LeakyReLU(0.2),
            nn.Dropout(dropout),
            nn.Linear(hidden, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


class PropertyScorer(nn.Module):
    """Images in [-1, 1], shape (N, 3, H, W) -> scores (N, L) in the labels' raw units.

    Images of another size are resized (bilinear, antialiased) to ``resolution`` first; the
    whole path is differentiable, so a generator can be trained through a frozen scorer.
    """

    def __init__(self, labels: list[str], crops: list[Crop], resolution: int, *,
                 channels: int = 32, hidden: int = 256, dropout: float = 0.1):
        super().__init__()
        if len(labels) != len(crops):
            raise ValueError("one crop per label")
        self.labels = list(labels)
        self.crops = list(crops)
        self.resolution = int(resolution)
        self.channels, self.hidden, self.dropout = int(channels), int(hidden), float(dropout)
        nets = []
        for crop in self.crops:
            top, bottom, left, right = crop.pixels(self.resolution)
            nets.append(LabelCNN(bottom - top, right - left, self.channels, self.hidden, self.dropout))
        self.nets = nn.ModuleList(nets)
        self.register_buffer("label_mean", torch.zeros(len(labels)))
        self.register_buffer("label_std", torch.ones(len(labels)))

    @property
    def label_dim(self) -> int:
        return len(self.labels)

    def config(self) -> dict:
        return {
            "labels": self.labels,
            "crops": [asdict(c) for c in self.crops],
            "resolution": self.resolution,
            "channels": self.channels,
            "hidden": self.hidden,
            "dropout": self.dropout,
        }

    def forward(self, images: torch.Tensor, *, standardized: bool = False) -> torch.Tensor:
        """Scores in raw label units, or with ``standardized=True`` in the units the CNNs regress:
        ``(raw - label_mean) / label_std``."""
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"expected images of shape (N, 3, H, W), got {tuple(images.shape)}")
        x = images
        if x.shape[-2:] != (self.resolution, self.resolution):
            x = F.interpolate(x, size=(self.resolution, self.resolution), mode="bilinear",
                              align_corners=False, antialias=x.shape[-1] > self.resolution)
        outs = []
        for crop, net in zip(self.crops, self.nets, strict=True):
            top, bottom, left, right = crop.pixels(self.resolution)
            outs.append(net(x[:, :, top:bottom, left:right]))
        scores = torch.cat(outs, dim=1).float()
        return scores if standardized else scores * self.label_std + self.label_mean

    def indices(self, label_columns: list[str], *, key: str = "model.scorer") -> list[int]:
        """Positions of ``label_columns`` among the scorer's labels; CheckpointError if one is missing."""
        missing = [name for name in label_columns if name not in self.labels]
        if missing:
            raise CheckpointError(
                f"{key}: the scorer does not score {', '.join(missing)} "
                f"(it scores {', '.join(self.labels)})",
                hint="Train a scorer on the same data.label_columns (train.method: scorer), or drop those columns.",
            )
        return [self.labels.index(name) for name in label_columns]


class LabelSpaceScorer(nn.Module):
    """A frozen scorer seen from a GAN run: images -> scores in the run's label space and order.

    ``label_mean`` / ``label_std`` are the run's standardisation statistics (raw units) when its
    labels are standardised, else None (the run's labels are raw units).
    """

    def __init__(self, scorer: PropertyScorer, label_columns: list[str], *,
                 label_mean=None, label_std=None, key: str = "model.scorer"):
        super().__init__()
        self.scorer = scorer
        self.labels = list(label_columns)
        device = scorer.label_mean.device  # every buffer where the scorer is (a CUDA scorer: index too)
        index = torch.tensor(scorer.indices(self.labels, key=key), dtype=torch.long)
        mean = torch.zeros(len(self.labels)) if label_mean is None else torch.as_tensor(label_mean).float().flatten()
        std = torch.ones(len(self.labels)) if label_std is None else torch.as_tensor(label_std).float().flatten()
        self.register_buffer("index", index.to(device), persistent=False)
        self.register_buffer("mean", mean.to(device), persistent=False)
        self.register_buffer("std", std.to(device), persistent=False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        raw = self.scorer(images).index_select(1, self.index)
        return (raw - self.mean) / self.std


def in_label_space(scorer: PropertyScorer, label_columns: list[str], *, label_mean=None, label_std=None,
                   key: str = "model.scorer") -> LabelSpaceScorer:
    """Wrap a scorer for a GAN run (frozen, eval mode): its output matches the generator's labels."""
    wrapped = LabelSpaceScorer(scorer, label_columns, label_mean=label_mean, label_std=label_std, key=key)
    wrapped.eval().requires_grad_(False)
    return wrapped


# --------------------------------------------------------------------------------------------
# Checkpoint: safetensors weights + JSON description in the header metadata
# --------------------------------------------------------------------------------------------


def save_scorer(scorer: PropertyScorer, path: str | Path, *, metrics: dict | None = None,
                extra: dict | None = None) -> Path:
    """Write the scorer atomically to ``path`` (a .safetensors file)."""
    meta = {"format": FORMAT, "version": FORMAT_VERSION, "config": scorer.config(),
            "metrics": metrics or {}, **(extra or {})}
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in scorer.state_dict().items()}
    path = Path(path)
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata={"ohlora": json.dumps(meta)})
    return path


def read_scorer_metadata(path: str | Path, *, key: str = "model.scorer") -> dict:
    """The JSON description in a scorer checkpoint's header (reads no weights)."""
    path = _scorer_file(path, key=key)
    try:
        with safe_open(str(path), framework="pt") as fh:
            header = fh.metadata() or {}
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(
            f"{key}: {path} is not a readable safetensors file ({exc})",
            hint="Point it at the scorer.safetensors written by a train.method: scorer run.",
        ) from exc
    try:
        meta = json.loads(header["ohlora"])
    except (KeyError, ValueError):
        meta = None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise CheckpointError(
            f"{key}: {path} is a safetensors file but not an ohlora scorer checkpoint",
            hint="Point it at the scorer.safetensors written by a train.method: scorer run.",
        )
    if meta.get("version", 0) > FORMAT_VERSION:
        raise CheckpointError(f"{key}: {path} was written by a newer ohlora (scorer format "
                              f"{meta.get('version')}); upgrade ohlora-cli to read it")
    return meta


def load_scorer(path: str | Path, device: str | torch.device = "cpu", *,
                key: str = "model.scorer") -> PropertyScorer:
    """Load a scorer checkpoint (a file, or a run folder holding scorer.safetensors); eval mode, frozen.
    The random streams are left as they were (the layers' initial weights are replaced anyway), so
    loading a scorer at any point of a run's setup does not change its training."""
    file = _scorer_file(path, key=key)
    meta = read_scorer_metadata(file, key=key)
    try:
        config = meta["config"]
        with torch.random.fork_rng(devices=[]):
            scorer = PropertyScorer(
                config["labels"], [Crop(**c) for c in config["crops"]], config["resolution"],
                channels=config["channels"], hidden=config["hidden"], dropout=config["dropout"],
            )
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"{key}: {file} has a malformed scorer description ({exc})") from exc
    try:
        tensors = load_file(str(file))
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise CheckpointError(f"{key}: {file}: cannot read the weights ({exc})",
                              hint="The file may be truncated; re-run the scorer training.") from exc
    missing, unexpected = _state_mismatch(scorer, tensors)
    if missing or unexpected:
        raise CheckpointError(
            f"{key}: {file} does not match its own description "
            f"(missing {', '.join(missing[:4]) or 'none'}; unexpected {', '.join(unexpected[:4]) or 'none'})",
            hint="The file was edited or is corrupt; re-run the scorer training.",
        )
    scorer.load_state_dict(tensors)
    scorer.metadata = meta
    return scorer.to(device).eval().requires_grad_(False)


def _state_mismatch(module: nn.Module, tensors: dict) -> tuple[list[str], list[str]]:
    expected = module.state_dict()
    missing = [k for k in expected if k not in tensors or tensors[k].shape != expected[k].shape]
    unexpected = [k for k in tensors if k not in expected]
    return missing, unexpected


def _scorer_file(path: str | Path, *, key: str) -> Path:
    path = Path(path).expanduser()
    if path.is_dir():
        path = path / FILENAME
    if not path.is_file():
        raise CheckpointError(
            f"{key}: {path}: no such file",
            hint="Train a scorer first (train.method: scorer) and point model.scorer at its "
                 f"output_dir or its {FILENAME}.",
        )
    return path


# --------------------------------------------------------------------------------------------
# Metrics
# --------------------------------------------------------------------------------------------


def regression_metrics(pred: torch.Tensor, target: torch.Tensor, labels: list[str],
                       prefix: str = "valid") -> dict[str, float]:
    """Per-label Pearson r and MAE (raw units) between predictions and targets, both (N, L)."""
    out: dict[str, float] = {}
    pred, target = pred.double(), target.double()
    for i, name in enumerate(labels):
        p = pred[:, i] - pred[:, i].mean()
        t = target[:, i] - target[:, i].mean()
        denom = float((p.square().sum() * t.square().sum()).sqrt())
        out[f"{prefix}/{name}/r"] = round(float((p * t).sum()) / denom, 4) if denom > 0 else 0.0
        out[f"{prefix}/{name}/mae"] = round(float((pred[:, i] - target[:, i]).abs().mean()), 4)
    return out


# --------------------------------------------------------------------------------------------
# train.method: scorer
# --------------------------------------------------------------------------------------------


def check_recipe(recipe) -> None:
    """The scorer keys of a GAN recipe, checked before any weights load (``--dry-run`` too):
    property-regression needs ``model.scorer``; ``model.scorer`` must be a scorer checkpoint that
    scores every ``data.label_columns``; ``train.scorer.crops`` must name label columns."""
    labels = list(recipe.data.label_columns)
    if recipe.train.method == "property-regression" and not recipe.model.scorer:
        raise RecipeError("model.scorer: train.method property-regression needs a property-score CNN",
                          hint="Train one first (train.method: scorer) and set model.scorer to its output_dir.")
    if recipe.model.scorer and recipe.train.method != "scorer":
        config = read_scorer_metadata(recipe.model.scorer)["config"]
        missing = [name for name in labels if name not in config["labels"]]
        if missing:
            raise CheckpointError(
                f"model.scorer: {_scorer_file(recipe.model.scorer, key='model.scorer')} does not score "
                f"{', '.join(missing)} (it scores {', '.join(config['labels'])})",
                hint="Train a scorer on the same data.label_columns (train.method: scorer).",
            )
    unknown = sorted(set(recipe.train.scorer.crops or {}) - set(labels))
    if unknown:
        raise RecipeError(
            f"train.scorer.crops: {', '.join(unknown)} {'is' if len(unknown) == 1 else 'are'} not among "
            f"data.label_columns ({', '.join(labels)})",
            hint="Name crops by label column, e.g. train.scorer.crops.eyes_score: {top: 0.4, bottom: 0.6}.",
        )


def build_scorer(recipe) -> PropertyScorer:
    """A fresh scorer for the recipe's label columns and ``train.scorer`` settings."""
    check_recipe(recipe)
    settings, labels = recipe.train.scorer, list(recipe.data.label_columns)
    return PropertyScorer(labels, resolve_crops(labels, settings.crops),
                          settings.resolution or recipe.model.resolution,
                          channels=settings.channels, hidden=settings.hidden, dropout=settings.dropout)


def scorer_loss(scorer: PropertyScorer, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """The scorer method's loss: MSE in standardised units (each label weighs alike) between the
    CNNs' outputs and ``labels`` (raw units, as in the CSV)."""
    target = (labels - scorer.label_mean) / scorer.label_std
    return F.mse_loss(scorer(images, standardized=True).float(), target.float())


def probe_scorer(recipe, device: str | torch.device = "meta") -> PropertyScorer | None:
    """For the doctor's dry-run probes: a scorer shaped like the run's, with untrained weights and
    no weights read (``train.method: scorer``: from the recipe; otherwise from the header of
    ``model.scorer``). None when the run has no scorer. Bad ``model.scorer`` -> CheckpointError."""
    if recipe.train.method == "scorer":
        return build_scorer(recipe).to(device)
    if not recipe.model.scorer:
        return None
    config = read_scorer_metadata(recipe.model.scorer)["config"]
    with torch.device(device):
        probe = PropertyScorer(config["labels"], [Crop(**c) for c in config["crops"]], config["resolution"],
                               channels=config["channels"], hidden=config["hidden"], dropout=config["dropout"])
    probe.indices(list(recipe.data.label_columns))  # every label column must be scored
    return probe.eval().requires_grad_(False)


def probe_loss(recipe, images: torch.Tensor, labels: torch.Tensor, *, G=None,
               z: torch.Tensor | None = None) -> torch.Tensor | None:
    """One pass of the scorer path exactly as the run computes it, on ``images.device`` (the meta
    device works), for the doctor's ``dtype-mismatch`` probe. ``images``: a real batch in [-1, 1];
    ``labels``: its label batch as the data pipeline delivers it.

    - ``train.method: scorer``: ``scorer_loss`` (the training step's loss).
    - ``property-regression``: ``property_loss(scorer, G(z, labels), labels)``; needs ``G``.
    - any other method with ``model.scorer``: the scores label control reads (no grad).
    Returns None when the run has no scorer path.
    """
    scorer = probe_scorer(recipe, images.device)
    if scorer is None:
        return None
    if recipe.train.method == "scorer":
        return scorer_loss(scorer, images, labels)
    score = in_label_space(scorer, list(recipe.data.label_columns))
    if recipe.train.method == "property-regression":
        if G is None:
            raise ValueError("probe_loss: property-regression needs the generator")
        z = z if z is not None else torch.randn(len(labels), G.z_dim, device=images.device)
        return property_loss(score, G(z, labels), labels, torch.ones(labels.shape[1], device=images.device))
    with torch.no_grad():
        return score(images)


def state_path(output_dir: str | Path) -> Path:
    """The resumable training state of a ``train.method: scorer`` run."""
    return Path(output_dir) / CHECKPOINTS / "scorer-state.safetensors"


def property_loss(score, images: torch.Tensor, labels: torch.Tensor, label_std: torch.Tensor) -> torch.Tensor:
    """Oh-LoRA v2's loss: MSE between the frozen scorer's reading of the images and the requested
    labels, in units of each label's spread (``label_std``), so every label weighs alike. The
    scorer sees the images clamped to [-1, 1], as they are saved and as label control sees them
    (no credit for pixels pushed out of range)."""
    return ((score(images.clamp(-1, 1)).float() - labels) / label_std).square().mean()
