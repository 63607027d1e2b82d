"""The abstract values the static analysis tracks through a script.

Only what the checks need: where a float64 value was born, whether a tensor carries an autograd
graph (and from which forward calls), model instances and their mode, datasets and loaders.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from .project import ClassInfo, Module


@dataclass(frozen=True)
class Origin:
    """Where a float64 value was born, and the cast that fixes it there."""

    where: str  # path:line
    what: str  # e.g. "np.random.rand(...) is float64"
    fix: str  # e.g. "np.random.rand(...).astype(np.float32)"


@dataclass(frozen=True)
class T:
    """A tensor, array, pandas object or number.

    kind: "tensor", "array" (numpy), "frame" (pandas), "pyfloat" (Python floats), "num" (a literal)
    dtype: "f64", "f32", "int" or "?".
    """

    kind: str
    dtype: str = "?"
    origin: Origin | None = None
    req: bool = False  # carries an autograd graph
    grads: frozenset = frozenset()  # outermost forward-call sites whose graph it carries
    param: str | None = None  # a model weight: its attribute name
    buffer: bool = False
    src: frozenset = frozenset()  # forward sites it was detached from (a GAN's fake.detach())

    @property
    def f64(self) -> bool:
        return self.dtype == "f64"


@dataclass(frozen=True)
class Const:
    value: Any


@dataclass(frozen=True)
class Seq:
    items: tuple


@dataclass(frozen=True)
class DictV:
    items: tuple  # ((key, value), ...)

    def get(self, key):
        for k, v in self.items:
            if k == key:
                return v
        return UNKNOWN


@dataclass(eq=False)
class Obj:
    """An instance of a local class (a model, a dataset, a callback ...): mutable attributes."""

    cls: ClassInfo
    attrs: dict = field(default_factory=dict)
    buffers: set = field(default_factory=set)
    training: bool = True
    f64: bool = False  # .double() was called on the model

    def __hash__(self) -> int:
        return id(self)


@dataclass(frozen=True)
class Mod:
    """An ``nn.Module`` instance.

    obj: the local instance (None for a library module); builtin: the torch.nn class name;
    parametric: has float weights an input meets; loss: a loss module.
    """

    obj: Obj | None = None
    builtin: str | None = None
    parametric: bool = True
    loss: bool = False
    f64: bool = False
    label: str = "model"

    @property
    def is_f64(self) -> bool:
        return self.f64 or (self.obj is not None and self.obj.f64)


@dataclass(frozen=True)
class Inst:
    obj: Obj


@dataclass(frozen=True)
class ClassRef:
    info: ClassInfo


@dataclass(frozen=True)
class FuncRef:
    module: Module
    node: Any
    self_value: Any = None


@dataclass(frozen=True)
class ModRef:
    module: Module


@dataclass(frozen=True)
class Dataset:
    """A dataset whose items are ``item`` (already a per-sample value)."""

    item: Any


@dataclass(frozen=True)
class Loader:
    batch: Any  # the collated batch


@dataclass(frozen=True)
class Lib:
    """A library object known by its qualified name (``torch.float64``, a numpy Generator ...)."""

    qualname: str


@dataclass(frozen=True)
class Enum:
    inner: Any  # enumerate(inner)


@dataclass(frozen=True)
class Zip:
    parts: tuple


@dataclass(frozen=True)
class Unknown:
    pass


UNKNOWN = Unknown()
F32 = T("tensor", "f32")


def drop_graph(value):
    if isinstance(value, T) and (value.req or value.grads):
        return replace(value, req=False, grads=frozenset(), src=value.src | value.grads)
    return value


def sources_of(value) -> frozenset:
    """Every forward site a value came from, detached or not."""
    if isinstance(value, T):
        return value.grads | value.src
    if isinstance(value, (Seq, DictV)):
        items = value.items if isinstance(value, Seq) else [v for _, v in value.items]
        return frozenset().union(*(sources_of(i) for i in items)) if items else frozenset()
    return frozenset()


def graph_of(value) -> tuple[bool, frozenset]:
    """(carries a graph, forward sites) of a value, looking inside tuples and dicts."""
    if isinstance(value, T):
        return value.req, value.grads
    if isinstance(value, (Seq, DictV)):
        items = value.items if isinstance(value, Seq) else [v for _, v in value.items]
        req, grads = False, frozenset()
        for item in items:
            r, g = graph_of(item)
            req, grads = req or r, grads | g
        return req, grads
    return False, frozenset()
