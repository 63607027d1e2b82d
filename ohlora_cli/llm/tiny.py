"""A tiny causal LM and its tokenizer, built locally (no download) for the demo and the tests.

The tokenizer is a byte-level BPE trained with ``tokenizers`` on the recipe's own dialogue rows,
so the demo's words and markers are a few tokens each. The model is randomly initialised;
LoRA then has to teach it everything, which makes "it learned" easy to see and to test.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

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


def ensure_tiny_model(path: str | Path, arch: str, rows: list[Row], cfg: LlmData, seed: int) -> bool:
    """Build the tiny model and tokenizer at ``path`` unless a model is already there. True if built."""
    path = Path(path)
    if (path / "config.json").is_file():
        return False
    tokenizer = build_tokenizer(rows, cfg)
    model = build_model(arch, tokenizer, cfg.max_length, seed)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    # Each process writes its own folder and renames it into place: under torchrun every rank
    # may get here at once; they build the same model (same seed), the first rename wins.
    tmp = path.with_name(f"{path.name}.partial-{os.getpid()}")
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    try:
        tmp.rename(path)
    except OSError:
        if not (path / "config.json").is_file():
            raise
        shutil.rmtree(tmp, ignore_errors=True)
        return False
    return True
