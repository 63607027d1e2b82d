"""The LLM's mixed-precision path on the CPU (bf16 weights, bf16 autocast, fp32 LoRA weights) and
the precision the plan picks on simulated CUDA cards (7.0 / 8.0 / 9.0)."""

import dataclasses
import json

import pytest
import torch

from ohlora_cli import recipes
from ohlora_cli.llm import backends
from ohlora_cli.llm.train import check_data, make_plan, train
from ohlora_cli.runtime.devices import weights_dtype


def plan_for(recipe_path):
    cfg = recipes.load(str(recipe_path), expect_kind="llm")
    train_rows, valid_rows, _, _ = check_data(cfg)
    plan = make_plan(cfg, len(train_rows), len(valid_rows), world_size=1, local_rank=0, note=None)
    return cfg, plan, train_rows, valid_rows


def test_the_bf16_path_trains_on_the_cpu(recipe_factory, tmp_path, monkeypatch):
    """train() given a bf16 plan (the CPU plans fp32 on its own): the base weights load in bf16,
    the LoRA weights stay fp32, the adapted layers run under bf16 autocast, and the loss falls."""
    cfg, plan, train_rows, valid_rows = plan_for(recipe_factory(epochs=8, extra="generate:\n  show: 0\n"))
    assert plan.precision == "fp32"
    plan = dataclasses.replace(plan, precision="bf16")
    loaded, outputs, autocast = {}, set(), set()
    real_load = backends.load_hf

    def watch(module, args, output):
        outputs.add(output.dtype)
        autocast.add(torch.is_autocast_enabled("cpu"))

    def load_and_watch(*args, **kwargs):  # the real loader; the test only looks at what it returns
        model, tokenizer = real_load(*args, **kwargs)
        loaded["model"] = model
        for name, module in model.named_modules():
            if name.endswith("query_key_value.base_layer"):
                module.register_forward_hook(watch)
        return model, tokenizer

    monkeypatch.setattr(backends, "load_hf", load_and_watch)
    train(cfg, plan, train_rows, valid_rows, resume=False, merge=False)
    model = loaded["model"]
    base = {p.dtype for n, p in model.named_parameters() if "lora_" not in n}
    lora = {p.dtype for n, p in model.named_parameters() if "lora_" in n}
    assert base == {torch.bfloat16} and lora == {torch.float32}
    assert outputs == {torch.bfloat16}  # the adapted layers ran in bf16
    assert autocast == {True, False}  # training under bf16 autocast (the Trainer's), epoch answers without
    run = tmp_path / "run"
    assert json.loads((run / "run.json").read_text())["precision"] == "bf16"
    losses = [s["loss"] for s in map(json.loads, (run / "stats.jsonl").read_text().splitlines()) if "loss" in s]
    assert len(losses) >= 8 and all(torch.isfinite(torch.tensor(losses))) and losses[-1] < losses[0] / 2
    assert (run / "adapter" / "adapter_config.json").is_file()


@pytest.mark.parametrize(("cap", "precision"), [((7, 0), "fp16"), ((8, 0), "bf16"), ((9, 0), "bf16")])
def test_the_plan_picks_the_precision_of_the_card(recipe_factory, monkeypatch, cap, precision):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: cap)
    _, plan, _, _ = plan_for(recipe_factory())
    assert (plan.device, plan.precision) == ("cuda:0", precision)
    assert weights_dtype(plan.precision) == {"fp16": torch.float16, "bf16": torch.bfloat16}[precision]
