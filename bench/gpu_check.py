"""One prepared check of every CUDA path, with its figures, in one command (at most 8 minutes).

    python bench/gpu_check.py --out DIR            # on one GPU (an H100: about 8 minutes, --budget 470)
    python bench/gpu_check.py --out DIR --smoke    # the same code at tiny sizes on the CPU (a test runs it)
    python bench/gpu_check.py --out DIR --only gan-compile,doctor-env --budget 200   # rerun some parts

Each part runs in a process of its own, through the real code: the train-gan and train-llm command
functions (``ohlora_cli.commands``), the LLM engine's ``check_data`` / ``make_plan`` / ``train`` for
the unsloth backend (as its worker process does, unsloth imported first), and ``ohlora doctor``
itself. A part has a time limit; one that fails, hangs or runs out of time is recorded with its error
(and whatever figures it had) and the others go on. Trainings are time-boxed through their own
SIGTERM path (they save a checkpoint and stop), so a slow card still gives figures. DIR receives
``gpu_check.json`` (rewritten after every part), ``gpu_check.txt`` (the table) and ``logs/PART.log``
(the last 64 KB of each part's output); models, data and runs go to ``--work`` (default: a folder in
the temp dir, reused by a rerun). At the end: a table, the targets, one JSON line. Exit 1 when a
part failed, timed out or a check against the card did not hold.

Parts, in the order they run (the most wanted figures first, so a short budget loses the least):

  env               the card (name, compute capability, memory), torch / CUDA / library versions,
                    the precision ``auto`` picks
  prep-gan-data     512 labelled 256 px images with Oh-LoRA's 7 score columns (built once per --work)
  gan-bf16          train-gan at Oh-LoRA's size (gan-ohlora-v1: 256 px, z/w 512, GenForce
                    celeba_partial widths, 7 labels, batch 16, style mixing 0.9, EMA, G's mapping and D's
                    last 3 layers training) from random weights, lazy R1 (every 16 steps), no extra G
                    steps, precision auto (bf16 on 8.0+): img/s and s/kimg (steady: the median of the
                    logging intervals after the first), peak GPU memory
  gan-fp32          the same in fp32 (TF32 on: the adversarial method sets it on CUDA)
  prep-llm-model    a GPT-NeoX shaped like Polyglot-Ko 1.3B from its config, random weights, saved
                    locally (bf16 safetensors) with a locally trained tokenizer, and 256-token rows
  llm-hf            train-llm (llm-polyglot-lora: LoRA r 128 on query_key_value, Oh-LoRA's template,
                    global batch 4, precision auto) at sequence 256: tokens/s (steady, between logging
                    steps after the first) and peak GPU memory
  llm-unsloth       the same with model.backend unsloth
  llm-4bit          the same with model.load_in_4bit (QLoRA through bitsandbytes, backend hf)
  doctor-env        ``ohlora doctor --json``: the torch, gpus, bf16 and unsloth rows checked against the card
  doctor-recipes    ``ohlora doctor RECIPE --json`` for gan-ohlora-v1 and llm-polyglot-lora on the data and
                    model above: the precision and memory rows and the dry-run probes checked against the card
  gan-paths         once each, small: the scorer method; adversarial as Oh-LoRA ran it (R1 every step,
                    extra G steps) with label control, grids and checkpoints, its images read through
                    the DataLoader (pinned memory); --resume; fp16 with the loss scaler;
                    property-regression with its keep and adversarial terms
  gan-channels-last gan-bf16 with G and D in channels_last memory format
  gan-compile       gan-bf16 with G's mapping and synthesis networks compiled (torch.compile; D is not:
                    R1's double backward does not go through compiled graphs)

Targets (reported, never asserted): gan-bf16 >= 100 img/s on one H100; unsloth >= 1.5x hf's
tokens/s and <= 0.6x its peak GPU memory.

``--smoke`` runs every part at tiny sizes on the CPU (16 px GAN, a 2-layer GPT-NeoX, a few steps; the
CPU trains in fp32 and torch.compile uses its eager backend): it checks the script, not the speed.
The parts that need CUDA (4-bit, fp16) stop where the product refuses them, which shows that their
recipes get that far, and are reported as skipped.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

DEFAULT_BUDGET_S = 470  # the whole check, start to table: under 8 minutes
SMOKE_BUDGET_S = 3000  # --smoke takes about 2 minutes idle; the suite runs it on busy 2-core machines
GRACE_S = 25  # after a part's time is up: SIGTERM (the runs save and stop), then this long before SIGKILL
LOG_KEEP = 64 * 1024
MARKER = ".ohlora-gpu-check"  # the work folder is this script's: it deletes only runs it made there

# ------------------------------------------------------------------------------------ sizes


@dataclass(frozen=True)
class Sizes:
    gan_images: int
    gan_resolution: int
    gan_model: tuple[str, ...]  # overrides of gan-ohlora-v1's model (smoke: tiny widths)
    gan_workers: int
    gan_window_s: float  # each throughput run is stopped this long after its first logging interval
    window_intervals: int  # --smoke: stopped after this many logging intervals instead (no clock involved)
    gan_kimg: float  # ... or when it reaches this
    gan_log_kimg: float
    llm_rows: int
    llm_length: int  # tokens per example (data.max_length; the rows are built just under it)
    llm_steps: int
    llm_window_s: float  # each LLM run is stopped this long after its first logging step
    llm_logging: int
    lora_r: int
    compile_backend: str


FULL = Sizes(gan_images=512, gan_resolution=256, gan_model=(), gan_workers=2, gan_window_s=10, window_intervals=0,
             gan_kimg=20, gan_log_kimg=0.16, llm_rows=400, llm_length=256, llm_steps=100, llm_window_s=15, llm_logging=5,
             lora_r=128, compile_backend="inductor")
SMOKE = Sizes(gan_images=64, gan_resolution=16,
              gan_model=("model.resolution=16", "model.z_dim=32", "model.w_dim=32", "model.label_dim=8",
                         "model.mapping_layers=2", "model.fmaps_base=256", "model.fmaps_max=16",
                         "train.d_trainable=null"),
              gan_workers=0, gan_window_s=3, window_intervals=3, gan_kimg=50, gan_log_kimg=0.032, llm_rows=96,
              llm_length=64, llm_steps=100_000, llm_window_s=3, llm_logging=1, lora_r=8, compile_backend="eager")
# (--smoke: kimg and steps that are never reached, so the time box stops every training, as a slow
# card's would be stopped; it fires after a count of logging intervals, so a busy CPU checks the same)

# Polyglot-Ko 1.3B's config (EleutherAI/polyglot-ko-1.3b), and a 2-layer one of the same kind for --smoke
POLYGLOT_KO_1_3B = dict(hidden_size=2048, num_hidden_layers=24, num_attention_heads=16, intermediate_size=8192,
                        vocab_size=30080, max_position_embeddings=2048, rotary_pct=0.5, use_parallel_residual=True,
                        tie_word_embeddings=False)
TINY_NEOX = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=256,
                 max_position_embeddings=128, rotary_pct=0.5, use_parallel_residual=True, tie_word_embeddings=False)

TARGETS = {"gan_bf16_img_per_s": 100.0, "unsloth_vs_hf_tokens_per_s": 1.5, "unsloth_vs_hf_peak_memory": 0.6}

# ------------------------------------------------------------------------------ small helpers


def write_json(path: Path, data: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=1, ensure_ascii=False, default=str), encoding="utf-8")
    tmp.replace(path)


def read_jsonl(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def check(name: str, ok: bool, detail: str = "") -> dict:
    return {"name": name, "ok": bool(ok), "detail": detail}


def finite(values) -> bool:
    return all(v is not None and math.isfinite(v) for v in values)


def peak_memory() -> dict:
    """This process's peak host memory, and its peak GPU memory (torch's allocator) on CUDA."""
    import resource

    import torch

    out = {"peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)}
    if torch.cuda.is_available():
        out["peak_gpu_mb"] = round(torch.cuda.max_memory_allocated() / 2**20)
        out["peak_gpu_reserved_mb"] = round(torch.cuda.max_memory_reserved() / 2**20)
    return out


def card() -> dict:
    """The CUDA cards this process sees (none on a CPU machine)."""
    import torch

    if not torch.cuda.is_available():
        return {"gpus": []}
    gpus = []
    for i in range(torch.cuda.device_count()):
        props = torch.cuda.get_device_properties(i)
        gpus.append({"name": props.name, "capability": list(torch.cuda.get_device_capability(i)),
                     "memory_mb": round(props.total_memory / 2**20),
                     "memory_bytes": torch.cuda.mem_get_info(i)[1]})  # the total the doctor's probe reads
    return {"gpus": gpus}


def expected_precision(gpus: list[dict]) -> str:
    """What train.precision auto must pick on this machine (fp32 on the CPU)."""
    if not gpus:
        return "fp32"
    return "bf16" if tuple(gpus[0]["capability"]) >= (8, 0) else "fp16"


# ------------------------------------------------------------------------- a part's process


class Child:
    """What a part's function gets: sizes, the work folder, its result file, the time box."""

    def __init__(self, name: str, work: Path, result_path: Path, smoke: bool):
        self.name, self.work, self.result_path, self.smoke = name, work, result_path, smoke
        self.sizes = SMOKE if smoke else FULL
        self.device = "cpu" if smoke else "cuda"
        self.result: dict = {}
        self.timer: threading.Timer | None = None
        self.late_signals = 0

    def save(self, **fields) -> None:
        """Record figures as soon as they exist: a part killed later keeps them."""
        self.result.update(fields)
        write_json(self.result_path, self.result)

    def fresh(self, name: str) -> Path:
        """An empty run folder of this script's, ``work/runs/NAME`` (an earlier one is removed)."""
        path = self.work / "runs" / name
        shutil.rmtree(path, ignore_errors=True)
        path.parent.mkdir(parents=True, exist_ok=True)
        return path

    def start_time_box(self, seconds: float) -> None:
        """SIGTERM this process in ``seconds`` (a box already running is replaced): the training
        loop's own stop path saves a checkpoint and stops."""
        self.end_time_box()
        self.timer = threading.Timer(seconds, os.kill, args=(os.getpid(), signal.SIGTERM))
        self.timer.daemon = True
        self.timer.start()

    def end_time_box(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def late_signal(self, signum, frame) -> None:
        """SIGTERM outside a training loop (the time box fired during the end-of-run work, or the
        part's time is up while it loads): noted, not fatal; the parent kills the part if it must."""
        self.late_signals += 1


def cuda_only(child: Child, exc: Exception) -> dict | None:
    """On the CPU (--smoke), the product's refusal of a CUDA-only setting is the expected end."""
    if child.smoke and "CUDA" in str(exc):
        return {"status": "skipped", "reason": f"needs CUDA; the product refused it on the CPU: {exc}"}
    return None


# ------------------------------------------------------------------------------- the data


def ensure_gan_data(child: Child) -> Path:
    """Blob images with Oh-LoRA's seven score columns (two follow the pictures, five are noise),
    z-scored as Oh-LoRA's were. Built once per work folder."""
    import numpy as np

    from ohlora_cli import recipes
    from ohlora_cli.gan.synthetic import build_blobs

    s = child.sizes
    folder = child.work / f"gan-data-{s.gan_resolution}px-{s.gan_images}"
    scores = folder / "scores.csv"
    if (folder / "done").is_file():
        return scores
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    build_blobs(folder / "blobs" / "labels.csv", count=s.gan_images, resolution=s.gan_resolution)
    with open(folder / "blobs" / "labels.csv", newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    names = recipes.load("gan-ohlora-v1").data.label_columns
    real = np.array([[float(r["brightness"]), float(r["position"])] for r in rows])
    real = (real - real.mean(0)) / real.std(0)
    noise = np.random.default_rng(0).standard_normal((len(rows), len(names) - 2))
    values = np.concatenate([real, noise], axis=1)
    with open(scores, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["img_no", "img_path", *names])
        for i, (row, v) in enumerate(zip(rows, values, strict=True)):
            writer.writerow([i, "blobs/" + row["img_path"], *[f"{x:.4f}" for x in v]])
    (folder / "done").write_text("ok\n")
    return scores


KO_WORDS = ("오늘 어제 내일 정말 너무 조금 같이 친구랑 혼자 산책을 커피를 카페에서 영화를 음악을 그림을 책을 공원에서 "
            "바다를 하늘이 날씨가 기분이 좋아 행복해 재미있어 맛있어 보고 싶어 갔어 했어 먹었어 들었어 그렸어 읽었어 "
            "그리고 그래서 하지만 우리 나는 너는 로라는 주말에 아침에 저녁에 밤에 고양이 강아지 노래 여행 사진").split()


def ensure_llm_model(child: Child) -> tuple[Path, Path, dict]:
    """(model folder, dialogue CSV, facts): Polyglot-Ko 1.3B's shape from its config with random weights
    (a tiny GPT-NeoX for --smoke), a byte-level BPE trained on the rows, rows in Oh-LoRA's columns
    whose examples (template + EOS) are just under ``llm_length`` tokens. Built once per work folder."""
    s = child.sizes
    folder = child.work / f"llm-{'tiny' if child.smoke else 'polyglot-ko-1.3b-shape'}-{s.llm_length}"
    model_dir, csv_path, facts_path = folder / "model", folder / "dialogue.csv", folder / "facts.json"
    if (folder / "done").is_file():
        return model_dir, csv_path, json.loads(facts_path.read_text())
    import torch
    from transformers import AutoModelForCausalLM, GPTNeoXConfig

    from ohlora_cli.llm import data as llm_data
    from ohlora_cli.llm.config import LlmData
    from ohlora_cli.llm.tiny import build_tokenizer

    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    rng = random.Random(0)
    cfg = LlmData(path=str(csv_path), max_length=s.llm_length)  # Oh-LoRA's template, the default
    words = s.llm_length * 2  # more than fits: trimmed below
    drafts = [(" ".join(rng.choices(KO_WORDS, k=rng.randint(6, 12))) + "?", " ".join(rng.choices(KO_WORDS, k=words)))
              for _ in range(s.llm_rows + 8)]
    tokenizer = build_tokenizer([llm_data.Row(i + 1, q, a) for i, (q, a) in enumerate(drafts)], cfg)

    def length(question: str, answer: str) -> int:  # as check_tokens counts it: template + EOS
        item = llm_data.example(llm_data.Row(1, question, answer), cfg)
        return len(tokenizer(item["prompt"] + item["completion"])["input_ids"]) + 1

    rows, lengths = [], []
    for i, (question, answer) in enumerate(drafts):
        kept = answer.split()
        lo, hi = 1, len(kept)  # the most answer words that fit
        while lo < hi:
            mid = (lo + hi + 1) // 2
            lo, hi = (mid, hi) if length(question, " ".join(kept[:mid])) <= s.llm_length else (lo, mid - 1)
        answer = " ".join(kept[:lo])
        rows.append(("valid" if i >= s.llm_rows else "train", question, answer))
        lengths.append(length(question, answer))
    with open(csv_path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["data_type", "input_data", "output_data"])
        writer.writerows(rows)
    shape = TINY_NEOX if child.smoke else POLYGLOT_KO_1_3B
    ids = {"eos_token_id": tokenizer.eos_token_id, "bos_token_id": tokenizer.bos_token_id,
           "pad_token_id": tokenizer.pad_token_id}
    config = GPTNeoXConfig(**{"vocab_size": len(tokenizer), **shape, **ids})
    on_gpu = torch.cuda.is_available() and not child.smoke
    dtype = torch.bfloat16 if on_gpu else torch.float32
    torch.manual_seed(0)
    with torch.device("cuda" if on_gpu else "cpu"):
        model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    model.save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)
    facts = {"params": sum(p.numel() for p in model.parameters()), "dtype": str(dtype).replace("torch.", ""),
             "rows": s.llm_rows, "mean_tokens": round(statistics.mean(lengths[: s.llm_rows]), 1),
             "max_tokens": max(lengths), "min_tokens": min(lengths[: s.llm_rows])}
    del model
    facts_path.write_text(json.dumps(facts))
    (folder / "done").write_text("ok\n")
    return model_dir, csv_path, facts


# --------------------------------------------------------------------------------- the parts


def part_env(child: Child) -> dict:
    from importlib import metadata

    import torch

    from ohlora_cli.runtime.devices import choose_precision, resolve_device

    def version(name: str) -> str | None:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            return None

    facts = card()
    device = resolve_device("auto")
    figures = {**facts, "python": sys.version.split()[0], "torch": torch.__version__, "cuda_build": torch.version.cuda,
               "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
               "cpus": os.cpu_count(), "device": str(device), "precision_auto": choose_precision("auto", device),
               **{name: version(name) for name in ("transformers", "trl", "peft", "accelerate", "datasets", "unsloth",
                                                   "unsloth_zoo", "bitsandbytes", "triton")}}
    checks = [check("precision auto fits the card", figures["precision_auto"] == expected_precision(facts["gpus"]),
                    f"{figures['precision_auto']} (expected {expected_precision(facts['gpus'])})")]
    if not child.smoke:
        checks.append(check("a CUDA GPU is visible", bool(facts["gpus"]), "the full check needs one (or use --smoke)"))
    gpu = facts["gpus"][0] if facts["gpus"] else None
    summary = (f"{gpu['name']}, cc {gpu['capability'][0]}.{gpu['capability'][1]}, {gpu['memory_mb'] / 1024:.0f} GiB"
               if gpu else "no CUDA GPU") + f"; torch {torch.__version__}, auto -> {figures['precision_auto']}"
    return {"figures": figures, "checks": checks, "summary": summary}


def part_prep_gan(child: Child) -> dict:
    start = time.perf_counter()
    scores = ensure_gan_data(child)
    s = child.sizes
    return {"figures": {"csv": str(scores), "images": s.gan_images, "resolution": s.gan_resolution,
                        "seconds": round(time.perf_counter() - start, 1)},
            "summary": f"{s.gan_images} images, {s.gan_resolution} px"}


def gan_overrides(child: Child, csv_path: Path, out: Path) -> list[str]:
    """gan-ohlora-v1 on this script's data from random weights (no GenForce download)."""
    return [f"output_dir={out}", f"data.csv={csv_path}", "model.checkpoint=null", f"train.device={child.device}",
            f"data.num_workers={child.sizes.gan_workers}", *child.sizes.gan_model]


def gan_ticks(out: Path) -> list[dict]:
    return [r for r in read_jsonl(out / "stats.jsonl") if "img_per_s" in r and "done" not in r]


def gan_figures(out: Path) -> dict:
    """Steady img/s: the median of the logging intervals after the first (warm-up, autotuning and
    compilation fall in the first)."""
    ticks = gan_ticks(out)
    steady = ticks[1:] or ticks
    rate = statistics.median(t["img_per_s"] for t in steady) if steady else None
    return {"img_per_s": rate, "sec_per_kimg": round(1000 / rate, 2) if rate else None, "intervals": len(ticks),
            "first_interval_img_per_s": ticks[0]["img_per_s"] if ticks else None,
            "kimg": ticks[-1]["kimg"] if ticks else 0, "skipped_steps": sum(t.get("skipped_steps", 0) for t in ticks),
            "last": {k: ticks[-1].get(k) for k in ("d_loss", "g_loss", "r1", "auroc")} if ticks else {}}


def part_gan(child: Child, variant: str) -> dict:
    """train-gan (the command's function) at Oh-LoRA's size, time-boxed; ``variant``: bf16 | fp32 |
    channels-last | compile (the last two on top of bf16), applied to the networks the engine set up."""
    import torch

    from ohlora_cli.commands import train_gan
    from ohlora_cli.errors import Interrupted
    from ohlora_cli.gan import engine

    s = child.sizes
    csv_path = ensure_gan_data(child)
    out = child.fresh(f"gan-{variant}")
    seen: dict = {}
    setup_networks = engine.setup_networks

    def setup(ctx, **kwargs):
        nets = setup_networks(ctx, **kwargs)
        seen.update(precision=ctx.precision, device=str(ctx.device))
        log = ctx.log

        def log_and_time(record: dict) -> None:  # the window starts after the first interval (warm-up)
            log(record)
            if "img_per_s" not in record:
                return
            seen["intervals"] = seen.get("intervals", 0) + 1
            if s.window_intervals and seen["intervals"] == s.window_intervals:
                child.start_time_box(0)
            elif not s.window_intervals and seen["intervals"] == 1:
                child.start_time_box(s.gan_window_s)

        ctx.log = log_and_time
        if variant == "channels-last":
            for net in (nets.G, nets.D):
                net.to(memory_format=torch.channels_last)
        if variant == "compile":
            nets.G.mapping.compile(backend=s.compile_backend)
            nets.G.synthesis.compile(backend=s.compile_backend)
        if not s.window_intervals:  # until the first interval: on an H200 28 s in bf16, over 30 s in channels_last
            child.start_time_box(6 * s.gan_window_s + (120 if variant == "compile" else 0))
        return nets

    overrides = gan_overrides(child, csv_path, out) + [
        f"train.precision={'fp32' if variant == 'fp32' else 'auto'}", "train.r1_interval=16", "train.extra_g_steps=0",
        f"train.kimg={s.gan_kimg}", f"train.log_kimg={s.gan_log_kimg}", "train.snapshot_kimg=1000",
        "train.checkpoint_kimg=1000", "train.keep_checkpoints=1"]
    stopped, start = "done", time.perf_counter()
    engine.setup_networks = setup
    try:
        train_gan.run("gan-ohlora-v1", overrides, dry_run=False, resume=False, skip_doctor=True, nproc=None)
    except Interrupted:
        stopped = "time box"
    finally:
        child.end_time_box()
        engine.setup_networks = setup_networks
    seen.pop("intervals", None)
    figures = {**gan_figures(out), **seen, **peak_memory(), "stopped": stopped,
               "wall_s": round(time.perf_counter() - start, 1), "window_s": s.gan_window_s}
    if torch.cuda.is_available():
        figures["tf32_matmul"] = torch.backends.cuda.matmul.allow_tf32
    want = "fp32" if variant == "fp32" else expected_precision(card()["gpus"])
    ticks = gan_ticks(out)
    checks = [check("precision", seen.get("precision") == want, f"{seen.get('precision')} (expected {want})"),
              check("steady intervals", len(ticks) >= 2, f"{len(ticks)} logging intervals"),
              check("finite losses", finite(t.get(k) for t in ticks for k in ("d_loss", "g_loss"))),
              check("no skipped step", figures["skipped_steps"] == 0, f"{figures['skipped_steps']} skipped")]
    gpu = f", peak {figures['peak_gpu_mb']} MB" if "peak_gpu_mb" in figures else ""
    summary = f"{figures['img_per_s']} img/s, {figures['sec_per_kimg']} s/kimg{gpu} ({seen.get('precision')})"
    return {"figures": figures, "checks": checks, "summary": summary}


def part_prep_llm(child: Child) -> dict:
    start = time.perf_counter()
    model_dir, csv_path, facts = ensure_llm_model(child)
    return {"figures": {**facts, "model": str(model_dir), "csv": str(csv_path), **peak_memory(),
                        "seconds": round(time.perf_counter() - start, 1)},
            "summary": f"GPT-NeoX, {facts['params'] / 1e6:,.1f}M params ({facts['dtype']}), {facts['rows']} rows of "
                       f"{facts['min_tokens']}-{facts['max_tokens']} tokens"}


def model_facts(model) -> dict:
    dtypes: dict[str, int] = {}
    for p in model.parameters():
        dtypes[str(p.dtype).replace("torch.", "")] = dtypes.get(str(p.dtype).replace("torch.", ""), 0) + p.numel()
    return {"class": type(model).__name__, "param_dtypes": dtypes,
            "linear4bit_layers": sum(type(m).__name__ == "Linear4bit" for m in model.modules()),
            "trainable_params": sum(p.numel() for p in model.parameters() if p.requires_grad)}


def steady_rate(times: list[tuple[int, float]]) -> tuple[float | None, int]:
    """Optimizer steps per second between the first logging step and the last (the first interval
    holds the warm-up), and the steps that covers; from the start of training when there are too few."""
    points = times[1:] if len(times) >= 3 else times
    if len(points) < 2 or points[-1][0] == points[0][0]:
        return None, 0
    (s0, t0), (s1, t1) = points[0], points[-1]
    return (s1 - s0) / max(t1 - t0, 1e-9), s1 - s0


def part_llm(child: Child, variant: str) -> dict:
    """train-llm on the 1.3B shape, time-boxed; ``variant``: hf | unsloth | 4bit."""
    s = child.sizes
    out = child.fresh(f"llm-{variant}")
    if variant == "unsloth":  # before transformers / trl / peft, which it patches (as its worker does)
        os.environ["UNSLOTH_COMPILE_LOCATION"] = str(child.fresh("llm-unsloth-compiled-cache"))
        import unsloth  # noqa: F401

    model_dir, csv_path, facts = ensure_llm_model(child)
    from ohlora_cli import recipes
    from ohlora_cli.commands import train_llm
    from ohlora_cli.errors import Interrupted, RecipeError
    from ohlora_cli.llm import backends, callbacks
    from ohlora_cli.llm.train import check_data, make_plan, train

    times: list[tuple[int, float]] = []
    loaded: dict = {}

    class TimedStats(callbacks.StatsCallback):  # the real stats.jsonl, and when each line was written
        def on_train_begin(self, args, state, control, **kwargs):
            times.append((state.global_step, time.perf_counter()))
            if not s.window_intervals:
                child.start_time_box(3 * s.llm_window_s + 60)  # until the first logging step (warm-up, compiling)

        def on_log(self, args, state, control, logs=None, **kwargs):
            super().on_log(args, state, control, logs=logs, **kwargs)
            if logs and "loss" in logs:
                times.append((state.global_step, time.perf_counter()))
                if s.window_intervals and len(times) == 1 + s.window_intervals:
                    child.start_time_box(0)
                elif not s.window_intervals and len(times) == 2:  # the window starts at the first logging step
                    child.start_time_box(s.llm_window_s)

    def watch(load):
        def wrapper(*args, **kwargs):
            model, tokenizer = load(*args, **kwargs)
            loaded.update(model_facts(model))
            return model, tokenizer
        return wrapper

    overrides = [f"output_dir={out}", f"model.path={model_dir}", f"data.path={csv_path}",
                 f"model.backend={'unsloth' if variant == 'unsloth' else 'hf'}",
                 f"model.load_in_4bit={'true' if variant == '4bit' else 'false'}", f"data.max_length={s.llm_length}",
                 f"lora.r={s.lora_r}", f"train.max_steps={s.llm_steps}", f"train.logging_steps={s.llm_logging}",
                 "train.eval=false", "train.save_total_limit=1", f"train.device={child.device}",
                 "generate.every_epoch=false", "generate.show=1", "generate.max_new_tokens=16"]
    if child.smoke:
        overrides.append("train.cpu_threads=1")
    originals = (callbacks.StatsCallback, backends.load_hf, backends.load_unsloth)
    callbacks.StatsCallback = TimedStats
    backends.load_hf, backends.load_unsloth = watch(backends.load_hf), watch(backends.load_unsloth)
    stopped, start = "done", time.perf_counter()
    try:
        if variant == "unsloth":  # the worker's steps, in this process that imported unsloth first
            cfg = recipes.load("llm-polyglot-lora", overrides, expect_kind="llm")
            train_rows, valid_rows, _, _ = check_data(cfg)
            plan = make_plan(cfg, len(train_rows), len(valid_rows), world_size=1, local_rank=0, note=None)
            train(cfg, plan, train_rows, valid_rows, resume=False, merge=False)
        else:
            train_llm.run("llm-polyglot-lora", overrides, dry_run=False, resume=False, skip_doctor=True, nproc=None,
                          merge=False)
    except Interrupted:
        stopped = "time box"
    except RecipeError as exc:
        skipped = cuda_only(child, exc)
        if skipped is None:
            raise
        return skipped
    finally:
        child.end_time_box()
        callbacks.StatsCallback, backends.load_hf, backends.load_unsloth = originals
    return llm_result(child, variant, out, facts, times, loaded, stopped, time.perf_counter() - start)


def llm_result(child: Child, variant: str, out: Path, facts: dict, times, loaded: dict, stopped: str,
               wall: float) -> dict:
    s = child.sizes
    stats = read_jsonl(out / "stats.jsonl")
    losses = [r["loss"] for r in stats if "loss" in r]
    final = next((r for r in reversed(stats) if "train_runtime" in r), {})
    run = json.loads((out / "run.json").read_text()) if (out / "run.json").is_file() else {}
    steps_per_s, steady_steps = steady_rate(times)
    tokens_per_step = facts["mean_tokens"] * run.get("global_batch", 4)
    figures = {"tokens_per_s": round(steps_per_s * tokens_per_step) if steps_per_s else None,
               "steps_per_s": round(steps_per_s, 3) if steps_per_s else None, "steady_steps": steady_steps,
               "tokens_per_step": tokens_per_step, "steps": times[-1][0] if times else 0,
               # the Trainer's own figure, warm-up included (meaningless for a time-boxed run: it counts max_steps)
               "whole_run_steps_per_s": final.get("train_steps_per_second") if stopped == "done" else None,
               "loss_first": losses[0] if losses else None,
               "loss_last": losses[-1] if losses else None, "precision": run.get("precision"),
               "device": run.get("device"), "model": loaded, **peak_memory(), "stopped": stopped,
               "wall_s": round(wall, 1), "sequence": s.llm_length, "lora_r": s.lora_r}
    want = expected_precision(card()["gpus"])
    checks = [check("precision", run.get("precision") == want, f"{run.get('precision')} (expected {want})"),
              check("steady logging intervals", steady_steps > 0, f"{steady_steps} steps timed"),
              check("finite losses", bool(losses) and finite(losses), f"{len(losses)} logged")]
    if variant == "4bit":
        checks.append(check("base weights in 4-bit", loaded.get("linear4bit_layers", 0) > 0,
                            f"{loaded.get('linear4bit_layers')} Linear4bit layers"))
    memory = f", peak {figures['peak_gpu_mb']} MB" if "peak_gpu_mb" in figures else ""
    return {"figures": figures, "checks": checks,
            "summary": f"{figures['tokens_per_s']} tokens/s{memory} ({figures['precision']}, {figures['steps']} steps)"}


def doctor(args: list[str], cwd: Path) -> tuple[dict, float]:
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "ohlora_cli", "doctor", *args, "--json"], capture_output=True,
                          text=True, cwd=cwd)
    seconds = time.perf_counter() - start
    try:
        return json.loads(proc.stdout.strip().splitlines()[-1]), seconds
    except (ValueError, IndexError):
        raise RuntimeError(f"ohlora doctor {' '.join(args)}: exit {proc.returncode}, no JSON: "
                           f"{proc.stderr.strip()[-1500:]}") from None


