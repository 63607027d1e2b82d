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


def observed(data, check, status):
    return [f for f in data["findings"] if f["check"] == check and f["status"] == status
            and (f["check"].startswith("observed-") or f["message"].startswith("observed"))]


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
