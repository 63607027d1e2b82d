"""Environment checks: torch and CUDA, each GPU, real bf16, torchvision's operators, unsloth,
library versions against the supported ranges, free disk and memory against the job's needs.

Anything that may crash or hang the interpreter (CUDA initialisation, importing torchvision or
unsloth) runs in a subprocess with a timeout; versions are read with ``importlib.metadata``.
The probe subprocess starts once per invocation (``Environment.start``) and runs while the other
checks work.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

from ..errors import OhloraError
from .registry import Check, Context, Finding, Status

PROBE_TIMEOUT_S = 90
UNSLOTH_TIMEOUT_S = 180
GIB = 1024**3

# Runs in a fresh interpreter; prints one JSON object. Each part is guarded: a failure is data.
_PROBE = r"""
import json, sys
out = {"python": sys.version.split()[0]}
try:
    import torch
    out["torch"] = torch.__version__
    out["cuda_build"] = torch.version.cuda
    out["cuda_available"] = bool(torch.cuda.is_available())
    gpus = []
    if out["cuda_available"]:
        for i in range(torch.cuda.device_count()):
            props = torch.cuda.get_device_properties(i)
            free, total = torch.cuda.mem_get_info(i)
            gpus.append({"name": props.name, "total": total, "free": free,
                         "capability": list(torch.cuda.get_device_capability(i))})
    out["gpus"] = gpus
except Exception as exc:
    out["torch_error"] = f"{type(exc).__name__}: {exc}"
import importlib.util
if importlib.util.find_spec("torchvision") is None:
    out["torchvision"] = None
else:
    try:
        import importlib.metadata
        out["torchvision"] = importlib.metadata.version("torchvision")
    except Exception:
        out["torchvision"] = "(version unknown)"
    try:
        # A torchvision built for another torch fails here, on import (its operators are missing):
        # that is what breaks `import transformers`.
        import torchvision
        import torch
        torch.ops.torchvision.nms
        out["torchvision_ops"] = True
    except Exception as exc:
        out["torchvision_ops"] = False
        out["torchvision_error"] = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
