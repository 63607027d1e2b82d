"""The ``kind: llm`` recipe model. Its keys are listed in docs/recipes.md.

Import-light (pydantic only): ``ohlora --help`` and recipe validation never load torch.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from ..recipes import CpuThreads, RecipeBase, Section

OHLORA_TEMPLATE = "{input} (답변 시작) ### 답변: {output} (답변 종료)"


class LlmModel(Section):
    path: str = Field(
        description="local Hugging Face model folder (config.json + weights) or a hub id such as "
        "EleutherAI/polyglot-ko-1.3b (used from the local cache; downloaded only when the hub is reachable)"
    )
    backend: Literal["hf", "unsloth"] = Field(
        "hf", description="hf: transformers + peft + trl; unsloth: FastLanguageModel (run in its own process)"
    )
    trust_remote_code: bool = Field(False, description="allow the model folder's own Python code to run")
    tiny: Literal["gpt-neox", "llama"] | None = Field(
        None,
        description="build a tiny randomly initialised model of this architecture, with a byte-level BPE "
        "tokenizer trained on data.path, at model.path when no model is there: only inside output_dir, or into "
        "a folder an earlier tiny build made (demo and tests; no download)",
    )
    load_in_4bit: bool = Field(
        False, description="QLoRA: load the base weights in 4-bit through bitsandbytes (CUDA GPU only)"
    )


class LlmData(Section):
    path: str = Field(
        description="CSV or JSONL file, one example per row; 'package:NAME' reads a file shipped in ohlora_cli/data"
    )
    input_column: str = Field("input_data", description="column holding the user's message (the prompt)")
    output_column: str = Field("output_data", description="column holding the answer to learn (the completion)")
    split_column: str | None = Field(
        "data_type",
        description="column with 'train' / 'valid' per row; when the file has no such column, "
        "data.valid_fraction of the rows is held out instead",
    )
    valid_fraction: float = Field(
        0.1, ge=0, lt=1, description="share of rows held out for validation when there is no split column"
    )
    template: str = Field(
        OHLORA_TEMPLATE,
        description="prompt template with {input} and {output}; the text before {output} is the prompt, "
        "the rest the completion (Oh-LoRA's template by default)",
    )
    end_marker: str | None = Field(
        None,
        description="text that ends an answer: generation stops on it; default: the template's text after {output}",
    )
    chat_template: bool = Field(
        False, description="format examples with the tokenizer's chat template instead of data.template"
    )
    max_length: int = Field(
        512, ge=8, description="longest example in tokens (prompt + answer); longer rows are reported as errors"
    )

    @field_validator("template")
    @classmethod
    def _placeholders(cls, value: str) -> str:
        if value.count("{input}") != 1 or value.count("{output}") != 1:
            raise ValueError("must contain {input} and {output} exactly once each")
        if value.index("{input}") > value.index("{output}"):
            raise ValueError("{input} must come before {output}")
        return value

    @property
    def resolved_end_marker(self) -> str | None:
        if self.chat_template:
            return self.end_marker
        if self.end_marker is not None:
            return self.end_marker or None
        return self.template.split("{output}", 1)[1].strip() or None


class LlmLora(Section):
    r: int = Field(16, ge=1, description="LoRA rank")
    alpha: float = Field(32, gt=0, description="LoRA alpha (scale = alpha / r)")
    dropout: float = Field(0.05, ge=0, lt=1, description="dropout on the LoRA input")
    target_modules: list[str] | Literal["all-linear"] | None = Field(
        None,
        description="module names to adapt, or 'all-linear'; default per architecture: "
        "query_key_value for GPT-NeoX (Polyglot-Ko), all-linear otherwise",
    )


class LlmTrain(Section):
    batch_size: int = Field(ge=1, description="global examples per optimizer step, over all processes")
    max_device_batch: int | None = Field(
        None, ge=1, description="largest per-device batch; the rest of the global batch is gradient accumulation"
    )
    epochs: float = Field(3.0, gt=0, description="passes over the training rows")
    max_steps: int | None = Field(None, ge=1, description="stop after this many optimizer steps (overrides epochs)")
    learning_rate: float = Field(2e-4, gt=0, description="peak learning rate of the LoRA weights")
    lr_scheduler: Literal["linear", "cosine", "constant", "constant_with_warmup"] = Field(
        "linear", description="learning-rate schedule over the run (transformers' names)"
    )
    warmup_ratio: float = Field(0.0, ge=0, lt=1, description="share of the steps spent warming up")
    weight_decay: float = Field(0.0, ge=0, description="AdamW weight decay")
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="auto: a CUDA GPU when visible, else CPU")
    precision: Literal["auto", "fp32", "bf16", "fp16"] = Field(
        "auto", description="auto: bf16 on GPUs with native bf16, fp16 (with a loss scaler) on older GPUs, fp32 on CPU"
    )
    cpu_threads: CpuThreads = None
    gradient_checkpointing: bool = Field(False, description="recompute activations in backward to save memory")
    logging_steps: int = Field(10, ge=1, description="optimizer steps between lines of stats.jsonl")
    save_total_limit: int = Field(2, ge=1, description="checkpoints kept in output_dir/checkpoints")
    eval: bool = Field(True, description="evaluate the validation loss at the end of each epoch")
    report_to: list[Literal["tensorboard", "wandb"]] = Field(
        [], description="experiment trackers for the Trainer's logs (loss, learning rate, grad norm, eval loss): "
        "tensorboard (event files in output_dir/tb) and/or wandb (when installed; its files in output_dir/wandb)")


class LlmGenerate(Section):
    every_epoch: bool = Field(
        True, description="answer the validation prompts at the end of each epoch (output_dir/samples/)"
    )
    max_prompts: int | None = Field(None, ge=1, description="answer at most this many validation prompts")
    max_new_tokens: int = Field(64, ge=1, description="longest sample answer in tokens")
    show: int = Field(3, ge=0, description="answers printed before and after training, to this many training "
                      "prompts and this many validation prompts")


class LlmRecipe(RecipeBase):
    kind: Literal["llm"]
    output_dir: str = Field(description="folder of the run: recipe.yaml, run.json, stats.jsonl, checkpoints/, adapter/, "
                            "train.log; a new folder, an empty one or an earlier ohlora run's")
    seed: int = Field(0, description="seed of the data split, LoRA initialisation and training")
    model: LlmModel
    data: LlmData
    lora: LlmLora = Field(default_factory=LlmLora)
    train: LlmTrain
    generate: LlmGenerate = Field(default_factory=LlmGenerate)

    @model_validator(mode="after")
    def _combinations(self) -> LlmRecipe:
        if self.model.tiny and self.model.load_in_4bit:
            raise ValueError("model.load_in_4bit: a tiny built model cannot be loaded in 4-bit")
        return self
