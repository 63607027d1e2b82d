"""bench/gpu_check.py, the prepared check of every CUDA path: its --smoke mode runs every part at tiny
sizes on the CPU, so the script cannot rot while no GPU is lent; a part that fails is recorded and
the others keep their figures; a budget too small for a part skips it and still writes the report."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

from bounds import HANG_S

SCRIPT = Path(__file__).resolve().parents[1] / "bench" / "gpu_check.py"
PARTS = ["env", "prep-gan-data", "gan-bf16", "gan-fp32", "prep-llm-model", "llm-hf", "llm-unsloth", "llm-4bit",
         "doctor-env", "doctor-recipes", "gan-paths", "gan-channels-last", "gan-compile"]


def gpu_check(tmp_path: Path, *args: str, timeout: float = HANG_S) -> tuple[subprocess.CompletedProcess, dict]:
    proc = subprocess.run([sys.executable, str(SCRIPT), "--out", str(tmp_path / "out"), "--work", str(tmp_path / "work"),
                           *args], capture_output=True, text=True, timeout=timeout)
    report = json.loads((tmp_path / "out" / "gpu_check.json").read_text(encoding="utf-8"))
    return proc, report


def test_smoke_runs_every_part_of_the_gpu_check_on_the_cpu(tmp_path):
    proc, report = gpu_check(tmp_path, "--smoke", timeout=max(HANG_S, 3300))  # beyond --smoke's own budget of 3000 s
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    parts = report["parts"]
    assert list(parts) == PARTS and report["mode"] == "smoke"
    failed_checks = {name: [c for c in got.get("checks", []) if not c["ok"]] for name, got in parts.items()}
    assert not any(failed_checks.values()), failed_checks
    assert {name: got["status"] for name, got in parts.items() if got["status"] != "ok"} == {"llm-4bit": "skipped"}
    # 4-bit went as far as the product goes on a CPU: the recipe was valid, the plan refused it
    assert "model.load_in_4bit" in parts["llm-4bit"]["reason"] and "needs a CUDA GPU" in parts["llm-4bit"]["reason"]

    for name in ("gan-bf16", "gan-fp32", "gan-channels-last", "gan-compile"):
        got = parts[name]["figures"]
        assert got["img_per_s"] > 0 and got["intervals"] >= 2 and got["precision"] == "fp32", (name, got)
        assert got["stopped"] == "time box" and got["skipped_steps"] == 0  # the run's own SIGTERM path stopped it
    for name in ("llm-hf", "llm-unsloth"):
        got = parts[name]["figures"]
        assert got["tokens_per_s"] > 0 and got["steady_steps"] > 0 and got["stopped"] == "time box", (name, got)
        assert math.isfinite(got["loss_last"]) and got["model"]["trainable_params"] > 0
    steps = parts["gan-paths"]["figures"]["steps"]
    assert {n: s["status"] for n, s in steps.items()} == {"scorer": "ok", "adversarial": "ok", "resume": "ok",
                                                          "fp16": "skipped", "property-regression": "ok"}
    assert "fp16 needs a CUDA GPU" in steps["fp16"]["reason"]
    assert len(parts["doctor-env"]["checks"]) == 5 and len(parts["doctor-recipes"]["checks"]) == 12
    assert parts["env"]["figures"]["gpus"] == [] and parts["env"]["figures"]["precision_auto"] == "fp32"
    assert all(t["met"] is None for k, t in report["targets"].items() if k != "note")  # a CPU judges no target
    assert report["targets"]["gan_bf16_img_per_s"]["value"] == parts["gan-bf16"]["figures"]["img_per_s"]

    for name in PARTS:  # the table, a log per part, and one JSON line at the end
        assert name in proc.stdout and (tmp_path / "out" / "logs" / f"{name}.log").is_file()
    assert (tmp_path / "out" / "gpu_check.txt").read_text().count("│ ok") == len(PARTS) - 1
    last = json.loads(proc.stdout.strip().splitlines()[-1])
    assert last["bench"] == "gpu_check" and last["status"] == {n: parts[n]["status"] for n in PARTS}


def test_a_failed_part_is_recorded_and_the_others_go_on(tmp_path):
    proc, report = gpu_check(tmp_path, "--smoke", "--only", "env,prep-gan-data", "--fail", "env")
    assert proc.returncode == 1
    env, data = report["parts"]["env"], report["parts"]["prep-gan-data"]
    assert env["status"] == "failed" and "--fail: this part was made to fail" in env["error"]
    assert "RuntimeError" in env["traceback"] and env["log_tail"]
    assert data["status"] == "ok" and data["figures"]["images"] == 64
    assert (Path(data["figures"]["csv"])).is_file()


def test_a_budget_too_small_skips_parts_and_still_reports(tmp_path):
    proc, report = gpu_check(tmp_path, "--only", "env,gan-bf16", "--budget", "20", timeout=HANG_S)
    assert proc.returncode == 0, proc.stderr
    for name in ("env", "gan-bf16"):
        assert report["parts"][name]["status"] == "skipped"
        assert report["parts"][name]["reason"].startswith("out of time")
    assert report["mode"] == "full" and "out of time" in proc.stdout


def test_the_work_folder_must_be_the_scripts_own(tmp_path):
    (tmp_path / "work").mkdir()
    (tmp_path / "work" / "mine.txt").write_text("not the script's")
    proc = subprocess.run([sys.executable, str(SCRIPT), "--out", str(tmp_path / "out"), "--work", str(tmp_path / "work"),
                           "--smoke", "--only", "env"], capture_output=True, text=True, timeout=HANG_S)
    assert proc.returncode != 0 and "holds files this script did not make" in proc.stderr
    assert [p.name for p in (tmp_path / "work").iterdir()] == ["mine.txt"]
