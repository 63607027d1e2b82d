"""Where the base model comes from, and how each backend loads it and adds LoRA.

``hf``: transformers + peft. ``unsloth``: FastLanguageModel; only called inside the unsloth
worker process, which imported unsloth before anything else (it patches transformers, trl and
peft on import). Both return a PEFT model and its tokenizer; trl's SFTTrainer does the rest.

torch, transformers, peft and unsloth are imported inside the functions: importing this module
is light.
"""

from __future__ import annotations

import re
from pathlib import Path

from ..errors import CheckpointError, RecipeError
from .config import LlmRecipe

# LoRA targets by model_type when the recipe leaves lora.target_modules empty.
DEFAULT_TARGETS = {"gpt_neox": ["query_key_value"]}


HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def _is_hub_id(text: str) -> bool:
    return bool(HUB_ID.match(text))


def resolve_model(recipe: LlmRecipe, *, will_build: bool = False) -> str:
    """The local folder or hub id to load. Raises CheckpointError when it is neither here nor reachable."""
    path = recipe.model.path
    folder = Path(path).expanduser()
    if folder.is_dir():
        if not (folder / "config.json").is_file() and not will_build:
            raise CheckpointError(
                f"model.path: {folder} has no config.json, so it is not a Hugging Face model folder",
                hint="Point model.path at the folder that save_pretrained / `hf download` wrote.",
            )
        return str(folder)
    if will_build:
        return str(folder)
    download = (f"Download it once with `hf download {path} --local-dir ./{path.split('/')[-1]}` "
                f"on a machine with internet, then --set model.path=./{path.split('/')[-1]}.")
    if not _is_hub_id(path):
        raise CheckpointError(f"model.path: {folder}: no such folder",
                              hint="Set model.path to a local model folder, or to a hub id such as "
                                   "EleutherAI/polyglot-ko-1.3b.")
    from huggingface_hub import constants, try_to_load_from_cache

    if isinstance(try_to_load_from_cache(path, "config.json"), str):
        return path  # in the local Hugging Face cache
    if constants.HF_HUB_OFFLINE:
        raise CheckpointError(f"model.path: '{path}' is not a local folder and not in the Hugging Face cache, "
                              "and the hub is offline (HF_HUB_OFFLINE)", hint=download)
    from huggingface_hub import HfApi

    try:
        HfApi().model_info(path, timeout=10)
    except Exception as exc:  # offline, DNS, gated, not found: the answer to all is the same
        reason = type(exc).__name__
        raise CheckpointError(f"model.path: '{path}' is not a local folder and the hub cannot serve it ({reason})",
                              hint=download) from None
    return path


def load_tokenizer(source: str, recipe: LlmRecipe):
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(source, trust_remote_code=recipe.model.trust_remote_code)
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"model.path: {source}: cannot load its tokenizer ({exc})".splitlines()[0],
                              hint="The folder needs the tokenizer files that save_pretrained writes.") from None
    return fix_pad_token(tokenizer)


def fix_pad_token(tokenizer):
    """Batches need a pad token; models like GPT-NeoX ship none, so EOS pads (masked out of the loss)."""
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def target_modules(recipe: LlmRecipe, model_type: str):
    """lora.target_modules, or the architecture's default."""
    if recipe.lora.target_modules is not None:
        return recipe.lora.target_modules
    return DEFAULT_TARGETS.get(model_type, "all-linear")


def linear_module_names(model) -> list[str]:
    """Leaf names of the Linear layers, output head excluded (what 'all-linear' means, spelled out)."""
    import torch

    head = model.get_output_embeddings()
    names = set()
    for name, module in model.named_modules():
        if module is head or not name:
            continue
        if isinstance(module, torch.nn.Linear) or type(module).__name__ in ("Linear4bit", "Linear8bitLt"):
            names.add(name.rsplit(".", 1)[-1])
    return sorted(names)


def check_targets(model, targets) -> None:
    if targets == "all-linear":
        return
    leaves = {name.rsplit(".", 1)[-1] for name, _ in model.named_modules()}
    missing = [t for t in targets if t not in leaves]
    if missing:
        raise RecipeError(f"lora.target_modules: {', '.join(missing)} not found in this model",
                          hint=f"Its linear layers are: {', '.join(linear_module_names(model))}.")


def load_hf(recipe: LlmRecipe, source: str, precision: str, device) -> tuple:
    """transformers + peft: base model in the training precision (or 4-bit), LoRA on top."""
    from peft import prepare_model_for_kbit_training
    from transformers import AutoModelForCausalLM

    from ..runtime.devices import weights_dtype

    dtype = weights_dtype(precision)
    kwargs = {"dtype": dtype, "trust_remote_code": recipe.model.trust_remote_code}
    if recipe.model.load_in_4bit:
        from transformers import BitsAndBytesConfig

        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=dtype,
        )
        kwargs["device_map"] = {"": device.index or 0}
    tokenizer = load_tokenizer(source, recipe)
    model = AutoModelForCausalLM.from_pretrained(source, **kwargs)
    if recipe.model.load_in_4bit:
        model = prepare_model_for_kbit_training(
            model, use_gradient_checkpointing=recipe.train.gradient_checkpointing)
    return add_lora(model, recipe), tokenizer


def add_lora(model, recipe: LlmRecipe):
    """peft LoRA on the recipe's target modules (or the architecture's default)."""
    from peft import LoraConfig, get_peft_model

    targets = target_modules(recipe, model.config.model_type)
    check_targets(model, targets)
    lora = LoraConfig(r=recipe.lora.r, lora_alpha=recipe.lora.alpha, lora_dropout=recipe.lora.dropout,
                      target_modules=targets, bias="none", task_type="CAUSAL_LM")
    return get_peft_model(model, lora)


def load_unsloth(recipe: LlmRecipe, source: str, precision: str, device) -> tuple:
    """unsloth's FastLanguageModel; the caller's process imported unsloth first."""
    from unsloth import FastLanguageModel

    from ..runtime.devices import weights_dtype

    dtype = weights_dtype(precision)
    model, tokenizer = FastLanguageModel.from_pretrained(
        model_name=source, max_seq_length=recipe.data.max_length, dtype=dtype,
        load_in_4bit=recipe.model.load_in_4bit, trust_remote_code=recipe.model.trust_remote_code,
        use_gradient_checkpointing=recipe.train.gradient_checkpointing,
    )
    targets = target_modules(recipe, model.config.model_type)
    if targets == "all-linear":
        targets = linear_module_names(model)
    check_targets(model, targets)
    model = FastLanguageModel.get_peft_model(
        model, r=recipe.lora.r, lora_alpha=recipe.lora.alpha, lora_dropout=recipe.lora.dropout,
        target_modules=targets, bias="none", random_state=recipe.seed,
        use_gradient_checkpointing="unsloth" if recipe.train.gradient_checkpointing else False,
    )
    return model, fix_pad_token(tokenizer)
