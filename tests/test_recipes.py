"""Recipe loading and validation: every problem at once, each with its dotted key."""

import textwrap

import pytest
from typer.testing import CliRunner

from ohlora_cli import recipes
from ohlora_cli.cli import app
from ohlora_cli.errors import RecipeError

runner = CliRunner()

GOOD = """\
kind: gan
output_dir: runs/x
data:
  csv: labels.csv
  label_columns: [a, b]
model:
  resolution: 16
train:
  method: adversarial
  batch_size: 8
"""


def write(tmp_path, text, name="r.yaml"):
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return str(path)


def problems(tmp_path, text, overrides=()):
    with pytest.raises(RecipeError) as info:
        recipes.load(write(tmp_path, text), list(overrides))
    return str(info.value)


def test_good_recipe_loads_with_defaults(tmp_path):
    recipe = recipes.load(write(tmp_path, GOOD))
    assert recipe.train.batch_size == 8
    assert recipe.model.z_dim == 512
    assert recipe.source.name == "r.yaml"


def test_unknown_key_suggests_closest(tmp_path):
    message = problems(tmp_path, GOOD.replace("batch_size: 8", "batch_sise: 8"))
    assert "train.batch_sise: unknown key; did you mean 'train.batch_size'?" in message
    # the key it replaced is now missing: both problems are reported at once
    assert "train.batch_size: required key is missing" in message
    assert "2 problems" in message


def test_unknown_top_level_section(tmp_path):
    message = problems(tmp_path, GOOD + "trian:\n  lr: 1\n")
    assert "trian: unknown key; did you mean 'train'?" in message


def test_wrong_type_names_key_and_value(tmp_path):
    message = problems(tmp_path, GOOD.replace("batch_size: 8", "batch_size: lots"))
    assert "train.batch_size" in message and "'lots'" in message


def test_bad_value_from_validator(tmp_path):
    message = problems(tmp_path, GOOD.replace("resolution: 16", "resolution: 48"))
    assert "model.resolution" in message and "power of two" in message


def test_missing_required_key(tmp_path):
    message = problems(tmp_path, GOOD.replace("  label_columns: [a, b]\n", ""))
    assert "data.label_columns: required key is missing" in message


def test_missing_kind(tmp_path):
    message = problems(tmp_path, GOOD.replace("kind: gan\n", ""))
    assert "kind" in message and "gan" in message and "llm" in message


def test_malformed_yaml_names_line(tmp_path):
    path = write(tmp_path, GOOD.replace("  resolution: 16", "  resolution: [16"))
    with pytest.raises(RecipeError) as info:
        recipes.load(path)
    assert f"{path}:" in str(info.value) and "malformed YAML" in str(info.value)


def test_set_overrides_parse_yaml_scalars(tmp_path):
    recipe = recipes.load(
        write(tmp_path, GOOD),
        ["train.batch_size=32", "data.standardize_labels=true", "model.checkpoint=g.pth"],
    )
    assert recipe.train.batch_size == 32
    assert recipe.data.standardize_labels is True
    assert recipe.model.checkpoint == "g.pth"


def test_set_on_missing_key_is_error_with_suggestion(tmp_path):
    message = problems(tmp_path, GOOD, ["train.bach_size=4"])
    assert "train.bach_size (from --set): unknown key; did you mean 'train.batch_size'?" in message


def test_set_without_equals(tmp_path):
    message = problems(tmp_path, GOOD, ["train.batch_size"])
    assert "KEY=VALUE" in message


def test_set_into_a_value(tmp_path):
    message = problems(tmp_path, GOOD, ["output_dir.x=1"])
    assert "'output_dir' is a value, not a section" in message


def test_unknown_recipe_name_suggests_packaged(tmp_path):
    with pytest.raises(RecipeError) as info:
        recipes.find("gan-dem")
    assert "no packaged recipe" in str(info.value)
    assert "gan-demo" in info.value.hint


def test_packaged_recipes_all_validate():
    names = recipes.packaged_recipes()
    assert {"gan-demo", "llm-demo"} <= set(names)
    for name in names:
        recipes.load(name)


def test_kind_mismatch_is_reported(tmp_path):
    with pytest.raises(RecipeError) as info:
        recipes.load(write(tmp_path, GOOD), expect_kind="llm")
    assert "train-gan" in info.value.hint


def test_dump_round_trips(tmp_path):
    recipe = recipes.load(write(tmp_path, GOOD))
    again = recipes.load(write(tmp_path, recipes.dump(recipe), name="again.yaml"))
    assert again.model_dump() == recipe.model_dump()


# Through the command line: exit code 2, one message naming the key, no traceback.


@pytest.mark.parametrize(
    "text, overrides, expected",
    [
        (GOOD.replace("batch_size: 8", "batch_sise: 8"), [], "did you mean 'train.batch_size'?"),
        (GOOD.replace("batch_size: 8", "batch_size: lots"), [], "train.batch_size"),
        (GOOD.replace("  label_columns: [a, b]\n", ""), [], "data.label_columns"),
        (GOOD.replace("  resolution: 16", "  resolution: [16"), [], "malformed YAML"),
        (GOOD, ["--set", "train.bach_size=4"], "train.bach_size (from --set)"),
    ],
)
def test_cli_recipe_errors_exit_2(tmp_path, text, overrides, expected):
    result = runner.invoke(app, ["train-gan", write(tmp_path, text), *overrides])
    assert result.exit_code == 2, result.output
    assert expected in result.output
    assert "Traceback" not in result.output


def test_cli_unknown_recipe_name_exit_2():
    result = runner.invoke(app, ["train-llm", "no-such-recipe"])
    assert result.exit_code == 2
    assert "no-such-recipe" in result.output and "llm-demo" in result.output


@pytest.mark.parametrize("kind", ["gan", "llm"])
def test_the_recipe_reference_documents_every_recipe_key(kind):
    from pathlib import Path

    reference = (Path(__file__).resolve().parents[1] / "docs" / "recipes.md").read_text(encoding="utf-8")
    missing = [key for key, _, _ in recipes.reference(kind) if f"`{key}`" not in reference]
    assert not missing, f"docs/recipes.md lacks recipe keys: {missing}"


def test_reference_lists_a_mapping_of_sections_as_one_key():
    """train.scorer.crops maps label columns to crops: one key, not the fields of a crop."""
    keys = [key for key, _, _ in recipes.reference("gan")]
    assert "train.scorer.crops" in keys and "train.scorer.resolution" in keys
    assert not [key for key in keys if key.startswith("train.scorer.crops.")]
