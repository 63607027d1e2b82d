"""The ``kind: gan`` recipe model. Keys are the contract in DESIGN.md section 2."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from ..recipes import RecipeBase, Section


class GanData(Section):
    csv: str = Field(description="CSV with one row per image: an image path column and label columns")
    image_column: str = "img_path"
    label_columns: list[str] = Field(min_length=1)
    image_root: str | None = Field(None, description="folder that replaces the directory of absolute image paths")
    standardize_labels: bool = False
    synthetic: Literal["blobs"] | None = Field(None, description="build this synthetic dataset at data.csv if it is missing")
    synthetic_count: int = Field(2000, ge=16)


class GanModel(Section):
    resolution: int = Field(description="image size in pixels, a power of two from 8 to 1024")
    checkpoint: str | None = None
    z_dim: int = Field(512, ge=1)
    w_dim: int = Field(512, ge=1)
    label_dim: int = Field(16, ge=1, description="width of labels @ label_weight, concatenated to z")
    mapping_layers: int = Field(8, ge=1)
    mapping_lr_mul: float = Field(0.01, gt=0)
    fmaps_base: int = Field(16384, ge=1)
    fmaps_max: int = Field(512, ge=1)
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

    top: float = Field(0.0, ge=0, le=1)
    bottom: float = Field(1.0, gt=0, le=1)
    left: float = Field(0.0, ge=0, le=1)
    right: float = Field(1.0, gt=0, le=1)


class ScorerTrain(Section):
    """Settings of ``train.method: scorer`` (the property-score CNN)."""

    crops: dict[str, ScorerCrop] | None = Field(
        None, description="label column -> crop; default: Oh-LoRA's regions by label name, else whole image"
    )
    valid_fraction: float = Field(0.1, gt=0, lt=1)
    epochs: int = Field(30, ge=1)
    patience: int = Field(5, ge=1, description="early stopping: epochs without validation improvement")
    lr: float = Field(5e-5, gt=0)


class RegressionTrain(Section):
    """Settings of ``train.method: property-regression`` (Oh-LoRA v2)."""

    label_sampling: Literal["normal", "dataset"] = "normal"
    adversarial_weight: float = Field(0.0, ge=0, description="weight of the non-saturating G loss (needs D)")
    keep_weight: float = Field(0.0, ge=0, description="weight of MSE to the starting generator's images")


class LabelControlEval(Section):
    """Label-control evaluation with a scorer (both GAN methods)."""

    every_kimg: float = Field(0.0, ge=0, description="0 = only at the end")
    steps: int = Field(9, ge=3, description="points of each label sweep from -2 to +2")
    samples: int = Field(16, ge=1, description="fixed z per sweep point")


class GanTrain(Section):
    method: Literal["adversarial", "property-regression", "scorer"] = "adversarial"
    batch_size: int = Field(ge=1, description="global images per optimizer step, split across ranks")
    kimg: float = Field(10.0, gt=0, description="thousands of real images to show")
    device: Literal["auto", "cpu", "cuda"] = "auto"
    scorer: ScorerTrain = Field(default_factory=ScorerTrain)
    regression: RegressionTrain = Field(default_factory=RegressionTrain)
    label_control: LabelControlEval = Field(default_factory=LabelControlEval)


class GanRecipe(RecipeBase):
    kind: Literal["gan"]
    output_dir: str
    seed: int = 0
    data: GanData
    model: GanModel
    train: GanTrain