def rows(report: dict, check_id: str) -> list[dict]:
    return [f for f in report.get("findings", []) if f["check"] == check_id]


def row_is(report: dict, check_id: str, status: str, *needles: str) -> dict:
    """A check of the doctor's rows ``check_id``: every one has ``status`` and holds every needle."""
    found = rows(report, check_id)
    ok = bool(found) and all(f["status"] == status and all(n in f["message"] for n in needles) for f in found)
    said = "; ".join(f"{f['status']}: {f['message']}" for f in found) or "no such row"
    want = f"{status}" + (f" with {', '.join(repr(n) for n in needles)}" if needles else "")
    return check(f"{check_id} row", ok, f"{said} (expected {want})")


def part_doctor_env(child: Child) -> dict:
    report, seconds = doctor([], child.work)
    gpus = card()["gpus"]
    if gpus:
        caps = [f"compute capability {g['capability'][0]}.{g['capability'][1]}" for g in gpus]
        sizes = [f"{g['memory_bytes'] / 1024**3:.1f} GiB (" for g in gpus]  # as the doctor prints the total
        bf16 = ("pass",) if all(tuple(g["capability"]) >= (8, 0) for g in gpus) else ("warn", "no native bf16")
        checks = [row_is(report, "torch", "pass", f"{len(gpus)} GPU(s) visible"),
                  *[row_is({"findings": [f]}, "gpus", "pass", g["name"], cap, size)
                    for f, g, cap, size in zip(rows(report, "gpus"), gpus, caps, sizes, strict=False)],
                  check("gpus rows", len(rows(report, "gpus")) == len(gpus), f"{len(rows(report, 'gpus'))} rows"),
                  row_is(report, "bf16", *bf16)]
    else:
        checks = [row_is(report, "torch", "pass", "no CUDA GPU visible"), row_is(report, "gpus", "skip"),
                  row_is(report, "bf16", "skip")]
    # run from a checkout (PYTHONPATH, as on a lent GPU machine) ohlora-cli has no metadata: then a skip is right
    installed = _has_metadata("ohlora-cli")
    checks += [row_is(report, "unsloth", "pass", "imports"),
               row_is(report, "library-versions", "pass" if installed else "skip")]
    return {"figures": {"seconds": round(seconds, 1), "summary": report.get("summary"), "findings": report.get("findings")},
            "checks": checks, "summary": f"{sum(c['ok'] for c in checks)}/{len(checks)} rows right, {seconds:.0f} s"}


