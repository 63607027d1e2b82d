"""Talk to a trained run: what ``ohlora chat`` runs.

**Loading.** A run folder (an ``output_dir`` of ``ohlora train-llm``) holds ``recipe.yaml`` (the
template, the end marker, ``model.path``), ``adapter/`` (peft LoRA weights and the tokenizer, as
safetensors) and, after ``--merge``, ``merged/`` (full weights). ``load`` reads the base model
from ``model.path`` (or ``--base``) and puts the adapter on it with peft, or reads ``merged/``
alone; nothing is unpickled. A ``model.path`` inside the run's ``output_dir`` (the demo's tiny
model) is found in the run folder wherever it was moved.

**Turns.** ``Conversation`` renders the history as the run trained: with ``data.template`` every
earlier turn is a training example (the template with its answer, end marker included), one per
line, then the new prompt exactly as training prompts end; with ``data.chat_template`` the
tokenizer's chat template renders the whole conversation. The first turn's prompt is therefore the
training prompt itself, and a greedy answer is the answer the run's own samples show. The oldest
turns are dropped when the conversation outgrows the model's context.

**Answers** (``answer``): greedy (``temperature 0``) or sampled, stopped on the run's end marker
(transformers' ``stop_strings``) or EOS, under ``no_grad`` in eval mode. ``on_text`` receives the
answer as it is generated: text is held back while it could still be the start of the end marker
or an incomplete UTF-8 character, so what was streamed is exactly the answer returned.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import BadInputError, CheckpointError
from ..runtime.run import RECIPE
from . import data as llm_data
from .config import LlmRecipe

WEIGHTS = ("auto", "adapter", "merged")


# ----------------------------------------------------------------------------------------------
# the run folder


def run_recipe(run: str | Path) -> tuple[Path, LlmRecipe, str | None]:
    """(run folder, its recipe, the weights its path names: ``adapter`` / ``merged`` / None).
    ``run`` may also be the run's ``adapter/`` or ``merged/`` folder."""
    from .. import recipes

    path = Path(run).expanduser()
    if not path.exists():
        raise BadInputError(f"{path}: no such folder", hint="Name the output_dir of an `ohlora train-llm` run.")
    named = None
    if path.name in ("adapter", "merged") and (path.parent / RECIPE).is_file():
        path, named = path.parent, path.name
    recipe_file = path / RECIPE
    if not path.is_dir() or not recipe_file.is_file():
        raise BadInputError(f"{path}: not an ohlora run folder (no recipe.yaml in it)",
                            hint="Name the output_dir of an `ohlora train-llm` run.")
    kind = recipes.read_yaml(recipe_file).get("kind")
    if kind != "llm":
        raise BadInputError(f"{path}: a run of kind {kind!r}; chat talks to kind 'llm' runs",
                            hint=f"For a GAN run: ohlora generate {path} -o samples.png" if kind == "gan" else None)
    return path, recipes.load(str(recipe_file), expect_kind="llm"), named


def weights_folder(run_dir: Path, weights: str) -> tuple[str, Path]:
    """('adapter' | 'merged', its folder): ``auto`` takes ``merged/`` when the run has one."""
    merged, adapter = run_dir / "merged", run_dir / "adapter"
    if weights in ("auto", "merged") and (merged / "config.json").is_file():
        return "merged", merged
    if weights == "merged":
        raise BadInputError(f"{run_dir}: no merged/ weights (train with --merge to write them)",
                            hint="Leave out --weights merged to use the adapter on the base model.")
    if not (adapter / "adapter_config.json").is_file():
        raise BadInputError(
            f"{run_dir}: no adapter/ (adapter_config.json): the run has not finished training",
            hint="Finish it first (ohlora train-llm RECIPE --resume) or name a run that did.")
    return "adapter", adapter


def base_model(cfg: LlmRecipe, run_dir: Path, base: str | None) -> str:
    """The base model to put the adapter on: ``--base``, else the recipe's ``model.path`` (a path
    inside the run's output_dir is looked up in ``run_dir``, so a moved run folder still works)."""
    from .backends import resolve_model

    where = "--base" if base else f"{run_dir / 'recipe.yaml'}: model.path"
    path = base or cfg.model.path
    candidate = Path(path).expanduser()
    if not base and not candidate.exists():
        try:
            inside = candidate.relative_to(Path(cfg.output_dir).expanduser())
        except ValueError:
            inside = None
        if inside is not None and (run_dir / inside).is_dir():
            path = str(run_dir / inside)
    probe = cfg.model_copy(deep=True)
    probe.model.path = path
    try:
        return resolve_model(probe)
    except CheckpointError as exc:
        message = str(exc).removeprefix("model.path: ")
        raise CheckpointError(f"{where}: the base model {message}",
                              hint=(exc.hint or "") + " --base PATH names the base model to use; or chat with a run "
                              "trained with --merge, whose merged/ needs no base.") from None


