"""multi-gpu-batch and cuda-visible-devices-late: how the script is launched and which GPUs it sees.

Facts: a ``timeline`` of ``Event`` s in execution order (``CUDA_VISIBLE_DEVICES`` assignments, the
first things that touch CUDA, TrainingArguments / SFTConfig constructions, model placements), and
``Launcher`` s: signs that the script runs one process per GPU (on every path, or on one side of an
``if``). The checks turn them into findings whose chain is data (config, env-set, cuda-init ...).
"""

from __future__ import annotations

import ast
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum

from ..registry import (
    Assumption,
    Check,
    Context,
    Finding,
    Kind,
    Role,
    Status,
    Step,
    assumed,
    decide,
    reached,
)
from .values import Const


class EventKind(Enum):
    ENV_SET = "env-set"  # CUDA_VISIBLE_DEVICES assigned
    CUDA = "cuda"  # something touches CUDA (is_available, .cuda(), import unsloth ...)
    CONFIG = "config"  # a TrainingArguments / SFTConfig built
    PLACEMENT = "placement"  # a pretrained model loaded quantized or with a device_map


class Placement(Enum):
    QUANTIZED = "8/4-bit"  # definitely: the Trainer never wraps it in DataParallel
    MAYBE = "maybe"  # quantized or spread over the GPUs, perhaps (the reason in ``detail``)


@dataclass
class Event:
    kind: EventKind
    site: str
    stack: tuple
    detail: str = ""  # config: the class; cuda: what touches it; placement: why
    env_value: str | None = None  # env-set: the value, None when not known
    per_device: int | None = None  # config: None when an argument parser gives it
    accumulation: int = 1
    placement: Placement | None = None
    owner: str | None = None  # config: the module that builds it

    def steps(self, role: Role, what: str = "") -> list[Step]:
        return [*(Step(site, Role.PASSES) for site in self.stack), Step(self.site, role, what or self.detail)]


@dataclass(frozen=True)
class Launcher:
    site: str
    what: str
    branch: str | None = None  # the `if` one side of which starts one process per GPU; None: every path


@dataclass
class Facts:
    timeline: list = field(default_factory=list)  # Events, in execution order
    launcher: Launcher | None = None  # one process per GPU, on every path
    maybe_launcher: Launcher | None = None  # one process per GPU on one side of an `if`


def env_set(facts: Facts, site: str, stack: tuple, value) -> None:
    """CUDA_VISIBLE_DEVICES assigned ``value`` (an abstract value: a known string, or not known)."""
    text = value.value if isinstance(value, Const) and isinstance(value.value, str) else None
    facts.timeline.append(Event(EventKind.ENV_SET, site, stack, env_value=text))


def cuda(facts: Facts, site: str, stack: tuple, detail: str) -> None:
    facts.timeline.append(Event(EventKind.CUDA, site, stack, detail))


def launched(facts: Facts, site: str, what: str, branch: str | None) -> None:
    """A sign of one process per GPU (torchrun, accelerate, mp.spawn, deepspeed, Lightning)."""
    if branch is None:
        facts.launcher = facts.launcher or Launcher(site, what)
    elif facts.maybe_launcher is None:
        facts.maybe_launcher = Launcher(site, what, branch)


def config(facts: Facts, node: ast.Call, site: str, stack: tuple, cls: str, owner: str,
           int_of: Callable[[ast.expr], int | None], *, from_cli: bool = False) -> None:
    """A TrainingArguments / SFTConfig built at ``site``; ``from_cli``: by an argument parser, so its
    per-device batch comes from the command line (None). ``int_of`` reads an int argument's value."""
    per_device, accumulation = (None, 1) if from_cli else (8, 1)
    for kw in node.keywords:
        value = int_of(kw.value)
        if kw.arg == "per_device_train_batch_size" and value is not None:
            per_device = value
        elif kw.arg == "gradient_accumulation_steps" and value is not None:
            accumulation = value
    facts.timeline.append(Event(EventKind.CONFIG, site, stack, cls, per_device=per_device,
                                accumulation=accumulation, owner=owner))


def _const(node: ast.AST | None):
    return node.value if isinstance(node, ast.Constant) else None


