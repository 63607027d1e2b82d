"""The child's torch-function mode: float64 births and meetings, user-line graph tags, the
CUDA-to-CPU rewrite.

Every Python-level torch call passes here (functions, Tensor methods, factories; not
``torch.from_numpy``, which is patched). Kept cheap: a float64 check of the arguments, one
frame look-up, and work only when something is float64 or built from the user's line.
"""

from __future__ import annotations

import sys

import torch
from torch.overrides import TorchFunctionMode

from .devices import is_cuda
from .frames import past_dispatch

F64 = torch.float64
# Calls that read or convert float64 without computing with float32 (no meeting to report).
_QUIET = {"to", "type", "double", "float", "half", "copy_", "__setitem__", "__getitem__", "item", "tolist",
          "numpy", "size", "dim", "detach", "clone", "cpu", "__repr__", "__format__", "eq", "ne", "lt", "le",
          "gt", "ge", "__eq__", "__ne__", "__lt__", "__le__", "__gt__", "__ge__", "isnan", "isfinite", "equal",
          "allclose", "isclose", "shape", "dtype", "device", "__len__", "__iter__", "numel", "cat", "stack",
          "where", "masked_fill", "fill_", "zero_", "__get__", "contiguous", "view", "reshape"}


_OVERRIDES = torch.overrides.__file__
# Python's augmented assignments on a tensor (``buf += x``): in place, like the ``*_`` methods.
_AUGMENTED = {"__iadd__", "__isub__", "__imul__", "__itruediv__", "__ifloordiv__", "__imod__", "__ipow__",
              "__imatmul__", "__iand__", "__ior__", "__ixor__", "__ilshift__", "__irshift__"}


def _name(func) -> str:
    return getattr(func, "__name__", None) or str(func)


def _describe(value) -> str:
    """What a float64 tensor was made from, in words."""
    kind = type(value)
    if kind.__module__ == "numpy":
        dtype = getattr(value, "dtype", None)
        return f"numpy {dtype} array" if kind.__name__ == "ndarray" else f"numpy {dtype}"
    if isinstance(value, (list, tuple)) and value:
        return f"a {kind.__name__} of {_describe(value[0])}"
    if isinstance(value, float):
        return "Python floats"
    if isinstance(value, torch.Tensor):
        return f"a {str(value.dtype).replace('torch.', '')} tensor"
    return kind.__name__


def _dataset(frame, user) -> str | None:
    """Inside a DataLoader fetch: the Dataset class and its ``__getitem__`` (file:line)."""
    while frame is not None:
        if frame.f_code.co_name == "fetch" and "dataloader" not in frame.f_code.co_filename:
            dataset = getattr(frame.f_locals.get("self"), "dataset", None)
            if dataset is not None:
                getitem = getattr(type(dataset), "__getitem__", None)
                code = getattr(getitem, "__code__", None)
                where = f" ({user.place(code.co_filename, code.co_firstlineno)})" if code else ""
                return f"{type(dataset).__name__}.__getitem__{where}"
        frame = frame.f_back
    return None


def _float32_peer(args):
    """A floating, non-float64 tensor argument with more than one element (what float64 meets)."""
    for a in args:
        if isinstance(a, torch.Tensor) and a.dtype is not F64 and a.is_floating_point() and a.numel() > 1:
            return a
    return None


def _keyword_float64(kwargs) -> tuple[str | None, torch.Tensor | None]:
    """The first float64 tensor passed by keyword (``weight=``, ``pos_weight=``) and its keyword;
    ``out=`` is where a result goes, not an input."""
    for key, value in kwargs.items():
        if key != "out" and isinstance(value, torch.Tensor) and value.dtype is F64:
            return key, value
    return None, None


def _in_place(func) -> bool:
    name = _name(func)
    return (name.endswith("_") and not name.endswith("__")) or name in _AUGMENTED


def _param_name(tensor, frame) -> str | None:
    """The qualified name of ``tensor`` in the outermost module on the stack that owns it."""
    found = None
    while frame is not None:
        owner = frame.f_locals.get("self")
        if isinstance(owner, torch.nn.Module):
            for name, param in owner.named_parameters():
                if param is tensor:
                    found = f"{type(owner).__name__}.{name}"
                    break
        frame = frame.f_back
    return found


