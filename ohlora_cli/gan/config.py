"""The ``kind: gan`` recipe model. Its keys are listed in docs/recipes.md."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from ..recipes import CpuThreads, RecipeBase, Section


class GanData(Section):
    csv: str = Field(description="CSV with one row per image: an image path column and label columns")
    image_column: str = Field("img_path", description="column of image paths, relative to the CSV's folder or absolute")
    label_columns: list[str] = Field(min_length=1, description="numeric label columns, in the order G and D see them")
    image_root: str | None = Field(None, description="folder that replaces the directory of absolute image paths")
    standardize_labels: bool = Field(
        True, description="z-score each label column (mean 0, std 1); the statistics are saved in the checkpoint. "
        "false trains on the CSV's raw values (gan-ohlora-v1, whose scores are z-scored already)"
    )
    synthetic: Literal["blobs"] | None = Field(
        None, description="build this synthetic dataset at data.csv if it is missing, into data.csv's folder: only "
        "when that folder does not exist yet or holds an earlier build of it (demo and tests)")
    synthetic_count: int = Field(2000, ge=16, description="images in the synthetic dataset")
    num_workers: int = Field(0, ge=0, description="DataLoader worker processes when images are read from disk")
    cache_mb: int = Field(
        4096, ge=0, description="hold the decoded images in memory when they fit in this many MiB (0 = never)"
    )


class GanModel(Section):
    resolution: int = Field(description="image size in pixels, a power of two from 8 to 1024")
    checkpoint: str | None = Field(
        None, description="start from this checkpoint: ours (.safetensors, or a run folder for its latest) or GenForce StyleGAN (.pth)"
    )
    z_dim: int = Field(512, ge=1, description="width of the latent z")
    w_dim: int = Field(512, ge=1, description="width of the intermediate latent w")
    label_dim: int = Field(16, ge=1, description="width of labels @ label_weight, concatenated to z")
    mapping_layers: int = Field(8, ge=1, description="dense layers of the mapping network")
    mapping_fmaps: int | None = Field(None, ge=1, description="hidden width of the mapping network (default: w_dim)")
    mapping_lr_mul: float = Field(0.01, gt=0, description="learning-rate multiplier of the mapping network")
    fmaps_base: int = Field(16384, ge=1, description="channels at resolution r are min(fmaps_base / r, fmaps_max)")
    fmaps_max: int = Field(512, ge=1, description="the most channels of any layer")
    mbstd_group: int = Field(4, ge=0, description="minibatch-stddev group size in D (0 or 1 = off)")
    label_projection: bool = Field(
        False,
        description=(
            "add a projection term labels . P h to D's logit so D can judge whether an image fits its labels "
            "(the Oh-LoRA concatenation alone adds a label-only term to the logit)"
        ),
    )
    scorer: str | None = Field(None, description="property-score CNN checkpoint (train.method: scorer output)")

    @field_validator("resolution")
    @classmethod
    def _power_of_two(cls, value: int) -> int:
        if value < 8 or value > 1024 or value & (value - 1):
            raise ValueError("must be a power of two from 8 to 1024")
        return value


# --- Scorer / property-regression / label-control sections (issue 5; owned by the scorer work) ---


class ScorerCrop(Section):
    """A region of the image, as fractions of its size, that one label's CNN reads."""

    top: float = Field(0.0, ge=0, lt=1, description="upper edge, fraction of the height from the top")
    bottom: float = Field(1.0, gt=0, le=1, description="lower edge, fraction of the height from the top")
    left: float = Field(0.0, ge=0, lt=1, description="left edge, fraction of the width")
    right: float = Field(1.0, gt=0, le=1, description="right edge, fraction of the width")

    @model_validator(mode="after")
    def _not_empty(self):
        if self.bottom <= self.top or self.right <= self.left:
            raise ValueError("an empty crop: needs top < bottom and left < right")
        return self


class ScorerTrain(Section):
    """Settings of ``train.method: scorer`` (the property-score CNN)."""

    crops: dict[str, ScorerCrop] | None = Field(
        None,
        description=(
            "label column -> crop {top, bottom, left, right} as fractions of the image; labels not listed get "
            "Oh-LoRA's region by name (eyes, mouth, pose regions; hair_color whole image; hair_length bottom "
            "half; background top half), any other name the whole image"
        ),
    )
    resolution: int | None = Field(
        None, ge=4, description="images are resized to this before cropping (default: model.resolution)"
    )
    channels: int = Field(32, ge=1, description="channels of each CNN's first conv block (doubling, up to 4x)")
    hidden: int = Field(256, ge=1, description="width of each CNN's hidden dense layer")
    dropout: float = Field(0.1, ge=0, lt=1, description="dropout before each CNN's output layer")
    valid_fraction: float = Field(0.1, gt=0, lt=1, description="share of the rows held out for validation")
    epochs: int = Field(30, ge=1, description="most epochs over the training rows")
    patience: int = Field(5, ge=1, description="early stopping: epochs without validation improvement")
    lr: float = Field(1e-3, gt=0, description="AdamW learning rate (Oh-LoRA used 5e-5 for its larger CNN)")
    weight_decay: float = Field(0.01, ge=0, description="AdamW weight decay")


