"""CUDA in the child: the order of CUDA initialisation and queries, and the CPU shim.

- Every call of ``torch.cuda.is_available``, ``_lazy_init``, ``device_count``, ... is recorded
  (once per place) with the user's line and the library frame that made it, and every write of
  ``CUDA_VISIBLE_DEVICES`` (an audit hook sees ``os.putenv``) with its line: their order is the
  ``cuda-visible-devices-late`` check.
- Without a GPU, ``.cuda()`` on tensors and modules returns them on the CPU, recorded as CUDA
  uses; the torch-function mode (``tensors``) rewrites ``device="cuda"`` and ``.to("cuda")``.
"""

from __future__ import annotations

import functools
import sys
import weakref

# What a query does on a GPU machine (torch 2.14): "init" initialises the driver (a later
# CUDA_VISIBLE_DEVICES is ignored); "count" reads the count through NVML without initialising,
# so a later setting changes what the script already read (a stale count).
QUERIES = {
    "is_available": "init", "_lazy_init": "init", "init": "init", "current_device": "init",
    "set_device": "init", "get_device_name": "init", "get_device_properties": "init",
    "get_device_capability": "init", "mem_get_info": "init", "synchronize": "init",
    "device_count": "count",
}


class Cuda:
    def __init__(self, emit, user, shim: bool, gpus: int | None = None):
        self.emit = emit
        self.user = user
        self.shim = shim
        self.gpus = gpus  # --gpus N: the user's own device_count() calls see N; libraries the truth
        self.seen: set = set()  # (call, where, via) recorded
        self.known: set = set()  # the same, unformatted (UserFiles.key)
        self.initialised = False  # a query that initialises CUDA (or a CUDA use) has happened
        self.visible: int | None = None  # GPUs named by a CUDA_VISIBLE_DEVICES set before that

    def simulated(self) -> int | None:
        """The simulated count as the script sees it: --gpus N, cut to what a CUDA_VISIBLE_DEVICES
        written before CUDA initialised leaves visible (a later one changes nothing on a GPU machine)."""
        if self.gpus is None or self.visible is None:
            return self.gpus
        return min(self.gpus, self.visible)

    def record(self, name: str, effect: str) -> None:
        """Once per place. A query a library makes at every step (``is_available`` in an
        optimizer step) finds its place (code objects and lines, ``UserFiles.key``) in ``known``
        and returns before a site is built."""
        if effect in ("init", "use"):
            self.initialised = True
        frame = sys._getframe(1)
        known = (name, *self.user.key(frame))
        if known in self.known:
            return
        self.known.add(known)
        site = self.user.site(frame)
        key = (name, site["where"], site["via"])
        if key in self.seen:
            return
        self.seen.add(key)
        self.emit("cuda", call=name, effect=effect, **site)

    def install(self) -> None:
        import torch

        for name, effect in QUERIES.items():
            real = getattr(torch.cuda, name, None)
            if real is not None:
                setattr(torch.cuda, name, self._wrap(real, name, effect))
        sys.addaudithook(self._audit)
        if self.shim:
            self._install_shim(torch)

    def _wrap(self, real, name: str, effect: str):
        cuda = self

        @functools.wraps(real)
        def call(*args, **kwargs):
            cuda.record(name, effect)
            if name == "device_count" and cuda.gpus is not None:
                if cuda.user.caller_line():
                    cuda.emit("gpu-count", gpus=cuda.simulated(), **cuda.user.site())
                    return cuda.simulated()
            return real(*args, **kwargs)

        return call

    def _audit(self, event: str, args) -> None:
        if event == "os.putenv" and args and args[0] in (b"CUDA_VISIBLE_DEVICES", "CUDA_VISIBLE_DEVICES"):
            if not self._written_by_user():
                return  # a library's own save / restore (accelerate's clear_environment in Trainer())
            value = args[1].decode() if isinstance(args[1], bytes) else str(args[1])
            if not self.initialised:
                self.visible = len([d for d in value.split(",") if d.strip()])
            self.emit("env-set", name="CUDA_VISIBLE_DEVICES", value=value, **self.user.site())

    def _written_by_user(self) -> bool:
        """Whether the code that wrote the variable (the caller of ``os.environ[...] =`` or of
        ``os.putenv``) is the user's."""
        import os

        frame = sys._getframe(2)  # above this method and the audit hook
        while frame is not None and frame.f_code.co_filename in (os.__file__, "<frozen os>"):
            frame = frame.f_back
        return frame is not None and self.user.owns(frame)

    def _install_shim(self, torch) -> None:
        cuda = self

        def tensor_cuda(t, *args, **kwargs):
            cuda.record(".cuda()", "use")
            return t

        def module_cuda(m, *args, **kwargs):
            cuda.record(".cuda()", "use")
            return m

        torch.Tensor.cuda = tensor_cuda
        torch.nn.Module.cuda = module_cuda


class _AfterImport:
    """A meta path finder that calls ``callback(module)`` once ``name`` has been executed."""

    def __init__(self, name: str, callback):
        self.name, self.callback = name, callback

    def find_spec(self, fullname, path=None, target=None):
        if fullname != self.name:
            return None
        import importlib.util

        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(fullname)
        if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return spec
        real_exec, callback = spec.loader.exec_module, self.callback

        def exec_module(module):
            real_exec(module)
            callback(module)

        spec.loader.exec_module = exec_module
        return spec


