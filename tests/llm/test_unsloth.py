"""The unsloth backend trains for real on the CPU (tiny Llama) in its own process and leaves an
adapter that plain peft loads."""

import importlib.util
import json
import sys

import pytest
from llm_helpers import PAIRS, write_recipe
from typer.testing import CliRunner

from ohlora_cli.cli import app

pytestmark = pytest.mark.skipif(importlib.util.find_spec("unsloth") is None, reason="unsloth not installed")


def test_unsloth_trains_on_cpu_and_leaves_a_loadable_adapter(tmp_path, capfd, monkeypatch):
    recipe = write_recipe(tmp_path, arch="llama", backend="unsloth", epochs=4)
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    result = CliRunner().invoke(app, ["train-llm", str(recipe), "--skip-doctor"])
    worker_output = capfd.readouterr()
    assert result.exit_code == 0, result.output + worker_output.out[-3000:] + worker_output.err[-3000:]
    assert "unsloth" not in sys.modules  # it ran in the worker process only
    run = tmp_path / "run"
    # it was unsloth that trained: its banner is in the run's train.log, not on the terminal
    assert "Unsloth" in (run / "train.log").read_text(encoding="utf-8")
    assert "Unsloth" not in worker_output.out + worker_output.err + result.output
    assert list(cwd.iterdir()) == []  # unsloth's generated sources (if any) went to the run folder, not here
    stats = [json.loads(line) for line in (run / "stats.jsonl").read_text().splitlines()]
    losses = [s["loss"] for s in stats if "loss" in s]
    assert len(losses) == 8 and losses[-1] < losses[0] / 2
    assert json.loads((run / "run.json").read_text())["backend"] == "unsloth"
    assert len(list((run / "samples").glob("epoch-*.jsonl"))) == 4

    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    base = AutoModelForCausalLM.from_pretrained(tmp_path / "run" / "tiny-model")
    model = PeftModel.from_pretrained(base, run / "adapter")
    tokenizer = AutoTokenizer.from_pretrained(run / "adapter")
    assert any(n for n, p in model.named_parameters() if "lora_B" in n and p.abs().sum() > 0)  # trained
    ids = tokenizer(PAIRS[0][0] + " (answer start) ### answer:", return_tensors="pt")
    assert model(**ids).logits.shape[-1] == len(tokenizer)
