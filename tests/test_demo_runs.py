"""The two demos, run as a user runs them (a fresh process, shortened with --set), in a working
folder, HOME and TMPDIR of their own:

- a run writes only under its output_dir and, for the demo data / model, the builder's folder
  (measured: every new path under the working folder, HOME and TMPDIR is listed), TensorBoard's
  event files (train.report_to) included;
- the terminal shows ohlora's own lines, tables and progress bar: no library progress bar or
  warning reaches it, and output_dir/train.log holds them;
- with stderr not a terminal (a pipe here), progress is one plain line per logging interval,
  the figures of stats.jsonl, without the bar's control characters;
- both leave report.html (curves, the grid or the answers, inlined) and say where it is;
- the LLM demo shows answers to training prompts beside the validation ones and says why the
  latter cannot be right.
"""

import json
import os
import re
import subprocess
import sys

import pytest
from snapshots import snapshot

# What library output looks like on a terminal: tqdm bars, warnings, log records.
LIBRARY = re.compile(r"\d+%\|| it/s\]| examples/s\]|Warning|warning:|\[transformers\]|Failed to load|FutureWarning")


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    def run(command: list[str]) -> dict:
        root = tmp_path_factory.mktemp(command[0])
        cwd, home, tmp = root / "cwd", root / "home", root / "tmp"
        for folder in (cwd, home, tmp):
            folder.mkdir()
        env = {k: v for k, v in os.environ.items() if not k.startswith(("XDG_", "HF_HOME", "TORCHINDUCTOR"))}
        env.update(HOME=str(home), TMPDIR=str(tmp), OMP_NUM_THREADS="1", COLUMNS="100")
        done = subprocess.run([sys.executable, "-m", "ohlora_cli", *command], cwd=cwd, env=env,
                              capture_output=True, text=True, timeout=1200)
        assert done.returncode == 0, done.stderr[-3000:]
        new = {os.path.relpath(p, root) for p in snapshot(cwd, home, tmp)} - {"cwd", "home", "tmp"}
        return {"out": done.stdout, "err": done.stderr, "cwd": cwd, "new": new}

    return {
        "gan": run(["train-gan", "--set", "train.kimg=0.5", "--set", "train.log_kimg=0.1",
                     "--set", "train.snapshot_kimg=0.25", "--set", "train.report_to=[tensorboard]"]),
        "llm": run(["train-llm", "--set", "train.epochs=2", "--set", "train.logging_steps=3",
                    "--set", "train.report_to=[tensorboard]"]),
    }


def outside(new: set, *allowed: str) -> set:
    """New paths that are not under one of the allowed folders, nor a folder above one."""
    return {p for p in new if not any(p == a or p.startswith(a + "/") or a.startswith(p + "/") for a in allowed)}


def torch_temp(paths: set) -> set:
    """torch creates an empty $TMPDIR/torchinductor_<user> when peft imports torch._inductor: not ours."""
    return {p for p in paths if re.fullmatch(r"tmp/torchinductor_[^/]+", p)}


@pytest.mark.parametrize("engine, allowed", [
    ("gan", ("cwd/runs/gan-demo",)),  # output_dir, data.synthetic's dataset inside it
    ("llm", ("cwd/runs/llm-demo",)),  # output_dir, the tiny model inside it
])
def test_a_real_run_writes_only_under_output_dir(demo, engine, allowed):
    new = demo[engine]["new"]
    assert outside(new, *allowed) - torch_temp(new) == set()
    assert any(p.startswith(f"{allowed[0]}/tb/events.out.tfevents.") for p in new)  # TensorBoard's, inside too
    for path in torch_temp(new):
        assert not os.listdir(demo[engine]["cwd"].parent / path)  # empty, as torch leaves it