class RegressionTrain(Section):
    """Settings of ``train.method: property-regression`` (Oh-LoRA v2): G trained through a frozen scorer."""

    label_sampling: Literal["normal", "dataset"] = Field(
        "normal",
        description="labels to request: normal = N(mean, std) of the dataset's labels per column, "
        "dataset = rows drawn from the dataset",
    )
    property_weight: float = Field(1.0, ge=0, description="weight of MSE(scorer(G(z, labels)), labels)")
    adversarial_weight: float = Field(
        0.0, ge=0, description="weight of the non-saturating G loss; > 0 also trains D as in adversarial"
    )
    keep_weight: float = Field(
        0.0, ge=0, description="weight of MSE between G's images and the starting generator's for the same z, labels"
    )


class LabelControlEval(Section):
    """Label-control evaluation with ``model.scorer`` (both GAN methods; skipped without a scorer)."""

    every_kimg: float = Field(0.0, ge=0, description="evaluate every this many kimg; 0 = only at the end")
    steps: int = Field(9, ge=3, description="points of each label sweep from -2 to +2")
    samples: int = Field(16, ge=1, description="fixed z per sweep point")


class GanTrain(Section):
    method: Literal["adversarial", "property-regression", "scorer"] = Field(
        "adversarial", description="adversarial (Oh-LoRA v1), property-regression (v2) or scorer (the property CNN)"
    )
    batch_size: int = Field(ge=1, description="global images per optimizer step, split across ranks")
    max_device_batch: int | None = Field(
        None, ge=1, description="most images per device and pass; more is reached by gradient accumulation"
    )
    kimg: float = Field(10.0, gt=0, description="thousands of real images to show")
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="auto: cuda when visible, else cpu")
    cpu_threads: CpuThreads = None
    precision: Literal["auto", "fp32", "bf16", "fp16"] = Field(
        "auto", description="auto: bf16 on GPUs that have it, else fp16 with a loss scaler; always fp32 on CPU"
    )
    optimizer: Literal["adam", "adamw"] = Field("adamw", description="optimizer of both networks")
    g_lr: float = Field(1e-4, gt=0, description="generator learning rate")
    d_lr: float = Field(1e-4, gt=0, description="discriminator learning rate")
    betas: tuple[float, float] = Field((0.0, 0.99), description="Adam betas (beta1, beta2)")
    weight_decay: float = Field(0.01, ge=0, description="AdamW weight decay (ignored by adam)")
    lr_scheduler: Literal["constant", "cosine"] = Field(
        "cosine", description="learning rate over the run (train.lr_schedule, its old name, is still read)")
    r1_gamma: float = Field(10.0, ge=0, description="R1 penalty weight on real images (0 = off)")
    r1_interval: int = Field(1, ge=1, description="apply R1 every N steps, scaled by N (lazy regularisation)")
    style_mixing_prob: float = Field(0.9, ge=0, le=1, description="probability of mixing two w at a random layer")
    w_avg_beta: float = Field(0.995, ge=0, le=1, description="decay of the tracked w average (GenForce w_moving_decay)")
    ema_kimg: float = Field(10.0, ge=0, description="half-life of the G_ema weights in kimg (0 = copy G)")
    ema_rampup: float | None = Field(None, ge=0, description="ramp the EMA half-life up to ema_kimg over the first kimg x ema_rampup")
    g_trainable: list[str] = Field(
        ["mapping"], description="module-name prefixes of G that train ('*' = all); Oh-LoRA v1: the mapping network"
    )
    d_trainable: list[str] | None = Field(
        None, description="module-name prefixes of D that train ('*' = all); default: D's last 3 layers, as Oh-LoRA v1"
    )
    extra_g_steps: int = Field(0, ge=0, description="up to this many extra G steps while g_loss >= extra_g_ratio x d_loss")
    extra_g_ratio: float = Field(2.0, gt=0, description="the ratio that triggers an extra G step")
    max_nonfinite_steps: int = Field(
        10, ge=1, description="stop the run after this many optimizer steps in a row with NaN/Inf gradients "
        "(fp16: overflows while the loss scaler still halves from its start, at scale >= 1, do not count)"
    )
    log_kimg: float = Field(1.0, gt=0, description="write a stats.jsonl line every this many kimg")
    snapshot_kimg: float = Field(5.0, gt=0, description="save a PNG grid every this many kimg")
    checkpoint_kimg: float = Field(5.0, gt=0, description="save a checkpoint every this many kimg")
    keep_checkpoints: int = Field(3, ge=0, description="keep the newest N checkpoints (0 = keep all)")
    grid_steps: int = Field(7, ge=2, description="columns of the grid: each label from -2 to +2 sd around its mean in the data")
    grid_rows_per_label: int = Field(2, ge=1, description="fixed z rows per swept label in the grid")
    report_to: list[Literal["tensorboard", "wandb"]] = Field(
        [], description="experiment trackers: tensorboard (event files in output_dir/tb: the stats.jsonl figures "
        "by optimizer step, the grids and the label-control plots) and/or wandb (when installed; its files in "
        "output_dir/wandb)")
    scorer: ScorerTrain = Field(default_factory=ScorerTrain)
    regression: RegressionTrain = Field(default_factory=RegressionTrain)
    label_control: LabelControlEval = Field(default_factory=LabelControlEval)


class GanRecipe(RecipeBase):
    kind: Literal["gan"]
    output_dir: str = Field(description="folder of the run: recipe.yaml, stats.jsonl, grids/, checkpoints/, doctor.json, "
                            "train.log; a new folder, an empty one or an earlier ohlora run's")
    seed: int = Field(0, description="seed of every random stream (data order, z, noise)")
    data: GanData
    model: GanModel
    train: GanTrain
