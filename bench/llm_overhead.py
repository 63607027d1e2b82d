"""Training speed of ``ohlora train-llm`` against a bare trl SFTTrainer script, and hf against unsloth.

All runs train the same tiny Llama-architecture model (built locally, no download) with LoRA on
all linear layers, on the shipped demo dialogue (56 rows) repeated 10 times, for one epoch of
70 optimizer steps at a global batch of 8. Each run is a fresh process; steps/s is the Trainer's own
``train_steps_per_second`` (time inside ``trainer.train()``), peak RSS is the process tree's.
The ohlora runs keep their per-epoch checkpoint (saved inside ``trainer.train()``, so it counts)
and stats.jsonl; evaluation and sample answers are off, as in the bare script. The bare script
runs twice: as trl's defaults leave it (no checkpoint within 70 steps), and saving the same
per-epoch checkpoint as ohlora, which is the like-for-like reference for the overhead target.

Repeats are interleaved; the table shows the fastest of each, and the last line the median of the
paired ratios (ohlora / bare within one round), the figure least moved by a drifting machine.

    python bench/llm_overhead.py                 # 1 thread, one run each
    python bench/llm_overhead.py --repeats 3 --threads 2

Prints a table and one JSON line. The bare script, like ohlora, swaps trl's Triton loss-head
kernel for the plain-torch one on the CPU (trl 1.15 cannot train on a CPU-only machine otherwise).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

TEMPLATE = "{input} (answer start) ### answer: {output} (answer end)"
REPEAT_ROWS = 10
BATCH, LR, R, ALPHA, MAX_LEN = 8, 0.01, 16, 32, 64


def bare_trl(model_dir: str, csv_path: str, out_dir: str, save: str) -> None:
    """The reference: what a user writes with trl alone."""
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    from ohlora_cli.llm.compat import use_torch_loss_head_on_cpu

    use_torch_loss_head_on_cpu(torch.device("cpu"))
    before, after = TEMPLATE.split("{output}")
    examples = []
    with open(csv_path, encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            prompt = before.replace("{input}", row["input_data"]).rstrip()
            examples.append({"prompt": prompt, "completion": " " + row["output_data"] + after.rstrip()})
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    args = SFTConfig(output_dir=out_dir, per_device_train_batch_size=BATCH, num_train_epochs=1, learning_rate=LR,
                     logging_steps=10, save_strategy=save, report_to="none", use_cpu=True, bf16=False,
                     gradient_checkpointing=False, max_length=MAX_LEN, seed=0, disable_tqdm=True)
    lora = LoraConfig(r=R, lora_alpha=ALPHA, lora_dropout=0.0, target_modules="all-linear", task_type="CAUSAL_LM")
    trainer = SFTTrainer(model=model, args=args, train_dataset=Dataset.from_list(examples),
                         processing_class=tokenizer, peft_config=lora)
    metrics = trainer.train().metrics
    trainer.save_model(str(Path(out_dir) / "adapter"))
    print("METRICS " + json.dumps(metrics))


def ohlora_recipe(folder: Path, model_dir: Path, csv_path: Path, backend: str) -> Path:
    path = folder / f"recipe-{backend}.yaml"
    path.write_text(f"""\
