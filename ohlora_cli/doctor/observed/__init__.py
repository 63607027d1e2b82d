"""``ohlora doctor SCRIPT.py --run``: run the user's script for its first N optimizer steps in a
child process under instruments, and report the doctor's checks from what was observed.

- ``launch``: the parent (sandbox folder, child process, time limit); ``child``: the child's
  entry point; ``sandbox``, ``devices``, ``tensors``, ``graphs``: the child's instruments
  (torch is imported in the child only); ``events``: the streamed observations;
  ``analysis``: events to findings.

Import-light: importing this package imports neither torch nor the child's instruments.
"""

from __future__ import annotations

import os

from ..registry import Finding, Status
from .launch import Observed, observe

__all__ = ["observe", "Observed", "section_findings", "merge_static"]


def section_findings(obs: Observed, single: Observed | None = None) -> list[Finding]:
    from .analysis import findings

    return findings(obs, single)


def _key(where: str | None):
    if not where or ":" not in where:
        return None
    path, _, line = where.rpartition(":")
    return os.path.realpath(path), line


BOTH = " (the static analysis reports this line too)"


def merge_static(static: list[Finding], observed: list[Finding]) -> list[Finding]:
    """A site both analyses report is one finding, the observed one, marked as seen both ways;
    the static finding is dropped from ``static`` (returned)."""
    seen = {(f.check, _key(f.where)) for f in observed if f.status in (Status.WARN, Status.FAIL)}
    kept = []
    for finding in static:
        if finding.status in (Status.WARN, Status.FAIL) and (finding.check, _key(finding.where)) in seen:
            for match in observed:
                if (match.check == finding.check and _key(match.where) == _key(finding.where)
                        and not match.message.endswith(BOTH)):
                    match.message += BOTH
            continue
        kept.append(finding)
    return kept


def writes_summary(obs: Observed) -> str:
    redirected = {e.get("path") for e in obs.of("write-redirected")}
    blocked = obs.of("write-blocked")
    return (f"observed run: {obs.steps} optimizer step(s) in {obs.wall_s:.1f} s; {len(redirected)} path(s) written "
            f"to the sandbox, {len(blocked)} change(s) blocked; {view_summary(obs.view)}; sandbox: {obs.sandbox}")


def view_summary(view: dict | None) -> str:
    """One phrase on the read-only view of the filesystem the child ran on (readonly.py)."""
    if view is None:
        return "no read-only view of the filesystem here (user namespaces unavailable): the audit hook guarded it"
    if view["failed"]:
        where = ", ".join(sorted(view["failed"])[:3])
        return f"read-only view of the filesystem incomplete ({where}): the audit hook guarded the rest"
    return "the filesystem was read-only to it except the sandbox, the temp folder and the caches"


