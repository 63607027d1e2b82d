"""The LLM engine: SFT + LoRA with trl's SFTTrainer, backend hf or unsloth.

``check_data`` reads and checks every data row and measures it in tokens; ``make_plan`` derives the
plan (devices, precision, per-device batch and gradient accumulation from the GLOBAL
``train.batch_size``); ``train`` is the training recipe itself, read top to bottom: setup / train /
save / cleanup. ``ohlora_cli.commands.train_llm`` drives them. torch, transformers and trl are
imported inside the functions, so the doctor can read the data without them.
"""

from __future__ import annotations

import math
import os
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

from .. import recipes
from ..console import info, out, warn
from ..errors import Interrupted, RecipeError, RunFailed
from ..runtime import dist
from ..runtime.run import CHECKPOINTS, STATS, RunFolder, resuming
from ..runtime.signals import StopRequest
from ..runtime.trackers import TB_DIR, check_report_to
from . import data as llm_data
from .config import LlmRecipe


@dataclass
class Plan:
    """What a run will do, derived from the recipe and the machine (printed by --dry-run)."""

    backend: str
    model: str
    build_tiny: bool
    device: str
    precision: str
    launcher: str
    world_size: int
    per_device_batch: int
    grad_accum: int
    global_batch: int
    train_rows: int
    valid_rows: int
    steps_per_epoch: int
    total_steps: int
    note: str | None = None

    def describe(self) -> list[tuple[str, str]]:
        return [
            ("backend", self.backend),
            ("model", self.model + (" (tiny, built locally)" if self.build_tiny else "")),
            ("device / precision", f"{self.device} / {self.precision}"),
            ("processes", f"{self.world_size} ({self.launcher})"),
            ("global batch", f"{self.global_batch} = {self.per_device_batch} per device x {self.grad_accum} "
                             f"accumulation x {self.world_size} process{'es' if self.world_size > 1 else ''}"),
            ("rows", f"{self.train_rows} train, {self.valid_rows} valid"),
            ("optimizer steps", f"{self.steps_per_epoch} per epoch, {self.total_steps} in all"),
        ]


# ----------------------------------------------------------------------------------------------
# run: everything before the weights load


def check_data(cfg: LlmRecipe):
    """Read and check every row, split them, and measure each row in tokens (the tokenizer loads; no weights).

    Returns (train rows, valid rows, tokenizer, model source).
    """
    rows = llm_data.read_rows(cfg.data)
    train_rows, valid_rows = llm_data.split_rows(rows, cfg.data, cfg.seed)
    if not train_rows:
        raise RecipeError(f"{cfg.data.path}: no training rows ({cfg.data.split_column} is 'valid' everywhere)",
                          hint="Mark some rows 'train', or drop the split column to hold out data.valid_fraction.")
    from .backends import load_tokenizer, resolve_model
    from .tiny import pending_build

    build = pending_build(cfg)  # a RecipeError when model.tiny may not build where model.path points

    source = resolve_model(cfg, will_build=build)
    if build:
        from .tiny import build_tokenizer

        tokenizer = build_tokenizer(rows, cfg.data)
    else:
        tokenizer = load_tokenizer(source, cfg)
    llm_data.check_tokens(rows, cfg.data, tokenizer, str(llm_data.resolve_path(cfg.data.path)))
    return train_rows, valid_rows, tokenizer, source