# ----------------------------------------------------------------------------------------------
# the model


@dataclass
class ChatModel:
    model: object
    tokenizer: object
    cfg: LlmRecipe
    end_marker: str | None
    device: object
    weights: str  # 'adapter' or 'merged'
    description: str  # what was loaded, in words

    @property
    def context(self) -> int | None:
        """The most tokens the model attends to (prompt + answer), when its config says."""
        config = getattr(self.model, "config", None)
        return getattr(config, "max_position_embeddings", None)


def load(run: str | Path, *, backend: str | None = None, weights: str = "auto", base: str | None = None,
         device: str = "auto") -> ChatModel:
    """Load a run for answering (see the module docstring). ``backend``: hf or unsloth (default: the
    run's); unsloth must have been imported before transformers in this process."""
    run_dir, cfg, named = run_recipe(run)
    which, folder = weights_folder(run_dir, named or weights)
    source = base_model(cfg, run_dir, base) if which == "adapter" else str(folder)
    import torch

    from ..runtime.devices import choose_precision, resolve_device, weights_dtype

    if device == "cuda" and not torch.cuda.is_available():
        raise BadInputError("--device cuda: no CUDA GPU is visible", hint="Use --device auto (or cpu).")
    where = resolve_device(device, key="--device")
    precision = choose_precision("auto", where)
    dtype = weights_dtype(precision)
    backend = backend or cfg.model.backend
    tokenizer = _tokenizer(folder, cfg)
    four_bit = cfg.model.load_in_4bit and where.type == "cuda" and which == "adapter"
    if backend == "unsloth":
        model = _load_unsloth(cfg, source, folder if which == "adapter" else None, dtype, four_bit)
    else:
        model = _load_hf(cfg, source, folder if which == "adapter" else None, dtype, where, four_bit)
    model.eval()
    what = f"{'base + adapter' if which == 'adapter' else 'merged weights'} ({backend}, {where.type}, " \
           f"{'4-bit' if four_bit else precision})"
    return ChatModel(model=model, tokenizer=tokenizer, cfg=cfg, end_marker=cfg.data.resolved_end_marker,
                     device=where, weights=which, description=what)


def _tokenizer(folder: Path, cfg: LlmRecipe):
    from transformers import AutoTokenizer

    from .backends import fix_pad_token

    try:
        tokenizer = AutoTokenizer.from_pretrained(str(folder), trust_remote_code=cfg.model.trust_remote_code)
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"{folder}: cannot load the tokenizer saved with the run ({exc})".splitlines()[0],
                              hint="The run's adapter/ (or merged/) folder lacks its tokenizer files.") from None
    return fix_pad_token(tokenizer)


def _load_hf(cfg: LlmRecipe, source: str, adapter: Path | None, dtype, device, four_bit: bool):
    from transformers import AutoModelForCausalLM

    kwargs = {"dtype": dtype, "trust_remote_code": cfg.model.trust_remote_code}
    if four_bit:
        from transformers import BitsAndBytesConfig

        kwargs["quantization_config"] = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
                                                           bnb_4bit_use_double_quant=True, bnb_4bit_compute_dtype=dtype)
        kwargs["device_map"] = {"": device.index or 0}
    try:
        model = AutoModelForCausalLM.from_pretrained(source, **kwargs)
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"{source}: cannot load the model ({exc})".splitlines()[0]) from None
    if not four_bit:
        model = model.to(device)
    if adapter is None:
        return model
    from peft import PeftModel

    try:
        return PeftModel.from_pretrained(model, str(adapter))
    except (OSError, ValueError, RuntimeError) as exc:
        raise CheckpointError(f"{adapter}: the adapter does not fit the base model {source} "
                              f"({exc})".splitlines()[0], hint="Use the base model the run trained on (--base).") from None


def _load_unsloth(cfg: LlmRecipe, source: str, adapter: Path | None, dtype, four_bit: bool):
    from unsloth import FastLanguageModel

    model, _ = FastLanguageModel.from_pretrained(model_name=source, max_seq_length=cfg.data.max_length, dtype=dtype,
                                                 load_in_4bit=four_bit, trust_remote_code=cfg.model.trust_remote_code)
    if adapter is not None:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, str(adapter))
    FastLanguageModel.for_inference(model)
    return model


# ----------------------------------------------------------------------------------------------
# the conversation


