"""A tiny causal LM and its tokenizer, built locally (no download) for the demo and the tests.

The tokenizer is a byte-level BPE trained with ``tokenizers`` on the recipe's own dialogue rows,
so the demo's words and markers are a few tokens each. The model is randomly initialised;
LoRA then has to teach it everything, which makes "it learned" easy to see and to test.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import RecipeError
from ..runtime import builds
from .config import LlmData
from .data import Row, example

EOS = "<|endoftext|>"
PAD = "<|pad|>"
# A minimal chat template, so data.chat_template can be tried on a tiny model too.
CHAT_TEMPLATE = (
    "{% for message in messages %}<|{{ message['role'] }}|>{{ message['content'] }}"
    "{% if message['role'] == 'assistant' %}" + EOS + "{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)
SIZES = {"hidden_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 256,
         "initializer_range": 0.1}  # wide enough that a frozen random head can still produce confident logits


def build_tokenizer(rows: list[Row], cfg: LlmData, vocab_size: int = 512):
    """Train a byte-level BPE on the rows' prompts and answers; returns a PreTrainedTokenizerFast."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    texts = []
    for row in rows:
        item = example(row, cfg) if not cfg.chat_template else {"prompt": row.input, "completion": row.output}
        texts.append(item["prompt"] + item["completion"])
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=[EOS, PAD, "<|user|>", "<|assistant|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False,
    )
    bpe.train_from_iterator(texts, trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token=EOS, bos_token=EOS, pad_token=PAD,
                                        unk_token=None)
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def tiny_config(arch: str, tokenizer, max_length: int):
    """The model config of a tiny GPT-NeoX or Llama causal LM sized for a CPU."""
    from transformers import GPTNeoXConfig, LlamaConfig

    ids = {"vocab_size": len(tokenizer), "eos_token_id": tokenizer.eos_token_id,
           "bos_token_id": tokenizer.bos_token_id, "pad_token_id": tokenizer.pad_token_id,
           "max_position_embeddings": max(max_length, 64)}
    if arch == "gpt-neox":
        return GPTNeoXConfig(**SIZES, **ids, tie_word_embeddings=False)
    return LlamaConfig(**SIZES, **ids, num_key_value_heads=SIZES["num_attention_heads"], tie_word_embeddings=False)


def build_model(arch: str, tokenizer, max_length: int, seed: int):
    """A randomly initialised tiny model (see tiny_config)."""
    import torch
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    return AutoModelForCausalLM.from_config(tiny_config(arch, tokenizer, max_length))


TINY = "model.tiny"


def _rule(folder: Path, arch: str) -> dict:
    return {"made_by": TINY, "key": "model.path", "what": f"a tiny random {arch} model", "same": {"arch": arch},
            "why": f"{folder} holds no model (no config.json), so ",
            "demo_hint": " (model.tiny builds the demo's random model: delete it when you fine-tune your own model)"}


def pending_build(cfg) -> bool:
    """Whether ``model.tiny`` will build a model at ``model.path``. Reads only.

    The rule: a folder that holds a model (config.json) is used as it is, never rebuilt. Otherwise
    the tiny model is built only inside ``output_dir`` (the demo keeps it in its run folder), or
    again into a folder an earlier tiny build marked. Any other model.path is taken as the user's
    own model that is not there: a RecipeError (exit 2), never a random model trained in its place.
    """
    if not cfg.model.tiny:
        return False
    folder = Path(cfg.model.path).expanduser()
    if (folder / "config.json").is_file():
        return False
    if not folder.exists() and not builds.inside(folder, cfg.output_dir):
        raise RecipeError(
            f"model.path: {folder}: no such folder. model.tiny builds its tiny random model only inside "
            f"output_dir ({cfg.output_dir}), so this model.path is taken as your model, and it is not there",
            hint="If model.path is mistyped, fix it (and delete model.tiny, which builds the demo's random model). "
                 f"To build the tiny model, put it inside output_dir: --set model.path={Path(cfg.output_dir) / 'tiny-model'}")
    builds.check_build_folder(folder, **_rule(folder, cfg.model.tiny))
    return True


def ensure_tiny_model(path: str | Path, arch: str, rows: list[Row], cfg: LlmData, seed: int) -> bool:
    """Build the tiny model and tokenizer at ``path`` unless a model is already there. True if this
    call built it. The folder must not exist yet, or hold an earlier tiny build (``runtime.builds``):
    it is built in a temporary folder beside it and renamed into place; under torchrun every rank
    may get here at once, they build the same model (same seed) and the first rename wins."""
    path = Path(path).expanduser()
    if (path / "config.json").is_file():
        return False
    tokenizer = build_tokenizer(rows, cfg)
    model = build_model(arch, tokenizer, cfg.max_length, seed)
    model.generation_config.pad_token_id = tokenizer.pad_token_id

    def write(folder: Path) -> None:
        model.save_pretrained(folder)
        tokenizer.save_pretrained(folder)

    return builds.build_folder(path, write, **_rule(path, arch))