print(json.dumps(out))
"""


@dataclass
class Environment:
    """What the probe subprocess saw (``error`` when it could not run)."""

    data: dict = field(default_factory=dict)
    error: str | None = None
    _proc: subprocess.Popen | None = None
    _unsloth_proc: subprocess.Popen | None = None
    _unsloth: tuple[bool, str] | None = None

    @classmethod
    def start(cls, *, unsloth: bool = False) -> Environment:
        """Start the probe; with ``unsloth``, the unsloth import probe too (both run in parallel)."""
        env = cls()
        try:
            env._proc = subprocess.Popen([sys.executable, "-c", _PROBE], stdout=subprocess.PIPE,
                                         stderr=subprocess.PIPE, text=True)
        except OSError as exc:
            env.error = f"could not start the probe: {exc}"
        if unsloth:
            env._unsloth_proc = _start_unsloth_probe()
        return env

    def close(self) -> None:
        """Stop whatever probe is still running (a check that was not reached)."""
        for proc in (self._proc, self._unsloth_proc):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.communicate()

    def unsloth(self) -> tuple[bool, str]:
        """Whether unsloth imports in a fresh process: (ok, its version or the error)."""
        if self._unsloth is None:
            proc, self._unsloth_proc = self._unsloth_proc or _start_unsloth_probe(), None
            self._unsloth = _finish_unsloth_probe(proc)
        return self._unsloth

    def wait(self) -> Environment:
        if self._proc is None:
            return self
        proc, self._proc = self._proc, None
        try:
            out, err = proc.communicate(timeout=PROBE_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
            self.error = f"the environment probe did not finish within {PROBE_TIMEOUT_S} s (a hung CUDA driver?)"
            return self
        try:
            self.data = json.loads(out.strip().splitlines()[-1])
        except (ValueError, IndexError):
            last = (err or "").strip().splitlines()[-1:] or [f"exit code {proc.returncode}"]
            self.error = f"the environment probe crashed: {last[0]}"
        return self

    @property
    def gpus(self) -> list[dict]:
        return self.wait().data.get("gpus", [])

    @property
    def gpu_count(self) -> int | None:
        self.wait()
        if self.error or "torch" not in self.data:
            return None
        return len(self.data.get("gpus", []))


class EnvCheck(Check):
    uses_env = True


def _env(ctx: Context) -> Environment:
    if ctx.env is None:
        ctx.env = Environment.start()
    return ctx.env.wait()


def planned_capability(ctx: Context) -> tuple[int, int] | None:
    """The compute capability the recipe will train on, as the environment probe saw it (the lowest
    of the visible cards); None for a CPU run. The probe's subprocess makes the CUDA queries, so a
    hung driver times out there instead of hanging the doctor."""
    if ctx.recipe.train.device == "cpu":
        return None
    gpus = _env(ctx).gpus
    return min(tuple(g["capability"]) for g in gpus) if gpus else None


def _gib(n: float) -> str:
    return f"{n / GIB:.1f} GiB"


class TorchCheck(EnvCheck):
    id = "torch"
    title = "torch and CUDA"
    scopes = ("env",)

    def run(self, ctx: Context) -> list[Finding]:
        env = _env(ctx)
        if env.error:
            return [self.finding(Status.ERROR, f"could not collect: {env.error}",
                                 hint="Run `python -c 'import torch; print(torch.cuda.is_available())'` to see why.")]
        data = env.data
        if "torch" not in data:
            return [self.finding(Status.FAIL, f"torch does not import: {data.get('torch_error')}",
                                 hint="Reinstall torch (pip install 'torch>=2.6,<2.15').")]
        build = f"CUDA {data['cuda_build']} build" if data.get("cuda_build") else "CPU-only build"
        seen = f"{len(data.get('gpus', []))} GPU(s) visible" if data.get("cuda_available") else "no CUDA GPU visible"
        return [self.finding(Status.PASS, f"torch {data['torch']} ({build}), {seen}")]


class GpuCheck(EnvCheck):
    id = "gpus"
    title = "GPUs: memory and compute capability"
    scopes = ("env",)

    def run(self, ctx: Context) -> list[Finding]:
        env = _env(ctx)
        if env.error or "torch" not in env.data:
            return [self.finding(Status.SKIP, "torch did not report (see the torch row)")]
        gpus = env.gpus
        if not gpus:
            return [self.finding(Status.SKIP, "no CUDA GPU visible: training runs on the CPU")]
        rows = []
        for i, gpu in enumerate(gpus):
            cap = ".".join(map(str, gpu["capability"]))
            rows.append(self.finding(
                Status.PASS, f"GPU {i}: {gpu['name']}, {_gib(gpu['total'])} ({_gib(gpu['free'])} free), "
                             f"compute capability {cap}", where=f"cuda:{i}"))
        return rows


class Bf16Check(EnvCheck):
    id = "bf16"
    title = "native bf16 (compute capability 8.0+, not emulation)"
    scopes = ("env",)

    def run(self, ctx: Context) -> list[Finding]:
        gpus = _env(ctx).gpus
        if not gpus:
            return [self.finding(Status.SKIP, "no CUDA GPU: bf16 does not apply (CPU training is fp32)")]
        old = [f"GPU {i} ({g['name']}, {'.'.join(map(str, g['capability']))})" for i, g in enumerate(gpus)
               if tuple(g["capability"]) < (8, 0)]
        if old:
            return [self.finding(
                Status.WARN, f"no native bf16 on {', '.join(old)}: torch may emulate it, slowly",
                hint="Use precision fp16 (or auto, which picks fp16 there).")]
        return [self.finding(Status.PASS, "native bf16 on every visible GPU")]


class TorchvisionCheck(EnvCheck):
    id = "torchvision"
    title = "torchvision operators load"
    scopes = ("env",)

    def run(self, ctx: Context) -> list[Finding]:
        data = _env(ctx).data
        if "torchvision" not in data:
            return [self.finding(Status.SKIP, "could not collect (see the torch row)")]
        if data["torchvision"] is None:
            return [self.finding(Status.SKIP, "torchvision is not installed (ohlora does not need it)")]
        if not data.get("torchvision_ops"):
            return [self.finding(
                Status.FAIL,
                f"torchvision {data['torchvision']} is installed but its operators do not load "
                f"({data.get('torchvision_error')}); this breaks `import transformers`",
                hint=f"Install the torchvision build made for torch {data.get('torch')}, or uninstall torchvision.")]
        return [self.finding(Status.PASS, f"torchvision {data['torchvision']}, operators load")]


def uses_unsloth(recipes: list, scripts: list) -> bool | None:
    """True when a target uses unsloth, False when none does, None for the bare environment check."""
    if not recipes and not scripts:
        return None
    if any(getattr(getattr(r, "model", None), "backend", None) == "unsloth" for r in recipes):
        return True
    for script in scripts:
        try:
            text = Path(script).read_text(encoding="utf-8", errors="replace")
        except OSError:
            continue
        if "unsloth" in text:
            return True
    return False


def unsloth_installed() -> str | None:
    try:
        return metadata.version("unsloth")
    except metadata.PackageNotFoundError:
        return None


def _start_unsloth_probe() -> subprocess.Popen:
    """Import unsloth in a fresh process (it patches libraries on import)."""
    code = "import unsloth, importlib.metadata as m; print(m.version('unsloth'))"
    return subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "UNSLOTH_DISABLE_STATISTICS": "1"})


def _finish_unsloth_probe(proc: subprocess.Popen, timeout: float = UNSLOTH_TIMEOUT_S) -> tuple[bool, str]:
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        return False, f"importing unsloth did not finish within {timeout:.0f} s"
    if proc.returncode == 0:
        return True, out.strip().splitlines()[-1] if out.strip() else "?"
    lines = [line for line in err.strip().splitlines() if line.strip()]
    return False, lines[-1] if lines else f"exit code {proc.returncode}"


class UnslothCheck(EnvCheck):
    id = "unsloth"
    title = "unsloth imports (probed in a subprocess)"
    scopes = ("env",)

    def run(self, ctx: Context) -> list[Finding]:
        needed = uses_unsloth(ctx.recipes, ctx.scripts)
        if needed is False:
            return [self.finding(Status.SKIP, "not used by these targets")]
        version = unsloth_installed()
        if version is None:
            if needed:
                return [self.finding(Status.FAIL, "model.backend is unsloth, but unsloth is not installed",
                                     where="model.backend", bad_input=True,
                                     hint="pip install 'ohlora-cli[unsloth]', or use --set model.backend=hf.")]
            return [self.finding(Status.SKIP, "unsloth is not installed (optional: pip install 'ohlora-cli[unsloth]')")]
        ok, detail = _env(ctx).unsloth()
        if not ok:
            return [self.finding(Status.FAIL if needed else Status.WARN,
                                 f"unsloth {version} is installed but does not import: {detail}",
                                 hint="Check its supported versions (torch < 2.15, transformers <= 5.17, "
                                      "trl <= 1.15), or use model.backend hf.")]
        findings = [self.finding(Status.PASS, f"unsloth {detail} imports")]
        old = [f"GPU {i} ({'.'.join(map(str, g['capability']))})" for i, g in enumerate(_env(ctx).gpus)
               if tuple(g["capability"]) < (7, 0)]
        if old:
            findings = [self.finding(
                Status.FAIL if needed else Status.WARN,
                f"unsloth's Triton kernels need compute capability 7.0+; {', '.join(old)} cannot train with it",
                hint="Use model.backend hf on this GPU.")]
        return findings


# Libraries whose API the tool relies on, checked against the ranges pyproject declares.
VERSIONED = ("torch", "transformers", "trl", "peft", "datasets", "accelerate")


def supported_ranges() -> dict[str, str]:
    """Requirement specifiers of the installed ohlora-cli for the libraries above."""
    from packaging.requirements import Requirement

    ranges = {}
    try:
        requires = metadata.requires("ohlora-cli") or []
    except metadata.PackageNotFoundError:
        return ranges
    for text in requires:
        req = Requirement(text)
        if req.marker is not None and "extra" in str(req.marker):
            continue
        if req.name.lower() in VERSIONED:
            ranges[req.name.lower()] = str(req.specifier)
    return ranges


class VersionsCheck(EnvCheck):
    id = "library-versions"
    title = "trl / transformers / peft ... within the supported ranges"
    scopes = ("env",)

    def run(self, ctx: Context) -> list[Finding]:
        from packaging.specifiers import SpecifierSet
        from packaging.version import InvalidVersion, Version

        ranges = supported_ranges()
        if not ranges:
            return [self.finding(Status.SKIP, "ohlora-cli's own metadata is not installed (run pip install -e .)")]
        findings, fine = [], []
        for name in VERSIONED:
            spec = ranges.get(name)
            if spec is None:
                continue
            try:
                installed = metadata.version(name)
            except metadata.PackageNotFoundError:
                findings.append(self.finding(Status.FAIL, f"{name} is not installed (supported: {spec})",
                                             hint=f"pip install '{name}{spec}'"))
                continue
            try:
                inside = Version(installed) in SpecifierSet(spec, prereleases=True)
            except InvalidVersion:
                inside = True
            if inside:
                fine.append(f"{name} {installed}")
            else:
                findings.append(self.finding(Status.FAIL, f"{name} {installed} is outside the supported range {spec}",
                                             hint=f"pip install '{name}{spec}'"))
        if fine:
            findings.insert(0, self.finding(Status.PASS, ", ".join(fine)))
        return findings


# -- environment against the recipe ------------------------------------------------------------


def _existing_parent(path: Path) -> Path:
    path = path.resolve()
    while not path.exists() and path.parent != path:
        path = path.parent
    return path


def estimate(recipe, ctx: Context) -> dict | None:
    """Rough sizes of the job: ``params``, ``trainable``, ``weight_bytes`` (model in memory),
    ``checkpoint_bytes`` (one checkpoint), ``checkpoints`` (how many are kept). None when unknown."""
    if "estimate" in ctx.cache:
        return ctx.cache["estimate"]
    result = None
    kind = getattr(recipe, "kind", None)
    if kind == "gan":
        result = _estimate_gan(recipe)
    elif kind == "llm":
        result = _estimate_llm(recipe)
    ctx.cache["estimate"] = result
    return result


def _estimate_gan(recipe) -> dict | None:
    try:
        import torch

        from ..gan.networks import build_networks
    except ImportError:
        return None
    with torch.device("meta"):
        G, D = build_networks(recipe, len(recipe.data.label_columns))
    g = sum(p.numel() for p in G.parameters()) + sum(b.numel() for b in G.buffers())
    d = sum(p.numel() for p in D.parameters()) + sum(b.numel() for b in D.buffers())
    params = 2 * g + d  # G, G_ema, D
    trainable = g + d  # upper bound: optimizer moments for every trainable weight
    ckpt = 4 * (params + 2 * trainable)
    return {"params": params, "trainable": trainable, "weight_bytes": 4 * (params + 3 * trainable),
            "checkpoint_bytes": ckpt, "checkpoints": max(recipe.train.keep_checkpoints, 1) + 1}


def llm_param_count(config: dict) -> int | None:
    """Parameters of a decoder-only transformer from its config.json (no weights read)."""
    h = config.get("hidden_size") or config.get("n_embd") or config.get("d_model")
    layers = config.get("num_hidden_layers") or config.get("n_layer")
    vocab = config.get("vocab_size")
    if not (h and layers and vocab):
        return None
    inter = config.get("intermediate_size") or 4 * h
    gated = config.get("model_type") in ("llama", "mistral", "gemma", "gemma2", "qwen2", "qwen3", "phi3")
    per_layer = 4 * h * h + (3 if gated else 2) * h * inter
    tied = config.get("tie_word_embeddings", False)
    return layers * per_layer + vocab * h * (1 if tied else 2)


def _estimate_llm(recipe) -> dict | None:
    config_path = Path(recipe.model.path) / "config.json"
    if not config_path.is_file():
        return None
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    params = llm_param_count(config)
    if params is None:
        return None
    h = config.get("hidden_size") or config.get("n_embd") or 0
    layers = config.get("num_hidden_layers") or config.get("n_layer") or 0
    lora = 2 * recipe.lora.r * h * 4 * layers  # about four adapted h x h projections per layer
    width = 4 if recipe.train.precision == "fp32" else 2
    if recipe.model.load_in_4bit:
        width = 0.5
    return {"params": params, "trainable": lora, "weight_bytes": int(params * width + 16 * lora),
            "checkpoint_bytes": 12 * lora, "checkpoints": recipe.train.save_total_limit + 1}


class DiskCheck(EnvCheck):
    id = "disk-space"
    title = "free disk in output_dir for the checkpoints"
    scopes = ("recipe",)

    def run(self, ctx: Context) -> list[Finding]:
        recipe = ctx.recipe
        sizes = estimate(recipe, ctx)
        folder = _existing_parent(Path(recipe.output_dir))
        free = shutil.disk_usage(folder).free
        if sizes is None:
            return [self.finding(Status.SKIP, f"{_gib(free)} free at {folder}; the checkpoint size is unknown "
                                              f"until the model is available", where="output_dir")]
        need = sizes["checkpoint_bytes"] * sizes["checkpoints"]
        message = (f"{_gib(free)} free at {folder}; about {sizes['checkpoints']} checkpoint(s) of "
                   f"{_gib(sizes['checkpoint_bytes'])} = {_gib(need)}")
        if need > free:
            return [self.finding(Status.FAIL, message, where="output_dir", bad_input=True,
                                 hint="Free some space, point output_dir at a larger disk, or keep fewer checkpoints.")]
        return [self.finding(Status.PASS, message, where="output_dir")]


class MemoryCheck(EnvCheck):
    id = "memory"
    title = "free RAM / GPU memory against the job's estimate"
    scopes = ("recipe",)

    def run(self, ctx: Context) -> list[Finding]:
        import psutil

        recipe = ctx.recipe
        sizes = estimate(recipe, ctx)
        if sizes is None:
            return [self.finding(Status.SKIP, "model size unknown until the model is available")]
        need = sizes["weight_bytes"]
        gpus = _env(ctx).gpus if recipe.train.device != "cpu" else []
        if gpus:
            free = min(g["free"] for g in gpus)
            where, what = "train.device", f"the GPU with the least free memory has {_gib(free)}"
        else:
            free = psutil.virtual_memory().available
            where, what = "train.device", f"{_gib(free)} of RAM available"
        message = f"weights, gradients and optimizer state need about {_gib(need)} (before activations); {what}"
        if need > free:
            return [self.finding(Status.WARN, message, where=where,
                                 hint="Lower the model size or batch, enable gradient checkpointing or 4-bit loading, "
                                      "or free memory.")]
        return [self.finding(Status.PASS, message, where=where)]


class PrecisionCheck(EnvCheck):
    id = "precision"
    title = "train.device / train.precision fit this machine"
    scopes = ("recipe",)

    def run(self, ctx: Context) -> list[Finding]:
        train = ctx.recipe.train
        gpus = _env(ctx).gpus
        planned = ctx.gpus if ctx.gpus is not None else len(gpus)
        if train.device == "cuda" and not gpus and not ctx.gpus:
            return [self.finding(Status.FAIL, "train.device is cuda, but no CUDA GPU is visible", where="train.device",
                                 bad_input=True, hint="Use --set train.device=auto (or cpu).")]
        on_gpu = train.device != "cpu" and planned > 0
        if train.precision in ("bf16", "fp16") and not on_gpu:
            return [self.finding(Status.FAIL, f"train.precision is {train.precision}, but this run is on the CPU",
                                 where="train.precision", bad_input=True,
                                 hint="Use --set train.precision=auto (fp32 on the CPU).")]
        if train.precision == "bf16" and gpus:
            old = [f"GPU {i} ({'.'.join(map(str, g['capability']))})" for i, g in enumerate(gpus)
                   if tuple(g["capability"]) < (8, 0)]
            if old:
                return [self.finding(Status.FAIL, f"train.precision is bf16, but {', '.join(old)} has no native bf16",
                                     where="train.precision", bad_input=True,
                                     hint="Use --set train.precision=fp16 or auto.")]
        chosen = train.precision if train.precision != "auto" else (
            "fp32 (CPU)" if not on_gpu else ("bf16" if gpus and all(tuple(g["capability"]) >= (8, 0) for g in gpus)
                                             else "bf16 or fp16 (by the GPU)"))
        return [self.finding(Status.PASS, f"device {train.device}, precision {chosen}", where="train.precision")]


class TrackersCheck(Check):
    id = "trackers"
    title = "the trackers train.report_to names are installed"
    scopes = ("recipe",)

    def run(self, ctx: Context) -> list[Finding]:
        from ..runtime.trackers import check_report_to

        report_to = list(ctx.recipe.train.report_to)
        try:
            check_report_to(report_to)
        except OhloraError as exc:
            return [self.finding(Status.FAIL, str(exc), where="train.report_to", bad_input=True, hint=exc.hint)]
        return [self.finding(Status.PASS, f"{', '.join(report_to) or 'no trackers'}: ready", where="train.report_to")]


CHECKS: list[Check] = [
    TorchCheck(), GpuCheck(), Bf16Check(), TorchvisionCheck(), UnslothCheck(), VersionsCheck(),
    PrecisionCheck(), TrackersCheck(), DiskCheck(), MemoryCheck(),
]
