import subprocess
import sys

import pytest
from bounds import HANG_S
from typer.testing import CliRunner

from ohlora_cli import __version__
from ohlora_cli.cli import app

runner = CliRunner()


@pytest.mark.parametrize("args", [[], ["train-gan"], ["train-llm"], ["doctor"], ["generate"], ["chat"], ["recipes"],
                                  ["recipes", "copy"], ["report"]])
def test_every_help_has_examples(args):
    result = runner.invoke(app, [*args, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage:" in result.output
    assert "Examples:" in result.output
    assert "ohlora" in result.output


def test_version():
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0
    assert result.output.strip() == f"ohlora {__version__}"


def test_no_arguments_shows_help():
    result = runner.invoke(app, [])
    assert "train-gan" in result.output and "doctor" in result.output


def test_unknown_option_is_usage_error():
    result = runner.invoke(app, ["train-gan", "--no-such-flag"])
    assert result.exit_code == 2


def test_cli_import_pulls_in_no_engine():
    code = (
        "import sys, ohlora_cli.cli\n"
        "heavy = [m for m in ('torch', 'transformers', 'trl', 'peft', 'unsloth', 'datasets')"
        " if m in sys.modules]\n"
        "print(','.join(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_python_dash_m_works():
    out = subprocess.run([sys.executable, "-m", "ohlora_cli", "--version"], capture_output=True, text=True)
    assert out.returncode == 0
    assert out.stdout.strip() == f"ohlora {__version__}"



def _boom():
    raise ZeroDivisionError("deliberate")


@pytest.mark.parametrize("debug", [False, True])
def test_internal_error_exits_1_traceback_only_with_debug(capfd, monkeypatch, debug):
    import typer

    from ohlora_cli.commands.guard import guard as _guard

    if debug:
        monkeypatch.setenv("OHLORA_DEBUG", "1")
    else:
        monkeypatch.delenv("OHLORA_DEBUG", raising=False)
    with pytest.raises(typer.Exit) as info:
        _guard(_boom)()
    assert info.value.exit_code == 1
    err = capfd.readouterr().err
    assert "internal error: ZeroDivisionError: deliberate" in err
    # with debug on, the traceback is the original one (it names the function that raised)
    assert ("Traceback" in err and "in _boom" in err) == debug


@pytest.mark.parametrize("command,recipe", [("train-gan", "gan-demo"), ("train-llm", "llm-demo")])
def test_nproc_inside_torchrun_is_refused(monkeypatch, command, recipe):
    """One launcher at a time: under torchrun (LOCAL_RANK and WORLD_SIZE set) --nproc is bad usage."""
    monkeypatch.setenv("LOCAL_RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "2")
    result = runner.invoke(app, [command, recipe, "--nproc", "2", "--dry-run", "--skip-doctor"])
    assert result.exit_code == 2
    assert "--nproc: this process was already started by torchrun" in result.stderr
    assert "Traceback" not in result.output


@pytest.mark.parametrize("case", ["huge recipe", "gan csv", "llm csv"])
def test_hostile_input_is_refused_before_the_engine_loads(tmp_path, case):
    """In a fresh process, as a user runs it: exit 2 before torch is imported (seconds), which is
    what keeps these answers under a second (README, Recipes)."""
    if case == "huge recipe":
        path = tmp_path / "huge.yaml"
        path.write_text("kind: gan\n" + "# padding\n" * 500_000)  # 5 MB: refused, not parsed
        args = ["train-gan", str(path)]
    elif case == "gan csv":
        (tmp_path / "dup.csv").write_text("img_path,brightness,position,brightness\na.png,1,2,3\n")
        args = ["train-gan", "gan-demo", "--set", f"data.csv={tmp_path / 'dup.csv'}", "--set", "data.synthetic=null"]
    else:
        (tmp_path / "dup.csv").write_text("data_type,input_data,output_data,input_data\ntrain,a,b,c\n")
        args = ["train-llm", "llm-demo", "--set", f"data.path={tmp_path / 'dup.csv'}"]
    code = ("import sys\nfrom typer.testing import CliRunner\nfrom ohlora_cli.cli import app\n"
            f"result = CliRunner().invoke(app, {args!r})\n"
            "print(result.exit_code, 'torch' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=HANG_S, cwd=tmp_path)
    assert done.stdout.split() == ["2", "False"], done.stdout + done.stderr


@pytest.mark.parametrize("command", ["train-gan", "train-llm", "doctor"])
def test_verbose_is_offered(command):
    result = runner.invoke(app, [command, "--help"])
    assert "--verbose" in result.output
