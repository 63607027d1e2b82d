"""The observations of a run, streamed as JSON lines while they happen.

The child appends one line per event and flushes, so that a run killed at its time limit, or a
crash, still leaves what was seen. The parent reads them back as ``Event`` records (a later
merge maps them onto ``Finding.evidence``: the ``role`` of each is one of born, passes, meets,
kept-by, config, launch, env-set, cuda-init, observed).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path


class EventLog:
    """The child's writer: one JSON object per line, written with ``os.write`` on a file opened
    before any instrument is installed (so the write guard never sees it)."""

    def __init__(self, path: str):
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        self.pid = os.getpid()

    def emit(self, kind: str, **data) -> None:
        data["kind"] = kind
        if os.getpid() != self.pid:  # a forked DataLoader worker
            data["worker"] = True
        line = json.dumps(data, default=str) + "\n"
        os.write(self._fd, line.encode())


@dataclass
class Event:
    """One observation: ``kind`` (start, step, crash, exit, stop, write-redirected, write-blocked,
    cuda, env-set, born, meets, census, calls, ...), the user's ``where`` (``path:line``) and the
    rest of what the child recorded."""

    kind: str
    where: str | None = None
    data: dict = field(default_factory=dict)

    def get(self, key: str, default=None):
        return self.data.get(key, default)

    @property
    def role(self) -> str | None:
        """This event's role in ``Finding.evidence`` (born, meets, kept-by, config, env-set,
        cuda-init, observed), None for bookkeeping (start, step, end)."""
        return ROLES.get(self.kind)


ROLES = {"born": "born", "meets": "meets", "census": "kept-by", "gpu-count": "config", "env-set": "env-set",
         "cuda": "cuda-init", "crash": "observed", "write-blocked": "observed", "write-redirected": "observed",
         "optimizer": "launch"}


def read_events(path: Path) -> list[Event]:
    """Every complete line of the log (a line cut off by a kill is dropped)."""
    events: list[Event] = []
    try:
        text = Path(path).read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return events
    for line in text.splitlines():
        try:
            data = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(data, dict) and "kind" in data:
            events.append(Event(data.pop("kind"), data.pop("where", None), data))
    return events
