"""The doctor's LLM probes on real recipes: data, meta-device dtype probe, generation graph probe."""

from llm_helpers import write_csv, write_recipe

from ohlora_cli import recipes
from ohlora_cli.doctor.probes import llm as probes
from ohlora_cli.doctor.registry import Context, Status


def ctx_for(path):
    recipe = recipes.load(str(path), expect_kind="llm")
    return recipe, Context(scope="recipe", recipe=recipe)


def test_probes_pass_on_a_good_recipe_without_building_anything(tmp_path):
    recipe, ctx = ctx_for(write_recipe(tmp_path))
    data = probes.data(recipe, ctx)
    assert data[0].status == Status.PASS and "10 train / 2 valid" in data[0].message
    dtype = probes.dtype_mismatch(recipe, ctx)
    assert [f.status for f in dtype] == [Status.PASS], dtype
    assert "meta device" in dtype[0].message and "LoRA grads float32" in dtype[0].message
    grad = probes.grad_inference(recipe, ctx)
    assert [f.status for f in grad] == [Status.PASS], grad
    assert not (tmp_path / "run").exists()


def test_generation_probe_catches_a_graph(tmp_path, monkeypatch):
    """The probe is real: generation without no_grad is caught."""
    import ohlora_cli.llm.generate as generate

    def leaky(model, tokenizer, prompts, *, end_marker, max_new_tokens):
        with __import__("torch").enable_grad():
            for prompt in prompts:
                ids = tokenizer(prompt, return_tensors="pt")
                model(**ids).logits.sum()
        return []

    monkeypatch.setattr(generate, "generate_answers", leaky)
    recipe, ctx = ctx_for(write_recipe(tmp_path))
    findings = probes.grad_inference(recipe, ctx)
    assert findings[0].status == Status.FAIL and "saved" in findings[0].message


def test_data_probe_warns_without_validation_rows_and_end_marker(tmp_path):
    csv = write_csv(tmp_path / "d.csv")  # train rows only
    path = write_recipe(tmp_path, csv=csv)
    path.write_text(path.read_text().replace(" (answer end)", ""))
    recipe, ctx = ctx_for(path)
    statuses = {f.message.split(":")[0]: f.status for f in probes.data(recipe, ctx)}
    assert statuses["no validation rows"] == Status.WARN
    assert statuses["no end marker"] == Status.WARN


def test_one_gpu_unless_ddp(monkeypatch, tmp_path):
    import torch

    from ohlora_cli.commands.train_llm import one_gpu_unless_ddp

    recipe = recipes.load(str(write_recipe(tmp_path)), expect_kind="llm")
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,5")
    note = one_gpu_unless_ddp(recipe)
    import os

    assert os.environ["CUDA_VISIBLE_DEVICES"] == "3"
    assert "--nproc 2" in note and "never DataParallel" in note