@dataclass
class Conversation:
    """The turns so far, rendered per the run's template (see the module docstring)."""

    chat: ChatModel
    max_new_tokens: int
    turns: list[tuple[str, str]] = field(default_factory=list)
    dropped: int = 0  # earliest turns left out of the last prompt to fit the context

    def reset(self) -> None:
        self.turns.clear()

    def add(self, user: str, answer: str) -> None:
        self.turns.append((user, answer))

    def render(self, user: str, turns: list[tuple[str, str]]) -> str:
        cfg, tokenizer = self.chat.cfg.data, self.chat.tokenizer
        if cfg.chat_template:
            messages = [m for q, a in turns for m in ({"role": "user", "content": q},
                                                     {"role": "assistant", "content": a})]
            return tokenizer.apply_chat_template(messages + [{"role": "user", "content": user}], tokenize=False,
                                                 add_generation_prompt=True)
        past = ["".join(llm_data.prompt_and_completion(q, a, cfg)) for q, a in turns]
        return "\n".join([*past, llm_data.generation_prompt(user, cfg, tokenizer)])

    def prompt(self, user: str) -> str:
        """The text to answer ``user`` with, the oldest turns dropped while it does not fit."""
        limit = self.chat.context
        turns = list(self.turns)
        while True:
            text = self.render(user, turns)
            if limit is None or self.tokens(text) + self.max_new_tokens <= limit:
                break
            if not turns:
                raise BadInputError(f"the message is {self.tokens(text)} tokens with the template; with "
                                    f"--max-new-tokens {self.max_new_tokens} it does not fit the model's context "
                                    f"of {limit} tokens", hint="Shorten the message or lower --max-new-tokens.")
            turns.pop(0)
        self.dropped = len(self.turns) - len(turns)
        return text

    def tokens(self, text: str) -> int:
        return len(self.chat.tokenizer(text, add_special_tokens=False)["input_ids"])


# ----------------------------------------------------------------------------------------------
# answering


@dataclass
class Answer:
    text: str
    new_tokens: int
    seconds: float
    stopped: str  # 'end_marker', 'eos' or 'max_new_tokens'

    @property
    def tokens_per_s(self) -> float:
        return self.new_tokens / self.seconds if self.seconds > 0 else 0.0


class MarkerStreamer:
    """A transformers streamer (``put`` / ``end``) that hands ``on_text`` the answer as it grows,
    holding back what could still be the end marker, trailing whitespace and incomplete characters."""

    def __init__(self, tokenizer, end_marker: str | None, on_text):
        self.tokenizer, self.end_marker, self.on_text = tokenizer, end_marker, on_text
        self.ids: list[int] = []
        self.sent = ""
        self.prompt_seen = False

    def put(self, value) -> None:
        if not self.prompt_seen:  # generate() hands over the prompt first
            self.prompt_seen = True
            return
        self.ids.extend(int(t) for t in value.reshape(-1).tolist())
        self._send(self.visible(final=False))

    def end(self) -> None:
        self._send(self.visible(final=True))

    def visible(self, *, final: bool) -> str:
        text = self.tokenizer.decode(self.ids, skip_special_tokens=True)
        marker = self.end_marker
        if marker and marker in text:
            text, final = text.split(marker, 1)[0], True
        if not final:
            text = text.rstrip("\ufffd")  # a character whose bytes are not all here yet
            if marker:  # the text may end with the marker's beginning
                for size in range(min(len(marker) - 1, len(text)), 0, -1):
                    if text.endswith(marker[:size]):
                        text = text[:-size]
                        break
        return text.strip()

    def _send(self, text: str) -> None:
        text = text.rstrip() if text else text
        if text.startswith(self.sent) and len(text) > len(self.sent):
            self.on_text(text[len(self.sent):])
            self.sent = text


def answer(chat: ChatModel, prompt: str, *, max_new_tokens: int, temperature: float = 0.0, top_p: float = 1.0,
           on_text=None) -> Answer:
    """One answer to ``prompt`` (a rendered conversation), greedy when ``temperature`` is 0."""
    import torch

    model, tokenizer = chat.model, chat.tokenizer
    encoded = tokenizer(prompt, return_tensors="pt", add_special_tokens=False).to(chat.device)
    kwargs = {"stop_strings": [chat.end_marker], "tokenizer": tokenizer} if chat.end_marker else {}
    if temperature > 0:
        kwargs.update(do_sample=True, temperature=temperature, top_p=top_p)
    else:
        kwargs.update(do_sample=False)
    streamer = MarkerStreamer(tokenizer, chat.end_marker, on_text) if on_text is not None else None
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    began = time.perf_counter()
    with torch.no_grad():
        output = model.generate(**encoded, max_new_tokens=max_new_tokens, pad_token_id=pad, streamer=streamer,
                                **kwargs)
    seconds = time.perf_counter() - began
    new = output[0, encoded["input_ids"].shape[1]:].detach().cpu()
    text = tokenizer.decode(new, skip_special_tokens=True)
    stopped = "max_new_tokens"
    if chat.end_marker and chat.end_marker in text:
        text, stopped = text.split(chat.end_marker, 1)[0], "end_marker"
    elif len(new) and tokenizer.eos_token_id is not None and int(new[-1]) == tokenizer.eos_token_id:
        stopped = "eos"
    return Answer(text=text.strip(), new_tokens=int(len(new)), seconds=seconds, stopped=stopped)
