"""The read-only view of the filesystem around ``ohlora doctor SCRIPT.py --run`` (readonly.py):
what the audit hook cannot see (a shell, a subprocess) must not change the user's files either.
Real runs: each test pays one child process."""

import json
import os
import subprocess
import sys
import textwrap

import pytest
from bounds import HANG_S
from snapshots import difference, snapshot
from typer.testing import CliRunner

from ohlora_cli.cli import app
from ohlora_cli.doctor.observed import readonly

runner = CliRunner()

needs_view = pytest.mark.skipif(not readonly.available(),
                                reason="this machine lets no user create user and mount namespaces")

# Writes, deletes, renames and an rmtree of the working folder, each done by a program the audit
# hook never sees; then a few real optimizer steps.
OUTSIDE_PYTHON = """
    import os, subprocess, sys
    import torch

    here = os.getcwd()
    shell = [
        "echo changed > data.csv",
        "echo new > created.txt",
        "rm -f keep.txt",
        "mv data.csv moved.csv",
        "mkdir -p checkpoints && echo w > checkpoints/w.pt",
        f"rm -rf {here}",
    ]
    failed = 0
    for command in shell:
        failed += subprocess.run(["sh", "-c", command], capture_output=True).returncode != 0
    failed += subprocess.run([sys.executable, "-c", "open('py_child.txt', 'w').write('x')"],
                             capture_output=True).returncode != 0
    with open(os.path.join(os.environ["TMPDIR_PROBE"], "probe.txt"), "w") as f:  # the temp folder: allowed
        f.write(str(failed))
    model = torch.nn.Linear(4, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    for step in range(50):
        loss = model(torch.randn(8, 4)).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
"""


def _project(tmp_path):
    folder = tmp_path / "proj"
    folder.mkdir()
    (folder / "train.py").write_text(textwrap.dedent(OUTSIDE_PYTHON).lstrip())
    (folder / "data.csv").write_text("a,b\n1,2\n")
    (folder / "keep.txt").write_text("keep\n")
    return folder


@needs_view
def test_what_the_audit_hook_cannot_see_leaves_the_project_byte_identical(tmp_path, monkeypatch):
    folder = _project(tmp_path)
    probe = tmp_path / "probe"
    probe.mkdir()
    monkeypatch.chdir(folder)
    monkeypatch.setenv("TMPDIR_PROBE", str(probe))
    before = snapshot(folder)
    result = runner.invoke(app, ["doctor", "train.py", "--run", "--json", "--timeout", str(HANG_S)])
    data = json.loads(result.stdout.strip().splitlines()[-1])
    assert difference(before, snapshot(folder)) == {}
    assert data["run"]["steps"] >= 1  # the script went on and trained
    view = data["run"]["read_only_view"]
    assert view is not None and view["failed"] == {}
    assert str(folder) in view["read_only"] or "/" in view["read_only"]
    # every one of the seven outside writes failed, and the temp folder stayed writable
    assert (probe / "probe.txt").read_text() == "7"


@needs_view
def test_the_script_runs_as_the_user_and_cannot_remount(tmp_path, monkeypatch):
    folder = tmp_path / "proj"
    folder.mkdir()
    (folder / "train.py").write_text(textwrap.dedent("""
        import os, subprocess
        out = os.environ["OUT"]
        remount = subprocess.run(["mount", "-o", "remount,rw", "/"], capture_output=True).returncode
        open(out, "w").write(f"{os.getuid()} {os.getgid()} {remount}")
    """).lstrip())
    out = tmp_path / "ids.txt"
    monkeypatch.chdir(folder)
    monkeypatch.setenv("OUT", str(out))
    runner.invoke(app, ["doctor", "train.py", "--run", "--json", "--timeout", str(HANG_S)])
    uid, gid, remount = out.read_text().split()
    assert (int(uid), int(gid)) == (os.getuid(), os.getgid())
    assert remount != "0"


def test_the_view_is_reported_either_way(tmp_path, monkeypatch):
    """With the view switched off (as on a machine without user namespaces) the run says so."""
    folder = tmp_path / "proj"
    folder.mkdir()
    (folder / "train.py").write_text("print('hello')\n")
    monkeypatch.chdir(folder)
    monkeypatch.setenv("OHLORA_DOCTOR_NO_VIEW", "1")
    result = subprocess.run([sys.executable, "-m", "ohlora_cli", "doctor", "train.py", "--run", "--json",
                             "--timeout", str(HANG_S)], capture_output=True, text=True, timeout=HANG_S)
    data = json.loads(result.stdout.strip().splitlines()[-1])
    assert data["run"]["read_only_view"] is None
    assert "no read-only view" in result.stderr.replace("\n", " ")


@needs_view
def test_relative_paths_reach_the_writable_folders_of_the_view(tmp_path, monkeypatch):
    """A relative path is resolved from the working folder: after the view is made, the child must
    stand in the view's copy of it, or ``../results`` in the (writable) temp folder fails with
    EROFS (found running a real script, Continuous-Recurrent-Units, under --run)."""
    folder = tmp_path / "proj"
    folder.mkdir()
    (folder / "train.py").write_text(textwrap.dedent("""
        import subprocess
        subprocess.run(["sh", "-c", "mkdir -p ../results && echo x > ../results/made.txt"], check=True)
    """).lstrip())
    monkeypatch.chdir(folder)
    before = snapshot(folder)
    runner.invoke(app, ["doctor", "train.py", "--run", "--json", "--timeout", str(HANG_S)])
    assert (tmp_path / "results" / "made.txt").read_text() == "x\n"
    assert difference(before, snapshot(folder)) == {}
