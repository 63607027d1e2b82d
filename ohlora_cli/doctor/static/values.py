"""The abstract values the static analysis tracks through a script.

Only what the checks need: where a float64 value was born and how sure that is, which forward passes
a tensor's autograd graph may come from, model instances and their mode, datasets and loaders.

Two kinds of claim travel with a value, with different rules:

- its **dtype** is a *must* claim: ``T.doubt`` lists every assumption it rests on (one side of a
  branch, a guess from a name). A value with no doubt is float64 on every path the analysis
  followed; only such a value can make a FAIL.
- its **graph** is a *may* claim: ``T.grads`` over-approximates the forward passes whose graph it
  may carry, so that "this output never reaches ``.backward()``" is only said when no path could
  take it there. ``T.req`` is the definite part (it certainly carries a graph).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from ..registry import Assumption, Kind
from .project import ClassInfo, Module


@dataclass(frozen=True)
class Origin:
    """Where a float64 value was born, and the cast that fixes it there."""

    where: str  # path:line
    what: str  # e.g. "np.random.rand(...) is float64"
    fix: str  # e.g. "np.random.rand(...).astype(np.float32)"
    cause: str | None = None  # path:line of what made it float64 elsewhere (torch.set_default_dtype)


@dataclass(frozen=True)
class T:
    """A tensor, array, pandas object or number.

    kind: "tensor", "array" (numpy), "frame" (pandas), "pyfloat" (Python floats), "num" (a number
    literal or int), "?" (an unknown value that may carry a graph: the result of a call the doctor
    cannot see into). dtype: "f64", "f32", "f16", "int" or "?".
    """

    kind: str
    dtype: str = "?"
    origin: Origin | None = None
    doubt: tuple = ()  # the Assumptions the dtype claim rests on; () = definite
    req: bool = False  # certainly carries an autograd graph
    grads: frozenset = frozenset()  # outermost forward-call sites whose graph it may carry
    param: str | None = None  # a model weight: its attribute name
    buffer: bool = False
    src: frozenset = frozenset()  # forward sites it was detached from (a GAN's fake.detach())

    @property
    def f64(self) -> bool:
        return self.dtype == "f64"


@dataclass(frozen=True)
class Const:
    value: Any


NONE = Const(None)


@dataclass(frozen=True)
class Seq:
    """A tuple or list whose length is known."""

    items: tuple


@dataclass(frozen=True)
class Items:
    """An iterable of unknown length (a list built in a loop, map(), range() ...) of ``elem``."""

    elem: Any


@dataclass(frozen=True)
class DictV:
    """A dict: known keys, and ``rest`` for the values of keys the analysis cannot name."""

    items: tuple  # ((key, value), ...)
    rest: Any = None  # None: no other keys are known to be there

    def get(self, key):
        for k, v in self.items:
            if k == key and key is not None:
                return v
        if self.rest is not None:
            return self.rest
        return UNKNOWN

    def set(self, key, value) -> DictV:
        if key is None:
            return DictV(self.items, join(self.rest, value) if self.rest is not None else value)
        return DictV(tuple((k, v) for k, v in self.items if k != key) + ((key, value),), self.rest)

    def values(self) -> list:
        return [v for _, v in self.items] + ([self.rest] if self.rest is not None else [])

    def merge(self, other) -> DictV:
        """``{**self, **other}``: the other's keys win."""
        if not isinstance(other, DictV):
            return DictV(self.items, UNKNOWN)
        merged = self
        for k, v in other.items:
            merged = merged.set(k, v)
        if other.rest is not None:
            merged = DictV(merged.items, other.rest if merged.rest is None else join(merged.rest, other.rest))
        return merged


@dataclass(eq=False)
class Obj:
    """An instance of a local class (a model, a dataset, a callback ...): mutable attributes."""

    cls: ClassInfo
    attrs: dict = field(default_factory=dict)
    buffers: set = field(default_factory=set)
    training: bool = True
    f64: bool = False  # .double() was called on the model, or it was built under a float64 default

    def __hash__(self) -> int:
        return id(self)

    def copy(self) -> Obj:
        return Obj(self.cls, dict(self.attrs), set(self.buffers), self.training, self.f64)


@dataclass(frozen=True)
class Mod:
    """An ``nn.Module`` instance.

    obj: the local instance (None for a library module); builtin: the torch.nn class name;
    parametric: has float weights an input meets; loss: a loss module; guess: why the analysis
    takes this value for a model when it does not know it (a name), None when it knows.
    """

    obj: Obj | None = None
    builtin: str | None = None
    parametric: bool = True
    loss: bool = False
    f64: bool = False
    label: str = "model"
    guess: Assumption | None = None
    parts: tuple = ()  # the layers of an nn.Sequential / nn.ModuleList, in order
    weight: Any = None  # a loss module's class weights (``nn.CrossEntropyLoss(weight=...)``)

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
    """A local function, method (``self_value`` bound) or lambda, with the locals it closes over."""

    module: Module
    node: Any
    self_value: Any = None
    closure: Any = field(default=None, compare=False, hash=False)


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
    """A library object known by its qualified name (``torch.float64``, an optimizer ``...AdamW()``)."""

    qualname: str


@dataclass(frozen=True)
class Unknown:
    pass


UNKNOWN = Unknown()


def _union(a: tuple, b: tuple) -> tuple:
    return tuple(dict.fromkeys(a + b))