def _has_metadata(distribution: str) -> bool:
    from importlib import metadata

    try:
        metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return False
    return True


def part_doctor_recipes(child: Child) -> dict:
    """gan-ohlora-v1 and llm-polyglot-lora, resolved onto this script's data and model, doctored."""
    from ohlora_cli import recipes

    s = child.sizes
    csv_path = ensure_gan_data(child)
    model_dir, dialogue, _ = ensure_llm_model(child)
    folder = child.fresh("doctor-recipes")
    folder.mkdir()
    gan = recipes.load("gan-ohlora-v1", [f"output_dir={folder / 'gan-run'}", f"data.csv={csv_path}",
                                         "model.checkpoint=null", f"data.num_workers={s.gan_workers}", *s.gan_model])
    llm = recipes.load("llm-polyglot-lora", [f"output_dir={folder / 'llm-run'}", f"model.path={model_dir}",
                                             f"data.path={dialogue}", f"data.max_length={s.llm_length}"])
    gpus = card()["gpus"]
    precision = {"bf16": "precision bf16", "fp16": "bf16 or fp16", "fp32": "precision fp32 (CPU)"}[expected_precision(gpus)]
    memory = "the GPU with the least free memory" if gpus else "of RAM available"
    figures, checks = {}, []
    for name, recipe in (("gan", gan), ("llm", llm)):
        path = folder / f"{name}.yaml"
        path.write_text(recipes.dump(recipe), encoding="utf-8")
        report, seconds = doctor([str(path)], folder)
        figures[name] = {"seconds": round(seconds, 1), "ok": report.get("ok"), "summary": report.get("summary"),
                         "findings": report.get("findings")}
        mine = [check("doctor ok", report.get("ok") is True, json.dumps(report.get("summary"))),
                row_is(report, "precision", "pass", precision), row_is(report, "memory", "pass", memory),
                *[row_is(report, probe, "pass") for probe in ("recipe-data", "dtype-mismatch", "grad-inference")]]
        checks += [dict(c, name=f"{name}: {c['name']}") for c in mine]
    return {"figures": figures, "checks": checks,
            "summary": f"{sum(c['ok'] for c in checks)}/{len(checks)} rows right; gan {figures['gan']['seconds']} s, "
                       f"llm {figures['llm']['seconds']} s"}