def placement(facts: Facts, node: ast.Call, site: str, stack: tuple) -> None:
    """A pretrained model loaded in 8/4-bit or placed by ``device_map``: transformers' Trainer wraps
    neither in DataParallel (quantized models never; a model spread over several GPUs is
    model-parallel). Definite only for a literal ``load_in_8bit=True`` / ``load_in_4bit=True``."""
    keywords = {kw.arg: kw.value for kw in node.keywords if kw.arg}
    quantized = [k for k in ("load_in_8bit", "load_in_4bit") if k in keywords]
    device_map = _const(keywords.get("device_map"))
    if any(_const(keywords[k]) is True for k in quantized):
        value, detail = Placement.QUANTIZED, "loaded in 8/4-bit"
    elif quantized or "quantization_config" in keywords:
        value, detail = Placement.MAYBE, "the model may be loaded quantized (never wrapped in DataParallel)"
    elif "device_map" in keywords and device_map not in ("cpu", None) and not isinstance(device_map, int):
        value, detail = Placement.MAYBE, "device_map may spread the model over several GPUs (model-parallel: no DataParallel)"
    else:
        return
    facts.timeline.append(Event(EventKind.PLACEMENT, site, stack, detail, placement=value))


def _devices(value: str | None) -> int | None:
    if value is None:
        return None
    return len([part for part in value.split(",") if part.strip()])


def effective_env(timeline: list[Event]) -> Event | None:
    """The CUDA_VISIBLE_DEVICES assignment that takes effect: one made before CUDA is touched."""
    for event in timeline:
        if event.kind in (EventKind.CUDA, EventKind.CONFIG):
            return None
        if event.kind is EventKind.ENV_SET:
            return event
    return None


def _figures(event: Event, visible: int | None) -> str:
    per_device, accumulation = event.per_device, event.accumulation
    if visible is None:
        example = (f"with 2 GPUs, {per_device} becomes {2 * per_device}" if per_device is not None
                   else "with 2 GPUs, the batch given on the command line doubles")
        return (f"the Trainer uses DataParallel over every visible GPU, so train_batch_size = "
                f"{per_device or 'per_device_train_batch_size'} x N GPUs ({example})")
    if per_device is None:
        return (f"train_batch_size = per_device_train_batch_size x {visible} per step (DataParallel), "
                f"{visible} times the batch given on the command line")
    return (f"train_batch_size = {per_device} x {visible} = {per_device * visible} per step (DataParallel), "
            f"{per_device * visible * accumulation} per optimizer step instead of {per_device * accumulation}")


def render_batch(event: Event, visible: int | None, evidence: list[Step], assumptions: list[Assumption]) -> str:
    config = next(s for s in evidence if s.role is Role.CONFIG)
    parser = " by an argument parser" if event.per_device is None else ""
    launch = next((s for s in evidence if s.role is Role.LAUNCH), None)
    head = f"{config.what} built{parser} at {config.where}{reached(evidence)}"
    if launch is not None:
        return (f"{head}: one process per GPU only on one side of an `if` ({launch.what} at {launch.where}); "
                f"launched with plain `python` on several GPUs, the Trainer uses DataParallel and multiplies the "
                f"per-device batch by the number of GPUs.{assumed(assumptions)}")
    head += ", script run with plain `python`"
    if visible is not None:
        head += f", {visible} visible GPUs"
    return f"{head}: {_figures(event, visible)}.{assumed(assumptions)}"


