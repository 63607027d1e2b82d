"""Dry-run probes of the ``train-llm`` pipeline (doctor check ids: recipe-data, dtype-mismatch, grad-inference).

- ``data``: every row read and checked (empty / non-text / over-long rows by number), the split,
  the model source, the tokenizer and its pad token. Bad input raises our DataError, which the
  registry turns into a FAIL row.
- ``dtype_mismatch``: the model is built from its config on the meta device (no weights, no
  memory), in the dtype the run would load it in, LoRA added as the backend adds it, and one real
  tokenized batch goes through forward and backward. Meta tensors carry dtypes, so a mismatch
  raises here as it would on the GPU, in milliseconds.
- ``grad_inference``: a shrunken copy of the architecture (random weights, real tokenizer) answers
  two validation prompts through the run's own generation function, twice; autograd's
  saved-tensor hook must see nothing, and the model must come back in the mode it was in.

Import-light: the LLM engine's modules, torch and transformers are imported inside the probes,
when they run.
"""

from __future__ import annotations

from ..registry import Finding, Status

CACHE_KEY = "llm:checked-data"


def _checked(recipe, ctx):
    """(train rows, valid rows, tokenizer, model source), computed once per target."""
    if CACHE_KEY not in ctx.cache:
        from ...llm.train import check_data

        ctx.cache[CACHE_KEY] = check_data(recipe)
    return ctx.cache[CACHE_KEY]


def _config(recipe, tokenizer, source: str):
    from ...llm.tiny import pending_build

    if pending_build(recipe):  # not built yet (the probes build nothing): its config, in memory
        from ...llm.tiny import tiny_config

        return tiny_config(recipe.model.tiny, tokenizer, recipe.data.max_length)
    from transformers import AutoConfig

    return AutoConfig.from_pretrained(source, trust_remote_code=recipe.model.trust_remote_code)


def _batch(recipe, tokenizer, rows, size: int):
    """One batch of real examples with answer-only labels, padded by trl's own collator (the one
    SFTTrainer uses): prompt tokens and padding are -100 in the labels."""
    from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

    from ...llm import data as llm_data

    examples = []
    for row in rows[:size]:
        prompt, completion = llm_data.prompt_and_completion(row.input, row.output, recipe.data)
        if recipe.data.chat_template:
            prompt = llm_data.generation_prompt(row.input, recipe.data, tokenizer)
            completion = row.output
        prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        full = tokenizer(prompt + completion, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
        full = full[: recipe.data.max_length]
        examples.append({"input_ids": full, "labels": [-100] * len(prompt_ids) + full[len(prompt_ids):]})
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    return DataCollatorForLanguageModeling(pad_token_id=pad)(examples)


def data(recipe, ctx) -> list[Finding]:
    from ...llm.tiny import pending_build

    train_rows, valid_rows, tokenizer, source = _checked(recipe, ctx)
    model = f"a tiny {recipe.model.tiny} to be built at {source}" if pending_build(recipe) else source
    findings = [Finding("recipe-data", Status.PASS,
                        f"{len(train_rows)} train / {len(valid_rows)} valid rows, every row within "
                        f"data.max_length {recipe.data.max_length} tokens; model: {model}",
                        where="data.path")]
    if len(train_rows) < recipe.train.batch_size:
        findings.append(Finding(
            "recipe-data", Status.FAIL, f"{len(train_rows)} training row{'s' if len(train_rows) != 1 else ''}, "
            f"fewer than train.batch_size {recipe.train.batch_size}: not one batch can be filled, so no step "
            f"would see {recipe.train.batch_size} examples", where="train.batch_size", bad_input=True,
            hint=f"Lower train.batch_size to at most {len(train_rows)}, or add rows."))
    if not valid_rows:
        findings.append(Finding("recipe-data", Status.WARN, "no validation rows: no evaluation and no sample "
                                "answers during training", where="data.split_column",
                                hint="Mark some rows 'valid', or drop the split column to hold out "
                                     "data.valid_fraction."))
    if tokenizer.eos_token is None:
        findings.append(Finding("recipe-data", Status.FAIL, "the tokenizer has no EOS token, so answers cannot end",
                                where="model.path", bad_input=True,
                                hint="Use a tokenizer with an eos_token (set it and save_pretrained)."))
    elif tokenizer.pad_token == tokenizer.eos_token:
        findings.append(Finding("recipe-data", Status.PASS, f"pad token is the EOS token {tokenizer.eos_token!r} "
                                "(padding is masked out of the loss; answers still learn to end with EOS)",
                                where="model.path"))
    marker = recipe.data.resolved_end_marker
    if not recipe.data.chat_template and not marker:
        findings.append(Finding("recipe-data", Status.WARN, "no end marker: generation stops only on EOS, which "
                                "fine-tuned models often fail to emit", where="data.end_marker",
                                hint="End data.template with a marker such as '(답변 종료)', or set data.end_marker."))
    return findings


def dtype_mismatch(recipe, ctx) -> list[Finding]:
    import torch
    from transformers import AutoModelForCausalLM

    from ...llm.backends import add_lora
    from ...runtime import dist

    train_rows, _, tokenizer, source = _checked(recipe, ctx)
    config = _config(recipe, tokenizer, source)
    from ...errors import OhloraError
    from ...runtime.devices import precision_for, weights_dtype
    from ..env import planned_capability

    try:  # the precision the run will plan, for the card the environment probe saw
        precision = precision_for(recipe.train.precision, planned_capability(ctx))
    except OhloraError:  # the precision check reports it; probe the float32 path meanwhile
        precision = "fp32"
    dtype = weights_dtype(precision)
    world = ctx.gpus if ctx.gpus and ctx.gpus > 1 else 1
    per_device, _ = dist.split_batch(recipe.train.batch_size, world, max_per_device=recipe.train.max_device_batch)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config, dtype=dtype,
                                                 trust_remote_code=recipe.model.trust_remote_code)
    model = add_lora(model, recipe)
    # No attention mask: transformers inspects its values (.item()), which meta tensors do not have;
    # padding is right-aligned and masked out of the labels, so the causal mask alone is exact here.
    batch = {k: v.to("meta") for k, v in _batch(recipe, tokenizer, train_rows, per_device).items()
             if k != "attention_mask"}
    shape = "x".join(map(str, batch["input_ids"].shape))
    try:
        loss = model(**batch).loss
        loss.backward()
    except RuntimeError as exc:
        return [Finding("dtype-mismatch", Status.FAIL,
                        f"one {shape} batch through {config.model_type} + LoRA in {dtype} failed: "
                        f"{str(exc).splitlines()[0]}", where="train.precision",
                                        hint="Check train.precision and model.load_in_4bit against the model's own dtype.")]
    grads = {str(p.grad.dtype).replace("torch.", "") for p in model.parameters() if p.requires_grad and p.grad is not None}
    if not grads:
        return [Finding("dtype-mismatch", Status.FAIL, "the backward pass reached no LoRA weight",
                        where="lora.target_modules", bad_input=True,
                        hint="Target modules that the loss depends on (e.g. all-linear).")]
    return [Finding("dtype-mismatch", Status.PASS,
                    f"forward + backward of a real {shape} batch on the meta device: {config.model_type} weights "
                    f"{str(dtype).replace('torch.', '')}, loss {str(loss.dtype).replace('torch.', '')}, "
                    f"LoRA grads {', '.join(sorted(grads))}", where="model.path")]


