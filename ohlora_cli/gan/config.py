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

    @field_validator("resolution")
    @classmethod
    def _power_of_two(cls, value: int) -> int:
        if value < 8 or value > 1024 or value & (value - 1):
            raise ValueError("must be a power of two from 8 to 1024")
        return value


class GanTrain(Section):
    method: Literal["adversarial", "property-regression", "scorer"] = "adversarial"
    batch_size: int = Field(ge=1, description="global images per optimizer step, split across ranks")
    kimg: float = Field(10.0, gt=0, description="thousands of real images to show")
    device: Literal["auto", "cpu", "cuda"] = "auto"


class GanRecipe(RecipeBase):
    kind: Literal["gan"]
    output_dir: str
    seed: int = 0
    data: GanData
    model: GanModel
    train: GanTrain
