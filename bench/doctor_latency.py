"""How fast the doctor answers: a 300-line script, and full-size recipes with small real data.

Usage: python bench/doctor_latency.py [--runs 5] [--skip-recipes]

1. Static analysis of a generated 300-line training script (dataset, models, helpers, loops):
   median of the in-process analysis, and the whole ``ohlora doctor SCRIPT --json`` command.
   Target: under 1 s.
2. ``ohlora doctor RECIPE --json`` (one process, everything included: environment probe, recipe
   checks and the dry-run probes of probes/gan.py / probes/llm.py where they exist) on
   - a full-size GAN recipe: StyleGAN at 256 px, z/w 512, 7 labels, 64 real PNG files;
   - a full-size LLM recipe: a GPT-NeoX config the size of Polyglot-Ko 1.3B (hidden 2048, 24 layers,
     vocab 30080), built from the config only, with a locally trained tokenizer and 60 real rows.
   Target: under 5 s without loading weights.
Prints a table and one JSON line.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
LABELS = ["eyes_score", "hair_color_score", "hair_length_score", "mouth_score", "pose_score",
          "background_mean_score", "background_std_score"]

HEADER = '''"""Generated benchmark script: conditional GAN fine-tuning with periodic sampling."""

import os

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset
from transformers import TrainingArguments

LABELS = {labels!r}


class ScoreDataset(Dataset):
    def __init__(self, csv_path):
        self.df = pd.read_csv(csv_path)
        self.labels = self.df[LABELS].values

    def __len__(self):
        return len(self.df)

    def __getitem__(self, idx):
        image = torch.rand(3, 64, 64) * 2 - 1
        return image, self.labels[idx]


class Mapping(nn.Module):
    def __init__(self, z_dim=512, n_labels=7):
        super().__init__()
        self.label_weight = nn.Parameter(torch.randn(n_labels, 16))
        self.net = nn.Sequential(nn.Linear(z_dim + 16, 512), nn.LeakyReLU(0.2), nn.Linear(512, 512))
        self.register_buffer("w_avg", torch.zeros(512))

    def forward(self, z, labels):
        w = self.net(torch.cat([z, torch.matmul(labels, self.label_weight)], dim=1))
        if self.training:
            self.w_avg.copy_(self.w_avg.lerp(w.mean(0), 0.005))
        return w


class Generator(nn.Module):
    def __init__(self):
        super().__init__()
        self.mapping = Mapping()
        self.synthesis = nn.Sequential(nn.Linear(512, 3 * 64 * 64), nn.Tanh())

    def forward(self, z, labels):
        return self.synthesis(self.mapping(z, labels)).view(-1, 3, 64, 64)


class Discriminator(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(3 * 64 * 64, 256), nn.LeakyReLU(0.2))
        self.head = nn.Linear(256 + len(LABELS), 1)

    def forward(self, images, labels):
        return self.head(torch.cat([self.body(images), labels], dim=1))
'''

HELPER = '''

def helper_{i}(G, D, images, labels, step):
    """Helper {i}: one of several per-interval routines."""
    z = torch.randn(images.shape[0], 512)
    fake = G(z, labels.float())
    score = D(fake.detach(), labels.float()).mean()
    stats = {{"step": step, "score_{i}": score.item()}}
    if step % {every} == 0:
        with torch.no_grad():
            preview = G(z[:4], labels[:4].float())
        stats["preview_{i}"] = preview.detach().cpu().numpy().mean()
    return stats
'''

FOOTER = '''

def train(csv_path, epochs=3):
    loader = DataLoader(ScoreDataset(csv_path), batch_size=16, shuffle=True)
    G, D = Generator(), Discriminator()
    g_opt = torch.optim.Adam(G.parameters(), lr=1e-4, betas=(0.0, 0.99))
    d_opt = torch.optim.Adam(D.parameters(), lr=1e-4, betas=(0.0, 0.99))
    args = TrainingArguments(output_dir="out", per_device_train_batch_size=16)
    os.environ["CUDA_VISIBLE_DEVICES"] = "0"
    losses = []
    step = 0
    for epoch in range(epochs):
        for images, labels in loader:
            z = torch.randn(images.shape[0], 512)
            fake = G(z, labels)
            d_loss = F.softplus(D(fake.detach(), labels)).mean() + F.softplus(-D(images, labels)).mean()
            d_opt.zero_grad()
            d_loss.backward()
            d_opt.step()
            g_loss = F.softplus(-D(fake, labels)).mean()
            g_opt.zero_grad()
            g_loss.backward()
            g_opt.step()
            losses.append(g_loss)
            step += 1
{calls}
    return losses, args


if __name__ == "__main__":
    train("scores.csv")
'''


def make_script(folder: Path, lines: int = 312) -> Path:
    """A training script of about ``lines`` lines with every kind of finding in it."""
    text = HEADER.format(labels=LABELS)
    helpers, calls = [], []
    i = 0
    while True:
        body = "".join(helpers) + HELPER.format(i=i, every=50 + i)
        call_lines = "".join(f"            helper_{j}(G, D, images, labels, step)\n" for j in range(i + 1))
        if len((text + body + FOOTER.format(calls=call_lines)).splitlines()) > lines:
            break
        helpers.append(HELPER.format(i=i, every=50 + i))
        calls.append(f"            helper_{i}(G, D, images, labels, step)\n")
        i += 1
    script = text + "".join(helpers) + FOOTER.format(calls="".join(calls))
    path = folder / "bench_train.py"
    path.write_text(script)
    return path


def gan_recipe(folder: Path, rows: int = 64) -> Path:
    from PIL import Image

    images = folder / "images"
    images.mkdir()
    with open(folder / "scores.csv", "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["img_no", "img_path", *LABELS])
        for n in range(rows):
            name = f"{n:04d}.png"
            Image.new("RGB", (256, 256), (n * 3 % 256, 90, 160)).save(images / name)
            writer.writerow([n, f"images/{name}", *[round((n * (k + 1) % 17) / 4 - 2, 3) for k in range(7)]])
    recipe = {
        "kind": "gan", "output_dir": str(folder / "run-gan"),
        "data": {"csv": str(folder / "scores.csv"), "image_column": "img_path", "label_columns": LABELS},
        "model": {"resolution": 256},
        "train": {"method": "adversarial", "batch_size": 16, "device": "cpu"},
    }
    path = folder / "gan-256.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path


def llm_recipe(folder: Path) -> Path:
    """Polyglot-Ko 1.3B's shape (GPT-NeoX) from a config.json; a small tokenizer trained locally."""
    from transformers import GPTNeoXConfig

    from ohlora_cli.llm import data as llm_data
    from ohlora_cli.llm.config import LlmData
    from ohlora_cli.llm.tiny import build_tokenizer

    rows_path = folder / "dialogue.csv"
    with open(rows_path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["data_type", "input_data", "output_data"])
        for n in range(60):
            writer.writerow(["valid" if n % 6 == 0 else "train", f"오늘 {n}번째 질문이야, 뭐 했어?",
                             f"오늘은 {n}번 산책했어!"])
    cfg = LlmData(path=str(rows_path))
    tokenizer = build_tokenizer(llm_data.read_rows(cfg), cfg)
    model_dir = folder / "polyglot-ko-1.3b-shape"
    tokenizer.save_pretrained(model_dir)
    GPTNeoXConfig(hidden_size=2048, num_hidden_layers=24, num_attention_heads=16, intermediate_size=8192,
                  vocab_size=30080, max_position_embeddings=2048, rotary_pct=0.5, use_parallel_residual=True,
                  tie_word_embeddings=False, eos_token_id=tokenizer.eos_token_id,
                  pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
                  ).save_pretrained(model_dir)
    recipe = {
        "kind": "llm", "output_dir": str(folder / "run-llm"),
        "model": {"path": str(model_dir), "backend": "hf"},
        "data": {"path": str(rows_path), "max_length": 128},
        "lora": {"r": 128, "alpha": 16, "dropout": 0.05, "target_modules": ["query_key_value"]},
        "train": {"batch_size": 4, "device": "cpu"},
        "generate": {"max_new_tokens": 8, "max_prompts": 2},
    }
    path = folder / "llm-1.3b.yaml"
    path.write_text(yaml.safe_dump(recipe, allow_unicode=True))
    return path


