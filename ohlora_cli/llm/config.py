"""The ``kind: llm`` recipe model. Keys are the contract in DESIGN.md section 2."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from ..recipes import RecipeBase, Section


class LlmModel(Section):
    path: str = Field(description="local Hugging Face model folder or hub id")
    backend: Literal["hf", "unsloth"] = "hf"
    trust_remote_code: bool = False


class LlmData(Section):
    path: str = Field(description="CSV or JSONL file")
    input_column: str = "input_data"
    output_column: str = "output_data"
    split_column: str | None = "data_type"


class LlmTrain(Section):
    batch_size: int = Field(ge=1, description="global examples per optimizer step")
    epochs: float = Field(3.0, gt=0)


class LlmRecipe(RecipeBase):
    kind: Literal["llm"]
    output_dir: str
    seed: int = 0
    model: LlmModel
    data: LlmData
    train: LlmTrain