def simulate_trainer_gpus(cuda: Cuda) -> None:
    """--gpus N: ``TrainingArguments.n_gpu`` is N (plain python, as on an N-GPU machine: the
    Trainer multiplies its batch and wraps the model in DataParallel, a pass-through without
    CUDA), each ``TrainingArguments(...)`` is recorded with the user's line ("trainer-config"),
    and each ``Trainer.__init__`` that returns (an ``SFTTrainer`` reaches it through ``super()``)
    with the user's call line, the line that built its arguments and the examples per optimizer
    step it was given ("trainer"): what a run that never reaches a step can still compare."""
    built: dict[int, tuple] = {}  # id(args) -> (args, the user's site): which line built them
    accelerators, device_mapped = _launch_facts(cuda)

    def patch_args(module) -> None:
        args_class = getattr(module, "TrainingArguments", None)
        if args_class is None:
            return
        real_post_init = args_class.__post_init__

        def post_init(self, *args, **kwargs):
            real_post_init(self, *args, **kwargs)
            site = cuda.user.site()
            built[id(self)] = (self, site)
            cuda.emit("trainer-config", config=type(self).__name__,
                      per_device=getattr(self, "per_device_train_batch_size", None),
                      accumulation=getattr(self, "gradient_accumulation_steps", None), **site)

        args_class.__post_init__ = post_init
        real_n_gpu = args_class.n_gpu

        def n_gpu(self):
            real_n_gpu.fget(self)  # the device set-up it runs
            return cuda.simulated()

        args_class.n_gpu = property(n_gpu)

    def patch_trainer(module) -> None:
        trainer_class = getattr(module, "Trainer", None)
        if trainer_class is None:
            return
        real_init = trainer_class.__init__

        @functools.wraps(real_init)
        def init(self, *args, **kwargs):
            real_init(self, *args, **kwargs)
            try:
                record_trainer(self)
            except Exception as exc:  # noqa: BLE001 - the record must never change the script's run
                cuda.emit("instrument-error", instrument="trainer", error=f"{type(exc).__name__}: {exc}"[:300])

        trainer_class.__init__ = init

    def record_trainer(trainer) -> None:
        args = trainer.args
        per_device, accumulation = args.per_device_train_batch_size, args.gradient_accumulation_steps
        n_gpu = args.n_gpu
        config = built.get(id(args), (None, {}))
        config_site = config[1] if config[0] is args else {}
        cuda.emit("trainer", trainer=type(trainer).__name__, module=type(trainer).__module__,
                  config=type(args).__name__, config_where=config_site.get("where"),
                  config_code=config_site.get("code"), per_device=per_device, n_gpu=n_gpu,
                  accumulation=accumulation, examples=args.train_batch_size * accumulation,
                  accelerator=bool(accelerators), device_map=trainer.model in device_mapped,
                  **cuda.user.site())

    for name, patch in (("transformers.training_args", patch_args), ("transformers.trainer", patch_trainer)):
        _on_import(name, patch)


def _on_import(name: str, patch) -> None:
    """``patch(module)`` now if ``name`` is imported, else right after its import."""
    if name in sys.modules:
        patch(sys.modules[name])
    else:
        sys.meta_path.insert(0, _AfterImport(name, patch))


def _launch_facts(cuda: Cuda) -> tuple[list, weakref.WeakSet]:
    """What a CPU run cannot settle, for the Trainer record: the Accelerators made by the user's
    own code (a script meant for `accelerate launch`; the Trainer's own is made from transformers'
    frames), and the models loaded with a ``device_map`` (on a CPU it leaves no trace on them)."""
    accelerators: list[str] = []
    device_mapped: weakref.WeakSet = weakref.WeakSet()

    def patch_accelerator(module) -> None:
        accelerator_class = getattr(module, "Accelerator", None)
        if accelerator_class is None:
            return
        real_init = accelerator_class.__init__

        @functools.wraps(real_init)
        def init(self, *args, **kwargs):
            if cuda.user.caller_line():
                accelerators.append(type(self).__name__)
            real_init(self, *args, **kwargs)

        accelerator_class.__init__ = init

    def patch_loading(module) -> None:
        base = getattr(module, "PreTrainedModel", None)
        real = base.__dict__.get("from_pretrained") if base is not None else None
        if not isinstance(real, classmethod):
            return

        @functools.wraps(real.__func__)
        def from_pretrained(cls, *args, **kwargs):
            model = real.__func__(cls, *args, **kwargs)
            if kwargs.get("device_map") is not None:
                try:
                    device_mapped.add(model)
                except TypeError:  # a tuple (output_loading_info=True) or an object without weakrefs
                    pass
            return model

        base.from_pretrained = classmethod(from_pretrained)

    _on_import("accelerate.accelerator", patch_accelerator)
    _on_import("transformers.modeling_utils", patch_loading)
    return accelerators, device_mapped


def is_cuda(device) -> bool:
    """Whether a ``device`` argument names CUDA (a string, a torch.device or an int index)."""
    if isinstance(device, str):
        return device.startswith("cuda")
    return getattr(device, "type", None) == "cuda"