def timed(cmd: list[str], runs: int, cwd: Path | None = None) -> tuple[float, dict | None]:
    times, last = [], None
    for _ in range(runs):
        start = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=cwd)
        times.append(time.perf_counter() - start)
        try:
            last = json.loads(proc.stdout.strip().splitlines()[-1])
        except (ValueError, IndexError):
            last = {"error": proc.stderr.strip()[-300:]}
    return statistics.median(times), last


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--skip-recipes", action="store_true")
    args = parser.parse_args()

    from ohlora_cli.doctor import static
    from ohlora_cli.doctor.registry import Context

    ohlora = [sys.executable, "-m", "ohlora_cli"]
    rows, figures = [], {}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        script = make_script(folder)
        n_lines = len(script.read_text().splitlines())
        analysis = []
        for _ in range(args.runs):
            start = time.perf_counter()
            ctx = Context("script", script=script)
            found = [f for check in static.CHECKS for f in check.run(ctx)]
            analysis.append(time.perf_counter() - start)
        figures["script_lines"] = n_lines
        figures["script_findings"] = len(found)
        figures["script_analysis_s"] = round(statistics.median(analysis), 3)
        rows.append((f"static analysis, {n_lines}-line script (in process)", figures["script_analysis_s"], 1.0,
                     f"{len(found)} findings"))
        seconds, _ = timed([*ohlora, "doctor", str(script), "--json"], args.runs)
        figures["script_command_s"] = round(seconds, 3)
        rows.append((f"ohlora doctor {script.name} (whole command)", figures["script_command_s"], 1.0, ""))

        # The floors: what the probes of each kind must import before any check can run. The
        # first op on the meta device makes torch import torch._dynamo; LoRA needs peft.
        floors = (("import_torch_s", "import torch", "python -c 'import torch' (floor of any probe)"),
                  ("import_gan_floor_s", "import torch, torch._dynamo",
                   "import torch + torch._dynamo (floor of the GAN meta probe)"),
                  ("import_llm_floor_s", "import torch, peft; from transformers import AutoModelForCausalLM, "
                   "AutoTokenizer", "import torch + transformers + peft (floor of the LLM probes)"))
        for key, code, label in floors:
            floor, _ = timed([sys.executable, "-c", f"{code}; print('{{}}')"], args.runs)
            figures[key] = round(floor, 2)
            rows.append((label, figures[key], None, ""))

        if not args.skip_recipes:
            env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
            for name, make in (("gan", gan_recipe), ("llm", llm_recipe)):
                sub = folder / name
                sub.mkdir()
                recipe = make(sub)
                runs = max(1, min(args.runs, 3))
                times, result = [], None
                for _ in range(runs):
                    start = time.perf_counter()
                    proc = subprocess.run([*ohlora, "doctor", str(recipe), "--json"], capture_output=True,
                                          text=True, env=env, cwd=sub)
                    times.append(time.perf_counter() - start)
                    try:
                        result = json.loads(proc.stdout.strip().splitlines()[-1])
                    except (ValueError, IndexError):
                        result = {"summary": {}, "findings": [], "error": proc.stderr.strip()[-300:]}
                probes = {f["check"]: f["status"] for f in result.get("findings", [])
                          if f["check"] in ("recipe-data", "dtype-mismatch", "grad-inference")}
                figures[f"{name}_recipe_s"] = round(statistics.median(times), 2)
                figures[f"{name}_probes"] = probes
                figures[f"{name}_summary"] = result.get("summary")
                label = ("GAN 256 px, 7 labels, 64 images" if name == "gan"
                         else "LLM GPT-NeoX 1.3B shape, 60 rows")
                rows.append((f"ohlora doctor {label}", figures[f"{name}_recipe_s"], 5.0,
                             ", ".join(f"{k} {v}" for k, v in probes.items()) or "no kind probes"))

    width = max(len(r[0]) for r in rows)
    print(f"{'case'.ljust(width)}  {'seconds':>8}  {'target':>6}  notes")
    for label, seconds, target, notes in rows:
        if target is None:
            print(f"{label.ljust(width)}  {seconds:8.3f}  {'-':>6}     {notes}")
            continue
        mark = "ok" if seconds < target else "SLOW"
        print(f"{label.ljust(width)}  {seconds:8.3f}  {target:5.0f}s  {mark} {notes}")
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    print(json.dumps({"bench": "doctor_latency", "cpus": os.cpu_count(), "load_avg_1m": load, **figures},
                     ensure_ascii=False))


if __name__ == "__main__":
    main()
