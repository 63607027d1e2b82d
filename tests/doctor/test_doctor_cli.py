"""`ohlora doctor` through the real CLI: JSON shape, --list-checks, --select, --strict, exit codes."""

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ohlora_cli.cli import app

FIXTURES = Path(__file__).parent.parent / "fixtures" / "doctor"
STABLE = ["dtype-mismatch", "grad-inference", "multi-gpu-batch", "cuda-visible-devices-late"]
runner = CliRunner()


def doctor(*args):
    return runner.invoke(app, ["doctor", *map(str, args)])


def one_json(result) -> dict:
    lines = [line for line in result.stdout.splitlines() if line.strip()]
    assert len(lines) == 1, result.stdout
    return json.loads(lines[0])


def test_json_is_one_object_with_the_contract_shape():
    result = doctor(FIXTURES / "seed1_python_floats" / "train.py", "--json")
    assert result.exit_code == 1
    data = one_json(result)
    assert set(data) == {"ok", "findings", "summary"}
    assert data["ok"] is False
    assert set(data["summary"]) == {"pass", "warn", "fail", "error", "skip"}
    assert sum(data["summary"].values()) == len(data["findings"])
    for finding in data["findings"]:
        assert set(finding) == {"check", "status", "message", "where", "hint", "evidence", "assumptions"}
    failing = [f for f in data["findings"] if f["status"] == "fail"]
    assert [f["check"] for f in failing] == ["dtype-mismatch"]
    assert failing[0]["where"].endswith("networks.py:15")
    assert "dataset.py:27" in failing[0]["message"]
    # The chain as data: born in the dataset, meets the weights in the network; nothing assumed.
    roles = [(step["role"], step["where"].rsplit("/", 1)[-1]) for step in failing[0]["evidence"]]
    assert roles[0] == ("born", "dataset.py:27") and roles[-1] == ("meets", "networks.py:15")
    assert failing[0]["assumptions"] == []


def test_clean_script_exits_zero_with_pass_rows():
    result = doctor(FIXTURES / "seed1_float_fix" / "train.py", "--json")
    assert result.exit_code == 0
    data = one_json(result)
    assert data["ok"] is True
    assert sorted(f["check"] for f in data["findings"]) == sorted(STABLE)
    assert data["summary"]["pass"] == 4


def test_human_table_has_status_and_fix_hint():
    result = doctor(FIXTURES / "seed2_sample_every_50" / "train.py")
    assert result.exit_code == 1
    assert "FAIL" in result.stdout and "grad-inference" in result.stdout
    assert "fix:" in result.stdout and "no_grad" in result.stdout


def test_list_checks_human_and_json():
    result = doctor("--list-checks")
    assert result.exit_code == 0
    for check_id in STABLE:
        assert check_id in result.stdout
    data = one_json(doctor("--list-checks", "--json"))
    ids = [c["id"] for c in data["checks"]]
    assert set(STABLE) <= set(ids) and len(ids) == len(set(ids))
    scopes = {c["id"]: c["scopes"] for c in data["checks"]}
    assert set(scopes["dtype-mismatch"]) == {"recipe", "script"}


def test_select_runs_only_the_chosen_checks():
    result = doctor(FIXTURES / "seed3_config_module" / "train.py", "--json", "--select", "cuda-visible-devices-late")
    data = one_json(result)
    assert {f["check"] for f in data["findings"]} == {"cuda-visible-devices-late"}
    assert result.exit_code == 1


def test_unknown_select_is_usage_error():
    result = doctor(FIXTURES / "seed1_float_fix" / "train.py", "--select", "dtype-mismatchh")
    assert result.exit_code == 2
    assert "dtype-mismatchh" in result.stderr and "dtype-mismatch'" in result.stderr


@pytest.mark.parametrize("target", ["no_such_script.py", "no-such-recipe"])
def test_missing_target_is_usage_error(target):
    result = doctor(target)
    assert result.exit_code == 2
    assert target in result.stderr
    assert "Traceback" not in result.output


def test_syntax_error_names_file_and_line(tmp_path):
    # A deep folder makes the message longer than any terminal: the `file:line` reference
    # must still come out on one line, whatever the width and the working directory.
    long_name = "a-rather-long-project-folder-name" * 3
    folder = tmp_path / long_name / "scripts"
    folder.mkdir(parents=True)
    script = folder / "broken.py"
    script.write_text("import torch\n\ndef f(:\n    pass\n")
    result = doctor(script)
    assert result.exit_code == 2
    assert "broken.py:3" in result.stderr
    assert f"{long_name}/scripts/broken.py:3: not valid Python (" in result.stderr  # then CPython's own words


def test_strict_turns_a_warning_into_exit_1_and_gpus_into_a_failure():
    script = FIXTURES / "trainer_in_script" / "train.py"
    warned = doctor(script, "--json")
    assert warned.exit_code == 0
    assert [f["status"] for f in one_json(warned)["findings"] if f["check"] == "multi-gpu-batch"] == ["warn"]
    assert doctor(script, "--strict").exit_code == 1
    planned = doctor(script, "--json", "--gpus", "2")
    assert planned.exit_code == 1
    finding = next(f for f in one_json(planned)["findings"] if f["check"] == "multi-gpu-batch")
    assert finding["status"] == "fail" and "2 x 2 = 4" in finding["message"]
    assert doctor(script, "--gpus", "1").exit_code == 0


def test_set_without_a_recipe_is_usage_error():
    result = doctor(FIXTURES / "seed1_float_fix" / "train.py", "--set", "train.batch_size=4")
    assert result.exit_code == 2


def test_doctor_package_and_script_analysis_import_no_torch():
    import subprocess
    import sys

    code = (
        "import sys, ohlora_cli.doctor as d\n"
        f"d.run(scripts=[__import__('pathlib').Path({str(FIXTURES / 'seed3_config_module' / 'train.py')!r})])\n"
        "print(','.join(m for m in ('torch', 'transformers', 'trl', 'pydantic') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_imports_resolve_through_pythonpath_as_python_does(tmp_path, monkeypatch):
    """`PYTHONPATH=. python scripts/train.py`: the package lives at the repository root, not beside the
    script. Without PYTHONPATH the doctor cannot read it (nor could Python import it); with it, the
    float64 labels in the package are found."""
    (tmp_path / "scripts").mkdir()
    (tmp_path / "mypkg").mkdir()
    (tmp_path / "mypkg" / "__init__.py").write_text("")
    (tmp_path / "mypkg" / "labels.py").write_text(
        "import torch\n\n\ndef sweep(n=7):\n    return torch.zeros(9, n, dtype=torch.float64)\n")
    (tmp_path / "scripts" / "train.py").write_text(
        "import torch\nfrom torch import nn\n\nfrom mypkg.labels import sweep\n\n"
        "embed = nn.Linear(7, 16)\nwith torch.no_grad():\n    print(embed(sweep()))\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("PYTHONPATH", raising=False)
    alone = [f for f in one_json(doctor("scripts/train.py", "--json"))["findings"] if f["status"] == "fail"]
    assert alone == []
    monkeypatch.setenv("PYTHONPATH", ".")
    found = [f for f in one_json(doctor("scripts/train.py", "--json"))["findings"] if f["status"] == "fail"]
    assert [(f["check"], f["where"]) for f in found] == [("dtype-mismatch", "scripts/train.py:8")]