class MultiGpuBatch(Check):
    id = "multi-gpu-batch"
    title = "Trainer batch silently multiplied by the visible GPUs"
    scopes = ("script",)

    def __init__(self, analysis: Callable):
        self.analysis = analysis

    def run(self, ctx: Context) -> list[Finding]:
        analysed = self.analysis(ctx)
        result, notes = analysed.launch, analysed.notes_for
        timeline = result.timeline
        configs = list({e.site: e for e in timeline if e.kind is EventKind.CONFIG}.values())
        if not configs or result.launcher:
            return []  # one process per GPU (torchrun, accelerate, mp.spawn, deepspeed, Lightning): no DataParallel
        placements = [e for e in timeline if e.kind is EventKind.PLACEMENT]
        if any(e.placement is Placement.QUANTIZED for e in placements):
            return []  # the Trainer never wraps an 8/4-bit model in DataParallel
        maybe = next((e for e in placements if e.placement is Placement.MAYBE), None)
        pinned = effective_env(timeline)
        visible = _devices(pinned.env_value) if pinned is not None else ctx.gpus
        if visible is not None and visible <= 1:
            return []
        findings = []
        for event in {e.detail: e for e in reversed(configs)}.values():  # the first of each config class
            evidence, assumptions = event.steps(Role.CONFIG), notes(event.stack)
            if pinned is not None:
                evidence.insert(0, Step(pinned.site, Role.ENV_SET, f"CUDA_VISIBLE_DEVICES={pinned.env_value}"))
            if result.maybe_launcher is not None:
                launcher = result.maybe_launcher
                evidence.append(Step(launcher.site, Role.LAUNCH, launcher.what))
                assumptions.append(Assumption(Kind.LAUNCH_COMMAND, launcher.branch))
            elif visible is None:
                assumptions.append(Assumption(Kind.GPU_COUNT))
            elif maybe is not None:
                assumptions.append(Assumption(Kind.PLACEMENT, maybe.site, maybe.detail))
            findings.append(self.finding(decide(Status.FAIL, assumptions),
                                         render_batch(event, visible, evidence, assumptions), where=event.site,
                                         hint=self._hint(event, result.maybe_launcher, visible),
                                         evidence=evidence, assumptions=assumptions))
        return findings

    @staticmethod
    def _hint(event: Event, launcher: Launcher | None, visible: int | None) -> str:
        if launcher is not None:
            return ("Launch with `torchrun --nproc_per_node N` (or the launcher the script documents), or make one "
                    "GPU visible.")
        fix = (f"Launch with `torchrun --nproc_per_node N`, or set CUDA_VISIBLE_DEVICES first thing in "
               f"{event.owner} (before the {event.detail} is built).")
        return f"Pass --gpus N to check a plan. {fix}" if visible is None else fix


class CudaVisibleDevicesLate(Check):
    id = "cuda-visible-devices-late"
    title = "CUDA_VISIBLE_DEVICES set after it can take effect"
    scopes = ("script",)

    def __init__(self, analysis: Callable):
        self.analysis = analysis

    def run(self, ctx: Context) -> list[Finding]:
        analysed = self.analysis(ctx)
        timeline = analysed.launch.timeline
        findings, seen = [], set()
        effective = effective_env(timeline)
        lock = None
        for event in timeline:
            if event.kind in (EventKind.CUDA, EventKind.CONFIG) and lock is None:
                lock = event
            if event.kind is not EventKind.ENV_SET or lock is None or event.site in seen:
                continue
            seen.add(event.site)
            if effective is not None and effective.env_value is not None and effective.env_value == event.env_value:
                continue  # repeats a value that already took effect
            findings.append(self._late(event, lock, analysed.notes_for(event.stack)))
        return findings

    def _late(self, event: Event, lock: Event, notes: list) -> Finding:
        config = lock.kind is EventKind.CONFIG
        first = lock.steps(Role.CONFIG if config else Role.CUDA_INIT)
        late = event.steps(Role.ENV_SET, "CUDA_VISIBLE_DEVICES")
        what = f"the {lock.detail} built" if config else lock.detail
        owner = lock.owner or lock.site.rsplit(":", 1)[0]
        message = (f"CUDA_VISIBLE_DEVICES is set at {event.site}{reached(late)}, after {what} at {lock.site}"
                   f"{reached(first)}: by then the number of GPUs is fixed, so the setting has no effect.")
        hint = (f"Set os.environ['CUDA_VISIBLE_DEVICES'] before anything touches CUDA: first thing in {owner}, above "
                f"line {lock.site.rsplit(':', 1)[1]} (after a bare `import torch` is fine), or export it in the shell.")
        return self.finding(Status.FAIL, message + assumed(notes), where=event.site, hint=hint,
                            evidence=[*first, *late], assumptions=notes)
