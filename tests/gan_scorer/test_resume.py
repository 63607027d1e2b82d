"""Interrupts and --resume for the scorer and property-regression methods (CPU, same seed)."""

import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from ohlora_cli.cli import app
from ohlora_cli.errors import Interrupted, RecipeError
from ohlora_cli.gan import checkpoint as ckpt
from ohlora_cli.gan import engine
from ohlora_cli.gan import scorer as sc
from ohlora_cli.gan.methods import scorer as scorer_method

from .conftest import train_gan, write_recipe


def stop_at_call(n):
    """Stands in for the Ctrl-C flag: the n-th check of it says 'stop'."""
    calls = []

    def stop_agreed(stop, env, device):
        calls.append(1)
        return len(calls) == n

    return stop_agreed


def test_regression_ctrl_c_saves_and_exits_130(blobs, scorer_run, shuffled_run, tmp_path, monkeypatch):
    recipe = write_recipe(tmp_path / "r.yaml", output_dir=tmp_path / "out", csv_path=blobs / "labels.csv",
                          model={"checkpoint": str(ckpt.latest_checkpoint(shuffled_run)), "scorer": str(scorer_run)},
                          train={"method": "property-regression", "kimg": 1})
    monkeypatch.setattr(engine, "stop_agreed", stop_at_call(3))  # read by engine.stop_if_agreed
    result = CliRunner().invoke(app, ["train-gan", recipe, "--skip-doctor"])
    assert result.exit_code == 130, result.output
    saved = ckpt.latest_checkpoint(tmp_path / "out")
    assert saved is not None and ckpt.read_checkpoint(saved).json("counters")["step"] == 2


def scorer_recipe(path, blobs):
    return write_recipe(path, output_dir=path.parent / "out", csv_path=blobs / "labels.csv", standardize=False,
                        train={"method": "scorer", "scorer": {"channels": 4, "hidden": 8, "epochs": 3,
                                                              "patience": 10, "lr": 0.002, "dropout": 0.2}})


def test_scorer_interrupt_and_resume_match_the_straight_run(blobs, tmp_path, monkeypatch):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    train_gan(scorer_recipe(tmp_path / "a" / "r.yaml", blobs))

    recipe = scorer_recipe(tmp_path / "b" / "r.yaml", blobs)
    monkeypatch.setattr(scorer_method, "stop_agreed", stop_at_call(25))  # 16 steps per epoch: mid epoch 1
    with pytest.raises(Interrupted, match="the best scorer so far"):
        train_gan(recipe)
    assert sc.state_path(tmp_path / "b" / "out").is_file()
    monkeypatch.undo()
    with pytest.raises(RecipeError, match="already holds a run"):  # a fresh start would overwrite it
        train_gan(recipe)
    train_gan(recipe, resume=True)

    a = load_file(str(tmp_path / "a" / "out" / sc.FILENAME))
    b = load_file(str(tmp_path / "b" / "out" / sc.FILENAME))
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