def make_plan(cfg: LlmRecipe, n_train: int, n_valid: int, *, world_size: int, local_rank: int,
              note: str | None) -> Plan:
    from ..runtime.devices import choose_precision, resolve_device

    device = resolve_device(cfg.train.device, local_rank=local_rank)
    precision = choose_precision(cfg.train.precision, device)
    if cfg.model.load_in_4bit and device.type != "cuda":
        raise RecipeError("model.load_in_4bit: 4-bit QLoRA (bitsandbytes) needs a CUDA GPU; this run is on the CPU",
                          hint="Use --set model.load_in_4bit=false.")
    if cfg.model.backend == "unsloth" and world_size > 1:
        raise RecipeError("model.backend: unsloth trains in one process here",
                          hint="Use model.backend=hf for --nproc / torchrun runs.")
    check_report_to(cfg.train.report_to)
    per_device, accum = dist.split_batch(cfg.train.batch_size, world_size, max_per_device=cfg.train.max_device_batch)
    batches_per_rank = math.ceil(math.ceil(n_train / world_size) / per_device)
    steps_per_epoch = max(batches_per_rank // accum + int(batches_per_rank % accum > 0), 1)
    total = cfg.train.max_steps or math.ceil(cfg.train.epochs * steps_per_epoch)
    from .tiny import pending_build

    build = pending_build(cfg)
    return Plan(
        backend=cfg.model.backend, model=cfg.model.path, build_tiny=build, device=str(device), precision=precision,
        launcher="torchrun" if world_size > 1 else dist.launcher(), world_size=world_size,
        per_device_batch=per_device, grad_accum=accum, global_batch=per_device * accum * world_size,
        train_rows=n_train, valid_rows=n_valid, steps_per_epoch=steps_per_epoch, total_steps=total, note=note,
    )


# ----------------------------------------------------------------------------------------------
# train: the training recipe


def remove_stale(out_dir: Path) -> None:
    """A fresh start in an ohlora run folder with no complete checkpoint (a run that stopped before
    its first save): its partial Trainer checkpoints, stats and sample answers go, so they cannot mix
    with the new run's. Only those files are removed, by the names the run gives them."""
    partial = [p for p in (out_dir / CHECKPOINTS).glob("checkpoint-*")
               if p.is_dir() and p.name.split("-")[-1].isdigit() and not (p / "trainer_state.json").is_file()]
    if partial:
        warn(f"starting fresh: removing {len(partial)} incomplete checkpoint(s) in {out_dir / 'checkpoints'}")
    for folder in partial:
        shutil.rmtree(folder)
    (out_dir / STATS).unlink(missing_ok=True)
    for sample in (out_dir / "samples").glob("epoch-*.jsonl"):
        sample.unlink()


def latest_checkpoint(folder: Path) -> Path | None:
    """The newest complete Trainer checkpoint. trainer_state.json is written last, so a folder without
    it is a save that was cut short and is skipped."""
    done = [p for p in folder.glob("checkpoint-*") if p.name.split("-")[-1].isdigit()
            and (p / "trainer_state.json").is_file()]
    return max(done, key=lambda p: int(p.name.split("-")[-1]), default=None)


def checkpoint_step(folder: Path) -> int | None:
    """The optimizer step a Trainer checkpoint was saved at (its trainer_state.json), or None."""
    import json

    try:
        return int(json.loads((folder / "trainer_state.json").read_text(encoding="utf-8"))["global_step"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def train(cfg: LlmRecipe, plan: Plan, train_rows, valid_rows, *, resume: bool, merge: bool) -> None:
    """The training recipe, read top to bottom: setup / train / save / cleanup."""
    from transformers.trainer_callback import PrinterCallback, ProgressCallback
    from trl import SFTTrainer

    from ..runtime.report import ReportWriter
    from .callbacks import (
        ReportCallback,
        RichProgressCallback,
        SampleCallback,
        StatsCallback,
        StopCallback,
    )
    from .generate import generate_answers

    # --- setup -------------------------------------------------------------------------------
    env = dist.dist_env()
    folder = RunFolder(cfg.output_dir)
    out_dir = folder.path
    ckpt_dir, samples_dir, stats_path = folder.checkpoints, out_dir / "samples", folder.stats
    last = _open_run(cfg, folder, resume, env.is_main)
    model, tokenizer, source = _load_model(cfg, plan, train_rows + valid_rows)
    train_ds, valid_ds = _datasets(cfg, train_rows, valid_rows)
    args = _sft_config(cfg, plan, ckpt_dir, evaluate=valid_ds is not None)
    trainer = SFTTrainer(model=model, args=args, train_dataset=train_ds, eval_dataset=valid_ds,
                         processing_class=tokenizer)
    trainer.remove_callback(PrinterCallback)
    trainer.remove_callback(ProgressCallback)
    prompt_rows = valid_rows or train_rows
    if cfg.generate.max_prompts:
        prompt_rows = prompt_rows[: cfg.generate.max_prompts]
    prompts = [llm_data.generation_prompt(r.input, cfg.data, tokenizer) for r in prompt_rows]
    end_marker, max_new = cfg.data.resolved_end_marker, cfg.generate.max_new_tokens
    trainer.add_callback(StatsCallback(stats_path))
    trainer.add_callback(RichProgressCallback())
    reporter = ReportWriter(out_dir) if env.is_main else None
    if reporter is not None:
        trainer.add_callback(ReportCallback(reporter))
    if "tensorboard" in cfg.train.report_to and env.is_main:
        trainer.add_callback(_tensorboard_callback(out_dir / TB_DIR))
    if cfg.generate.every_epoch:
        trainer.add_callback(SampleCallback(samples_dir, prompt_rows, prompts, end_marker=end_marker,
                                            max_new_tokens=max_new))
    batch = _check_global_batch(cfg, args)
    # Shown before and after training: training prompts (what the run can learn) beside validation
    # prompts (what it has to generalise to).
    shown = {"training prompts": [(r, llm_data.generation_prompt(r.input, cfg.data, tokenizer))
                                  for r in train_rows[: cfg.generate.show]]}
    if valid_rows:
        shown["validation prompts (never trained on)"] = list(zip(prompt_rows, prompts, strict=True))[: cfg.generate.show]
    shown = {title: pairs for title, pairs in shown.items() if pairs}

    def answer_all() -> dict[str, list[dict]]:
        return {title: generate_answers(trainer.model, tokenizer, [p for _, p in pairs], end_marker=end_marker,
                                        max_new_tokens=max_new) for title, pairs in shown.items()}

    before = {}
    if env.is_main:
        recipe_file = folder.latest_recipe() if resume else folder.recipe_path
        folder.write_run_info({"kind": "llm", **asdict(plan), **batch, "recipe": recipe_file.name,
                               "resumed_from": str(last) if last else None})
        if shown and not resume:
            before = answer_all()

    # --- train -------------------------------------------------------------------------------
    with StopRequest() as stop:
        trainer.add_callback(StopCallback(stop, env.distributed))
        trainer.train(resume_from_checkpoint=str(last) if last else None)
    if "wandb" in cfg.train.report_to and env.is_main:  # its closing lines go to train.log, not at exit
        import wandb

        wandb.finish()
    if stop.requested and trainer.state.global_step < trainer.state.max_steps:
        raise Interrupted(f"stopped by {stop.signal_name} at step {trainer.state.global_step}; "
                          f"checkpoint saved in {ckpt_dir}", hint="Continue with --resume.")

    # --- save --------------------------------------------------------------------------------
    adapter_dir = out_dir / "adapter"
    trainer.save_model(str(out_dir / "adapter.partial"))
    if env.is_main:
        shutil.rmtree(adapter_dir, ignore_errors=True)
        (out_dir / "adapter.partial").replace(adapter_dir)
        info(f"LoRA adapter and tokenizer saved in {adapter_dir}")
        if "tensorboard" in cfg.train.report_to:
            info(f"TensorBoard logs in {out_dir / TB_DIR}: tensorboard --logdir {out_dir / TB_DIR}")
        if merge:
            merge_adapter(cfg, source, adapter_dir, out_dir / "merged", plan.precision)
        if shown:
            print_answers(shown, before, answer_all(), tiny=bool(cfg.model.tiny), train_rows=len(train_rows))
        from ..console import say

        say(f"report: {reporter.write()}")

    # --- cleanup -----------------------------------------------------------------------------
    dist.destroy_process_group()


def _open_run(cfg: LlmRecipe, folder: RunFolder, resume: bool, is_main: bool) -> Path | None:
    """The checkpoint to resume from (checked), and a fresh start cleared of an earlier incomplete
    run's files; library output to train.log. (The command claimed the folder and wrote the recipe:
    ``runtime.run``.)"""
    from ..runtime.seeding import seed_everything

    last = folder.resume_point(latest_checkpoint(folder.checkpoints), resume=resume) if resume else None
    if is_main and not folder.recipe_path.is_file():  # train() called from Python, not by the command
        folder.open(recipes.dump(cfg), resume=resume, log=False)
    if is_main:
        if last is not None:
            resuming(last, checkpoint_step(last) or 0)
        elif not resume:
            remove_stale(folder.path)
    folder.open_log()
    seed_everything(cfg.seed)
    return last


def _load_model(cfg: LlmRecipe, plan: Plan, rows):
    """(model with LoRA, tokenizer, model source) in the plan's precision, on its device; the demo's
    tiny model built first when it is missing."""
    import torch

    from ..runtime.devices import use_cpu_threads
    from . import backends

    if plan.build_tiny:
        from .tiny import ensure_tiny_model

        if ensure_tiny_model(cfg.model.path, cfg.model.tiny, rows, cfg.data, cfg.seed):
            info(f"built a tiny {cfg.model.tiny} model and tokenizer in {cfg.model.path}")
    source = backends.resolve_model(cfg)
    device = torch.device(plan.device)
    use_cpu_threads(device, cfg.train.cpu_threads)
    if cfg.model.backend == "hf":  # unsloth brings its own loss head
        from .compat import use_torch_loss_head_on_cpu

        use_torch_loss_head_on_cpu(device)
    load = backends.load_unsloth if cfg.model.backend == "unsloth" else backends.load_hf
    model, tokenizer = load(cfg, source, plan.precision, device)
    return model, tokenizer, source


def _datasets(cfg: LlmRecipe, train_rows, valid_rows):
    """The prompt / completion datasets (the validation one only when the run evaluates)."""
    from datasets import Dataset

    train_ds = Dataset.from_list([llm_data.example(r, cfg.data) for r in train_rows])
    evaluate = bool(valid_rows) and cfg.train.eval
    valid_ds = Dataset.from_list([llm_data.example(r, cfg.data) for r in valid_rows]) if evaluate else None
    return train_ds, valid_ds


def _tensorboard_callback(log_dir: Path):
    """transformers' TensorBoard callback, writing into output_dir/tb. (Handed ``report_to:
    tensorboard``, the Trainer would write under its own output_dir, our checkpoints/ folder, in a
    subfolder named after the time and host; transformers 5 has no logging_dir argument.)"""
    from torch.utils.tensorboard import SummaryWriter
    from transformers.integrations import TensorBoardCallback

    return TensorBoardCallback(tb_writer=SummaryWriter(log_dir=str(log_dir)))


def _report_to(cfg: LlmRecipe, out_dir: Path) -> list[str] | str:
    """What the Trainer reports to itself: wandb (its files under output_dir unless WANDB_DIR says
    otherwise); tensorboard is our own callback (``_tensorboard_callback``)."""
    names = [name for name in cfg.train.report_to if name != "tensorboard"]
    if "wandb" in names:
        os.environ.setdefault("WANDB_DIR", str(out_dir.resolve()))
        os.environ.setdefault("WANDB_PROJECT", "ohlora")
    return names or "none"


def _sft_config(cfg: LlmRecipe, plan: Plan, ckpt_dir: Path, *, evaluate: bool):
    from trl import SFTConfig

    args = SFTConfig(
        output_dir=str(ckpt_dir), seed=cfg.seed, report_to=_report_to(cfg, ckpt_dir.parent), disable_tqdm=True,
        per_device_train_batch_size=plan.per_device_batch, per_device_eval_batch_size=plan.per_device_batch,
        gradient_accumulation_steps=plan.grad_accum,
        num_train_epochs=cfg.train.epochs, max_steps=cfg.train.max_steps or -1,
        learning_rate=cfg.train.learning_rate, lr_scheduler_type=cfg.train.lr_scheduler,
        warmup_steps=cfg.train.warmup_ratio, weight_decay=cfg.train.weight_decay,
        bf16=plan.precision == "bf16", fp16=plan.precision == "fp16", use_cpu=plan.device == "cpu",
        gradient_checkpointing=cfg.train.gradient_checkpointing and cfg.model.backend == "hf",
        logging_steps=cfg.train.logging_steps, eval_strategy="epoch" if evaluate else "no",
        save_strategy="epoch", save_total_limit=cfg.train.save_total_limit,
        max_length=cfg.data.max_length, completion_only_loss=True, packing=False,
        ddp_find_unused_parameters=False,
        include_num_input_tokens_seen="non_padding",  # tokens/s in the progress lines and stats.jsonl
    )
    if args.n_gpu > 1:  # CUDA was initialised before one_gpu_unless_ddp could narrow it: stay on one GPU
        warn(f"{args.n_gpu} GPUs visible to one process: training on {args.device} only (never DataParallel)")
        args._n_gpu = 1
    return args


def _check_global_batch(cfg: LlmRecipe, args) -> dict:
    """The batch the Trainer will really use; a RunFailed unless it is train.batch_size."""
    batch = {"world_size": args.world_size, "per_device_batch": args.per_device_train_batch_size,
             "trainer_train_batch_size": args.train_batch_size, "gradient_accumulation": args.gradient_accumulation_steps,
             "global_batch": args.train_batch_size * args.gradient_accumulation_steps * args.world_size}
    if batch["global_batch"] != cfg.train.batch_size:  # the DataParallel trap, or a bug of ours
        raise RunFailed(f"the Trainer would use a global batch of {batch['global_batch']}, not train.batch_size "
                        f"{cfg.train.batch_size} ({batch})")
    return batch


def merge_adapter(cfg: LlmRecipe, source: str, adapter_dir: Path, target: Path, precision: str) -> None:
    """--merge: base weights (16-bit or fp32, never 4-bit) + the adapter, merged and saved in full."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from ..runtime.devices import weights_dtype

    dtype = weights_dtype(precision)
    base = AutoModelForCausalLM.from_pretrained(source, dtype=dtype,
                                                trust_remote_code=cfg.model.trust_remote_code)
    merged = PeftModel.from_pretrained(base, str(adapter_dir)).merge_and_unload()
    partial = target.with_name(target.name + ".partial")
    merged.save_pretrained(partial)
    AutoTokenizer.from_pretrained(str(adapter_dir)).save_pretrained(partial)
    shutil.rmtree(target, ignore_errors=True)
    partial.replace(target)
    info(f"merged weights saved in {target}")


def print_answers(shown: dict, before: dict, after: dict, *, tiny: bool, train_rows: int) -> None:
    """One table per group of prompts (training, validation), then how many answers are exact and,
    for a tiny model built from random weights, why its validation answers cannot be right."""
    from rich.table import Table

    from ..console import say

    exact = []
    for title, pairs in shown.items():
        table = Table(title=f"answers to {title}", title_justify="left", show_lines=True)
        table.add_column("input")
        table.add_column("expected")
        if before.get(title):
            table.add_column("before training")
        table.add_column("after training")
        for i, (row, _) in enumerate(pairs):
            cells = [row.input, row.output] + ([before[title][i]["answer"]] if before.get(title) else [])
            table.add_row(*cells, after[title][i]["answer"])
        out.print(table)
        right = sum(a["answer"] == row.output for a, (row, _) in zip(after[title], pairs, strict=True))
        exact.append(f"{right} of {len(pairs)} {title.split(' (')[0]}")
    say("exact answers after training: " + ", ".join(exact))
    if tiny and len(shown) > 1:
        say(f"The validation answers cannot be right: this tiny model started from random weights and has read "
            f"only the {train_rows} training rows, so it can recite them but knows no language to answer new "
            "questions with; a pretrained model (llm-polyglot-lora) is what LoRA can teach to generalise.")