def run_gan(recipe_overrides: list[str], *, resume: bool = False) -> float:
    from ohlora_cli.commands import train_gan

    start = time.perf_counter()
    train_gan.run("gan-ohlora-v1", recipe_overrides, dry_run=False, resume=resume, skip_doctor=True, nproc=None)
    return round(time.perf_counter() - start, 1)


def done_line(out: Path) -> dict:
    return next((r for r in reversed(read_jsonl(out / "stats.jsonl")) if r.get("done")), {})


def paths_scorer(child: Child, csv_path: Path) -> dict:
    out = child.fresh("paths-scorer")
    seconds = run_gan(gan_overrides(child, csv_path, out) + ["train.method=scorer", "train.scorer.epochs=1"])
    epochs = [r for r in read_jsonl(out / "stats.jsonl") if "epoch" in r]
    return {"seconds": seconds, "img_per_s": epochs[-1].get("img_per_s") if epochs else None,
            "checks": [check("scorer saved", (out / "scorer.safetensors").is_file()),
                       check("finite losses", bool(epochs) and finite(r["train/loss"] for r in epochs))]}


# data.cache_mb=0: images come through the DataLoader (workers, pin_memory on CUDA, non_blocking copies)
PATHS_ADVERSARIAL = ("data.cache_mb=0", "train.kimg=0.128", "train.log_kimg=0.032", "train.snapshot_kimg=0.064",
                     "train.checkpoint_kimg=0.064", "train.keep_checkpoints=0", "train.label_control.every_kimg=0.064",
                     "train.label_control.samples=4", "train.label_control.steps=5")


