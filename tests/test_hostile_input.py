"""Hostile or mistaken input gets one message naming the file, exit 2, no traceback (and, see
test_cli.py, before any engine is imported: what makes it quick)."""

import json

import pytest
from typer.testing import CliRunner

from ohlora_cli.cli import app
from ohlora_cli.errors import RecipeError
from ohlora_cli.recipes import read_yaml

runner = CliRunner()

GAN = "kind: gan\noutput_dir: run\ndata:\n  csv: labels.csv\n  label_columns: [a]\nmodel:\n  resolution: 8\ntrain:\n  batch_size: 4\n"
ALIASES = "".join(f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 9) if i else 'x'}]\n" for i in range(8))


def hostile(tmp_path, name: str):
    path = tmp_path / f"{name}.yaml"
    if name == "empty":
        path.write_text("")
    elif name == "comments-only":
        path.write_text("# nothing here yet\n\n")
    elif name == "not-utf8":
        path.write_bytes(b"kind: gan\noutput_dir: r\xe9sultats\n")  # Latin-1
    elif name == "huge":
        path.write_text(GAN + "# padding\n" * 500_000)  # 5 MB: parsing it took over a minute
    elif name == "deep":
        path.write_text(GAN + "x: " + "[" * 100_000 + "]" * 100_000 + "\n")  # libyaml crashes on it
    elif name == "aliases":
        path.write_text(GAN + ALIASES)  # 9**8 values once expanded
    return path


EXPECTED = {
    "empty": "the recipe is empty",
    "comments-only": "the recipe is empty",
    "not-utf8": "not UTF-8 text (byte 23 is 0xe9)",
    "huge": "5,000,117 bytes; a recipe is at most 1 MB (it was not parsed)",
    # ohlora's own count on the text, before any parser: libyaml builds differ in where and how they
    # stop a 100,000-deep flow sequence (one reports its own nesting error from the scanner)
    "deep": ":10: nested deeper than 32 levels",
    "aliases": "more than 10,000 values",
}


@pytest.mark.parametrize("command", [["train-gan"], ["train-llm"], ["doctor"], ["train-gan", "--dry-run"]])
@pytest.mark.parametrize("name", list(EXPECTED))
def test_hostile_recipe_exits_2_naming_the_file(tmp_path, command, name):
    path = hostile(tmp_path, name)
    result = runner.invoke(app, [*command, str(path)])
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith(f"error: {path}")  # one message that names the file
    assert EXPECTED[name] in result.stderr
    assert "Traceback" not in result.output and "internal error" not in result.output


def test_unknown_kind_names_the_file_in_the_doctor(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text("output_dir: run\n")
    result = runner.invoke(app, ["doctor", str(path)])
    assert result.exit_code == 2 and f"{path}: kind: missing" in result.stderr


def write_images(folder, n=4):
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        Image.new("RGB", (16, 16), (40 * i, 80, 120)).save(folder / f"{i}.png")


@pytest.mark.parametrize("command", [["train-gan", "--dry-run", "--skip-doctor"], ["doctor", "--json"]])
def test_gan_csv_naming_a_column_twice(tmp_path, command):
    write_images(tmp_path)
    rows = ["img_path,brightness,position,brightness"] + [f"{i}.png,0.{i},0.5,0.{9 - i}" for i in range(4)]
    (tmp_path / "labels.csv").write_text("\n".join(rows) + "\n")
    result = runner.invoke(app, [*command, "gan-demo", "--set", f"data.csv={tmp_path / 'labels.csv'}",
                                 "--set", "data.synthetic=null", "--set", f"output_dir={tmp_path / 'run'}"])
    message = f"{tmp_path / 'labels.csv'}:1: the header names a column twice ('brightness' is columns 2, 4)"
    if command[0] == "doctor":  # the doctor reports bad data as a failed check
        assert result.exit_code == 1, result.output
        [row] = [f for f in json.loads(result.stdout)["findings"] if f["check"] == "recipe-data"]
        assert row["status"] == "fail" and message in row["message"]
    else:
        assert result.exit_code == 2, result.output
        assert message in result.stderr and "Traceback" not in result.output


def test_llm_csv_naming_a_column_twice(tmp_path):
    csv = tmp_path / "dialogue.csv"
    csv.write_text("data_type,input_data,output_data,input_data\ntrain,hi,hello,bye\nvalid,yo,hey,bye\n")
    result = runner.invoke(app, ["train-llm", "llm-demo", "--dry-run", "--skip-doctor",
                                 "--set", f"data.path={csv}", "--set", f"output_dir={tmp_path / 'run'}",
                                 "--set", f"model.path={tmp_path / 'run' / 'tiny-model'}"])
    assert result.exit_code == 2, result.output
    assert f"{csv}:1: the header names a column twice ('input_data' is columns 2, 4)" in result.stderr


def test_llm_jsonl_naming_a_key_twice(tmp_path):
    path = tmp_path / "dialogue.jsonl"
    path.write_text(json.dumps({"input_data": "hi", "output_data": "hello"}) + "\n"
                    + '{"input_data": "yo", "output_data": "hey", "output_data": "hi"}\n')
    result = runner.invoke(app, ["train-llm", "llm-demo", "--dry-run", "--skip-doctor",
                                 "--set", f"data.path={path}", "--set", f"output_dir={tmp_path / 'run'}",
                                 "--set", f"model.path={tmp_path / 'run' / 'tiny-model'}"])
    assert result.exit_code == 2, result.output
    assert f"{path}:2: key 'output_data' appears twice" in result.stderr  # file:line, as every data error


@pytest.mark.parametrize(("text", "line"), [
    ("a: 1\nx: " + "[" * 32 + "]" * 32 + "\n", 2),  # flow nesting: counted on the text, whatever the parser does
    ("a:\n  - " + "{b: " * 33 + "1" + "}" * 33 + "\n", 2),
    ("a: 1\n" + "".join("  " * i + f"k{i}:\n" for i in range(34)) + "  " * 34 + "v: 1\n", 34),  # block nesting: the parser's events
])
def test_nesting_deeper_than_32_names_the_line(tmp_path, text, line):
    path = tmp_path / "deep.yaml"
    path.write_text(text)
    with pytest.raises(RecipeError, match=rf"deep.yaml:{line}: nested deeper than 32 levels"):
        read_yaml(path)


@pytest.mark.parametrize("text", [
    'x: "' + "[" * 40 + '"\n', "x: '" + "{" * 40 + "'\n",  # inside quotes
    "x: 1  # " + "[" * 40 + "\n",  # in a comment
    "x: a" + "[" * 40 + "\n",  # inside a plain scalar
    "x: " + "[" * 31 + "]" * 31 + "\n",  # 32 levels with the top-level mapping are allowed
])
def test_brackets_that_do_not_nest_are_not_counted(tmp_path, text):
    path = tmp_path / "ok.yaml"
    path.write_text(text)
    assert "x" in read_yaml(path)
