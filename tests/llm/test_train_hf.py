"""train-llm with the hf backend, trained for real on the CPU with a tiny model built in the test."""

import json

import pytest
import torch
from llm_helpers import PAIRS, TEMPLATE, write_recipe
from typer.testing import CliRunner

from ohlora_cli.cli import app
from ohlora_cli.llm import data as llm_data
from ohlora_cli.llm.config import LlmData
from ohlora_cli.llm.generate import generate_answers

runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, ["train-llm", *map(str, args)])


def load_adapter(tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    base = AutoModelForCausalLM.from_pretrained(tmp_path / "run" / "tiny-model")
    model = PeftModel.from_pretrained(base, tmp_path / "run" / "adapter")
    return model, AutoTokenizer.from_pretrained(tmp_path / "run" / "adapter")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One real training run shared by the tests below (about 120 optimizer steps)."""
    tmp_path = tmp_path_factory.mktemp("hf")
    recipe = write_recipe(tmp_path, epochs=60)
    result = invoke(recipe, "--skip-doctor", "--merge")
    assert result.exit_code == 0, result.output
    return tmp_path, result


def test_tiny_model_learns_the_training_answers(trained):
    tmp_path, _ = trained
    model, tokenizer = load_adapter(tmp_path)  # the saved adapter, loaded with plain peft
    cfg = LlmData(path="x", template=TEMPLATE)
    prompts = [llm_data.generation_prompt(q, cfg, tokenizer) for q, _ in PAIRS]
    answers = generate_answers(model, tokenizer, prompts, end_marker="(answer end)", max_new_tokens=24)
    matches = sum(got["answer"] == want for got, (_, want) in zip(answers, PAIRS, strict=True))
    assert matches >= 0.8 * len(PAIRS), [a["answer"] for a in answers]


def test_answers_stop_on_the_end_marker(trained):
    tmp_path, _ = trained
    model, tokenizer = load_adapter(tmp_path)
    cfg = LlmData(path="x", template=TEMPLATE)
    prompts = [llm_data.generation_prompt(q, cfg, tokenizer) for q, _ in PAIRS[:4]]
    with_marker = generate_answers(model, tokenizer, prompts, end_marker="(answer end)", max_new_tokens=24)
    without = generate_answers(model, tokenizer, prompts, end_marker=None, max_new_tokens=24)
    for stopped, free in zip(with_marker, without, strict=True):
        if stopped["stopped"] != "end_marker":
            continue
        # the criterion ended generation on the marker's last token, before the EOS the model emits next
        assert stopped["new_tokens"] < free["new_tokens"]
        text = tokenizer.decode(tokenizer(stopped["prompt"])["input_ids"])  # sanity: prompt round-trips
        assert text == stopped["prompt"]
    assert sum(a["stopped"] == "end_marker" for a in with_marker) >= 3


def test_artifacts(trained):
    tmp_path, result = trained
    run = tmp_path / "run"
    assert (run / "adapter" / "adapter_config.json").is_file()
    assert (run / "adapter" / "tokenizer_config.json").is_file()
    assert (run / "merged" / "config.json").is_file() and list((run / "merged").glob("*.safetensors"))
    assert (run / "recipe.yaml").read_text().startswith("kind: llm")
    stats = [json.loads(line) for line in (run / "stats.jsonl").read_text().splitlines()]
    losses = [s["loss"] for s in stats if "loss" in s]
    assert losses[-1] < losses[0] / 3
    assert any("eval_loss" in s for s in stats)  # evaluation each epoch
    samples = sorted((run / "samples").glob("epoch-*.jsonl"))
    assert len(samples) == 60
    last = [json.loads(line) for line in samples[-1].read_text().splitlines()]
    assert {s["input"] for s in last} == {q for q, _ in PAIRS[:2]}  # the validation prompts
    plan = json.loads((run / "run.json").read_text())
    assert plan["global_batch"] == 5 and plan["world_size"] == 1 and plan["per_device_batch"] == 5
    assert "after training" in result.output


def test_merged_weights_answer_like_the_adapter(trained):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tmp_path, _ = trained
    merged = AutoModelForCausalLM.from_pretrained(tmp_path / "run" / "merged")
    adapter, tokenizer = load_adapter(tmp_path)
    ids = AutoTokenizer.from_pretrained(tmp_path / "run" / "merged")("hi! (answer start)", return_tensors="pt")
    with torch.no_grad():
        # W + BA merged versus applied in float32 over the tiny model's widths: ~1e-6, a hundred times under 1e-4
        torch.testing.assert_close(merged(**ids).logits, adapter(**ids).logits, rtol=1e-4, atol=1e-4)


def test_cpu_threads_sets_the_runs_torch_threads(tmp_path):
    """train.cpu_threads: a CPU run trains on that many torch threads (every test starts at 1)."""
    result = invoke(write_recipe(tmp_path, epochs=1), "--skip-doctor", "--set", "train.cpu_threads=2")
    assert result.exit_code == 0, result.output
    assert torch.get_num_threads() == 2
    assert (tmp_path / "run" / "adapter" / "adapter_model.safetensors").is_file()