def paths_adversarial(child: Child, csv_path: Path, scorer: Path) -> dict:
    """Oh-LoRA's settings as they are (R1 every step: Dboth; up to 4 extra G steps), precision auto,
    with label control measured by the scorer, grids and checkpoints."""
    out = child.fresh("paths-adversarial")
    seconds = run_gan(gan_overrides(child, csv_path, out) + [f"model.scorer={scorer}", *PATHS_ADVERSARIAL])
    ticks, done = gan_ticks(out), done_line(out)
    return {"seconds": seconds, "img_per_s": gan_figures(out)["img_per_s"],
            "label_control_mean_r": done.get("label_control/mean_r"),
            "checks": [check("finished", done.get("kimg") == 0.128, json.dumps(done)[:200]),
                       check("R1 every step", bool(ticks) and all(t.get("r1") is not None for t in ticks)),
                       check("finite losses", finite(t.get(k) for t in ticks for k in ("d_loss", "g_loss", "r1"))),
                       check("label control measured", any("label_control/mean_r" in t for t in ticks)
                             and "label_control/mean_r" in done),
                       check("label-control plot", any((out / "label_control").glob("*.png"))),
                       check("grids", (out / "grid-latest.png").is_file() and len(list((out / "grids").glob("*.png"))) >= 2),
                       check("checkpoints", len(list((out / "checkpoints").glob("checkpoint-*.safetensors"))) == 2)]}