kind: llm
output_dir: {folder / ("run-" + backend)}
model: {{path: {model_dir}, backend: {backend}}}
data: {{path: {csv_path}, split_column: null, valid_fraction: 0.0, template: "{TEMPLATE}", max_length: {MAX_LEN}}}
lora: {{r: {R}, alpha: {ALPHA}, dropout: 0.0, target_modules: all-linear}}
train: {{batch_size: {BATCH}, epochs: 1, learning_rate: {LR}, logging_steps: 10, eval: false}}
generate: {{every_epoch: false, show: 0}}
""", encoding="utf-8")
    return path


def measure(cmd: list[str], env: dict) -> tuple[float, int, str]:
    """(wall seconds, peak RSS bytes of the process tree, output)."""
    start = time.perf_counter()
    with tempfile.TemporaryFile("w+") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
        parent, peak = psutil.Process(proc.pid), 0
        while proc.poll() is None:
            try:
                tree = [parent, *parent.children(recursive=True)]
                peak = max(peak, sum(p.memory_info().rss for p in tree if p.is_running()))
            except psutil.Error:
                pass
            time.sleep(0.05)
        log.seek(0)
        output = log.read()
    if proc.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}):\n{output[-3000:]}")
    return time.perf_counter() - start, peak, output


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=1, help="runs of each; the fastest counts")
    parser.add_argument("--threads", type=int, default=1, help="torch / OpenMP threads per run")
    parser.add_argument("--skip-unsloth", action="store_true")
    parser.add_argument("--bare", nargs=4, metavar=("MODEL", "CSV", "OUT", "SAVE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.bare:
        bare_trl(*args.bare)
        return

    from ohlora_cli.llm import data as llm_data
    from ohlora_cli.llm.config import LlmData
    from ohlora_cli.llm.tiny import ensure_tiny_model

    work = Path(tempfile.mkdtemp(prefix="llm-bench-"))
    demo = LlmData(path="package:llm-demo-dialogue.csv", template=TEMPLATE)
    rows = llm_data.read_rows(demo)
    csv_path = work / "dialogue.csv"
    with open(csv_path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["input_data", "output_data"])
        for _ in range(REPEAT_ROWS):
            writer.writerows([r.input, r.output] for r in rows)
    model_dir = work / "tiny-llama"
    ensure_tiny_model(model_dir, "llama", rows, demo, seed=0)
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "TOKENIZERS_PARALLELISM": "false",
           "HF_HUB_OFFLINE": "1"}

    runs = {
        "bare trl SFTTrainer (hf)": [sys.executable, __file__, "--bare", str(model_dir), str(csv_path),
                                     str(work / "bare"), "no"],
        "bare trl + epoch checkpoint": [sys.executable, __file__, "--bare", str(model_dir), str(csv_path),
                                        str(work / "bare"), "epoch"],
        "ohlora train-llm (hf)": [sys.executable, "-m", "ohlora_cli", "train-llm",
                                  str(ohlora_recipe(work, model_dir, csv_path, "hf")), "--skip-doctor"],
    }
    if not args.skip_unsloth:
        runs["ohlora train-llm (unsloth)"] = [sys.executable, "-m", "ohlora_cli", "train-llm",
                                              str(ohlora_recipe(work, model_dir, csv_path, "unsloth")),
                                              "--skip-doctor"]
    # Repeats are interleaved (A B C, A B C, ...) so that a slow spell of the machine hits every
    # run alike; the fastest repeat of each counts, and each repeat also gives a paired ratio
    # (ohlora / bare in the same round), whose median is robust to the machine's drift.
    results: dict[str, dict] = {}
    rounds: list[dict[str, float]] = []
    for _ in range(args.repeats):
        rounds.append({})
        for name, cmd in runs.items():
            for folder in ("bare", "run-hf", "run-unsloth"):  # each repeat starts a fresh run
                shutil.rmtree(work / folder, ignore_errors=True)
            wall, rss, output = measure(cmd, env)
            if "bare" in name:
                metrics = json.loads(output.split("METRICS ", 1)[1].splitlines()[0])
            else:
                backend = "unsloth" if "unsloth" in name else "hf"
                stats = (work / f"run-{backend}" / "stats.jsonl").read_text().splitlines()
                metrics = json.loads(stats[-1])
            sps = metrics["train_steps_per_second"]
            rounds[-1][name] = sps
            if name not in results or sps > results[name]["steps_per_s"]:
                results[name] = {"steps_per_s": sps, "wall_s": round(wall, 1), "peak_rss_mb": round(rss / 2**20)}

    def paired(reference: str) -> float:
        return round(statistics.median(r["ohlora train-llm (hf)"] / r[reference] for r in rounds), 3)

    bare = results["bare trl SFTTrainer (hf)"]["steps_per_s"]
    same = results["bare trl + epoch checkpoint"]["steps_per_s"]
    ours = results["ohlora train-llm (hf)"]["steps_per_s"]
    print(f"tiny Llama + LoRA, {len(rows) * REPEAT_ROWS} rows, batch {BATCH}, 1 epoch, CPU, "
          f"{args.threads} thread(s), best of {args.repeats}")
    print(f"{'run':<30} {'steps/s':>8} {'vs bare':>8} {'vs bare+ckpt':>13} {'wall s':>8} {'peak RSS MB':>12}")
    for name, r in results.items():
        print(f"{name:<30} {r['steps_per_s']:>8.2f} {r['steps_per_s'] / bare:>8.3f} {r['steps_per_s'] / same:>13.3f} "
              f"{r['wall_s']:>8.1f} {r['peak_rss_mb']:>12}")
    print(f"ohlora (hf) / bare, median of the {args.repeats} paired rounds: {paired('bare trl SFTTrainer (hf)'):.3f} "
          f"(vs bare + epoch checkpoint: {paired('bare trl + epoch checkpoint'):.3f})")
    summary = {"bench": "llm_overhead", "device": "cpu", "threads": args.threads, "repeats": args.repeats,
               "ohlora_vs_bare": round(ours / bare, 3), "ohlora_vs_bare_with_checkpoint": round(ours / same, 3),
               "paired_median_vs_bare": paired("bare trl SFTTrainer (hf)"),
               "paired_median_vs_bare_with_checkpoint": paired("bare trl + epoch checkpoint"),
               "runs": results}
    if "ohlora train-llm (unsloth)" in results:
        summary["unsloth_vs_hf"] = round(results["ohlora train-llm (unsloth)"]["steps_per_s"] / ours, 3)
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
