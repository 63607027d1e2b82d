"""Static checks of a user's own training script and the local modules it imports (never run).

One abstract interpretation per script (``flow.analyse``), shared by the checks; each check family
lives in its own module (``dtype``, ``grad``, ``launch``) with its facts and its findings, whose
``where`` is ``path:line`` and whose ``evidence`` is the chain as data.
"""

from __future__ import annotations

from ..registry import Check, Context
from .dtype import DtypeMismatch
from .flow import Interpreter, analyse
from .grad import GradInference
from .launch import CudaVisibleDevicesLate, MultiGpuBatch
from .project import Project


def analysis(ctx: Context) -> Interpreter:
    if "static" not in ctx.cache:
        ctx.cache["static"] = analyse(Project(ctx.script))
    return ctx.cache["static"]


CHECKS: list[Check] = [
    DtypeMismatch(analysis),
    GradInference(analysis),
    MultiGpuBatch(analysis),
    CudaVisibleDevicesLate(analysis),
]