def paths_resume(child: Child, csv_path: Path, scorer: Path) -> dict:
    out = child.work / "runs" / "paths-adversarial"  # continue the run above for 4 more steps
    overrides = gan_overrides(child, csv_path, out) + [f"model.scorer={scorer}", *PATHS_ADVERSARIAL, "train.kimg=0.192"]
    seconds = run_gan(overrides, resume=True)
    steps = [t["step"] for t in gan_ticks(out)]
    return {"seconds": seconds,
            "checks": [check("continued to 0.192 kimg", done_line(out).get("kimg") == 0.192),
                       check("step counter continued", steps == sorted(steps) and steps[-1] == 12, str(steps)),
                       check("checkpoint at step 12", (out / "checkpoints" / "checkpoint-00000012.safetensors").is_file())]}


def paths_fp16(child: Child, csv_path: Path) -> dict:
    """fp16 autocast with the loss scaler, R1 every step (its own pass under fp16)."""
    from ohlora_cli.gan import checkpoint as ckpt

    out = child.fresh("paths-fp16")
    seconds = run_gan(gan_overrides(child, csv_path, out) + ["train.precision=fp16", "train.kimg=0.128",
                                                             "train.log_kimg=0.032", "train.checkpoint_kimg=1000"])
    ticks = gan_ticks(out)
    scalers = json.loads(ckpt.read_metadata(ckpt.latest_checkpoint(out)).get("scalers", "{}"))
    return {"seconds": seconds, "skipped_steps": sum(t.get("skipped_steps", 0) for t in ticks),
            "scales": {k: v.get("scale") for k, v in scalers.items()},
            "checks": [check("R1 applied", bool(ticks) and all(t.get("r1") is not None for t in ticks)),
                       check("scaler state saved", set(scalers) == {"G", "D"}, json.dumps(scalers)),
                       check("finished", done_line(out).get("kimg") == 0.128)]}


