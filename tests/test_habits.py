"""Issue 21: the command line meets the habits of torchtune, axolotl, trl and NVlabs users.

Each test runs the command as a user types it and asserts what changed: demo recipes follow
output_dir, bare KEY=VALUE overrides, ``ohlora recipes`` / ``recipes copy``, a dry run whose
stdout is a recipe, wrong kinds of input pointed the right way.
"""

import json
import os
import subprocess
import sys

import pytest
import yaml
from typer.testing import CliRunner

from ohlora_cli import recipes
from ohlora_cli.cli import app

runner = CliRunner()


@pytest.fixture
def cwd(tmp_path, monkeypatch):
    folder = tmp_path / "work"
    folder.mkdir()
    monkeypatch.chdir(folder)
    return folder


# ------------------------------------------------------------------ demos follow output_dir


@pytest.mark.parametrize("name, key", [("gan-demo", "data.csv"), ("gan-scorer-demo", "data.csv"),
                                       ("gan-regression-demo", "data.csv"), ("llm-demo", "model.path")])
def test_demo_builds_live_under_whatever_output_dir_is(tmp_path, name, key):
    moved = tmp_path / "elsewhere" / "run"
    recipe = recipes.load(name, [f"output_dir={moved}"])
    section, field = key.split(".")
    built = getattr(getattr(recipe, section), field)
    assert str(built).startswith(str(moved) + os.sep)


def test_llm_demo_dry_run_with_output_dir_moved(cwd):
    result = runner.invoke(app, ["train-llm", "--set", "output_dir=myrun", "--dry-run"])
    assert result.exit_code == 0, result.output
    assert "would build a tiny gpt-neox model and tokenizer at myrun/tiny-model" in result.stderr
    assert list(cwd.iterdir()) == []  # a dry run builds nothing


def test_a_reference_to_no_key_names_the_key(tmp_path):
    path = tmp_path / "r.yaml"
    text = (recipes.recipes_dir() / "gan-demo.yaml").read_text(encoding="utf-8")
    path.write_text(text.replace("${output_dir}/data", "${outdir}/data"), encoding="utf-8")
    result = runner.invoke(app, ["train-gan", str(path), "--dry-run"])
    assert result.exit_code == 2
    assert "data.csv: '${outdir}' names no plain value of the recipe" in result.stderr
    assert "Traceback" not in result.output


