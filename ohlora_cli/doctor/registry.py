"""The doctor's data model: a finding, the context checks read, a check, and the list of checks.

A check is one small class (TorchFix style) with a stable kebab-case id, a title, the scopes it
applies to (``env``, ``recipe``, ``script``) and ``run(ctx) -> list[Finding]``. A check that finds
nothing returns no findings; the runner then records one PASS row for it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any


class Status(str, Enum):
    PASS = "pass"
    WARN = "warn"
    FAIL = "fail"
    ERROR = "error"
    SKIP = "skip"


@dataclass
class Finding:
    check: str
    status: Status
    message: str
    where: str | None = None
    hint: str | None = None
    # True when the cause is bad input (recipe, data, checkpoint): a launch stopped by it exits 2.
    bad_input: bool = False

    def to_dict(self) -> dict:
        data = asdict(self)
        data["status"] = self.status.value
        del data["bad_input"]
        return data


@dataclass
class Context:
    """What the checks look at. One context per target (``scope`` says which kind).

    ``gpus`` is the planned number of visible GPUs (``--gpus N``), None when not given; checks
    that need the real count read ``env`` (the environment probe, shared by all targets).
    """

    scope: str  # "env", "recipe" or "script"
    gpus: int | None = None
    recipe: Any = None  # the validated pydantic recipe model (scope "recipe")
    script: Path | None = None  # the entry script (scope "script")
    # All targets of this invocation, so environment checks know what the run will use.
    recipes: list[Any] = field(default_factory=list)
    scripts: list[Path] = field(default_factory=list)
    env: Any = None  # doctor.env.Environment, probed once per invocation
    cache: dict[str, Any] = field(default_factory=dict)  # per-target results shared between checks

    def visible_gpus(self) -> int | None:
        """The planned GPU count, else the real one (None when the probe could not tell)."""
        if self.gpus is not None:
            return self.gpus
        return self.env.gpu_count if self.env is not None else None


class Check:
    """One check. Subclasses set ``id``, ``title``, ``scopes`` and implement ``run``."""

    id: str = ""
    title: str = ""
    scopes: tuple[str, ...] = ()
    uses_env: bool = False  # reads the environment probe (started early, in parallel, when selected)

    def run(self, ctx: Context) -> list[Finding]:
        raise NotImplementedError

    def finding(self, status: Status, message: str, *, where: str | None = None, hint: str | None = None,
                bad_input: bool = False) -> Finding:
        return Finding(self.id, status, message, where=where, hint=hint, bad_input=bad_input)