def paths_regression(child: Child, csv_path: Path, scorer: Path) -> dict:
    out = child.fresh("paths-regression")
    start_from = child.work / "runs" / "paths-adversarial"
    seconds = run_gan(gan_overrides(child, csv_path, out) + [
        "train.method=property-regression", f"model.checkpoint={start_from}", f"model.scorer={scorer}",
        "train.kimg=0.064", "train.log_kimg=0.032", "train.regression.keep_weight=0.5",
        "train.regression.adversarial_weight=0.1", "train.label_control.samples=4", "train.label_control.steps=5"])
    ticks, done = gan_ticks(out), done_line(out)
    return {"seconds": seconds, "label_control_mean_r": done.get("label_control/mean_r"),
            "checks": [check("finite property loss", bool(ticks) and finite(t.get("property_loss") for t in ticks)),
                       check("label control at the end", "label_control/mean_r" in done)]}


def part_gan_paths(child: Child) -> dict:
    """The GAN's CUDA paths once each; every step is recorded as it ends, a failed one does not stop the rest."""
    from ohlora_cli.errors import RecipeError

    csv_path = ensure_gan_data(child)
    scorer = child.work / "runs" / "paths-scorer"
    steps: dict[str, dict] = {}
    plan: list[tuple[str, Callable[[], dict]]] = [
        ("scorer", lambda: paths_scorer(child, csv_path)),
        ("adversarial", lambda: paths_adversarial(child, csv_path, scorer)),
        ("resume", lambda: paths_resume(child, csv_path, scorer)),
        ("fp16", lambda: paths_fp16(child, csv_path)),
        ("property-regression", lambda: paths_regression(child, csv_path, scorer)),
    ]
    for name, step in plan:
        try:
            got = step()
            checks = got.pop("checks", [])
            steps[name] = {"status": "ok" if all(c["ok"] for c in checks) else "check failed", **got, "checks": checks}
        except RecipeError as exc:
            steps[name] = cuda_only(child, exc) or {"status": "failed", "error": f"{type(exc).__name__}: {exc}"}
        except Exception as exc:  # recorded; the next step goes on
            steps[name] = {"status": "failed", "error": f"{type(exc).__name__}: {exc}",
                           "traceback": traceback.format_exc()[-3000:]}
        child.save(figures={"steps": steps})
    checks = [check(f"{name}: {c['name']}", c["ok"], c["detail"]) for name, got in steps.items()
              for c in got.get("checks", [])]
    failed = [n for n, got in steps.items() if got["status"] == "failed"]
    status = "failed" if failed else None
    summary = ", ".join(f"{n} {got['status']}" for n, got in steps.items())
    return {"figures": {"steps": steps}, "checks": checks, "summary": summary,
            **({"status": status, "error": f"failed: {', '.join(failed)}"} if status else {})}


@dataclass(frozen=True)
class Part:
    name: str
    run: Callable[[Child], dict]
    cap_s: float  # its time limit on a GPU (in --smoke: SMOKE_CAP_S)
    min_s: float  # not started with less time than this left in the budget


SMOKE_CAP_S = 900
PARTS = [
    Part("env", part_env, 60, 15),
    Part("prep-gan-data", part_prep_gan, 90, 20),
    Part("gan-bf16", lambda c: part_gan(c, "bf16"), 100, 40),
    Part("gan-fp32", lambda c: part_gan(c, "fp32"), 100, 40),
    Part("prep-llm-model", part_prep_llm, 150, 40),
    Part("llm-hf", lambda c: part_llm(c, "hf"), 150, 60),
    Part("llm-unsloth", lambda c: part_llm(c, "unsloth"), 180, 70),
    Part("llm-4bit", lambda c: part_llm(c, "4bit"), 150, 60),
    Part("doctor-env", part_doctor_env, 120, 30),
    Part("doctor-recipes", part_doctor_recipes, 150, 40),
    Part("gan-paths", part_gan_paths, 200, 60),
    Part("gan-channels-last", lambda c: part_gan(c, "channels-last"), 100, 40),
    Part("gan-compile", lambda c: part_gan(c, "compile"), 200, 60),
]
BY_NAME = {p.name: p for p in PARTS}


def child_main(args) -> int:
    child = Child(args.child, Path(args.work), Path(args.result), args.smoke)
    signal.signal(signal.SIGTERM, child.late_signal)
    start = time.perf_counter()
    child.save(status="running")
    code = 0
    try:
        if args.fail == args.child:
            raise RuntimeError("--fail: this part was made to fail, to show that the others go on")
        got = BY_NAME[args.child].run(child) or {}
        checks = got.get("checks", [])
        status = got.pop("status", None) or ("ok" if all(c["ok"] for c in checks) else "check failed")
        child.save(status=status, **got)
    except BaseException as exc:  # noqa: B036 (recorded, whatever it is)
        traceback.print_exc()  # into the part's log too
        child.save(status="failed", error=f"{type(exc).__name__}: {exc}"[:3000],
                   traceback=traceback.format_exc()[-6000:])
        code = 1
    child.save(seconds=round(time.perf_counter() - start, 1))
    return code


# ------------------------------------------------------------------------------ the parent


def child_env(smoke: bool) -> dict:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
           "UNSLOTH_DISABLE_STATISTICS": "1", "TOKENIZERS_PARALLELISM": "false", "PYTHONUNBUFFERED": "1",
           "WANDB_MODE": "disabled"}
    if smoke:
        env["OMP_NUM_THREADS"] = "1"  # tiny models run fastest on one thread (docs/benchmarks.md)
    return env


def keep_tail(path: Path, keep: int = LOG_KEEP) -> None:
    data = path.read_bytes()
    if len(data) > keep:
        path.write_bytes(b"[... cut: the last %d bytes follow]\n" % keep + data[-keep:])


