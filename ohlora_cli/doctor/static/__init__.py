"""Static checks of a user's own training script and the local modules it imports (never run).

One abstract interpretation per script (``flow.analyse``), shared by the four checks below; each
check turns what it recorded into findings whose ``where`` is ``path:line``.
"""

from __future__ import annotations

from ..registry import Check, Context, Finding, Status
from .flow import Event, Interpreter, analyse
from .project import Project


def analysis(ctx: Context) -> Interpreter:
    if "static" not in ctx.cache:
        ctx.cache["static"] = analyse(Project(ctx.script))
    return ctx.cache["static"]


def _via(stack: tuple) -> str:
    return f" (reached from {' -> '.join(stack)})" if stack else ""


class ScriptDtypeMismatch(Check):
    id = "dtype-mismatch"
    title = "float64 data reaching float32 model code"
    scopes = ("script",)

    def run(self, ctx: Context) -> list[Finding]:
        result = analysis(ctx)
        findings, born = [], set()
        # Definite chains first: where one float64 meets the model on every path, that is where the run dies.
        for meeting in sorted(result.meetings.values(), key=lambda m: bool(m.doubt)):
            origin = meeting.origin
            if origin.where in born:
                continue  # the first meeting is where the run dies; later ones never run
            born.add(origin.where)
            cast = f"`{meeting.expr} = {meeting.expr}.float()`" if meeting.expr.isidentifier() else (
                f"`({meeting.expr}).float()`" if meeting.expr else "`.float()`")
            hint = f"Cast to float32 where it is born ({origin.where}: {origin.fix}), or where it meets the model " \
                   f"({meeting.site}: {cast})."
            if "double()" in origin.what:
                hint = (f"`.double()` is not a fix, it is the cause: the model's weights are float32. Use `.float()` "
                        f"at {origin.where}, or cast at {meeting.site}: {cast}.")
            chain = (f"{origin.what} (born at {origin.where}); it reaches {meeting.op} at "
                     f"{meeting.site}{_via(meeting.stack)}")
            if meeting.doubt:
                findings.append(self.finding(
                    Status.WARN,
                    f"float64 may meet float32: {chain}. Assumed: {'; '.join(meeting.doubt)}. If that holds, this "
                    f"fails with 'expected mat1 and mat2 to have the same dtype' (double != float).",
                    where=meeting.site, hint=hint))
                continue
            findings.append(self.finding(
                Status.FAIL,
                f"float64 meets float32: {chain}. Every step is definite on the paths the doctor followed: this "
                f"fails with 'expected mat1 and mat2 to have the same dtype' (double != float).",
                where=meeting.site, hint=hint))
        return findings


