"""Interrupts and --resume for the scorer and property-regression methods (CPU, same seed)."""

from typer.testing import CliRunner

from ohlora_cli.cli import app
from ohlora_cli.gan import checkpoint as ckpt
from ohlora_cli.gan import regression

from .conftest import write_recipe


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
    monkeypatch.setattr(regression, "stop_agreed", stop_at_call(3))
    result = CliRunner().invoke(app, ["train-gan", recipe, "--skip-doctor"])
    assert result.exit_code == 130, result.output
    saved = ckpt.latest_checkpoint(tmp_path / "out")
    assert saved is not None and ckpt.read_checkpoint(saved).json("counters")["step"] == 2
