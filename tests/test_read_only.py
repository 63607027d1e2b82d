"""Nothing lost, nothing built behind the user's back.

- ``--dry-run`` and ``ohlora doctor`` create, change or delete no file: the working folder, the
  data folder and output_dir's parent are snapshotted before and after, for every packaged
  recipe and for a recipe copied from each demo with a mistyped path.
- A demo recipe copied for one's own data, with a mistyped ``data.csv`` / ``model.path``, exits 2
  naming the key and the folder, in a dry run, in the doctor and in a real run, and leaves every
  user file byte-identical.
"""

import pytest
import yaml
from snapshots import difference, snapshot
from typer.testing import CliRunner

from ohlora_cli import recipes
from ohlora_cli.cli import app
from ohlora_cli.gan.synthetic import build_blobs

runner = CliRunner()
COMMAND = {"gan": "train-gan", "llm": "train-llm"}


@pytest.fixture
def cwd(tmp_path, monkeypatch):
    """An empty working folder (packaged recipes use paths relative to it) inside a parent that is
    snapshotted too."""
    folder = tmp_path / "work"
    folder.mkdir()
    monkeypatch.chdir(folder)
    return folder


def read_only(tmp_path, args: list[str]):
    """Run ``ohlora ARGS``; assert that nothing under tmp_path changed. Returns the result."""
    before = snapshot(tmp_path)
    result = runner.invoke(app, args)
    assert "Traceback" not in result.output and "internal error" not in result.output, result.output
    assert difference(before, snapshot(tmp_path)) == {}, result.output
    return result


@pytest.mark.parametrize("name", recipes.packaged_recipes())
@pytest.mark.parametrize("mode", ["dry-run", "doctor"])
def test_packaged_recipes_write_nothing(tmp_path, cwd, name, mode):
    kind = recipes.load(name).kind
    args = [COMMAND[kind], name, "--dry-run"] if mode == "dry-run" else ["doctor", name]
    result = read_only(tmp_path, args)
    if name in ("gan-demo", "gan-scorer-demo", "llm-demo"):  # the demos' data or model is built on first use
        assert result.exit_code == 0, result.output
        if mode == "dry-run":
            assert "would build" in result.stderr
    else:  # they name files that are not here (data, checkpoints, a hub model): bad input, said plainly
        assert result.exit_code == (2 if mode == "dry-run" else 1), result.output  # the doctor: a FAIL row


def test_demo_dry_run_and_doctor_read_built_data_and_write_nothing(tmp_path, cwd):
    """Once the synthetic data exists, the probes read all of it; still nothing is written."""
    for name in ("gan-demo", "gan-scorer-demo"):  # each demo builds its data under its own output_dir
        demo = recipes.load(name)
        build_blobs(demo.data.csv, count=64, resolution=demo.model.resolution)
    for args in (["train-gan", "gan-demo", "--dry-run"], ["doctor", "gan-demo"], ["doctor", "gan-scorer-demo"]):
        result = read_only(tmp_path, args)
        assert result.exit_code == 0, result.output
        assert "would build" not in result.output
    assert "64 rows" in read_only(tmp_path, ["train-gan", "gan-scorer-demo", "--dry-run"]).stderr  # the plan


def test_bare_doctor_writes_nothing(tmp_path, cwd):
    result = read_only(tmp_path, ["doctor", "--json"])  # the environment, unsloth's import probe included
    assert result.exit_code in (0, 1), result.output


# --- a demo copied for one's own data, with a mistyped path -----------------------------------


def user_data(cwd):
    """A user's faces: images and a labels CSV in mydata/, and a model folder of theirs."""
    from PIL import Image

    (cwd / "mydata" / "images").mkdir(parents=True)
    rows = ["img_path,brightness,position"]
    for i in range(4):
        Image.new("RGB", (16, 16), (60 * i, 90, 120)).save(cwd / "mydata" / "images" / f"{i}.png")
        rows.append(f"images/{i}.png,0.{i},0.{9 - i}")
    (cwd / "mydata" / "labels.csv").write_text("\n".join(rows) + "\n")
    (cwd / "models" / "polyglot-ko-1.3b").mkdir(parents=True)
    (cwd / "models" / "polyglot-ko-1.3b" / "config.json").write_text('{"model_type": "gpt_neox"}\n')


def copied_demo(cwd, demo: str, key: str, value: str):
    data = yaml.safe_load((recipes.recipes_dir() / f"{demo}.yaml").read_text())
    section, name = key.split(".")
    data[section][name] = value
    data["output_dir"] = "runs/mine"
    path = cwd / f"my-{demo}.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


MISTYPED = [
    # the case: the CSV is mistyped next to real data; synthetic: blobs came with the copy
    ("gan-demo", "data.csv", "mydata/lables.csv", "mydata"),
    # a mistyped model folder: no random model is built there (or anywhere) in its place
    ("llm-demo", "model.path", "models/polyglot-ko-1.3", "models/polyglot-ko-1.3"),
    # the same, with the folder the user meant to name already there
    ("llm-demo", "model.path", "models", "models"),
]


@pytest.mark.parametrize("demo, key, value, folder", MISTYPED)
@pytest.mark.parametrize("mode", [["--dry-run"], ["doctor"], []])
def test_mistyped_path_in_a_copied_demo_exits_2_and_loses_nothing(tmp_path, cwd, demo, key, value, folder, mode):
    user_data(cwd)
    recipe = copied_demo(cwd, demo, key, value)
    kind = recipes.load(str(recipe)).kind
    args = ["doctor", str(recipe)] if mode == ["doctor"] else [COMMAND[kind], str(recipe), *mode]
    result = read_only(tmp_path, args)
    assert result.exit_code == 2, result.output
    message = result.stderr
    assert message.startswith(f"error: {key}: ") and folder in message, message
    assert not (cwd / "runs").exists()


def test_output_dir_holding_someone_elses_files_is_refused(tmp_path, cwd):
    (cwd / "project").mkdir()
    (cwd / "project" / "recipe.yaml").write_text("my notes\n")
    for args in (["train-gan", "gan-demo", "--set", "output_dir=project"],
                 ["train-llm", "llm-demo", "--set", "output_dir=project", "--set", "model.path=project/tiny"],
                 ["doctor", "gan-demo", "--set", "output_dir=project"]):
        result = read_only(tmp_path, args)
        assert result.exit_code == 2, result.output
        assert "output_dir: project is not an ohlora run folder; it holds: recipe.yaml" in result.stderr
