"""dtype-mismatch: a float64 tensor meeting float32 model code (weights, ``@``, ``F.linear``).

The facts are ``Meeting`` records (where a float64 value, born at ``origin``, reaches float32 model
code, through which calls, resting on which assumptions); the check turns each into a finding whose
chain is data: born -> passes ... -> meets.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from enum import Enum

from ..registry import Check, Context, Finding, Role, Status, Step, assumed, decide, reached
from .values import Origin, T

MATMUL_ERROR = "expected mat1 and mat2 to have the same dtype"
CONV_ERROR = "Input type (double) and bias type (float) should be the same"

# Loss functions whose arguments must match a float32 input, as torch 2.14 checks them (each one run:
# MSE, L1, BCEWithLogits with a float64 target, or cross_entropy with float64 class probabilities, run).
CLASS_WEIGHTED = {"cross_entropy", "nll_loss", "CrossEntropyLoss", "NLLLoss"}  # weight= float64 fails
FLOAT_TARGET = {"binary_cross_entropy", "BCELoss"}  # a float64 or integer target fails
NOT_INT_TARGET = {"binary_cross_entropy_with_logits", "BCEWithLogitsLoss"}  # an integer target fails
MIXED_BACKWARD = {"huber_loss", "HuberLoss"}  # a float64 target runs forward; its backward fails


class Birth(Enum):
    """How the interpreter saw a float64 value born: what to say, and the cast that fixes it there
    (templates filled with the names the site gives: ``name``, ``how``)."""

    PY_FLOAT_LIST = ("a list of Python floats", "np.array(..., dtype=np.float32)")
    PANDAS_CONVERSION = ("pandas {how} gives float64", ".to_numpy(dtype=np.float32)")
    PANDAS_VALUE = ("a pandas value is float64", "np.float32(...) or .to_numpy(dtype=np.float32)")
    PANDAS_TOLIST = ("pandas .tolist() gives Python floats", ".to_numpy(dtype=np.float32)")
    INT_DIVISION = ("`/` of NumPy integers is float64", "np.float32(...) or .astype(np.float32)")
    DOUBLE = ("`.double()` makes it float64", "`.float()` instead of `.double()`")
    CAST_ARG = ("`.{name}(float64)` makes it float64", "`.{name}(torch.float32)`")
    CAST = ("`.{name}(...)` makes it float64", "`.{name}(torch.float32)`")
    ASTYPE = ("`.astype(...)` makes it float64", "`.astype(np.float32)`")
    DEFAULT_DTYPE = ("`{name}(...)` is float64 (torch.set_default_dtype(torch.float64) at {how})",
                     "dtype=torch.float32")
    ARRAY = ("a float64 array", ".astype(np.float32)")
    SAMPLE = ("a float64 sample", "np.float32(...)")
    DATASET_FLOAT = ("a Python float from the Dataset; the DataLoader's default collate turns it into a "
                     "float64 tensor", "torch.tensor(..., dtype=torch.float32)")


def born(site: str, birth: Birth, cause: str | None = None, **names: str) -> Origin:
    what, fix = birth.value
    return Origin(site, what.format(**names), fix.format(**names), cause)


def collated(origin: Origin) -> Origin:
    """A float64 value a Dataset returns, as the DataLoader's default collate passes it on."""
    return replace(origin, what=origin.what + " returned by the Dataset; the DataLoader's default collate makes "
                   "it a float64 tensor", fix="return torch.tensor(..., dtype=torch.float32) from __getitem__")


@dataclass
class Meeting:
    site: str
    origin: Origin
    op: str
    expr: str
    stack: tuple
    doubt: tuple = ()  # Assumptions; () = definite
    error: str = MATMUL_ERROR  # what torch says when it happens
    dtype: str = "float64"  # what meets float32: "float64", or "int64" for an integer target

    def evidence(self) -> list[Step]:
        cause = [Step(self.origin.cause, Role.CONFIG, "torch.set_default_dtype(torch.float64)")] \
            if self.origin.cause else []
        return [*cause, Step(self.origin.where, Role.BORN, self.origin.what),
                *(Step(site, Role.PASSES) for site in self.stack),
                Step(self.site, Role.MEETS, self.op)]


@dataclass
class Facts:
    meetings: dict = field(default_factory=dict)  # (birth site, meeting site) -> Meeting


def record(facts: Facts, value: T, site: str, stack: tuple, op: str, expr: str, doubt: tuple = (),
           error: str = MATMUL_ERROR) -> None:
    """The float64 (or integer) ``value`` reaches float32 model code at ``site``; a definite chain
    replaces a doubted one."""
    name = "int64" if value.dtype == "int" else "float64"
    origin = value.origin or Origin(site, f"a {name} tensor", "x.float()")
    key = (origin.where, site)
    doubt = tuple(dict.fromkeys(value.doubt + doubt))
    known = facts.meetings.get(key)
    if known is None or (known.doubt and not doubt):
        facts.meetings[key] = Meeting(site, origin, op, expr, stack, doubt, error, name)


def _f64_tensor(value) -> bool:
    return isinstance(value, T) and value.kind == "tensor" and value.f64


def meet(facts: Facts, a, b, site: str, stack: tuple, op: str, exprs: tuple = ()) -> None:
    """``a @ b``, ``torch.matmul(a, b)``, ``F.linear(x, w)``: a float64 operand against a float32 one."""
    for i, (x, y) in enumerate(((a, b), (b, a))):
        if _f64_tensor(x) and isinstance(y, T) and y.kind == "tensor" and y.dtype == "f32":
            weight = f" float32 nn.Parameter '{y.param}'" if y.param else " a float32 tensor"
            record(facts, x, site, stack, f"{op} with{weight}", exprs[i] if i < len(exprs) else "")