@pytest.mark.parametrize("engine", ["gan", "llm"])
def test_no_library_output_reaches_the_terminal(demo, engine):
    shown = demo[engine]["out"] + demo[engine]["err"]
    assert not LIBRARY.findall(shown), LIBRARY.findall(shown)
    log = demo[engine]["cwd"] / "runs" / f"{engine}-demo" / "train.log"
    assert f"library messages: runs/{engine}-demo/train.log" in demo[engine]["err"] and log.is_file()
    assert "doctor: ok" in demo[engine]["err"]  # ohlora's own table and result lines are still there
    if engine == "llm":
        text = log.read_text(encoding="utf-8")
        for bar in ("Tokenizing train dataset", "Loading weights", "Writing model shards"):
            assert bar in text  # the libraries' bars, kept in the log
        assert "train-llm" in demo[engine]["err"] and "240" not in demo[engine]["err"]  # our bar: 12 steps
        assert "step 12/12" in demo[engine]["err"]
    else:
        assert "train-gan" in demo[engine]["err"] and "0.512/0.500 kimg" in demo[engine]["err"]


@pytest.mark.parametrize("engine", ["gan", "llm"])
def test_progress_off_a_terminal_is_one_plain_line_per_logging_interval(demo, engine):
    err = demo[engine]["err"]
    assert "\x1b" not in err and "\r" not in err  # no colours, cursor moves or bar redraws
    stats = [json.loads(line) for line in
             (demo[engine]["cwd"] / "runs" / f"{engine}-demo" / "stats.jsonl").read_text().splitlines()]
    lines = [line for line in err.splitlines() if line.startswith(f"train-{engine}  ")]
    if engine == "gan":
        intervals = [r for r in stats if "img_per_s" in r]  # the final summary line is not an interval
        assert len(intervals) == 5  # 0.5 kimg logged every 0.1 kimg
        shown = [re.search(r"  ([\d.]+)/0\.500 kimg  step (\d+)  \d+ img/s  d_loss [\d.]+  g_loss [\d.]+  .*ETA \d+:\d\d:\d\d$",
                           line) for line in lines]
        assert all(shown), lines
        assert [(float(m[1]), int(m[2])) for m in shown] == [(r["kimg"], r["step"]) for r in intervals]
    else:
        intervals = [r for r in stats if "loss" in r]
        assert len(intervals) == 4  # 12 steps logged every 3
        shown = [re.search(r"step (\d+)/12  epoch [\d.]+  loss ([\d.]+)  lr \S+  \d+ tokens/s  ETA \d+:\d\d:\d\d$", line)
                 for line in lines if "eval_loss" not in line]
        assert all(shown), lines
        assert [int(m[1]) for m in shown] == [r["step"] for r in intervals]
        assert sum("eval_loss" in line for line in lines) == 2  # one evaluation per epoch


@pytest.mark.parametrize("engine, charts", [
    ("gan", {"losses (D / G)", "images per second", "D's AUROC (reals vs fakes)"}),
    ("llm", {"loss", "learning rate", "gradient norm"}),
])
def test_both_demos_leave_a_report_page_with_their_curves(demo, engine, charts):
    from report_html import parse_report

    run = demo[engine]["cwd"] / "runs" / f"{engine}-demo"
    assert f"report: runs/{engine}-demo/report.html" in demo[engine]["out"]
    page = parse_report(run / "report.html")
    assert charts <= set(page.charts), page.charts
    for title in charts:  # each a real picture: a PNG that decodes, with more than one colour in it
        assert page.charts[title].size[0] > 100 and len(page.charts[title].getcolors(1 << 16) or [0, 0]) > 1
    assert "recipe.yaml" in page.text and "Preflight" in page.text
    if engine == "gan":
        assert "latest grid" in page.images and page.images["latest grid"].size[0] >= 16
        assert "Grids over time (2 saved, 2 shown)" in page.text
    else:
        assert "Sample answers" in page.text and "expected" in page.text
        assert "hi! i am oh-lora. nice to meet you!" in page.text  # an expected answer, beside the model's


def test_llm_demo_shows_training_and_validation_answers_and_says_why(demo):
    out = demo["llm"]["out"]
    assert "answers to training prompts" in out and "answers to validation prompts (never trained on)" in out
    assert re.search(r"exact answers after training: \d of 4 training prompts, \d of 4 validation prompts", out)
    assert "The validation answers cannot be right" in " ".join(out.split())