class Observer(TorchFunctionMode):
    def __init__(self, emit, user, graphs, cuda):
        super().__init__()
        self.emit = emit
        self.user = user
        self.graphs = graphs
        self.cuda = cuda
        self.births: list[dict] = []  # index = the tag stored on a tensor as ``_ohlora_born``
        self.birth_ids: dict = {}
        self.reported: set = set()
        self.paused = False

    # -- births -------------------------------------------------------------------------------

    def born(self, tensor, how: str, source=None, depth: int = 2) -> None:
        frame = sys._getframe(depth)
        site = self.user.site(frame)
        what = _describe(source) if source is not None else None
        key = (site["where"], site["via"], how, what)
        tag = self.birth_ids.get(key)
        if tag is None:
            tag = self.birth_ids[key] = len(self.births)
            record = dict(site, how=how, source=what, dataset=_dataset(frame, self.user) if site["via"] else None)
            self.births.append(record)
            self.emit("born", id=tag, **record)
        try:
            tensor._ohlora_born = tag
        except (AttributeError, RuntimeError):
            pass

    # -- the mode -----------------------------------------------------------------------------

    def skip_optimizer_steps(self) -> None:
        """The optimizer's own update ops (a hundred per step for Adam) are not the user's
        computation: the mode passes them through untouched."""
        from torch.optim.optimizer import (
            register_optimizer_step_post_hook,
            register_optimizer_step_pre_hook,
        )

        def pause(*_):
            self.paused = True

        def resume(*_):
            self.paused = False

        register_optimizer_step_pre_hook(pause)
        register_optimizer_step_post_hook(resume)

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if self.paused:
            return func(*args, **kwargs)
        if self.cuda.shim:
            args, kwargs = self._cpu(func, args, kwargs)
        f64 = other = None
        for a in args:  # the common case, no float64: one dtype test per argument
            if isinstance(a, torch.Tensor):
                if a.dtype is F64:
                    f64 = a
                    break
            elif isinstance(a, (list, tuple)) and a and isinstance(a[0], torch.Tensor) and a[0].dtype is F64:
                f64 = a[0]
                break
        keyword, f64 = _keyword_float64(kwargs) if f64 is None and kwargs else (None, f64)
        if f64 is not None:
            other = _float32_peer(args)
        caller = sys._getframe(1)
        if caller.f_code.co_filename == _OVERRIDES:  # F.mse_loss, Tensor.__rsub__: dispatched in torch
            caller = past_dispatch(caller)
        graphs = self.graphs
        user_op = graphs.depth == 0 and caller.f_code.co_filename in self.user and torch.is_grad_enabled()
        previous = graphs.site
        if user_op:
            graphs.site = (caller.f_code.co_filename, caller.f_lineno)
        try:
            out = func(*args, **kwargs)
        except RuntimeError as exc:
            if f64 is not None and other is not None:
                self._meets(func, f64, other, error=f"{type(exc).__name__}: {exc}", keyword=keyword)
            raise
        finally:
            graphs.site = previous
        if user_op and isinstance(out, torch.Tensor) and out.grad_fn is not None:
            graphs.tag(out.grad_fn, (caller.f_code.co_filename, caller.f_lineno))
        elif graphs.depth and args and out is args[0] and caller.f_code.co_filename in self.user:
            self._tag_in_place(func, out, caller)
        if isinstance(out, torch.Tensor) and out.dtype is F64:
            self._float64(func, args, out, f64, other, keyword)
        return out

    def _tag_in_place(self, func, out, caller) -> None:
        """An in-place op on a user line inside a module's forward (GenForce's
        ``self.w_avg.copy_(...)``) with autograd on: the tensor it changed (a buffer, often) now
        carries a graph; the user's line is its site."""
        if isinstance(out, torch.Tensor) and out.grad_fn is not None and _in_place(func) \
                and torch.is_grad_enabled():
            self.graphs.tag(out.grad_fn, (caller.f_code.co_filename, caller.f_lineno))

    def _float64(self, func, args, out, f64, other, keyword=None) -> None:
        """``out`` is float64: a birth (no float64 input), else the tag passes on; float32
        met on the way is a silent promotion."""
        if f64 is None:
            if _name(func) not in ("__get__", "dtype"):
                self.born(out, f"{_name(func)}", args[0] if args else None, depth=3)
            return
        tag = getattr(f64, "_ohlora_born", None)
        if tag is not None and getattr(out, "_ohlora_born", None) is None:
            try:
                out._ohlora_born = tag
            except (AttributeError, RuntimeError):
                pass
        if other is not None and _name(func) not in _QUIET:
            self._meets(func, f64, other, error=None, depth=3, keyword=keyword)

    def _meets(self, func, f64, other, *, error: str | None, depth: int = 2, keyword: str | None = None) -> None:
        frame = sys._getframe(depth)
        site = self.user.site(frame)
        key = (site["where"], _name(func), error is None)
        if key in self.reported:
            return
        self.reported.add(key)
        tag = getattr(f64, "_ohlora_born", None)
        self.emit("meets", op=_name(func), born=tag, error=error,
                  other=_param_name(other, frame) or f"a {str(other.dtype).replace('torch.', '')} tensor",
                  other_is_param=isinstance(other, torch.nn.Parameter), keyword=keyword, **site)

    def _cpu(self, func, args, kwargs):
        """Device arguments that name CUDA become the CPU (recorded as CUDA uses)."""
        if "device" in kwargs and is_cuda(kwargs["device"]):
            kwargs = dict(kwargs, device="cpu")
            self.cuda.record(f"device=cuda ({_name(func)})", "use")
        if func is torch.Tensor.to and len(args) > 1 and is_cuda(args[1]):
            args = (args[0], "cpu", *args[2:])
            self.cuda.record(".to(cuda)", "use")
        return args, kwargs


def patch_from_numpy(observer: Observer) -> None:
    """``torch.from_numpy`` does not pass through torch-function modes."""
    real = torch.from_numpy

    def from_numpy(array):
        out = real(array)
        if out.dtype is F64:
            observer.born(out, "from_numpy", array)
        return out

    torch.from_numpy = from_numpy