class ScriptGradInference(Check):
    id = "grad-inference"
    title = "repeated inference with gradients enabled (memory growth)"
    scopes = ("script",)

    def run(self, ctx: Context) -> list[Finding]:
        result = analysis(ctx)
        findings = []
        trained = result.trained()
        for site, forward in result.forwards.items():
            if site in trained:
                continue
            repeat = f"in the loop at {forward.loop}" if forward.loop else "repeatedly"
            message = f"`{forward.label}(...)` at {site} runs {repeat}{_via(forward.stack)} with gradients enabled"
            assumed = [forward.guess] if forward.guess else []
            escape = result.escapes.get(site) if not forward.buffers else None
            if escape:
                message += f", and its output goes into code the doctor cannot see at {escape}."
                assumed.append(f"the call at {escape} never calls .backward() on it")
            else:
                message += ", and its output never reaches .backward()."
            if forward.eval_mode:
                message += " model.eval() alone does not turn gradients off."
            grows = bool(forward.buffers)
            for buffer_site, name in dict.fromkeys(forward.buffers):
                message += (f" The module is in train mode and its forward updates the buffer '{name}' from a "
                            f"grad-requiring tensor at {buffer_site}, so the buffer carries autograd history from "
                            f"call to call and memory grows with every call.")
            if not grows:
                message += (" Each call builds an autograd graph that is thrown away: memory does not grow from call "
                            "to call, but every call holds its activations for a backward that never comes (on a "
                            "large model, as much as a training step).")
            if assumed:
                message += f" Assumed: {'; '.join(assumed)}."
            # A FAIL is for memory that grows, on a definite chain; a graph built and dropped is waste, a WARN.
            status = Status.FAIL if grows and not assumed else Status.WARN
            findings.append(self.finding(
                status, message, where=site,
                hint="Wrap the call in `with torch.no_grad():` (or decorate its function with `@torch.no_grad()`) "
                     "and keep only `.detach().cpu()` of what it returns."))
        for site, kept in result.retentions.items():
            token = f"keep:{site}"
            if token in trained:
                continue  # the accumulated value reaches .backward(): a loss summed up, not a leak
            message = (f"`{kept.text}` at {site} keeps a tensor with its autograd history on every iteration"
                       f"{' (loop at ' + kept.loop + ')' if kept.loop else ''}{_via(kept.stack)}: the graphs pile up "
                       f"and memory grows.")
            status = Status.FAIL
            if not kept.grows:
                status = Status.WARN
                message = message.replace("the graphs pile up and memory grows.", "the graphs pile up until the loop "
                                          "ends; it runs a handful of known iterations inside one call, so this is "
                                          "bounded waste, not growth.")
            if token in result.escapes:
                status = Status.WARN
                message += (f" Assumed: the code at {result.escapes[token]}, which the doctor cannot see, does not "
                            f"call .backward() on what is kept.")
            findings.append(self.finding(
                status, message, where=site,
                hint="Keep a number or a detached tensor: `.item()` or `.detach()` (e.g. "
                     "`losses.append(loss.item())`, `total += loss.item()`)."))
        return findings


def _devices(value: str | None) -> int | None:
    if value is None:
        return None
    return len([part for part in value.split(",") if part.strip()])


def _effective_env(timeline: list[Event]) -> Event | None:
    """The CUDA_VISIBLE_DEVICES assignment that takes effect: one made before CUDA is touched."""
    for event in timeline:
        if event.kind in ("cuda", "config"):
            return None
        if event.kind == "env-set":
            return event
    return None


