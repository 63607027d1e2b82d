"""Environment checks, run for real: the probe subprocesses import torch, torchvision and unsloth
as a training run would. Broken installs are real packages on PYTHONPATH that fail the way the
broken ones fail (the subprocesses inherit it); the job-size checks read a real config.json."""

import json
import textwrap
from importlib import metadata

import torch

from ohlora_cli import recipes
from ohlora_cli.doctor import run
from ohlora_cli.doctor.registry import Status

ENV_CHECKS = ["torch", "gpus", "torchvision", "unsloth", "library-versions"]


def rows(report, check):
    return [f for f in report.findings if f.check == check]


def shadow_package(folder, name, body):
    """A package named ``name`` in ``folder`` whose import runs ``body``."""
    (folder / name).mkdir(parents=True)
    (folder / name / "__init__.py").write_text(textwrap.dedent(body))


def test_this_machine_passes_with_the_installed_versions():
    report = run(select=ENV_CHECKS)
    [torch_row] = rows(report, "torch")
    assert torch_row.status is Status.PASS and f"torch {torch.__version__}" in torch_row.message
    gpus = rows(report, "gpus")
    assert all(r.status is (Status.PASS if torch.cuda.is_available() else Status.SKIP) for r in gpus)
    [tv] = rows(report, "torchvision")
    assert tv.status is Status.PASS and metadata.version("torchvision") in tv.message
    [unsloth] = rows(report, "unsloth")  # the bare environment check probes it: the test extra installs it
    assert unsloth.status is Status.PASS and metadata.version("unsloth") in unsloth.message
    [versions] = rows(report, "library-versions")
    assert versions.status is Status.PASS
    assert f"transformers {metadata.version('transformers')}" in versions.message


def test_torchvision_whose_operators_do_not_load(tmp_path, monkeypatch):
    # What a torchvision built for another torch does on import (the seed's broken install).
    shadow_package(tmp_path, "torchvision", """\
        raise RuntimeError("operator torchvision::nms does not exist")
    """)
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    [row] = rows(run(select=["torchvision"]), "torchvision")
    assert row.status is Status.FAIL
    assert "operators do not load" in row.message and "torchvision::nms does not exist" in row.message
    assert "import transformers" in row.message and "torch" in row.hint


def test_unsloth_that_does_not_import(tmp_path, monkeypatch):
    shadow_package(tmp_path, "unsloth", """\
        raise ImportError("Unsloth: this build needs a newer triton")
    """)
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    [bare] = rows(run(select=["unsloth"]), "unsloth")  # nothing asks for it: a warning
    assert bare.status is Status.WARN and "needs a newer triton" in bare.message

    recipe = recipes.load("llm-demo", ["model.backend=unsloth"])
    [needed] = rows(run(recipes=[recipe], select=["unsloth"]), "unsloth")  # the recipe uses it: a failure
    assert needed.status is Status.FAIL and "does not import" in needed.message

    [unused] = rows(run(recipes=[recipes.load("llm-demo")], select=["unsloth"]), "unsloth")
    assert unused.status is Status.SKIP  # an hf recipe does not probe it at all


def test_job_larger_than_the_machine(tmp_path):
    """A config.json far larger than this machine: RAM is a warning, the checkpoints' disk a failure."""
    model = tmp_path / "huge-model"
    model.mkdir()
    (model / "config.json").write_text(json.dumps({
        "model_type": "llama", "hidden_size": 65536, "intermediate_size": 262144, "num_hidden_layers": 1000,
        "vocab_size": 128000}))
    recipe = recipes.load("llm-demo", [f"model.path={model}", "model.tiny=null", "lora.r=256",
                                       f"output_dir={tmp_path / 'run'}"])
    report = run(recipes=[recipe], select=["memory", "disk-space"])
    [memory] = rows(report, "memory")
    assert memory.status is Status.WARN and memory.where == "train.device" and "RAM available" in memory.message
    [disk] = rows(report, "disk-space")
    assert disk.status is Status.FAIL and disk.bad_input and disk.where == "output_dir"
    assert str(tmp_path) in disk.message

    small = recipes.load("llm-demo", [f"output_dir={tmp_path / 'run'}"])
    assert all(f.status is not Status.FAIL for f in run(recipes=[small], select=["memory", "disk-space"]).findings)
