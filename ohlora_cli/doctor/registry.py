"""The doctor's data model: a finding, a check, and the explicit list of checks.

A check is one small class (TorchFix style) with a stable kebab-case id, a title, the scopes it
applies to (``env``, ``recipe``, ``script``) and ``run(ctx) -> list[Finding]``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from enum import Enum


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