def run_part(part: Part, args, work: Path, logs: Path, limit: float) -> dict:
    """One part in its own process (and session), with a time limit: at the limit SIGTERM (a
    training saves and stops, its figures are kept), GRACE_S later SIGKILL of its process group."""
    result_path = work / "results" / f"{part.name}.json"
    result_path.parent.mkdir(parents=True, exist_ok=True)
    result_path.unlink(missing_ok=True)
    log_path = logs / f"{part.name}.log"
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", part.name, "--work", str(work),
           "--result", str(result_path)] + (["--smoke"] if args.smoke else []) + (["--fail", args.fail] if args.fail else [])
    start = time.monotonic()
    timed_out = False
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=child_env(args.smoke), cwd=work,
                                start_new_session=True)
        try:
            proc.wait(timeout=max(limit, 1))
        except subprocess.TimeoutExpired:
            timed_out = True
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=GRACE_S)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
    keep_tail(log_path)
    try:
        result = json.loads(result_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        result = {"status": "failed", "error": f"no result (exit {proc.returncode})"}
    if timed_out:
        result.update(status="timeout", error=f"stopped at its limit of {limit:.0f} s; figures so far kept")
    elif result.get("status") == "running":
        result.update(status="failed", error=f"the process ended (exit {proc.returncode}) without a result")
    if result["status"] == "failed" and "error" in result:
        tail = log_path.read_text(encoding="utf-8", errors="replace").strip().splitlines()[-12:]
        result["log_tail"] = tail
    result["wall_s"] = round(time.monotonic() - start, 1)
    result["log"] = str(log_path)
    return result


def targets(parts: dict, smoke: bool) -> dict:
    def fig(name: str, key: str):
        got = parts.get(name, {})
        return got.get("figures", {}).get(key) if got.get("status") in ("ok", "check failed", "timeout") else None

    bf16, hf, un = fig("gan-bf16", "img_per_s"), fig("llm-hf", "tokens_per_s"), fig("llm-unsloth", "tokens_per_s")
    hf_mem = fig("llm-hf", "peak_gpu_mb") or (fig("llm-hf", "peak_rss_mb") if smoke else None)
    un_mem = fig("llm-unsloth", "peak_gpu_mb") or (fig("llm-unsloth", "peak_rss_mb") if smoke else None)
    speed = round(un / hf, 3) if hf and un else None
    memory = round(un_mem / hf_mem, 3) if hf_mem and un_mem else None
    def judged(value, ok):  # a CPU smoke run measures no target
        return None if value is None or smoke else ok(value)

    at_least, at_most = (lambda t: lambda v: v >= t), (lambda t: lambda v: v <= t)
    got = {"gan_bf16_img_per_s": (bf16, ">=", at_least), "unsloth_vs_hf_tokens_per_s": (speed, ">=", at_least),
           "unsloth_vs_hf_peak_memory": (memory, "<=", at_most)}
    return {key: {"value": value, "target": f"{sign} {TARGETS[key]:g}", "met": judged(value, test(TARGETS[key]))}
            for key, (value, sign, test) in got.items()} | (
        {"note": "smoke run on the CPU: the targets are not judged"} if smoke else {})


def print_table(report: dict, out: Path) -> None:
    from rich.console import Console
    from rich.table import Table

    env = report["parts"].get("env", {}).get("figures", {})
    gpus = env.get("gpus") or []
    where = f"{gpus[0]['name']} (cc {'.'.join(map(str, gpus[0]['capability']))})" if gpus else "no CUDA GPU"
    console = Console(record=True, width=160)
    table = Table(title=f"gpu_check ({report['mode']}) on {where}, {report['elapsed_s']:.0f} s of {report['budget_s']} s")
    for column in ("part", "status", "figures", "s"):
        table.add_column(column, justify="right" if column == "s" else "left", overflow="fold")
    for name, got in report["parts"].items():
        text = got.get("summary") or got.get("reason") or got.get("error") or ""
        failed = [c["name"] for c in got.get("checks", []) if not c["ok"]]
        if failed:
            text += f" [failed checks: {', '.join(failed)}]"
        table.add_row(name, got["status"], text, f"{got.get('wall_s', 0):.0f}")
    console.print(table, markup=False)
    for key, t in report["targets"].items():
        if key != "note":
            met = {True: "met", False: "MISSED", None: "not judged" if report["mode"] == "smoke" else "not measured"}[t["met"]]
            console.print(f"target {key} {t['target']}: {t['value']} ({met})", markup=False, highlight=False)
    if "note" in report["targets"]:
        console.print(report["targets"]["note"], markup=False, highlight=False)
    (out / "gpu_check.txt").write_text(console.export_text(), encoding="utf-8")


def work_folder(path: str | None, smoke: bool) -> Path:
    """This script's work folder: new, or one it made before (it holds the marker)."""
    work = Path(path) if path else Path(tempfile.gettempdir()) / "ohlora-gpu-check" / ("smoke" if smoke else "full")
    work = work.resolve()
    if work.exists() and any(work.iterdir()) and not (work / MARKER).is_file():
        raise SystemExit(f"--work {work}: the folder holds files this script did not make; pass a new or empty one")
    work.mkdir(parents=True, exist_ok=True)
    (work / MARKER).write_text("bench/gpu_check.py works here; it deletes only runs/<part> folders it made\n")
    return work


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--out", help="folder for gpu_check.json, gpu_check.txt and logs/ (required)")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes on the CPU (checks the script, not the speed)")
    parser.add_argument("--only", default="", help="comma-separated parts to run (default: all, in order)")
    parser.add_argument("--budget", type=float, default=None,
                        help=f"seconds for the whole check (default {DEFAULT_BUDGET_S}; --smoke {SMOKE_BUDGET_S})")
    parser.add_argument("--work", help="models, data and runs (default: a folder in the temp dir, reused)")
    parser.add_argument("--fail", default="", help="make this part raise at its start (shows that the others go on)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child_main(args)
    if not args.out:
        parser.error("--out DIR is required")
    only = [n.strip() for n in args.only.split(",") if n.strip()]
    unknown = [n for n in only + ([args.fail] if args.fail else []) if n not in BY_NAME]
    if unknown:
        parser.error(f"unknown part(s) {', '.join(unknown)}; the parts: {', '.join(BY_NAME)}")
    out = Path(args.out).resolve()
    logs = out / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    work = work_folder(args.work, args.smoke)
    budget = args.budget if args.budget is not None else (SMOKE_BUDGET_S if args.smoke else DEFAULT_BUDGET_S)
    start = time.monotonic()
    report = {"bench": "gpu_check", "mode": "smoke" if args.smoke else "full", "command": " ".join(sys.argv),
              "started": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "budget_s": budget, "elapsed_s": 0.0, "work": str(work),
              "parts": {}, "targets": {}}
    json_path = out / "gpu_check.json"
    for part in [p for p in PARTS if not only or p.name in only]:
        left = budget - (time.monotonic() - start)
        limit = min(SMOKE_CAP_S if args.smoke else part.cap_s, left - GRACE_S)  # a hung part ends in the budget too
        if limit < part.min_s:
            result = {"status": "skipped", "reason": f"out of time: {left:.0f} s left of the {budget:.0f} s budget, "
                                                     f"the part needs {part.min_s + GRACE_S:.0f} s or more"}
        else:
            result = run_part(part, args, work, logs, limit)
        report["parts"][part.name] = result
        report["elapsed_s"] = round(time.monotonic() - start, 1)
        report["targets"] = targets(report["parts"], args.smoke)
        write_json(json_path, report)
        print(f"[{report['elapsed_s']:6.0f} s] {part.name}: {result['status']} "
              f"{result.get('summary') or result.get('reason') or result.get('error') or ''}", flush=True)
    print_table(report, out)
    statuses = {n: r["status"] for n, r in report["parts"].items()}
    print(json.dumps({"bench": "gpu_check", "mode": report["mode"], "json": str(json_path),
                      "elapsed_s": report["elapsed_s"], "status": statuses,
                      "targets": {k: v["value"] for k, v in report["targets"].items() if k != "note"}}))
    bad = [n for n, s in statuses.items() if s in ("failed", "timeout", "check failed")]
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