def doubted(value, reason: Assumption | None):
    """``value`` with ``reason`` added to the doubt of every dtype claim inside it."""
    if not reason:
        return value
    if isinstance(value, T):
        return replace(value, doubt=_union(value.doubt, (reason,))) if value.f64 else value
    if isinstance(value, Seq):
        return Seq(tuple(doubted(v, reason) for v in value.items))
    if isinstance(value, Items):
        return Items(doubted(value.elem, reason))
    if isinstance(value, DictV):
        rest = doubted(value.rest, reason) if value.rest is not None else None
        return DictV(tuple((k, doubted(v, reason)) for k, v in value.items), rest)
    return value


PATH = Assumption(Kind.PATH)


def join(a, b, why: Assumption | None = None):
    """What a variable holds after two paths meet (branches, returns). A float64 claim that holds on
    one path only keeps ``why`` as its doubt; ``None`` on the other path does not weaken it (a None
    never meets a weight)."""
    if a is None:
        return b
    if b is None:
        return a
    if a == b:
        return a
    if isinstance(a, Const) and isinstance(b, Const) and a != NONE and b != NONE:
        return UNKNOWN  # True on one path, False on the other: not known
    if isinstance(a, Unknown) and _known_loss(b) or isinstance(b, Unknown) and _known_loss(a):
        # a loss module on one path, something unknown on the other (a registry that builds the loss
        # a config names): which loss runs is a guess, said as such
        known = b if isinstance(a, Unknown) else a
        return replace(known, guess=why or PATH)
    if isinstance(a, Unknown) or a == NONE:
        return b if isinstance(a, Unknown) or not isinstance(b, Unknown) else a
    if isinstance(b, Unknown) or b == NONE:
        return a
    if isinstance(a, T) and isinstance(b, T):
        f64 = a if a.f64 else b if b.f64 else None
        if a.dtype == b.dtype:
            dtype, doubt = a.dtype, _union(a.doubt, b.doubt)
        elif f64 is not None:
            dtype, doubt = "f64", _union(f64.doubt, (why or PATH,))
        else:
            dtype, doubt = "?", ()
        kind = a.kind if a.kind == b.kind else ("tensor" if "tensor" in (a.kind, b.kind) else a.kind)
        return T(kind, dtype, f64.origin if f64 else a.origin, doubt, a.req and b.req, a.grads | b.grads,
                 src=a.src | b.src)
    if isinstance(a, Seq) and isinstance(b, Seq) and len(a.items) == len(b.items):
        return Seq(tuple(join(x, y, why) for x, y in zip(a.items, b.items, strict=True)))
    if isinstance(a, (Seq, Items)) and isinstance(b, (Seq, Items)):
        return Items(join(element(a), element(b), why))
    if isinstance(a, DictV) and isinstance(b, DictV):
        keys = dict.fromkeys([k for k, _ in a.items] + [k for k, _ in b.items])
        rest = join(a.rest, b.rest, why)
        return DictV(tuple((k, join(a.get(k), b.get(k), why)) for k in keys), rest)
    if isinstance(a, Mod) and isinstance(b, Mod):
        return a
    # Different shapes on two paths: keep the one that can carry a finding, with the doubt said.
    return doubted(a, why or PATH)


def join_all(values, why: Assumption | None = None):
    result = None  # no path yet (join(None, v) is v): an unknown path is one that returned UNKNOWN
    for value in values:
        result = join(result, value, why)
    return UNKNOWN if result is None else result


def _known_loss(value) -> bool:
    return isinstance(value, Mod) and value.loss and value.guess is None


def element(value):
    """One element of an iterable value."""
    if isinstance(value, Seq):
        return join_all(value.items, Assumption(Kind.ELEMENT))
    if isinstance(value, Items):
        return value.elem
    return UNKNOWN


def scalar(value):
    """The innermost element of nested lists (what np.array / torch.tensor see)."""
    while isinstance(value, (Seq, Items)):
        value = element(value)
    return value


def drop_graph(value):
    if isinstance(value, T) and (value.req or value.grads):
        return replace(value, req=False, grads=frozenset(), src=value.src | value.grads)
    if isinstance(value, Seq):
        return Seq(tuple(drop_graph(v) for v in value.items))
    if isinstance(value, Items):
        return Items(drop_graph(value.elem))
    if isinstance(value, DictV):
        rest = drop_graph(value.rest) if value.rest is not None else None
        return DictV(tuple((k, drop_graph(v)) for k, v in value.items), rest)
    return value


def _parts(value) -> list:
    if isinstance(value, Seq):
        return list(value.items)
    if isinstance(value, Items):
        return [value.elem]
    if isinstance(value, DictV):
        return value.values()
    return []


def sources_of(value) -> frozenset:
    """Every forward site a value came from, detached or not."""
    if isinstance(value, T):
        return value.grads | value.src
    return frozenset().union(*(sources_of(p) for p in _parts(value)))


def graph_of(value) -> tuple[bool, frozenset]:
    """(certainly carries a graph, forward sites it may carry), looking inside containers."""
    if isinstance(value, T):
        return value.req, value.grads
    req, grads = False, frozenset()
    for part in _parts(value):
        r, g = graph_of(part)
        req, grads = req or r, grads | g
    return req, grads


def opaque(values) -> Any:
    """The result of a call the analysis cannot see into: no dtype, but it may carry the graphs of
    its arguments (so an output passed through it can still reach ``.backward()``)."""
    grads = frozenset()
    for value in values:
        grads |= graph_of(value)[1]
    return T("?", grads=grads) if grads else UNKNOWN
