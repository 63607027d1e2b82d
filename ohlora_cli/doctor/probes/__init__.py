"""Recipe checks: the batch derivation, and the per-kind dry-run probes.

The probes specific to a kind live in ``probes/gan.py`` and ``probes/llm.py``, each exposing
``data(recipe, ctx)``, ``dtype_mismatch(recipe, ctx)`` and ``grad_inference(recipe, ctx)`` that
return findings. They are imported only when a recipe of that kind is checked; a probe that is
missing becomes a SKIP row, one that crashes an ERROR row (never an abort), and one that raises
our own bad-input error (a DataError naming a CSV row, say) a FAIL row with its message.
"""

from __future__ import annotations

import importlib
import os
import traceback

from ...errors import BadInputError, OhloraError
from ..registry import Check, Context, Finding, Status


def _launch(ctx: Context) -> tuple[str, int]:
    """(launcher, data-parallel processes) the run will have."""
    from ...runtime import dist

    if dist.launcher() == "torchrun":
        return "torchrun", dist.dist_env().world_size
    if ctx.gpus is not None and ctx.gpus > 1:
        return f"--nproc {ctx.gpus} (torchrun)", ctx.gpus
    return "python", 1


class MultiGpuBatch(Check):
    id = "multi-gpu-batch"
    title = "effective batch = per-device x replicas x accumulation == train.batch_size"
    scopes = ("recipe",)
    uses_env = True  # counts the visible GPUs

    def run(self, ctx: Context) -> list[Finding]:
        from ...runtime import dist

        recipe = ctx.recipe
        train = recipe.train
        cap = train.max_device_batch
        launcher, world = _launch(ctx)
        try:
            per_device, accumulation = dist.split_batch(train.batch_size, world, max_per_device=cap)
        except BadInputError as exc:
            return [self.finding(Status.FAIL, str(exc), where="train.batch_size", hint=exc.hint, bad_input=True)]
        effective = per_device * world * accumulation
        visible = ctx.visible_gpus()
        note = ""
        if launcher == "python" and visible and visible > 1:
            note = (f"; {visible} GPUs are visible to one plain process: ohlora trains on one of them and never "
                    f"uses DataParallel (use --nproc {visible} for DDP)")
        message = (f"{per_device} per device x {world} process(es) [{launcher}] x {accumulation} accumulation "
                   f"= {effective}{note}")
        if effective != train.batch_size:
            return [self.finding(Status.FAIL, f"{message}, but train.batch_size is {train.batch_size}",
                                 where="train.batch_size", bad_input=True,
                                 hint="Make train.batch_size divisible by the processes x per-device cap.")]
        return [self.finding(Status.PASS, message, where="train.batch_size")]


class KindProbe(Check):
    """Calls ``probes/<kind>.py:<function>(recipe, ctx)``; missing -> SKIP, crash -> ERROR."""

    scopes = ("recipe",)
    function = ""

    def run(self, ctx: Context) -> list[Finding]:
        kind = getattr(ctx.recipe, "kind", "?")
        try:
            module = importlib.import_module(f"{__name__}.{kind}")
            probe = getattr(module, self.function)
        except (ImportError, AttributeError) as exc:
            return [self.finding(Status.SKIP, f"no {self.function} probe for kind '{kind}' in this build ({exc})")]
        try:
            findings = list(probe(ctx.recipe, ctx))
        except OhloraError as exc:
            # One problem, one finding: a later probe that stops on the error an earlier one
            # reported (a bad CSV row stops recipe-data and dtype-mismatch alike) is a SKIP.
            reported = ctx.cache.setdefault("probes:reported", {})
            earlier = reported.get(str(exc))
            if earlier is not None:
                return [self.finding(Status.SKIP, f"not run: stopped by the problem {earlier} reports above")]
            reported[str(exc)] = self.id
            return [self.finding(Status.FAIL, str(exc), hint=exc.hint, bad_input=isinstance(exc, BadInputError))]
        except Exception as exc:  # a crash in the probe is a row, never an abort
            if os.environ.get("OHLORA_DEBUG") == "1":
                traceback.print_exc()
            return [self.finding(Status.ERROR, f"the {kind} {self.function} probe crashed: {type(exc).__name__}: {exc}",
                                 hint="This is a bug in ohlora's probe; rerun with OHLORA_DEBUG=1 for the traceback.")]
        for finding in findings:
            if not isinstance(finding, Finding):
                return [self.finding(Status.ERROR, f"the {kind} {self.function} probe returned {finding!r}",
                                     hint="This is a bug in ohlora's probe.")]
        return findings


class RecipeData(KindProbe):
    id = "recipe-data"
    title = "recipe data: files, columns, labels, images, tokenizer"
    function = "data"


class RecipeDtypeMismatch(KindProbe):
    id = "dtype-mismatch"
    title = "float64 data reaching float32 model code"
    function = "dtype_mismatch"
    uses_env = True  # the LLM probe runs in the precision planned for the card the environment probe saw


class RecipeGradInference(KindProbe):
    id = "grad-inference"
    title = "repeated inference with gradients enabled (memory growth)"
    function = "grad_inference"


CHECKS: list[Check] = [MultiGpuBatch(), RecipeData(), RecipeDtypeMismatch(), RecipeGradInference()]
