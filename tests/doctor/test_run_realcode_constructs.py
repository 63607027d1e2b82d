"""Constructs of the real Oh-LoRA scripts (docs/doctor-realcode-run.md) that the observed run had
to learn, each in a tiny script run under ``ohlora doctor SCRIPT.py --run``.

Oh-LoRA's fix for its doubled batch was ``os.environ["CUDA_VISIBLE_DEVICES"] = "0"`` before the
module that builds the ``SFTConfig``: with ``--gpus 2`` the simulated GPU count must follow a setting
made before CUDA initialised (one GPU left), and must not follow a setting made after it (on a GPU
machine it changes nothing). And ``Trainer(...)`` itself writes the variable (accelerate's
``clear_environment`` saves and restores it): a library's write is not the user's late setting."""

import json
import textwrap

import pytest
from bounds import HANG_S
from observing import observed
from scripts import write
from typer.testing import CliRunner

from ohlora_cli.cli import app

runner = CliRunner()

TRAINER = """
    import os
    {early}
    import torch
    from torch import nn
    from transformers import Trainer, TrainingArguments

    torch.cuda.is_available()
    {late}

    class Regressor(nn.Module):
        def __init__(self):
            super().__init__()
            self.head = nn.Linear(4, 1)

        def forward(self, x, labels):
            return {{"loss": (self.head(x).squeeze(-1) - labels).pow(2).mean()}}

    rows = [{{"x": torch.randn(4), "labels": torch.tensor(0.5)}} for _ in range(64)]
    args = TrainingArguments(  # CONFIG
        output_dir="out", per_device_train_batch_size=8, max_steps=4, report_to=[], save_strategy="no",
        logging_strategy="no", dataloader_num_workers=0)
    Trainer(model=Regressor(), args=args, train_dataset=rows).train()
"""

SET = 'os.environ["CUDA_VISIBLE_DEVICES"] = "0"'


@pytest.mark.parametrize("place", ["first", "after-init"])
def test_cuda_visible_devices_before_cuda_init_leaves_one_simulated_gpu(tmp_path, monkeypatch, place):
    monkeypatch.chdir(tmp_path)
    early, late = (SET, "") if place == "first" else ("", SET)
    (tmp_path / "train.py").write_text(textwrap.dedent(TRAINER.format(early=early, late=late)).lstrip())
    result = runner.invoke(app, ["doctor", "train.py", "--run", "--json", "--timeout", str(HANG_S), "--gpus", "2",
                                 "--steps", "2"])
    data = json.loads(result.stdout.strip().splitlines()[-1])
    assert not observed(data, "observed-run", "fail"), result.output
    batch = observed(data, "multi-gpu-batch", "fail")
    late_set = observed(data, "cuda-visible-devices-late", "fail")
    if place == "first":
        assert not batch, result.output
        assert not late_set, result.output
    else:
        assert batch and "8 with 1 GPU, 16 with 2" in batch[0]["message"], result.output
        # the user's line only, not the Trainer(...) line where accelerate restores the variable
        assert [f["where"] for f in late_set] == ["train.py:8"], result.output


# Oh-LoRA failure 3 under today's trl: with 2 GPUs visible to a plain `python` run, trl 1.x refuses
# the Trainer (nn.DataParallel) at the `SFTTrainer(` line, so that run reaches no optimizer step. The
# doctor then compares what the Trainer was given (recorded when `Trainer.__init__` returns) with the
# first step of the run with 1 GPU. A library that refuses the same way stands in for trl here (the
# test must not hang on trl's version or wording): it lives under a `site-packages` folder, so its
# frames are a library's, not the user's.
REFUSING = """
    from transformers import Trainer


    class OneDeviceTrainer(Trainer):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            if self.args.n_gpu > 1:
                raise ValueError("one device only")
"""

LLM = """
    import sys
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM, TrainingArguments
    {trainer_import}

    GLOBAL_BATCH = 8
    {per_device}

    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=32, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                         num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=16))
    rows = [{{"input_ids": [1 + (i + k) % 30 for k in range(6)], "labels": [1 + (i + k) % 30 for k in range(6)]}}
            for i in range(64)]
    args = TrainingArguments(
        output_dir="out", per_device_train_batch_size=PER_DEVICE, max_steps=4, report_to=[], save_strategy="no",
        logging_strategy="no", dataloader_num_workers=0)
    trainer = Built(
        model=model,
        args=args,
        train_dataset=rows,
    )
    trainer.train()
"""