def weights(facts: Facts, label: str, guess, args: list, exprs: list, site: str, stack: tuple) -> None:
    """A library module with float32 weights (nn.Linear, conv ...) called on ``args``."""
    for i, arg in enumerate(args):
        if _f64_tensor(arg):
            error = CONV_ERROR if "Conv" in label else MATMUL_ERROR
            record(facts, arg, site, stack, f"{label} with float32 weights", exprs[i] if i < len(exprs) else "",
                   (guess,) if guess else (), error)


def _f32_tensor(value) -> bool:
    return isinstance(value, T) and value.kind == "tensor" and value.dtype == "f32"


def loss(facts: Facts, name: str, args: list, kwargs: dict, exprs: list, site: str, stack: tuple,
         weight=None, guess=None) -> None:
    """A loss function (``F.cross_entropy``, ``nn.BCELoss()(...)`` ...) called with a float32 input:
    the arguments torch checks against it are meeting points too. ``weight``: a loss module's class
    weights, given when it was built; ``guess``: why the analysis takes the module for this loss,
    when it does not know it (one of several a registry can build)."""
    doubt = (guess,) if guess else ()
    short = name.rsplit(".", 1)[-1]
    inp = kwargs.get("input", args[0] if args else None)
    if not _f32_tensor(inp):
        return  # the input's dtype is not known to be float32: nothing definite to say
    target = kwargs.get("target", args[1] if len(args) > 1 else None)
    label = f"F.{short}" if short[:1].islower() else f"nn.{short}"
    if short in CLASS_WEIGHTED:
        weight = kwargs.get("weight", weight)
        if _f64_tensor(weight):
            record(facts, weight, site, stack, f"{label}'s class weights (weight=) with a float32 input", "",
                   doubt, error="expected scalar type Float but found Double")
    target_expr = exprs[1] if len(exprs) > 1 else ""
    if short in FLOAT_TARGET and (_f64_tensor(target) or _int_tensor(target)):
        found = "Long" if target.dtype == "int" else "Double"
        record(facts, target, site, stack, f"{label} as its target, with a float32 input", target_expr,
               doubt, error=f"Found dtype {found} but expected Float")
    if short in MIXED_BACKWARD and _f64_tensor(target):
        record(facts, target, site, stack, f"{label} as its target, with a float32 input (the backward fails)",
               target_expr, doubt, error="Found dtype Double but expected Float")
    if short in NOT_INT_TARGET and _int_tensor(target):
        record(facts, target, site, stack, f"{label} as its target, with a float32 input", target_expr,
               doubt, error="result type Float can't be cast to the desired output type Long")


def _int_tensor(value) -> bool:
    return isinstance(value, T) and value.kind == "tensor" and value.dtype == "int"


def _cast(expr: str) -> str:
    if expr.isidentifier():
        return f"`{expr} = {expr}.float()`"
    return f"`({expr}).float()`" if expr else "`.float()`"


def _hint(meeting: Meeting) -> str:
    origin, cast = meeting.origin, _cast(meeting.expr)
    if "double()" in origin.what:
        return (f"`.double()` is not a fix, it is the cause: the model's weights are float32. Use `.float()` "
                f"at {origin.where}, or cast at {meeting.site}: {cast}.")
    return f"Cast to float32 where it is born ({origin.where}: {origin.fix}), or where it meets the model " \
           f"({meeting.site}: {cast})."


def render(meeting: Meeting, status: Status, evidence: list[Step], assumptions) -> str:
    """The finding's sentence, from its chain."""
    born = next(s for s in evidence if s.role is Role.BORN)
    meets = evidence[-1]
    chain = f"{born.what} (born at {born.where}); it reaches {meets.what} at {meets.where}{reached(evidence)}"
    fails = f"fails with '{meeting.error}'" + (" (double != float)" if meeting.error == MATMUL_ERROR else "")
    if status is Status.FAIL:
        return (f"{meeting.dtype} meets float32: {chain}. Every step is definite on the paths the doctor followed: "
                f"this {fails}.{assumed(assumptions)}")
    return f"{meeting.dtype} may meet float32: {chain}.{assumed(assumptions)} If that holds, this {fails}."


class DtypeMismatch(Check):
    id = "dtype-mismatch"
    title = "float64 data reaching float32 model code"
    scopes = ("script",)

    def __init__(self, analysis: Callable):
        self.analysis = analysis

    def run(self, ctx: Context) -> list[Finding]:
        findings, born = [], set()
        # Definite chains first: where one float64 meets the model on every path, that is where the run dies.
        result = self.analysis(ctx)
        for meeting in sorted(result.dtype.meetings.values(), key=lambda m: bool(m.doubt)):
            if meeting.origin.where in born:
                continue  # the first meeting is where the run dies; later ones never run
            born.add(meeting.origin.where)
            evidence, assumptions = meeting.evidence(), [*meeting.doubt, *result.notes_for(meeting.stack)]
            status = decide(Status.FAIL, assumptions)
            findings.append(self.finding(status, render(meeting, status, evidence, assumptions), where=meeting.site,
                                         hint=_hint(meeting), evidence=evidence, assumptions=assumptions))
        return findings
