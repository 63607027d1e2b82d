"""dtype-mismatch: a float64 tensor meeting float32 model code (weights, ``@``, ``F.linear``).

The facts are ``Meeting`` records (where a float64 value, born at ``origin``, reaches float32 model
code, through which calls, resting on which assumptions); the check turns each into a finding whose
chain is data: born -> passes ... -> meets.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from ..registry import Check, Context, Finding, Role, Status, Step, assumed, decide, reached
from .values import Origin

FAILS_WITH = "fails with 'expected mat1 and mat2 to have the same dtype' (double != float)"


@dataclass
class Meeting:
    site: str
    origin: Origin
    op: str
    expr: str
    stack: tuple
    doubt: tuple = ()  # Assumptions; () = definite

    def evidence(self) -> list[Step]:
        cause = [Step(self.origin.cause, Role.CONFIG, "torch.set_default_dtype(torch.float64)")] \
            if self.origin.cause else []
        return [*cause, Step(self.origin.where, Role.BORN, self.origin.what),
                *(Step(site, Role.PASSES) for site in self.stack),
                Step(self.site, Role.MEETS, self.op)]


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


def render(status: Status, evidence: list[Step], assumptions) -> str:
    """The finding's sentence, from its chain."""
    born = next(s for s in evidence if s.role is Role.BORN)
    meets = evidence[-1]
    chain = f"{born.what} (born at {born.where}); it reaches {meets.what} at {meets.where}{reached(evidence)}"
    if status is Status.FAIL:
        return (f"float64 meets float32: {chain}. Every step is definite on the paths the doctor followed: this "
                f"{FAILS_WITH}.")
    return f"float64 may meet float32: {chain}.{assumed(assumptions)} If that holds, this {FAILS_WITH}."


class DtypeMismatch(Check):
    id = "dtype-mismatch"
    title = "float64 data reaching float32 model code"
    scopes = ("script",)

    def __init__(self, analysis: Callable):
        self.analysis = analysis

    def run(self, ctx: Context) -> list[Finding]:
        findings, born = [], set()
        # Definite chains first: where one float64 meets the model on every path, that is where the run dies.
        for meeting in sorted(self.analysis(ctx).meetings.values(), key=lambda m: bool(m.doubt)):
            if meeting.origin.where in born:
                continue  # the first meeting is where the run dies; later ones never run
            born.add(meeting.origin.where)
            evidence, assumptions = meeting.evidence(), list(meeting.doubt)
            status = decide(Status.FAIL, assumptions)
            findings.append(self.finding(status, render(status, evidence, assumptions), where=meeting.site,
                                         hint=_hint(meeting), evidence=evidence, assumptions=assumptions))
        return findings