IMPORTS = {"refused": 'sys.path.insert(0, "vendor/site-packages")\nfrom one_device import OneDeviceTrainer as Built',
           "steps": "from transformers import Trainer as Built"}
BATCHES = {"fixed": "PER_DEVICE = 8",
           "derived": "PER_DEVICE = GLOBAL_BATCH // max(1, torch.cuda.device_count())"}


@pytest.mark.parametrize("trainer,batch", [("refused", "fixed"), ("steps", "fixed"), ("refused", "derived"),
                                           ("steps", "derived")])
def test_trainer_batch_multiplied_by_gpus_is_found_whether_refused_or_stepped(project, trainer, batch):
    (project / "vendor" / "site-packages").mkdir(parents=True)
    write(project / "vendor" / "site-packages", "one_device.py", REFUSING)
    text = textwrap.indent(IMPORTS[trainer], "    ")[4:]
    script = write(project, "train.py", LLM.format(trainer_import=text, per_device=BATCHES[batch]))
    lines = script.read_text().splitlines()
    config_line = next(i for i, line in enumerate(lines, 1) if line.startswith("args = TrainingArguments("))
    trainer_line = next(i for i, line in enumerate(lines, 1) if line.startswith("trainer = Built("))
    result = runner.invoke(app, ["doctor", "train.py", "--run", "--json", "--timeout", str(HANG_S), "--gpus", "2",
                                 "--steps", "1"])
    data = json.loads(result.stdout.strip().splitlines()[-1])
    batch_fails = observed(data, "multi-gpu-batch", "fail")
    crashes = observed(data, "observed-run", "fail")
    if batch == "derived":  # 4 per device x 2 GPUs = 8 = 8 x 1 GPU: nothing multiplied
        assert not batch_fails, result.output
        # a refusal that is not about the batch stays a crash of its own, never hidden
        assert [c["where"] for c in crashes] == ([f"train.py:{trainer_line}"] if trainer == "refused" else []), \
            result.output
        return
    assert [f["where"] for f in batch_fails] == [f"train.py:{config_line}"], result.output
    message = batch_fails[0]["message"]
    assert f"train.py:{config_line}" in message and "per_device_train_batch_size=8" in message, message
    if trainer == "refused":
        # given 16 (8 x 2 GPUs) from the config, by the Trainer line; 8 in the first step with 1 GPU
        assert "given 16 examples per optimizer step" in message and f"train.py:{trainer_line}" in message, message
        assert "8 examples in the first optimizer step with 1 GPU" in message, message
        assert "one_device refused" in message and "ValueError" in message, message
        assert not crashes, result.output  # the refusal is told in the finding, not as a separate FAIL
        places = {s["where"] for s in batch_fails[0]["evidence"]}
        assert {f"train.py:{config_line}", f"train.py:{trainer_line}"} <= places, batch_fails[0]
    else:
        assert "8 with 1 GPU, 16 with 2" in message and not crashes, result.output


def _runs(given: int, single_steps: bool, **facts):
    """The events of a run with 2 simulated GPUs that trl refused at the Trainer line, and of the
    run with 1 GPU (its first step counted 2 examples, or it reached no step)."""
    from pathlib import Path

    from ohlora_cli.doctor.observed.events import Event
    from ohlora_cli.doctor.observed.launch import Observed

    def trainer(n_gpu, examples):
        return Event("trainer", "common.py:29", {"trainer": "SFTTrainer", "module": "trl.trainer.sft_trainer",
                                                 "config": "SFTConfig", "config_where": "common.py:15",
                                                 "config_code": "training_args = SFTConfig(", "per_device": 2,
                                                 "n_gpu": n_gpu, "accumulation": 1, "examples": examples,
                                                 "code": "trainer = SFTTrainer(", **facts})

    many = Observed("train.py", Path("."), [trainer(2, given), Event("crash", "common.py:29", {"type": "ValueError",
                                                                                            "message": "no."})],
                    gpus=2)
    events = [trainer(1, 2)] + ([Event("census", None, {"step": 1, "examples": 2}), Event("step", None, {"step": 1})]
                                if single_steps else [])
    one = Observed("train.py", Path("."), events, gpus=1, steps=1 if single_steps else 0)
    return many, one