SHRINK = {"num_hidden_layers": 1, "hidden_size": 64, "intermediate_size": 128, "num_attention_heads": 4,
          "num_key_value_heads": 4, "head_dim": 16, "n_layer": 1, "n_embd": 64, "n_head": 4}


def grad_inference(recipe, ctx) -> list[Finding]:
    import torch
    from transformers import AutoModelForCausalLM

    from ...llm import data as llm_data
    from ...llm.backends import add_lora
    from ...llm.generate import generate_answers

    train_rows, valid_rows, tokenizer, source = _checked(recipe, ctx)
    config = _config(recipe, tokenizer, source)
    for key, value in SHRINK.items():
        if hasattr(config, key) and getattr(config, key) is not None:
            setattr(config, key, value)
    try:
        model = AutoModelForCausalLM.from_config(config, trust_remote_code=recipe.model.trust_remote_code)
    except Exception as exc:  # an architecture whose sizes do not shrink this way
        return [Finding("grad-inference", Status.SKIP, f"could not build a shrunken {config.model_type} to probe "
                        f"generation ({type(exc).__name__}: {exc})", where="model.path")]
    model = add_lora(model, recipe)
    model.train()
    rows = (valid_rows or train_rows)[:2]
    prompts = [llm_data.generation_prompt(r.input, recipe.data, tokenizer) for r in rows]
    saved = []

    def pack(tensor):
        saved.append(tuple(tensor.shape))
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        for _ in range(2):
            generate_answers(model, tokenizer, prompts, end_marker=recipe.data.resolved_end_marker,
                             max_new_tokens=4)
    if saved:
        return [Finding("grad-inference", Status.FAIL, f"the validation-generation path saved {len(saved)} tensors "
                        "for backward: it builds an autograd graph on every call", where="ohlora_cli.llm.generate",
                        hint="Generate under torch.no_grad() and keep only detached results.")]
    if not model.training:
        return [Finding("grad-inference", Status.FAIL, "generation left the model in eval mode during training",
                        where="ohlora_cli.llm.generate", hint="Restore model.train() after generating.")]
    return [Finding("grad-inference", Status.PASS,
                    f"validation generation ran twice on {len(prompts)} prompt(s) with a shrunken "
                    f"{config.model_type}: no tensor saved for backward, train mode restored",
                    where="ohlora_cli.llm.generate")]
