"""The parent side of the observed run: a sandbox folder, the child process, its time limit.

The child runs with the same interpreter, working folder and environment as the user's own
``python SCRIPT.py`` (plus the hub and trackers offline), in a new session so that the time
limit kills it and its DataLoader workers together. What it saw comes back as events.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from .events import Event, read_events
from .sandbox import free_folders

OFFLINE = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "WANDB_MODE": "disabled", "PYTHONDONTWRITEBYTECODE": "1"}


@dataclass
class Observed:
    script: str
    sandbox: Path
    events: list[Event] = field(default_factory=list)
    timed_out: bool = False
    returncode: int | None = None
    wall_s: float = 0.0
    steps: int = 0
    timeout_s: float = 0.0
    gpus: int | None = None
    view: dict | None = None  # the read-only view of the filesystem (readonly.py), when there was one

    def of(self, kind: str) -> list[Event]:
        return [e for e in self.events if e.kind == kind]

    def reached(self) -> dict[str, int]:
        """How many times the line of each static site ran (``coverage``): the last counts the
        child streamed; a line whose first execution is all that came back (a kill before the
        next step boundary, a DataLoader worker) counts 1."""
        counts: dict[str, int] = {}
        for event in self.events:
            if event.kind == "lines" and not event.get("worker"):
                counts.update(event.get("counts") or {})  # cumulative: a later flush supersedes
            elif event.kind == "line-reached" and event.get("site"):
                counts.setdefault(event.get("site"), 1)
        return counts


def gpu_count() -> int:
    """GPUs the driver lists, without touching CUDA in this process (0 when unknown)."""
    smi = shutil.which("nvidia-smi")
    if not smi:
        return 0
    try:
        listed = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return 0
    return sum(1 for line in listed.splitlines() if line.startswith("GPU "))


def observe(script: Path, args: list[str], *, steps: int = 6, timeout: float = 120.0,
            gpus: int | None = None, sites: list[str] | None = None) -> Observed:
    """Run ``script`` with ``args`` for ``steps`` optimizer steps at most, ``timeout`` seconds at
    most; ``gpus``: the count the user's own ``torch.cuda.device_count()`` calls see; ``sites``:
    the ``path:line`` of the static findings, whose executions the child counts."""
    sandbox = Path(tempfile.mkdtemp(prefix="ohlora-doctor-run-"))
    events = sandbox / "events.jsonl"
    config = {"script": str(script), "args": list(args), "steps": steps, "sandbox": str(sandbox),
              "events": str(events), "shim": gpu_count() == 0, "gpus": gpus,
              "sites": list(sites or [])}
    (sandbox / "config.json").write_text(json.dumps(config), encoding="utf-8")
    env = dict(os.environ, **OFFLINE)
    started = time.monotonic()
    timed_out = False
    command = _command(script, sandbox, [sys.executable, "-m", "ohlora_cli.doctor.observed.child",
                                         str(sandbox / "config.json")])
    with open(sandbox / "output.log", "wb") as output:
        proc = subprocess.Popen(
            command, cwd=os.getcwd(), env=env, stdin=subprocess.DEVNULL, stdout=output, stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            timed_out = True
        finally:
            try:
                os.killpg(proc.pid, signal.SIGKILL)  # the child, and workers it left behind
            except (ProcessLookupError, PermissionError):
                pass
            proc.wait()
    observed = Observed(str(script), sandbox, read_events(events), timed_out, proc.returncode,
                        time.monotonic() - started, timeout_s=timeout, gpus=gpus)
    observed.steps = max((e.get("step", 0) for e in observed.of("step")), default=0)
    observed.view = _view(sandbox)
    return observed


def _command(script: Path, sandbox: Path, child: list[str]) -> list[str]:
    """The child's command, inside a read-only view of the filesystem where the OS allows one."""
    from . import readonly  # not at the top: ``python -m ...readonly`` must find it unimported
    if os.environ.get("OHLORA_DOCTOR_NO_VIEW") or not readonly.available():
        return child
    spec = {"command": child, "sandbox": str(sandbox), "writable": [str(sandbox), *free_folders()],
            "protected": [str(script.resolve().parent), os.getcwd()], "uid": os.getuid(), "gid": os.getgid(),
            "report": str(sandbox / "view.json")}
    (sandbox / "view-spec.json").write_text(json.dumps(spec), encoding="utf-8")
    return readonly.wrap(str(sandbox / "view-spec.json"))


def _view(sandbox: Path) -> dict | None:
    """What the read-only view covered (None: no view, the audit hook alone guarded the run)."""
    try:
        return json.loads((sandbox / "view.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
