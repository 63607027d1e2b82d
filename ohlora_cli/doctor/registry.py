"""The doctor's data model: a finding, the context checks read, a check, and the list of checks.

A check is one small class (TorchFix style) with a stable kebab-case id, a title, the scopes it
applies to (``env``, ``recipe``, ``script``) and ``run(ctx) -> list[Finding]``. A check that finds
nothing returns no findings; the runner then records one PASS row for it.

A finding of a script check carries its chain as data (DESIGN.md, "Doctor evidence"): ``evidence``
is the ordered steps (each a ``path:line`` and the role it plays: where the value is born, the
calls it passes, where it meets the model ...) and ``assumptions`` the links the doctor could not
make definite (each a kind and a site). Whether a finding is a FAIL or a WARN is decided here, in
``decide``, from the kinds of its assumptions; never from wording.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any


class Status(str, Enum):
    PASS = "pass"
    WARN = "warn"
    FAIL = "fail"
    ERROR = "error"
    SKIP = "skip"


class Role(str, Enum):
    """What a step of a finding's chain is (DESIGN.md, "Doctor, observed")."""

    BORN = "born"  # where the value (a float64 tensor, an autograd graph) comes into being
    PASSES = "passes"  # a call or loop the chain goes through
    MEETS = "meets"  # where it does harm: meets float32 weights
    KEPT_BY = "kept-by"  # what keeps a graph alive (a list, a running total, a buffer)
    CONFIG = "config"  # a TrainingArguments / SFTConfig construction
    LAUNCH = "launch"  # a sign of the launch mode (one process per GPU)
    ENV_SET = "env-set"  # an assignment of CUDA_VISIBLE_DEVICES
    CUDA_INIT = "cuda-init"  # the first thing that touches CUDA
    OBSERVED = "observed"  # seen by the observed run


@dataclass(frozen=True)
class Step:
    where: str  # path:line
    role: Role
    what: str = ""  # a few words: "np.random.rand(...) is float64", "`G(z)`"

    def to_dict(self) -> dict:
        data = {"where": self.where, "role": self.role.value}
        if self.what:
            data["what"] = self.what
        return data


class Kind(str, Enum):
    """Kinds of assumption a chain may rest on. ``weakens``: a finding resting on it is a WARN at most."""

    BRANCH = "branch"  # one side of an if / match / conditional expression / and-or is the one taken
    ELEMENT = "element"  # of a container's several values, the float64 one is the one used
    RETURN = "return"  # of a function's several returns, the one the chain needs (float64, a loss) is taken
    PATH = "path"  # one of several paths, not named
    MODEL_NAME = "model-name"  # a callee is taken for a model from its name alone
    UNSEEN_CODE = "unseen-code"  # code the doctor cannot read does not call .backward() on the value
    GPU_COUNT = "gpu-count"  # the number of visible GPUs is not known (no --gpus)
    LAUNCH_COMMAND = "launch-command"  # the script is launched with plain python, not one process per GPU
    PLACEMENT = "placement"  # the model is not quantized or spread over the GPUs
    RUN_CLEAN = "run-clean"  # the observed run executed the site and its instrument saw it clean
    # Said, but not weakening: how the doctor read the code.
    ENTRY_FUNCTION = "entry-function"  # a function the script never calls, analysed as an entry point
    CODEC = "codec"  # a coding cookie names a codec that is not installed: read as UTF-8

    @property
    def weakens(self) -> bool:
        return self not in (Kind.ENTRY_FUNCTION, Kind.CODEC)


_ASSUMPTION_TEXT = {
    Kind.BRANCH: "the side of the branch at {where} that the chain needs is the one taken",
    Kind.ELEMENT: "of the values read at {where}, the float64 one is the one used",
    Kind.RETURN: "of {subject}'s returns, the one the chain needs is the one taken ({where})",
    Kind.PATH: "the path that leaves it float64 is the one taken",
    Kind.MODEL_NAME: "`{subject}` is taken for a model from its name (its value is not visible) at {where}",
    Kind.UNSEEN_CODE: "the code at {where}, which the doctor cannot see, never calls .backward() on it",
    Kind.GPU_COUNT: "the number of visible GPUs is unknown here (pass --gpus N)",
    Kind.LAUNCH_COMMAND: "the script is launched with plain `python`, not one process per GPU (the `if` at {where})",
    Kind.PLACEMENT: "the model is not quantized or spread over the GPUs ({subject} at {where})",
    Kind.RUN_CLEAN: "other inputs than the observed run's make the chain hold: the run executed {where} and "
                    "saw it clean ({subject})",
    Kind.ENTRY_FUNCTION: "{subject} is never called at the top level; analysed as an entry point ({where})",
    Kind.CODEC: "{where} names a codec that is not installed ({subject}); read as UTF-8",
}


@dataclass(frozen=True)
class Assumption:
    kind: Kind
    where: str | None = None  # path:line of the statement it is about
    subject: str = ""  # a name the text needs: the callee, the function, the codec

    @property
    def text(self) -> str:
        return _ASSUMPTION_TEXT[self.kind].format(where=self.where or "?", subject=self.subject or "it")

    def to_dict(self) -> dict:
        return {"kind": self.kind.value, "where": self.where, "text": self.text}


def decide(definite: Status, assumptions) -> Status:
    """The one place that says FAIL or WARN: a FAIL rests on definite links only; an assumption that
    weakens the chain makes it a WARN that names it."""
    if definite is Status.FAIL and any(a.kind.weakens for a in assumptions):
        return Status.WARN
    return definite


def assumed(assumptions) -> str:
    """The sentences that name what a finding assumes, then how the code was read ('' when nothing)."""
    out = ""
    for weakens, label in ((True, "Assumed"), (False, "Note")):
        texts = list(dict.fromkeys(a.text for a in assumptions if a.kind.weakens is weakens))
        out += f" {label}: {'; '.join(texts)}." if texts else ""
    return out


@dataclass
class Finding:
    check: str
    status: Status
    message: str
    where: str | None = None
    hint: str | None = None
    # True when the cause is bad input (recipe, data, checkpoint): a launch stopped by it exits 2.
    bad_input: bool = False
    evidence: list[Step] = field(default_factory=list)  # the chain, in order
    assumptions: list[Assumption] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"check": self.check, "status": self.status.value, "message": self.message, "where": self.where,
                "hint": self.hint, "evidence": [step.to_dict() for step in self.evidence],
                "assumptions": [a.to_dict() for a in self.assumptions]}

    def sites(self) -> list[str]:
        """Every ``path:line`` the finding names: its evidence and its assumptions."""
        return [s.where for s in self.evidence] + [a.where for a in self.assumptions if a.where]


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
                bad_input: bool = False, evidence=(), assumptions=()) -> Finding:
        return Finding(self.id, status, message, where=where, hint=hint, bad_input=bad_input,
                       evidence=list(evidence), assumptions=list(dict.fromkeys(assumptions)))


def reached(steps) -> str:
    """' (reached from a -> b)' for the PASSES steps among ``steps``; '' when there are none."""
    sites = [s.where for s in steps if s.role is Role.PASSES]
    return f" (reached from {' -> '.join(sites)})" if sites else ""
