"""Running ``ohlora doctor SCRIPT --run --json`` in a test and reading its report."""

import json
import os
import subprocess
import sys

from bounds import HANG_S
from typer.testing import CliRunner

from ohlora_cli.cli import app

runner = CliRunner()


def observe(script, *extra):
    """(the CLI result, its JSON report) of ``ohlora doctor script --run --json``."""
    result = runner.invoke(app, ["doctor", script, "--run", "--json", "--timeout", str(HANG_S), *extra])
    assert "Traceback" not in result.stdout, result.output
    return result, json.loads(result.stdout.strip().splitlines()[-1])


def observed(data, check, status):
    """The observed run's findings of ``check`` with ``status`` (not the static analysis')."""
    return [f for f in data["findings"] if f["check"] == check and f["status"] == status
            and (f["check"].startswith("observed-") or f["message"].startswith("observed"))]


def line(path, marker):
    """``name:N`` of the one line of ``path`` holding ``marker``."""
    found = [i for i, text in enumerate(path.read_text().splitlines(), 1) if marker in text]
    assert len(found) == 1, (marker, found)
    return f"{path.name}:{found[0]}"


def doctor_json(project, *args):
    """(the JSON report, stderr) of ``ohlora doctor train.py ARGS --json`` in a fresh interpreter,
    as a user runs it."""
    done = subprocess.run([sys.executable, "-m", "ohlora_cli", "doctor", "train.py", *args, "--json"], cwd=project,
                          capture_output=True, text=True, timeout=2 * HANG_S, env=dict(os.environ))
    assert "Traceback" not in done.stdout, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1]), done.stderr