@pytest.mark.parametrize("single_steps", [True, False])
def test_a_refused_trainer_is_judged_by_what_it_was_given(single_steps):
    from ohlora_cli.doctor.observed.analysis import findings

    many, one = _runs(4, single_steps)
    found = findings(many, one)
    batch = [f for f in found if f.check == "multi-gpu-batch" and f.status.value == "fail"]
    assert [f.where for f in batch] == ["common.py:15"], found
    assert "given 4 examples per optimizer step" in batch[0].message and "common.py:29" in batch[0].message
    assert "trl refused" in batch[0].message and "ValueError" in batch[0].message
    # the 1-GPU figure says where it comes from: a counted step, or (no step there either) the Trainer's own
    assert ("in the first optimizer step with 1 GPU" in batch[0].message) is single_steps, batch[0].message
    assert not [f for f in found if f.check == "observed-run" and f.status.value == "fail"], found


def test_a_refusal_with_an_unmultiplied_batch_stays_a_crash():
    from ohlora_cli.doctor.observed.analysis import findings

    many, one = _runs(2, True)  # given 2 with 2 GPUs (1 per device), 2 with 1 GPU
    found = findings(many, one)
    assert not [f for f in found if f.check == "multi-gpu-batch" and f.status.value == "fail"], found
    assert [f.where for f in found if f.check == "observed-run" and f.status.value == "fail"] == ["common.py:29"]


@pytest.mark.parametrize("fact, status", [({"device_map": True}, "warn"), ({"accelerator": True}, None)])
def test_what_the_trainer_was_given_yields_to_what_a_cpu_cannot_settle(fact, status):
    """A model loaded with a device_map may be model-parallel on the GPU machine (n_gpu 1): WARN,
    not FAIL; an Accelerator made before the Trainer means `accelerate launch`: no finding."""
    from ohlora_cli.doctor.observed.analysis import findings

    many, one = _runs(4, True, **fact)
    batch = [f for f in findings(many, one) if f.check == "multi-gpu-batch" and f.status.value != "pass"]
    assert [f.status.value for f in batch] == ([status] if status else []), batch


LAUNCH = {"accelerator": ("from accelerate import Accelerator\naccelerator = Accelerator()\n", None),
          "device_map": ("", 'LlamaForCausalLM.from_pretrained("tiny", device_map="auto")')}


@pytest.mark.parametrize("launch", ["accelerator", "device_map"])
def test_trainer_figure_yields_to_a_launcher_or_a_device_map(project, launch):
    """The same refused Trainer given 8 x 2 GPUs: an Accelerator made by the script (meant for
    `accelerate launch`) leaves no batch finding; a model loaded with a device_map a WARN."""
    from transformers import LlamaConfig, LlamaForCausalLM

    LlamaForCausalLM(LlamaConfig(vocab_size=32, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                 num_attention_heads=2, num_key_value_heads=1,
                                 max_position_embeddings=16)).save_pretrained(project / "tiny")
    (project / "vendor" / "site-packages").mkdir(parents=True)
    write(project / "vendor" / "site-packages", "one_device.py", REFUSING)
    before, loaded = LAUNCH[launch]
    text = LLM.format(trainer_import=textwrap.indent(IMPORTS["refused"], "    ")[4:], per_device=BATCHES["fixed"])
    indent = next(line for line in text.splitlines() if "torch.manual_seed(0)" in line).split("torch")[0]
    text = text.replace("torch.manual_seed(0)\n", "torch.manual_seed(0)\n" + textwrap.indent(before, indent))
    if loaded:
        text = text.replace("model = LlamaForCausalLM(LlamaConfig(", f"model = {loaded}\n{indent}unused = (LlamaConfig(")
    write(project, "train.py", text)
    result = runner.invoke(app, ["doctor", "train.py", "--run", "--json", "--timeout", str(HANG_S), "--gpus", "2",
                                 "--steps", "1"])
    assert result.stdout.strip(), (result.exception, result.output)
    data = json.loads(result.stdout.strip().splitlines()[-1])
    assert not observed(data, "multi-gpu-batch", "fail"), result.output
    warns = observed(data, "multi-gpu-batch", "warn")
    assert len(warns) == (1 if launch == "device_map" else 0), result.output