def _ohlora(cwd, *args, timeout=900):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "COLUMNS": "100"}
    return subprocess.run([sys.executable, "-m", "ohlora_cli", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout)


def test_the_real_demo_commands_train_from_an_empty_output_dir(cwd):
    """The issue's two commands as typed, into folders that exist and are empty (or do not exist)."""
    (cwd / "Y").mkdir()
    gan = _ohlora(cwd, "train-gan", "gan-demo", "train.kimg=1", "output_dir=Y")
    assert gan.returncode == 0, gan.stderr[-3000:]
    assert (cwd / "Y" / "data" / "labels.csv").is_file() and (cwd / "Y" / "recipe.yaml").is_file()
    assert any((cwd / "Y" / "checkpoints").iterdir())
    llm = _ohlora(cwd, "train-llm", "--set", "output_dir=X", "train.epochs=2")
    assert llm.returncode == 0, llm.stderr[-3000:]
    assert (cwd / "X" / "tiny-model" / "config.json").is_file() and (cwd / "X" / "adapter").is_dir()
    assert sorted(p.name for p in cwd.iterdir()) == ["X", "Y"]  # nothing in runs/ or anywhere else
    # "ok" means "will launch": the doctor says the run in Y needs --resume, and train-gan agrees
    doctor = _ohlora(cwd, "doctor", "gan-demo", "output_dir=Y")
    assert doctor.returncode == 0, doctor.stderr[-3000:]
    assert "launch: would need --resume: output_dir Y already holds a run" in " ".join(doctor.stdout.split())
    again = _ohlora(cwd, "train-gan", "gan-demo", "output_dir=Y")
    assert again.returncode == 2 and "already holds a run" in again.stderr


# ------------------------------------------------------------------ bare KEY=VALUE overrides


def test_bare_key_value_overrides_beside_set(cwd):
    result = runner.invoke(app, ["train-gan", "gan-demo", "train.kimg=5", "--set", "train.batch_size=8",
                                 "output_dir=out", "--dry-run"])
    assert result.exit_code == 0, result.output
    resolved = yaml.safe_load(result.stdout)
    assert resolved["train"]["kimg"] == 5 and resolved["train"]["batch_size"] == 8
    assert resolved["output_dir"] == "out" and resolved["data"]["csv"] == "out/data/labels.csv"


def test_bare_overrides_without_a_recipe_use_the_demo(cwd):
    result = runner.invoke(app, ["train-llm", "train.epochs=2", "output_dir=o", "--dry-run"])
    assert result.exit_code == 0, result.output
    assert yaml.safe_load(result.stdout)["train"]["epochs"] == 2


def test_bare_override_errors_are_the_same_as_set(cwd):
    result = runner.invoke(app, ["train-gan", "gan-demo", "train.bach_size=4"])
    assert result.exit_code == 2
    assert "did you mean 'train.batch_size'?" in result.stderr


def test_a_value_that_is_not_yaml_says_so(cwd):
    for args in (["train.g_lr=[0.1"], ["--set", "train.g_lr=[0.1"]):
        result = runner.invoke(app, ["train-gan", "gan-demo", *args])
        assert result.exit_code == 2
        assert "override train.g_lr=[0.1: the value is not valid YAML" in result.stderr
        assert "quote it" in result.stderr and "Traceback" not in result.output


def test_two_recipes_are_refused_with_the_override_syntax(cwd):
    result = runner.invoke(app, ["train-gan", "gan-demo", "gan-scorer-demo"])
    assert result.exit_code == 2
    assert "train-gan: one recipe, got 2" in result.stderr and "KEY=VALUE" in result.stderr


def test_doctor_takes_bare_overrides(cwd):
    result = runner.invoke(app, ["doctor", "gan-demo", "train.batch_siz=4", "--json"])
    assert result.exit_code == 2
    assert "did you mean 'train.batch_size'?" in result.stderr


# ------------------------------------------------------------------ recipes, recipes copy, dry run


def test_recipes_lists_every_packaged_recipe_with_kind_and_a_line():
    result = runner.invoke(app, ["recipes"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    for name in recipes.packaged_recipes():
        [line] = [line for line in lines if line.split("│")[0].strip() == name]
        kind = recipes.load(name).kind
        assert line.split("│")[1].strip() == kind and len(line.split("│")[2].strip()) > 20


def test_recipes_copy_writes_a_commented_recipe_and_never_over_a_file(cwd):
    result = runner.invoke(app, ["recipes", "copy", "gan-demo", "mine.yaml"])
    assert result.exit_code == 0, result.output
    text = (cwd / "mine.yaml").read_text(encoding="utf-8")
    assert text.startswith("# Copied from ohlora's packaged recipe 'gan-demo'") and "# The embedded demo" in text
    assert recipes.load(str(cwd / "mine.yaml")).kind == "gan"
    (cwd / "mine.yaml").write_text("mine\n", encoding="utf-8")
    again = runner.invoke(app, ["recipes", "copy", "gan-demo", "mine.yaml"])
    assert again.exit_code == 2 and "mine.yaml already exists" in again.stderr
    assert (cwd / "mine.yaml").read_text(encoding="utf-8") == "mine\n"
    default = runner.invoke(app, ["recipes", "copy", "llm-demo"])
    assert default.exit_code == 0 and (cwd / "llm-demo.yaml").is_file()
    typo = runner.invoke(app, ["recipes", "copy", "llm-dem"])
    assert typo.exit_code == 2 and "did you mean 'llm-demo'?" in typo.stderr


def test_help_names_the_recipes_command():
    assert "recipes" in runner.invoke(app, ["--help"]).output
    assert "ohlora recipes" in runner.invoke(app, ["train-gan", "--help"]).output


@pytest.mark.parametrize("command, name", [("train-gan", "gan-demo"), ("train-llm", "llm-demo")])
def test_dry_run_stdout_is_a_recipe(cwd, command, name):
    result = runner.invoke(app, [command, name, "--dry-run"])
    assert result.exit_code == 0, result.output
    (cwd / "resolved.yaml").write_text(result.stdout, encoding="utf-8")
    again = recipes.load(str(cwd / "resolved.yaml"))
    assert again.model_dump() == recipes.load(name).model_dump()
    assert "plan" in result.stderr  # the plan table went to stderr


# ------------------------------------------------------------------ wrong kinds of input


def test_generate_on_an_llm_run_points_at_chat(tmp_path):
    run = tmp_path / "llm-run"
    run.mkdir()
    (run / "recipe.yaml").write_text(recipes.dump(recipes.load("llm-demo")), encoding="utf-8")
    result = runner.invoke(app, ["generate", str(run), "-o", str(tmp_path / "x.png")])
    assert result.exit_code == 2
    assert "a train-llm run (kind: llm)" in result.stderr and f"ohlora chat {run}" in result.stderr
    assert not (tmp_path / "x.png").exists()


@pytest.mark.parametrize("command", [["doctor"], ["train-gan"]])
def test_a_run_folder_where_a_recipe_is_expected(tmp_path, command):
    run = tmp_path / "gan-demo"
    run.mkdir()
    (run / "recipe.yaml").write_text(recipes.dump(recipes.load("gan-demo")), encoding="utf-8")
    result = runner.invoke(app, [*command, str(run)])
    assert result.exit_code == 2
    assert "a run folder (an output_dir), not a recipe" in result.stderr
    assert str(run / "recipe.yaml") in result.stderr and "packaged" not in result.stderr


@pytest.mark.parametrize("name, what", [("notes.txt", "a .txt file is not a recipe"),
                                        ("labels.csv", "a .csv file is data, not a recipe"),
                                        ("G.pth", "a .pth file is a checkpoint, not a recipe")])
@pytest.mark.parametrize("command", ["doctor", "train-gan"])
def test_other_files_where_a_recipe_is_expected_say_what_they_are(tmp_path, name, what, command):
    path = tmp_path / name
    path.write_text("hello\n", encoding="utf-8")
    result = runner.invoke(app, [command, str(path)])
    assert result.exit_code == 2
    assert f"{path}: {what}" in result.stderr and "must be a mapping" not in result.stderr
    assert "Traceback" not in result.output


# ------------------------------------------------------------------ did-you-mean that knows the field


@pytest.mark.parametrize("recipe, override, expected", [
    ("gan-demo", "train.learning_rate=0.001", "'learning_rate' is 'train.g_lr' here (and train.d_lr"),
    ("gan-demo", "train.steps=100", "'steps' is 'train.kimg' here"),
    ("gan-demo", "train.gradient_accumulation_steps=2", "'gradient_accumulation_steps' is 'train.batch_size' here"),
    ("llm-demo", "train.gradient_accumulation_steps=2", "'gradient_accumulation_steps' is 'train.batch_size' here"),
    ("llm-demo", "train.num_train_epochs=3", "'num_train_epochs' is 'train.epochs' here"),
    ("llm-demo", "train.lr_scheduler_type=cosine", "'lr_scheduler_type' is 'train.lr_scheduler' here"),
    ("llm-demo", "model.model_name_or_path=x", "'model_name_or_path' is 'model.path' here"),
    ("llm-demo", "data.max_seq_length=128", "'max_seq_length' is 'data.max_length' here"),
])
def test_names_from_other_tools_point_at_ours(cwd, recipe, override, expected):
    command = "train-gan" if recipe.startswith("gan") else "train-llm"
    result = runner.invoke(app, [command, recipe, override, "--dry-run"])
    assert result.exit_code == 2
    assert expected in result.stderr, result.stderr
    assert "extra_g_ratio" not in result.stderr and "gradient_checkpointing" not in result.stderr
    assert "grid_steps" not in result.stderr


@pytest.mark.parametrize("kind", ["gan", "llm"])
def test_every_alias_names_a_real_key(kind):
    keys = {key for key, _, _ in recipes.reference(kind)}
    assert {ours for ours, _ in recipes.ALIASES[kind].values()} <= keys


def test_one_name_for_the_learning_rate_schedule_and_the_old_one_still_read(tmp_path):
    gan_keys = {key for key, _, _ in recipes.reference("gan")}
    llm_keys = {key for key, _, _ in recipes.reference("llm")}
    assert "train.lr_scheduler" in gan_keys & llm_keys and "train.lr_schedule" not in gan_keys
    path = tmp_path / "old.yaml"
    text = (recipes.recipes_dir() / "gan-demo.yaml").read_text(encoding="utf-8")
    path.write_text(text.replace("lr_scheduler: constant", "lr_schedule: constant"), encoding="utf-8")
    result = runner.invoke(app, ["train-gan", str(path), f"output_dir={tmp_path / 'run'}", "--dry-run"])
    assert result.exit_code == 0, result.output
    assert "train.lr_schedule is now called train.lr_scheduler" in " ".join(result.stderr.split())
    assert yaml.safe_load(result.stdout)["train"]["lr_scheduler"] == "constant"


@pytest.mark.parametrize("typed, expected", [("gen", "Did you mean 'generate'?"),
                                             ("docter", "Did you mean 'doctor'?"),
                                             ("train", "Did you mean one of: train-gan, train-llm?")])
def test_an_unknown_command_gets_a_suggestion(typed, expected):
    result = runner.invoke(app, [typed, "x"])
    assert result.exit_code == 2
    assert f"no such command '{typed}'. {expected}" in result.output


# ------------------------------------------------------------------ the doctor's summary


def _blobs(cwd, count=64):
    from ohlora_cli.gan.synthetic import build_blobs

    demo = recipes.load("gan-demo")
    build_blobs(demo.data.csv, count=count, resolution=demo.model.resolution)
    return cwd / demo.data.csv


def test_doctor_shows_one_line_per_area_and_every_problem_in_full(cwd):
    _blobs(cwd)
    result = runner.invoke(app, ["doctor", "gan-demo", "data.standardize_labels=false"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert any(line.startswith("[ok] environment: ") for line in lines)
    assert any(line.startswith("[!] recipe ") and "1 warning" in line for line in lines)
    assert not any(line.lstrip().startswith("PASS") for line in lines)  # no PASS rows by default
    [warn] = [line for line in lines if line.lstrip().startswith("WARN")]
    assert "data.standardize_labels" in warn and "raw labels far from z-scores" in warn
    assert any("fix: Set data.standardize_labels: true" in line for line in lines)
    assert "launch: would start (with 1 warning)" in result.stdout
    assert "doctor: ok, but 1 warning above" in result.stdout  # a WARN does not hide under "ok"
    verbose = runner.invoke(app, ["doctor", "gan-demo", "data.standardize_labels=false", "-v"],
                            env={"COLUMNS": "200"})
    assert verbose.exit_code == 0
    assert sum("PASS" in line for line in verbose.stdout.splitlines()) >= 5  # every row with -v
    data = json.loads(runner.invoke(app, ["doctor", "gan-demo", "--json"]).stdout)
    assert set(data) >= {"ok", "findings", "summary"} and data["launch"][0]["starts"] is True


def test_one_bad_csv_row_is_one_finding(cwd):
    csv_path = _blobs(cwd)
    lines = csv_path.read_text().splitlines()
    lines[19] = lines[19].rsplit(",", 1)[0] + ",left"
    csv_path.write_text("\n".join(lines) + "\n")
    result = runner.invoke(app, ["doctor", "gan-demo", "--json"])
    assert result.exit_code == 1
    data = json.loads(result.stdout)
    failed = [f for f in data["findings"] if f["status"] == "fail"]
    assert len(failed) == 1 and data["summary"]["fail"] == 1
    assert f"{csv_path.relative_to(cwd)}:20:" in failed[0]["message"] or f"{csv_path}:20:" in failed[0]["message"]
    [dtype] = [f for f in data["findings"] if f["check"] == "dtype-mismatch"]
    assert dtype["status"] == "skip" and "recipe-data" in dtype["message"]
    launch = runner.invoke(app, ["train-gan", "gan-demo"])
    assert launch.exit_code == 2 and "1 failure(s)" in launch.stderr


def _dialogue(path, rows):
    path.write_text("data_type,input_data,output_data\n" + "".join(f"{s},{i},{o}\n" for s, i, o in rows),
                    encoding="utf-8")
    return path


def test_llm_rows_are_located_as_file_line_like_the_gan(cwd):
    csv_path = _dialogue(cwd / "d.csv", [("train", "hi", "hello"), ("train", "", "empty"), ("valid", "a", "b")])
    result = runner.invoke(app, ["doctor", "llm-demo", f"data.path={csv_path}", "output_dir=o", "--json"])
    data = json.loads(result.stdout)
    [failed] = [f for f in data["findings"] if f["status"] == "fail"]
    assert f"{csv_path}:3: input_data is empty" in failed["message"]


@pytest.mark.parametrize("kind", ["gan", "llm"])
def test_a_batch_larger_than_the_data_says_so(cwd, kind):
    if kind == "gan":
        csv_path = _blobs(cwd, count=16)
        lines = csv_path.read_text().splitlines()
        csv_path.write_text("\n".join(lines[:2]) + "\n")  # the header and one row
        args = ["doctor", "gan-demo", "train.batch_size=16", "--json"]
        expected = "1 data row, and train.batch_size is 16: one example cannot fill a batch"
    else:
        csv_path = _dialogue(cwd / "d.csv", [("train", "hi", "hello"), ("valid", "a", "b")])
        args = ["doctor", "llm-demo", f"data.path={csv_path}", "output_dir=o", "train.batch_size=16", "--json"]
        expected = "1 training row, fewer than train.batch_size 16: not one batch can be filled"
    data = json.loads(runner.invoke(app, args).stdout)
    messages = [f["message"] for f in data["findings"] if f["status"] == "fail"]
    assert any(expected in m for m in messages), messages
    assert not any("never change" in m for m in messages)
