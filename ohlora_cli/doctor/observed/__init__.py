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

__all__ = ["observe", "Observed", "section_findings", "merge_static", "static_sites", "unreached", "demote"]


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




# -- what the run says about the static findings it did not confirm --------------------------------

NOT_REACHED = "not reached by the run ({steps} steps)"
DEMOTABLE = ("dtype-mismatch", "grad-inference")  # never multi-gpu-batch or CUDA ordering from a CPU run


def static_sites(static: list[Finding]) -> list[str]:
    """The ``path:line`` of every static warning and failure (its place, its chain), for the child."""
    sites: list[str] = []
    for finding in static:
        if finding.status in (Status.WARN, Status.FAIL):
            sites += [s for s in (finding.where, *finding.sites()) if s and ":" in s]
    return list(dict.fromkeys(sites))


def unreached(static: list[Finding], obs: Observed) -> list[dict]:
    """Static warnings and failures whose line the run never executed: each gets the marker in its
    message (silence is not a pass); returned as ``{"check", "where"}``."""
    ran = obs.reached()
    out = []
    for finding in static:
        if finding.status in (Status.WARN, Status.FAIL) and finding.where and not ran.get(finding.where):
            finding.message += f" ({NOT_REACHED.format(steps=obs.steps)})"
            out.append({"check": finding.check, "where": finding.where})
    return out


def _ended_well(obs: Observed) -> bool:
    """The run ended by itself or was stopped at its steps: no crash, no time limit, no failed exit."""
    if obs.timed_out or obs.of("crash"):
        return False
    ends = obs.of("end")
    return bool(ends) and (ends[-1].get("how") != "exited" or ends[-1].get("code") in ("None", "0"))


def _clean(finding: Finding, obs: Observed, observed: list[Finding]) -> str | None:
    """What the run saw at the static finding's site when its instrument saw it clean, else None."""
    if any(f.check == finding.check and f.status in (Status.WARN, Status.FAIL) and f.where == finding.where
           for f in observed):
        return None
    ran = f"{finding.where} ran {obs.reached()[finding.where]} time(s) over {obs.steps} optimizer step(s)"
    if finding.check == "dtype-mismatch":
        if any(m.where == finding.where for m in obs.of("meets")):
            return None
        return f"{ran}; no float64 tensor met a float32 one there"
    censuses = obs.of("census")
    if obs.steps < 3 or len(censuses) < 3 or any(f.check == "grad-inference" and f.status is Status.FAIL
                                                 for f in observed):
        return None
    from .analysis import grad_series, rises, settled

    series = grad_series(censuses)
    counts = ("nodes", "bytes", "held")
    own = series.get(finding.where, [])
    # the site's own counts never rose; any other line's (where the graph the static finding
    # follows may have been tagged: the model call behind `losses.append(loss)`, or "?") settled
    if any(rises([p[1][c] for p in own]) for c in counts):
        return None
    if any(not settled([p[1][c] for p in points]) for points in series.values() for c in counts):
        return None
    alive = [sum(site.get("nodes", 0) for site in c.get("sites", {}).values()) for c in censuses[1:]]
    mine = f"; at {finding.where}: {', '.join(str(p[1]['nodes']) for p in own)}" if own else ""
    return (f"{ran}; no autograd graph grew over {len(censuses)} step boundaries (old nodes alive at each: "
            f"{', '.join(map(str, alive))}{mine})")


def demote(static: list[Finding], obs: Observed, observed: list[Finding]) -> list[dict]:
    """A static FAIL of ``DEMOTABLE`` whose line the run executed, in a run that ended well, where
    that check's instrument saw nothing, becomes a WARN: the run saw it clean. Returned as
    ``{"check", "where"}``."""
    from ..registry import Assumption, Kind, Role, Step, decide

    if not _ended_well(obs):
        return []
    ran = obs.reached()
    out = []
    for finding in static:
        if finding.status is not Status.FAIL or finding.check not in DEMOTABLE or not ran.get(finding.where or ""):
            continue
        seen = _clean(finding, obs, observed)
        if seen is None:
            continue
        finding.assumptions.append(Assumption(Kind.RUN_CLEAN, finding.where, seen))
        finding.evidence.append(Step(finding.where, Role.OBSERVED, seen))
        finding.status = decide(Status.FAIL, finding.assumptions)
        finding.message += f" Demoted to a warning: the observed run executed it and saw it clean: {seen}."
        out.append({"check": finding.check, "where": finding.where})
    return out