class ScriptMultiGpuBatch(Check):
    id = "multi-gpu-batch"
    title = "Trainer batch silently multiplied by the visible GPUs"
    scopes = ("script",)

    def run(self, ctx: Context) -> list[Finding]:
        result = analysis(ctx)
        configs = list({e.site: e for e in result.timeline if e.kind == "config"}.values())
        if not configs or result.launcher:
            return []  # one process per GPU (torchrun, accelerate, mp.spawn, deepspeed, Lightning): no DataParallel
        placements = [e for e in result.timeline if e.kind == "placement"]
        if any(e.value == "8/4-bit" for e in placements):
            return []  # the Trainer never wraps an 8/4-bit model in DataParallel
        maybe = next((e for e in placements if e.value == "maybe"), None)
        pinned = _effective_env(result.timeline)
        visible = _devices(pinned.value) if pinned is not None else ctx.gpus
        per_class = {e.detail: e for e in reversed(configs)}.values()  # the first of each config class
        if result.maybe_launcher is not None and (visible is None or visible > 1):
            return self._launch_dependent(per_class, result.maybe_launcher)
        findings = []
        for event in per_class:
            per_device, accumulation = event.value
            parser = " by an argument parser" if per_device is None else ""
            launch = f"{event.detail} built{parser} at {event.site}{_via(event.stack)}, script run with plain `python`"
            fix = (f"Launch with `torchrun --nproc_per_node N`, or set CUDA_VISIBLE_DEVICES first thing in "
                   f"{event.owner} (before the {event.detail} is built).")
            if visible is None:
                example = (f"with 2 GPUs, {per_device} becomes {2 * per_device}" if per_device is not None
                           else "with 2 GPUs, the batch given on the command line doubles")
                findings.append(self.finding(
                    Status.WARN,
                    f"{launch}: the Trainer uses DataParallel over every visible GPU, so train_batch_size = "
                    f"{per_device or 'per_device_train_batch_size'} x N GPUs ({example}). The number of GPUs is "
                    f"unknown here.",
                    where=event.site, hint=f"Pass --gpus N to check a plan. {fix}"))
            elif visible > 1 and maybe is not None:
                findings.append(self.finding(
                    Status.WARN,
                    f"{launch}, {visible} visible GPUs: the Trainer multiplies the batch by {visible} (DataParallel) "
                    f"unless the model is quantized or spread over the GPUs, and {maybe.detail} (at {maybe.site})",
                    where=event.site, hint=fix))
            elif visible > 1:
                if per_device is None:
                    figures = (f"train_batch_size = per_device_train_batch_size x {visible} per step (DataParallel), "
                               f"{visible} times the batch given on the command line")
                else:
                    figures = (f"train_batch_size = {per_device} x {visible} = {per_device * visible} per step "
                               f"(DataParallel), {per_device * visible * accumulation} per optimizer step instead of "
                               f"{per_device * accumulation}")
                findings.append(self.finding(
                    Status.FAIL, f"{launch}, {visible} visible GPUs: {figures}.", where=event.site, hint=fix))
        return findings

    def _launch_dependent(self, configs, launcher: tuple[str, str, str]) -> list[Finding]:
        """The script starts one process per GPU on one side of an ``if`` only (``if local_rank != -1:
        DistributedDataParallel(...)``): run that way the batch is right; run with plain ``python`` on
        several GPUs the Trainer uses DataParallel. Which one happens is the user's launch command."""
        site, what, branch = launcher
        return [
            self.finding(
                Status.WARN,
                f"{event.detail} built at {event.site}{_via(event.stack)}: one process per GPU only on one side of "
                f"the `if` at {branch} ({what} at {site}); launched with plain `python` on several GPUs, the "
                "Trainer uses DataParallel and multiplies the per-device batch by the number of GPUs.",
                where=event.site, hint="Launch with `torchrun --nproc_per_node N` (or the launcher the script "
                "documents), or make one GPU visible.")
            for event in configs]


class ScriptCudaVisibleDevicesLate(Check):
    id = "cuda-visible-devices-late"
    title = "CUDA_VISIBLE_DEVICES set after it can take effect"
    scopes = ("script",)

    def run(self, ctx: Context) -> list[Finding]:
        result = analysis(ctx)
        findings, seen = [], set()
        effective = _effective_env(result.timeline)
        lock = None
        for event in result.timeline:
            if event.kind in ("cuda", "config") and lock is None:
                lock = event
            if event.kind != "env-set" or lock is None or event.site in seen:
                continue
            seen.add(event.site)
            if effective is not None and effective.value is not None and effective.value == event.value:
                continue  # repeats a value that already took effect
            what = f"the {lock.detail} built" if lock.kind == "config" else f"{lock.detail}"
            owner = lock.owner or lock.site.rsplit(":", 1)[0]
            findings.append(self.finding(
                Status.FAIL,
                f"CUDA_VISIBLE_DEVICES is set at {event.site}{_via(event.stack)}, after {what} at {lock.site}"
                f"{_via(lock.stack)}: by then the number of GPUs is fixed, so the setting has no effect.",
                where=event.site,
                hint=f"Set os.environ['CUDA_VISIBLE_DEVICES'] before anything touches CUDA: first thing in "
                     f"{owner}, above line {lock.site.rsplit(':', 1)[1]} (after a bare `import torch` is fine), "
                     f"or export it in the shell."))
        return findings


CHECKS: list[Check] = [
    ScriptDtypeMismatch(),
    ScriptGradInference(),
    ScriptMultiGpuBatch(),
    ScriptCudaVisibleDevicesLate(),
]
