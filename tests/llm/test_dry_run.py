"""--dry-run and bad input: everything before the weights load, with the exit code a real run would give."""

import pytest
from llm_helpers import write_csv, write_recipe
from typer.testing import CliRunner

from ohlora_cli.cli import app

runner = CliRunner()


def test_dry_run_prints_recipe_and_plan_and_loads_no_weights(tmp_path):
    recipe = write_recipe(tmp_path, batch_size=4, extra="")
    result = runner.invoke(app, ["train-llm", str(recipe), "--dry-run", "--set", "train.max_device_batch=2"])
    assert result.exit_code == 0, result.output
    assert "kind: llm" in result.output and "max_device_batch: 2" in result.output
    assert "4 = 2 per device x 2 accumulation x 1 process" in result.output
    assert "10 train, 2 valid" in result.output
    assert not (tmp_path / "run").exists()  # nothing built, nothing trained
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_dry_run_for_two_processes_derives_the_split(tmp_path):
    recipe = write_recipe(tmp_path, batch_size=8)
    result = runner.invoke(app, ["train-llm", str(recipe), "--dry-run", "--skip-doctor", "--nproc", "2"])
    assert result.exit_code == 0, result.output
    assert "8 = 4 per device x 1 accumulation x 2 processes" in result.output
    result = runner.invoke(app, ["train-llm", str(recipe), "--dry-run", "--skip-doctor", "--nproc", "3"])
    assert result.exit_code == 2
    assert "train.batch_size: 8 is not divisible by the 3" in result.output


def test_bad_row_exits_2_naming_the_row(tmp_path):
    csv = write_csv(tmp_path / "bad.csv")
    csv.write_text(csv.read_text() + 'train,"",no question\n', encoding="utf-8")
    recipe = write_recipe(tmp_path, csv=csv)
    result = runner.invoke(app, ["train-llm", str(recipe), "--skip-doctor"])
    assert result.exit_code == 2
    assert f"{csv}:12: input_data is empty" in result.output and "Traceback" not in result.output


@pytest.mark.parametrize("path, expected", [
    ("no-such-org/no-such-model", "hf download no-such-org/no-such-model"),
    ("./missing/model/dir", "no such folder"),
])
def test_absent_model_exits_2_with_how_to_get_it(tmp_path, path, expected, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    recipe = write_recipe(tmp_path)
    text = recipe.read_text().replace("  tiny: gpt-neox\n", "")
    recipe.write_text(text.replace(f"path: {tmp_path / 'run' / 'tiny-model'}", f"path: {path}"))
    result = runner.invoke(app, ["train-llm", str(recipe), "--skip-doctor"])
    assert result.exit_code == 2, result.output
    assert expected in " ".join(result.output.split())


def test_unknown_lora_target_is_a_recipe_error(tmp_path):
    recipe = write_recipe(tmp_path)
    result = runner.invoke(app, ["train-llm", str(recipe), "--skip-doctor", "--set", "lora.target_modules=[q_proj]"])
    assert result.exit_code == 2
    assert "lora.target_modules: q_proj not found" in result.output and "query_key_value" in result.output
