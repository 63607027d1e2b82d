"""The run folder (``runtime.run``) as train-gan uses it: run.json, and a resume that says what it
does: where it continues from, what changed in the recipe (kept beside the first one, never over
it), and that a finished run has nothing left to train."""

import json

import yaml
from typer.testing import CliRunner

from ohlora_cli.cli import app

from .conftest import tiny_recipe


def cli(*args):
    result = CliRunner().invoke(app, ["train-gan", *map(str, args), "--skip-doctor"])
    return result.exit_code, " ".join(result.output.split())  # rich wraps long lines


def test_resume_names_its_checkpoint_keeps_both_recipes_and_stops_when_finished(tmp_path):
    recipe = tiny_recipe(tmp_path, kimg=0.008)
    run = tmp_path / "run"
    code, shown = cli(recipe)
    assert code == 0, shown
    info = json.loads((run / "run.json").read_text())
    assert info["kind"] == "gan" and info["global_batch"] == 8 and info["resumed_from"] is None
    first = (run / "recipe.yaml").read_text()

    code, shown = cli(recipe, "--resume", "--set", "train.kimg=0.016", "--set", "train.log_kimg=0.008")
    assert code == 0, shown
    assert "resuming from checkpoint" in shown and "checkpoint-00000001.safetensors (step 1, 0.008 kimg)" in shown
    assert "train.kimg 0.008 -> 0.016" in shown and "train.log_kimg 0.016 -> 0.008" in shown
    assert (run / "recipe.yaml").read_text() == first  # the first segment's recipe, untouched
    kept = yaml.safe_load((run / "recipe-resume-1.yaml").read_text())
    assert kept["train"]["kimg"] == 0.016 and "recipe-resume-1.yaml" in shown
    info = json.loads((run / "run.json").read_text())
    assert info["resumed_from"].endswith("checkpoint-00000001.safetensors") and info["recipe"] == "recipe-resume-1.yaml"
    lines = (run / "stats.jsonl").read_text().splitlines()

    code, shown = cli(recipe, "--resume", "--set", "train.kimg=0.016", "--set", "train.log_kimg=0.008")
    assert code == 0, shown
    assert "already finished" in shown and "0.016 kimg (step 2)" in shown and "--set train.kimg=0.032" in shown
    assert "trained" not in shown  # no "trained 0.016 kimg in 0 s"
    assert (run / "stats.jsonl").read_text().splitlines() == lines  # nothing trained, nothing written
    assert not (run / "recipe-resume-2.yaml").exists()  # same recipe as the last segment's: no new file
