"""A small abstract interpreter over a script and its local modules (nothing is executed).

It walks the entry script top to bottom the way Python would run it: a local ``import`` runs that
module's top level at that point, calls to local functions and methods are followed (with the
abstract values of their arguments), loop bodies run twice, both sides of an ``if`` run and their
variables are joined where the paths meet (a ``return``, ``raise``, ``break`` or ``continue`` ends a
path; ``x is None`` and ``isinstance`` tests narrow ``x`` on each side). Library calls follow the
table in ``library.py``. It knows Python, torch's grad modes and the values in ``values.py``; what
the checks need is recorded on the way by the check families' own modules, each into its facts:
``self.dtype`` (dtype.py: float64 meeting float32 model code), ``self.grad`` (grad.py: repeated
forwards with autograd on, what reaches ``.backward()``, graphs kept across iterations) and
``self.launch`` (launch.py: the timeline of CUDA_VISIBLE_DEVICES, CUDA use, Trainer configs and
launchers). Library rules call those modules too.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass, field, replace

from ..registry import Assumption, Kind
from . import dtype as dtype_facts
from . import grad as grad_facts
from . import launch as launch_facts
from . import library
from .project import ClassInfo, Module, Project, display, where
from .values import (
    NONE,
    UNKNOWN,
    ClassRef,
    Const,
    Dataset,
    DictV,
    FuncRef,
    Inst,
    Items,
    Lib,
    Loader,
    Mod,
    ModRef,
    Obj,
    Seq,
    T,
    Unknown,
    drop_graph,
    element,
    graph_of,
    join,
    join_all,
    opaque,
    scalar,
    sources_of,
)

MAX_DEPTH = 14
MAX_FEW = 64  # iterations of a loop over things known in advance (labels, layers, heads)

# Names people give models. Only ever a guess: a finding that rests on one is at most a WARN.
MODEL_NAMES = {
    "model", "net", "network", "g", "d", "g_ema", "generator", "discriminator", "gen", "disc", "netg",
    "netd", "encoder", "decoder", "scorer", "cnn", "vae", "unet", "classifier", "regressor", "critic",
}
GRAPH_DROPPING = {"detach", "item", "tolist", "numpy", "detach_", "__float__"}
INPLACE = {"copy_", "lerp_", "mul_", "add_", "sub_", "div_", "fill_", "zero_", "clamp_", "normal_", "uniform_"}
NO_VALUE = {"size", "dim", "numel", "shape", "any", "all", "nelement", "element_size", "stride", "get_device",
            "is_contiguous", "data_ptr", "backward_hook", "register_hook"}
TENSOR_ATTRS_NONE = {"shape", "dtype", "device", "ndim", "requires_grad", "is_cuda", "grad_fn", "is_leaf", "layout"}
INT_METHODS = {"long", "int", "bool", "byte", "short", "argmax", "argmin", "argsort", "nonzero", "eq", "ne", "gt",
               "lt", "ge", "le", "isnan", "isinf", "isfinite", "sign_", "char"}
F16_METHODS = {"half", "bfloat16"}
BUILTINS = {
    "enumerate", "zip", "iter", "next", "list", "tuple", "sorted", "reversed", "map", "filter", "range", "dict",
    "set", "frozenset", "len", "int", "float", "round", "min", "max", "abs", "sum", "print", "isinstance",
    "getattr", "hasattr", "setattr", "open", "super", "bool", "type", "id", "str", "repr", "format", "callable",
    "vars", "input", "any", "all", "issubclass", "hash", "ord", "exit", "quit",
}
REST = "**"  # in kwargs: the value of the keys of a **mapping that could not be named
MODULE_METHODS_SELF = {"to", "cuda", "cpu", "requires_grad_", "zero_grad", "apply", "share_memory", "compile"}


@dataclass
class State:
    no_grad: bool = False
    repeated: bool = False
    loop: str | None = None
    stack: tuple = ()
    in_forward: int = 0
    outer: str | None = None  # the outermost forward-call site being evaluated
    callback: bool = False
    branch: str | None = None  # the undecided `if` / `match` one side of which is running
    constructing: bool = False  # inside a constructor: a forward there runs once per object (a shape probe)


@dataclass
class Frame:
    module: Module
    locals: dict
    self_value: object = None
    returns: list = field(default_factory=list)
    assigned: set | None = None  # names a function assigns (None at module level)
    loops: list = field(default_factory=list)  # names each enclosing loop body assigns
    closure: Frame | None = None  # the frame a nested function or lambda was defined in
    global_names: set = field(default_factory=set)


def _assigned_names(body: list) -> set:
    """Names a block binds afresh (assignment, for-target, with-as); ``x += y`` does not count."""
    names = set()
    for stmt in body:
        for node in ast.walk(stmt):
            targets = []
            if isinstance(node, ast.Assign):
                targets = node.targets
            elif isinstance(node, (ast.AnnAssign, ast.For, ast.AsyncFor, ast.comprehension)):
                targets = [node.target]
            elif isinstance(node, ast.withitem) and node.optional_vars is not None:
                targets = [node.optional_vars]
            for target in targets:
                names.update(n.id for n in ast.walk(target) if isinstance(n, ast.Name))
    return names


def _const(node: ast.AST | None):
    if isinstance(node, ast.Constant):
        return node.value
    return None


def _with_site(value, site: str, definite: bool):
    """A forward pass's output carries a graph from that site (certainly, unless the model is a guess)."""
    if isinstance(value, T):
        return replace(value, req=value.req or definite, grads=value.grads | {site}, param=None, buffer=False)
    if isinstance(value, Seq):
        return Seq(tuple(_with_site(v, site, definite) for v in value.items))
    if isinstance(value, Items):
        return Items(_with_site(value.elem, site, definite))
    if isinstance(value, DictV):
        rest = _with_site(value.rest, site, definite) if value.rest is not None else None
        return DictV(tuple((k, _with_site(v, site, definite)) for k, v in value.items), rest)
    if isinstance(value, Unknown):
        return T("tensor", "f32", req=definite, grads=frozenset({site}))
    return value


def _tag(value, token: str):
    """``value`` with ``token`` among the graph sources it may carry."""
    if isinstance(value, T):
        return replace(value, grads=value.grads | {token})
    if isinstance(value, Seq):
        return Seq(tuple(_tag(v, token) for v in value.items))
    if isinstance(value, Items):
        return Items(_tag(value.elem, token))
    return value


def _attr_key(node: ast.expr, value) -> str:
    """The attribute name ``add_module`` is given: a constant, or an f-string's fixed prefix plus ``*``."""
    if isinstance(value, Const) and isinstance(value.value, str):
        return value.value if isinstance(node, ast.Constant) else value.value + "*"
    return "*"


def _model_name(expr: ast.expr, site: str) -> Assumption | None:
    name = expr.id if isinstance(expr, ast.Name) else expr.attr if isinstance(expr, ast.Attribute) else ""
    lowered = name.lower()
    if lowered in MODEL_NAMES or lowered.endswith(("_model", "_net", "_generator", "_cnn")):
        return Assumption(Kind.MODEL_NAME, site, ast.unparse(expr))
    return None


class Interpreter:
    def __init__(self, project: Project):
        self.project = project
        self.globals: dict[Module, dict] = {}
        # What the check families record on the way (each module owns its facts and their meaning).
        self.dtype = dtype_facts.Facts()
        self.grad = grad_facts.Facts()
        self.launch = launch_facts.Facts()
        self.default_dtype = "f32"
        self.default_set_at: str | None = None
        self.analysed: set = set()
        self.entries: dict[str, str] = {}  # def site -> name of a function analysed as an entry point
        self._memo: dict = {}
        self._active: list = []
        self.state = State()

    # -- entry points --------------------------------------------------------------------------

    @property
    def notes(self) -> list[Assumption]:
        """How the doctor read the code, said on every finding (never weakening one)."""
        return [Assumption(Kind.CODEC, site, codec) for site, codec in self.project.codecs]

    def notes_for(self, stack: tuple) -> list[Assumption]:
        """``notes``, and for a chain that starts in a function the script never calls, that it was
        analysed as an entry point."""
        entry = [Assumption(Kind.ENTRY_FUNCTION, stack[0], f"{self.entries[stack[0]]}()")] \
            if stack and stack[0] in self.entries else []
        return entry + self.notes

    def run(self) -> Interpreter:
        self.exec_module(self.project.entry, ())
        entry = self.project.entry
        for name, node in entry.functions.items():
            if id(node) not in self.analysed:
                # Never called by the script (a library used from a notebook): analysed as an entry
                # point, and what is found there says so (its chain starts at the def).
                site = where(entry, node)
                self.entries[site] = name
                self.call_function(entry, node, [], {}, None, site)
        for module in list(self.project.modules.values()):
            for info in module.classes.values():
                if any(b.rsplit(".", 1)[-1].endswith("Callback") for b in self.project.library_bases(info)):
                    self._run_callbacks(info)
        return self

    def _run_callbacks(self, info: ClassInfo) -> None:
        """A Trainer callback's ``on_*`` methods run again and again, and get the Trainer's model."""
        inst = Inst(Obj(info))
        saved = self.state
        for name, node in info.methods.items():
            if name.startswith("on_"):
                self.state = State(repeated=True, loop=where(info.module, node), callback=True)
                self.call_function(info.module, node, [], {"model": Mod(label="model")}, inst, None)
        self.state = saved

    @staticmethod
    def where(frame: Frame, node: ast.AST) -> str:
        return where(frame.module, node)

    # -- modules -------------------------------------------------------------------------------

    def exec_module(self, module: Module, stack: tuple) -> None:
        if module in self.globals:
            return
        env = self.globals[module] = {}
        saved = self.state
        self.state = State(stack=stack)
        self.exec_block(module.tree.body, Frame(module, env))
        self.state = saved

    # -- statements ----------------------------------------------------------------------------

    def exec_block(self, body: list, frame: Frame) -> bool:
        """Run the statements; False when the block never falls through (return, raise, ...)."""
        saved_no_grad = self.state.no_grad
        falls = True
        for stmt in body:
            if not self.exec_stmt(stmt, frame):
                falls = False
                break
        self.state.no_grad = saved_no_grad
        return falls

    def exec_stmt(self, stmt: ast.stmt, frame: Frame) -> bool:
        handler = getattr(self, f"_stmt_{type(stmt).__name__}", None)
        if handler is None:
            return True
        return handler(stmt, frame) is not False

    def _stmt_Expr(self, stmt: ast.Expr, frame: Frame):
        if isinstance(stmt.value, ast.Call):
            self._grad_switch(stmt.value, frame)
        self.eval(stmt.value, frame)

    def _stmt_Assign(self, stmt: ast.Assign, frame: Frame):
        value = self.eval(stmt.value, frame)
        for target in stmt.targets:
            self.assign(target, value, frame, stmt)

    def _stmt_AnnAssign(self, stmt: ast.AnnAssign, frame: Frame):
        if stmt.value is not None:
            self.assign(stmt.target, self.eval(stmt.value, frame), frame, stmt)

    def _stmt_AugAssign(self, stmt: ast.AugAssign, frame: Frame):
        value = self.eval(stmt.value, frame)
        current = self.eval(stmt.target, frame)
        if self._persists(stmt.target, frame):
            value = self._keep(value, stmt, frame, ast.unparse(stmt), self._grows(stmt.target, frame))
        self.assign(stmt.target, self.binop(current, value, stmt, stmt.op, frame), frame, stmt)

    def _stmt_Import(self, stmt, frame: Frame):
        self._import(stmt, frame)

    _stmt_ImportFrom = _stmt_Import

    def _stmt_FunctionDef(self, stmt, frame: Frame):
        closure = frame if frame.assigned is not None else None
        frame.locals[stmt.name] = FuncRef(frame.module, stmt, closure=closure)

    _stmt_AsyncFunctionDef = _stmt_FunctionDef

    def _stmt_ClassDef(self, stmt: ast.ClassDef, frame: Frame):
        info = frame.module.classes.get(stmt.name)
        if info is not None:
            frame.locals[stmt.name] = ClassRef(info)

    def _stmt_Global(self, stmt: ast.Global, frame: Frame):
        frame.global_names.update(stmt.names)

    def _stmt_Return(self, stmt: ast.Return, frame: Frame):
        frame.returns.append(self.eval(stmt.value, frame) if stmt.value else NONE)
        return False

    def _stmt_Raise(self, stmt: ast.Raise, frame: Frame):
        self.eval(stmt.exc, frame)
        return False

    def _stmt_Break(self, stmt, frame: Frame):
        return False

    _stmt_Continue = _stmt_Break

    def _stmt_Assert(self, stmt: ast.Assert, frame: Frame):
        self.eval(stmt.test, frame)

    def _stmt_If(self, stmt: ast.If, frame: Frame):
        branch = self._static_test(stmt.test, frame)
        if branch is True:
            return self.exec_block(stmt.body, frame)
        if branch is False:
            return self.exec_block(stmt.orelse, frame)
        on_true, on_false = self._narrowing(stmt.test, frame)
        site = where(frame.module, stmt)
        return self._branches(frame, [(stmt.body, on_true), (stmt.orelse, on_false)],
                              Assumption(Kind.BRANCH, site), site)

    def _branches(self, frame: Frame, branches: list, why: Assumption, site: str) -> bool:
        """Run each (body, narrowed names) from the same state; join what the paths that fall through
        leave behind. The frame keeps its locals dict (module globals and closures point at it).
        ``site``: the statement that chooses (what runs inside is on one side of it)."""
        shared = frame.locals
        before = dict(shared)
        results = []
        saved = self.state
        self.state = replace(saved, branch=saved.branch or site)
        for body, narrowed in branches:
            frame.locals = {**before, **narrowed}
            if self.exec_block(body, frame):
                results.append(frame.locals)
        self.state = replace(self.state, branch=saved.branch)
        frame.locals = shared
        if not results:
            return False
        merged = results[0]
        for other in results[1:]:
            merged = {key: join(merged.get(key, UNKNOWN), other.get(key, UNKNOWN), why)
                      for key in merged.keys() | other.keys()}
        shared.clear()
        shared.update(merged)
        return True

    def _stmt_For(self, stmt, frame: Frame):
        items = self.iterate(self.eval(stmt.iter, frame))
        self._loop(stmt, frame, lambda: self.assign(stmt.target, items, frame, stmt))

    _stmt_AsyncFor = _stmt_For

    def _stmt_While(self, stmt: ast.While, frame: Frame):
        self._loop(stmt, frame, lambda: self.eval(stmt.test, frame))

    def _stmt_With(self, stmt, frame: Frame):
        saved = self.state.no_grad
        for item in stmt.items:
            mode = self._grad_mode(item.context_expr, frame)
            if mode is not None:
                self.state.no_grad = mode
            value = self.eval(item.context_expr, frame)
            if item.optional_vars is not None:
                self.assign(item.optional_vars, value, frame, stmt)
        falls = self.exec_block(stmt.body, frame)
        self.state.no_grad = saved
        return falls

    _stmt_AsyncWith = _stmt_With

    def _stmt_Try(self, stmt, frame: Frame):
        falls = self.exec_block(stmt.body, frame)
        if falls:
            falls = self.exec_block(stmt.orelse, frame)
        for handler in stmt.handlers:
            if handler.name:
                frame.locals[handler.name] = UNKNOWN
            falls = self.exec_block(handler.body, frame) or falls
        return self.exec_block(stmt.finalbody, frame) and falls

    _stmt_TryStar = _stmt_Try

    def _stmt_Match(self, stmt, frame: Frame):
        self.eval(stmt.subject, frame)
        branches = [(case.body, {}) for case in stmt.cases]
        if not any(isinstance(case.pattern, ast.MatchAs) and case.pattern.pattern is None for case in stmt.cases):
            branches.append(([], {}))
        site = where(frame.module, stmt)
        return self._branches(frame, branches, Assumption(Kind.BRANCH, site), site)

    def _loop(self, stmt, frame: Frame, bind) -> None:
        saved = self.state
        self.state = replace(saved, repeated=True, loop=saved.loop or where(frame.module, stmt))
        fresh = _assigned_names(stmt.body)
        if isinstance(stmt, (ast.For, ast.AsyncFor)):
            fresh |= {n.id for n in ast.walk(stmt.target) if isinstance(n, ast.Name)}
        frame.loops.append((fresh, self._few_iterations(stmt, frame)))
        for _ in range(2):
            bind()
            self.exec_block(stmt.body, frame)
        frame.loops.pop()
        self.state = saved
        self.exec_block(stmt.orelse, frame)

    def _few_iterations(self, stmt, frame: Frame) -> bool:
        """A loop over a handful of things known in advance (``range(10)``, a literal list, the layers
        of a model), not over data or steps: what it accumulates is bounded."""
        if not isinstance(stmt, (ast.For, ast.AsyncFor)):
            return False
        it = stmt.iter
        if isinstance(it, (ast.Tuple, ast.List)):
            return len(it.elts) <= MAX_FEW
        if isinstance(it, ast.Call) and isinstance(it.func, ast.Name) and it.func.id == "range" \
                and all(isinstance(_const(a), int) for a in it.args):
            return len(range(*[_const(a) for a in it.args])) <= MAX_FEW
        return False

    # -- tests that decide or narrow a branch ----------------------------------------------------

    def _static_test(self, test: ast.expr, frame: Frame) -> bool | None:
        """Evaluate an ``if`` test (once) and decide it where it is known: ``__name__ == "__main__"``,
        ``self.training``, constants, ``torch.distributed.is_initialized()`` in a plain process,
        ``x is None`` for a known None, decidable ``isinstance``. None: both sides may run."""
        if (isinstance(test, ast.Compare) and isinstance(test.left, ast.Name) and test.left.id == "__name__"
                and len(test.comparators) == 1 and _const(test.comparators[0]) == "__main__"):
            equal = isinstance(test.ops[0], ast.Eq)
            return (frame.module is self.project.entry) == equal
        if isinstance(test, ast.UnaryOp) and isinstance(test.op, ast.Not):
            inner = self._static_test(test.operand, frame)
            return None if inner is None else not inner
        if isinstance(test, ast.BoolOp):
            stop = isinstance(test.op, ast.Or)  # `or` stops at the first True, `and` at the first False
            decided = True
            for value in test.values:
                part = self._static_test(value, frame)
                if part is stop:
                    return stop
                decided = decided and part is not None
            return (not stop) if decided else None
        if isinstance(test, ast.Compare) and len(test.ops) == 1 and isinstance(test.ops[0], (ast.Is, ast.IsNot)) \
                and isinstance(test.comparators[0], ast.Constant) and test.comparators[0].value is None:
            value = self.eval(test.left, frame)
            if value == NONE:
                return isinstance(test.ops[0], ast.Is)
            return None
        if isinstance(test, ast.Call) and isinstance(test.func, ast.Name) and test.func.id == "isinstance":
            return self._isinstance(test, frame)
        value = self.eval(test, frame)
        if isinstance(value, Const) and isinstance(value.value, bool):
            return value.value
        return None

    def _isinstance(self, test: ast.Call, frame: Frame) -> bool | None:
        if len(test.args) != 2:
            return None
        value = self.eval(test.args[0], frame)
        spec = test.args[1]
        names = [self.project.qualname(frame.module, e) or (e.id if isinstance(e, ast.Name) else "")
                 for e in (spec.elts if isinstance(spec, ast.Tuple) else [spec])]
        if not isinstance(value, (T, Seq, Items, DictV)) or (isinstance(value, T) and (value.kind == "?" or value.doubt)):
            return None
        kind = "dict" if isinstance(value, DictV) else "list" if isinstance(value, (Seq, Items)) else value.kind
        accepted = set()
        for name in names:
            if name in ("torch.Tensor", "torch.FloatTensor"):
                accepted.add("tensor")
            elif name in ("numpy.ndarray", "numpy.generic"):
                accepted.add("array")
            elif name in ("list", "tuple", "collections.abc.Sequence"):
                accepted.update(("list", "pyfloat"))
            elif name == "dict":
                accepted.add("dict")
            elif name in ("float", "int"):
                accepted.add("num")
            else:
                return None
        return kind in accepted

    def _narrowing(self, test: ast.expr, frame: Frame) -> tuple[dict, dict]:
        """Names bound to None on the side of ``x is None`` / ``x is not None`` where x is None."""
        if isinstance(test, ast.UnaryOp) and isinstance(test.op, ast.Not):
            on_true, on_false = self._narrowing(test.operand, frame)
            return on_false, on_true
        if (isinstance(test, ast.Compare) and len(test.ops) == 1 and isinstance(test.left, ast.Name)
                and isinstance(test.comparators[0], ast.Constant) and test.comparators[0].value is None):
            op = test.ops[0]
            if isinstance(op, (ast.Is, ast.Eq)):
                return {test.left.id: NONE}, {}
            if isinstance(op, (ast.IsNot, ast.NotEq)):
                return {}, {test.left.id: NONE}
        return {}, {}

    # -- no_grad -------------------------------------------------------------------------------

    def _grad_mode(self, expr: ast.expr, frame: Frame) -> bool | None:
        """True when entering ``expr`` turns gradients off, False when it turns them on."""
        call = expr if isinstance(expr, ast.Call) else None
        name = self.project.qualname(frame.module, call.func if call else expr) or ""
        short = name.rsplit(".", 1)[-1]
        if name.startswith("torch") and short in ("no_grad", "inference_mode"):
            if call is not None and call.args and _const(call.args[0]) is False:
                return False  # inference_mode(False)
            return True
        if name.startswith("torch") and short == "enable_grad":
            return False
        if name.startswith("torch") and short == "set_grad_enabled" and call is not None and call.args:
            value = _const(call.args[0])
            if isinstance(value, bool):
                return not value
        if call is not None and isinstance(call.func, (ast.Name, ast.Attribute)):
            return self._wrapped_grad_mode(self.eval(call.func, frame))
        return None

    def _wrapped_grad_mode(self, callee) -> bool | None:
        """A project's own ``@contextlib.contextmanager`` whose ``yield`` sits inside ``with
        torch.no_grad():`` (used as ``with wrapper():`` or ``@wrapper()``) turns gradients off too."""
        if not isinstance(callee, FuncRef) or not isinstance(callee.node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            return None
        module = callee.module
        names = [self.project.qualname(module, d) or "" for d in callee.node.decorator_list]
        if not any(n.endswith("contextmanager") for n in names):
            return None
        for stmt in ast.walk(callee.node):
            if isinstance(stmt, (ast.With, ast.AsyncWith)) and any(isinstance(n, (ast.Yield, ast.YieldFrom))
                                                                   for n in ast.walk(stmt)):
                modes = [self._grad_mode(item.context_expr, Frame(module, {})) for item in stmt.items]
                if any(mode is not None for mode in modes):
                    return next(mode for mode in modes if mode is not None)
        return None

    def _grad_switch(self, call: ast.Call, frame: Frame) -> None:
        name = self.project.qualname(frame.module, call.func) or ""
        if name == "torch.set_grad_enabled" and call.args and isinstance(_const(call.args[0]), bool):
            self.state.no_grad = not _const(call.args[0])

    # -- assignment ----------------------------------------------------------------------------

    def bind(self, name: str, value, frame: Frame) -> None:
        if name in frame.global_names:
            self.globals.setdefault(frame.module, {})[name] = value
        else:
            frame.locals[name] = value

    def assign(self, target: ast.expr, value, frame: Frame, stmt: ast.AST) -> None:
        if isinstance(target, ast.Name):
            self.bind(target.id, value, frame)
        elif isinstance(target, (ast.Tuple, ast.List)):
            self._unpack(target.elts, value, frame, stmt)
        elif isinstance(target, ast.Attribute):
            self._assign_attribute(target, value, frame, stmt)
        elif isinstance(target, ast.Subscript):
            self._assign_item(target, value, frame, stmt)
        elif isinstance(target, ast.Starred):
            self.assign(target.value, Items(element(value)), frame, stmt)

    def _unpack(self, targets: list, value, frame: Frame, stmt) -> None:
        star = next((i for i, t in enumerate(targets) if isinstance(t, ast.Starred)), None)
        items = value.items if isinstance(value, Seq) else None
        for i, target in enumerate(targets):
            if items is not None and star is None and len(items) == len(targets):
                part = items[i]
            elif items is not None and star is not None and len(items) >= len(targets) - 1:
                after = len(targets) - 1 - star
                if i < star:
                    part = items[i]
                elif i == star:
                    part = Seq(items[star:len(items) - after])
                else:
                    part = items[len(items) - (len(targets) - i)]
            else:
                part = self.iterate(value)
            if isinstance(target, ast.Starred):
                self.assign(target.value, part if isinstance(part, Seq) else Items(part), frame, stmt)
            else:
                self.assign(target, part, frame, stmt)

    def _assign_attribute(self, target: ast.Attribute, value, frame: Frame, stmt) -> None:
        owner = self.eval(target.value, frame)
        obj = owner.obj if isinstance(owner, (Mod, Inst)) else None
        if obj is None:
            if isinstance(owner, (Unknown, Lib)):
                self._escape(value, stmt, frame)
            return
        if isinstance(value, T) and value.param:
            value = replace(value, param=target.attr)
        self._buffer_update(obj, target.attr, value, stmt, frame)
        old = obj.attrs.get(target.attr)
        if isinstance(value, T) and isinstance(old, T) and old.buffer:
            value = replace(value, buffer=True)
        obj.attrs[target.attr] = value

    def _assign_item(self, target: ast.Subscript, value, frame: Frame, stmt) -> None:
        base = self.project.qualname(frame.module, target.value)
        key = _const(target.slice)
        if base == "os.environ":
            if key == library.CVD:
                launch_facts.env_set(self.launch, where(frame.module, stmt), self.state.stack, value)
            return
        container = self.eval(target.value, frame)
        if isinstance(container, DictV):
            updated = container.set(key if isinstance(target.slice, ast.Constant) else None, value)
        elif isinstance(container, Seq) and isinstance(key, int) and -len(container.items) <= key < len(container.items):
            items = list(container.items)
            items[key] = value
            updated = Seq(tuple(items))
        elif isinstance(container, (Seq, Items)):
            updated = Items(join(element(container), value))
        else:
            if isinstance(container, (Unknown, Lib)):
                self._escape(value, stmt, frame)
            return
        if isinstance(target.value, (ast.Name, ast.Attribute)):
            self.assign(target.value, updated, frame, stmt)

    # -- expressions ---------------------------------------------------------------------------

    def eval(self, node: ast.expr | None, frame: Frame):
        if node is None:
            return UNKNOWN
        handler = getattr(self, f"_expr_{type(node).__name__}", None)
        return handler(node, frame) if handler is not None else UNKNOWN

    def _expr_Constant(self, node: ast.Constant, frame: Frame):
        value = node.value
        if isinstance(value, bool) or value is None or isinstance(value, str):
            return Const(value)
        if isinstance(value, float):
            return T("num", "f64")
        if isinstance(value, int):
            return T("num", "int")
        return UNKNOWN

    def _expr_Name(self, node: ast.Name, frame: Frame):
        return self.lookup(node.id, frame)

    def _expr_Attribute(self, node: ast.Attribute, frame: Frame):
        return self.attribute_of(self.eval(node.value, frame), node.attr, where(frame.module, node))

    def _expr_Call(self, node: ast.Call, frame: Frame):
        return self.call(node, frame)

    def _expr_BinOp(self, node: ast.BinOp, frame: Frame):
        return self.binop(self.eval(node.left, frame), self.eval(node.right, frame), node, node.op, frame)

    def _expr_UnaryOp(self, node: ast.UnaryOp, frame: Frame):
        value = self.eval(node.operand, frame)
        return UNKNOWN if isinstance(node.op, ast.Not) else value

    def _elements(self, nodes: list, frame: Frame) -> tuple[list, bool]:
        """The values of ``a, *b, c`` (a tuple or list display, or positional arguments), and whether a
        starred part of unknown length stood among them (its element stands in for it)."""
        items, spread = [], False
        for e in nodes:
            if isinstance(e, ast.Starred):
                inner = self.eval(e.value, frame)
                if isinstance(inner, Seq):
                    items.extend(inner.items)
                else:
                    items.append(self.iterate(inner))
                    spread = True
            else:
                items.append(self.eval(e, frame))
        return items, spread

    def _expr_Tuple(self, node, frame: Frame):
        items, spread = self._elements(node.elts, frame)
        if spread:
            return Items(join_all(items))
        if isinstance(node, ast.List) and items and all(isinstance(i, T) and i.kind in ("num", "pyfloat")
                                                         for i in items):
            floats = [i for i in items if i.dtype == "f64"]
            if floats:  # a list of Python numbers with a float among them
                origin = next((i.origin for i in floats if i.origin), None)
                return T("pyfloat", "f64", origin or dtype_facts.born(where(frame.module, node), dtype_facts.Birth.PY_FLOAT_LIST))
        return Seq(tuple(items))

    _expr_List = _expr_Tuple

    def _expr_Set(self, node: ast.Set, frame: Frame):
        return Items(join_all(self.eval(e, frame) for e in node.elts))

    def _expr_Dict(self, node: ast.Dict, frame: Frame):
        result = DictV(())
        for key, value in zip(node.keys, node.values, strict=True):
            if key is None:  # {**other}
                result = result.merge(self.eval(value, frame))
            else:
                self.eval(key, frame)
                result = result.set(_const(key) if isinstance(key, ast.Constant) else None, self.eval(value, frame))
        return result

    def _expr_Subscript(self, node: ast.Subscript, frame: Frame):
        return self.subscript(node, frame)

    def _expr_ListComp(self, node, frame: Frame):
        return Items(self._comprehension(node, frame, [node.elt])[0])

    _expr_SetComp = _expr_ListComp
    _expr_GeneratorExp = _expr_ListComp

    def _expr_DictComp(self, node: ast.DictComp, frame: Frame):
        known = self._known_keys_comprehension(node, frame)
        if known is not None:
            return known
        _, value = self._comprehension(node, frame, [node.key, node.value])
        return DictV((), value)

    def _known_keys_comprehension(self, node: ast.DictComp, frame: Frame) -> DictV | None:
        """``{k: f(v) for k, v in d.items()}`` / ``{name: ... for name in NAMES}`` over known keys: key by key."""
        if len(node.generators) != 1 or node.generators[0].ifs:
            return None
        gen = node.generators[0]
        source = self.eval(gen.iter, frame)
        if isinstance(source, Items) and isinstance(source.elem, Seq) and isinstance(gen.iter, ast.Call) \
                and isinstance(gen.iter.func, ast.Attribute) and gen.iter.func.attr == "items":
            owner = self.eval(gen.iter.func.value, frame)
            if not isinstance(owner, DictV) or owner.rest is not None or not owner.items:
                return None
            elements = [Seq((Const(k), v)) for k, v in owner.items]
        elif isinstance(source, Seq) and source.items and all(isinstance(i, Const) for i in source.items):
            elements = list(source.items)
        else:
            return None
        result = DictV(())
        for value in elements:
            inner = Frame(frame.module, dict(frame.locals), frame.self_value, closure=frame.closure)
            self.assign(gen.target, value, inner, node)
            key = self.eval(node.key, inner)
            result = result.set(key.value if isinstance(key, Const) else None, self.eval(node.value, inner))
        return result

    def _expr_IfExp(self, node: ast.IfExp, frame: Frame):
        branch = self._static_test(node.test, frame)
        if branch is not None:
            return self.eval(node.body if branch else node.orelse, frame)
        return join(self.eval(node.body, frame), self.eval(node.orelse, frame),
                    Assumption(Kind.BRANCH, where(frame.module, node)))

    def _expr_BoolOp(self, node: ast.BoolOp, frame: Frame):
        return join_all((self.eval(v, frame) for v in node.values), Assumption(Kind.BRANCH, where(frame.module, node)))

    def _expr_Compare(self, node: ast.Compare, frame: Frame):
        self.eval(node.left, frame)
        for c in node.comparators:
            self.eval(c, frame)
        return UNKNOWN

    def _expr_Starred(self, node: ast.Starred, frame: Frame):
        return self.eval(node.value, frame)

    def _expr_JoinedStr(self, node: ast.JoinedStr, frame: Frame):
        prefix = ""
        for part in node.values:
            if isinstance(part, ast.FormattedValue):
                self.eval(part.value, frame)
                break
            prefix += str(_const(part) or "")
        return Const(prefix)

    def _expr_NamedExpr(self, node: ast.NamedExpr, frame: Frame):
        value = self.eval(node.value, frame)
        self.assign(node.target, value, frame, node)
        return value

    def _expr_Lambda(self, node: ast.Lambda, frame: Frame):
        return FuncRef(frame.module, node, closure=frame)

    def _expr_Await(self, node: ast.Await, frame: Frame):
        return self.eval(node.value, frame)

    def _comprehension(self, node, frame: Frame, elts: list) -> list:
        saved = self.state
        self.state = replace(saved, repeated=True, loop=saved.loop or where(frame.module, node))
        inner = Frame(frame.module, dict(frame.locals), frame.self_value, closure=frame.closure)
        for gen in node.generators:
            self.assign(gen.target, self.iterate(self.eval(gen.iter, inner)), inner, node)
            for cond in gen.ifs:
                self.eval(cond, inner)
        results = [self.eval(e, inner) for e in elts]
        self.state = saved
        return results

    def lookup(self, name: str, frame: Frame):
        scope: Frame | None = frame
        while scope is not None:
            if name in scope.locals:
                return scope.locals[name]
            scope = scope.closure
        module_env = self.globals.get(frame.module, {})
        if name in module_env:
            return module_env[name]
        qualified = frame.module.aliases.get(name)
        if qualified:
            return self.resolve(qualified)
        if name in BUILTINS:
            return Lib(f"builtins.{name}")
        return UNKNOWN

    def resolve(self, qualified: str):
        """A qualified name: a local class, function, module or module-level value, or a library name."""
        project = self.project
        local = project.modules.get(qualified)
        if local is not None:
            return ModRef(local)
        info = project.local_class(qualified)
        if info is not None:
            return ClassRef(info)
        func = project.local_function(qualified)
        if func is not None:
            return FuncRef(*func)
        found = project.split(qualified)
        if found is not None:
            module, rest = found
            if module in self.globals and rest in self.globals[module]:
                return self.globals[module][rest]
            return UNKNOWN
        return Lib(qualified)

    def attribute_of(self, owner, attr: str, site: str = ""):
        if isinstance(owner, Lib):
            return Lib(f"{owner.qualname}.{attr}")
        if isinstance(owner, ModRef):
            return self.resolve(f"{owner.module.name}.{attr}")
        if isinstance(owner, (Mod, Inst)) and owner.obj is not None:
            return self._object_attribute(owner, attr)
        if isinstance(owner, Mod):
            return owner if attr in ("module", "base_model", "model", "_orig_mod") else UNKNOWN
        if isinstance(owner, T):
            return self._tensor_attribute(owner, attr, site)
        return UNKNOWN

    def dynamic_attribute(self, owner, name_node: ast.expr, name_value):
        """``getattr(self, f"dense{i}")`` / ``self.__getattr__(name)``: the attribute, or every attribute
        added under that prefix (``add_module(f"dense{i}", ...)``)."""
        if not (isinstance(owner, (Mod, Inst)) and owner.obj is not None and isinstance(name_value, Const)
                and isinstance(name_value.value, str)):
            return UNKNOWN
        if isinstance(name_node, ast.Constant):
            return self.attribute_of(owner, name_value.value)
        prefix = name_value.value
        found = [v for k, v in owner.obj.attrs.items() if k.startswith(prefix) and prefix]
        return join_all(found) if found else UNKNOWN

    def _object_attribute(self, owner, attr: str):
        obj = owner.obj
        if attr == "training":
            return Const(obj.training)
        if attr in obj.attrs:
            value = obj.attrs[attr]
        else:
            found = self.project.find_method(obj.cls, attr)
            if found is not None:
                return FuncRef(found[0].module, found[1], self_value=owner)
            value = self._class_attribute(obj.cls, attr)
        if isinstance(owner, Mod) and obj.f64 and isinstance(value, T) and value.param:
            return replace(value, dtype="f64")
        if isinstance(value, Mod) and obj.f64 and not value.is_f64:
            return replace(value, f64=True)
        return value

    def _class_attribute(self, info: ClassInfo, attr: str):
        for current in self.project.class_chain(info):
            for stmt in current.node.body:
                if (isinstance(stmt, ast.Assign) and len(stmt.targets) == 1 and isinstance(stmt.targets[0], ast.Name)
                        and stmt.targets[0].id == attr):
                    return self.eval(stmt.value, Frame(current.module, self.globals.get(current.module, {})))
        return UNKNOWN

    def _tensor_attribute(self, owner: T, attr: str, site: str):
        if owner.kind == "frame":
            if attr == "values":
                return self._from_pandas(owner, ".values", site)
            if attr in ("iloc", "loc", "at", "iat", "T"):
                return owner
            return UNKNOWN
        if attr == "data":
            return drop_graph(replace(owner, param=None))
        if attr in ("T", "mT", "H", "real"):
            return owner
        if attr == "grad":
            return T("tensor", owner.dtype)
        if attr in TENSOR_ATTRS_NONE:
            return UNKNOWN
        # A model output's field (out.loss, out.logits, out.sample ...): the same graph.
        if owner.grads or owner.kind == "?":
            return replace(owner, param=None, buffer=False)
        return UNKNOWN

    def _from_pandas(self, frame_value: T, how: str, site: str) -> T:
        if frame_value.dtype != "f64":
            return T("array", frame_value.dtype)
        origin = frame_value.origin
        if origin is None or "pandas" not in origin.what:
            origin = dtype_facts.born(site, dtype_facts.Birth.PANDAS_CONVERSION, how=how)
        return T("array", "f64", origin, frame_value.doubt)

    def subscript(self, node: ast.Subscript, frame: Frame):
        base = self.project.qualname(frame.module, node.value)
        key = _const(node.slice)
        if base == "os.environ" and key in library.DIST_MARKERS:
            launch_facts.launched(self.launch, where(frame.module, node), f"reads {key} (set by torchrun)",
                                  self.state.branch)
        value = self.eval(node.value, frame)
        self.eval(node.slice, frame)
        is_slice = isinstance(node.slice, ast.Slice)
        if isinstance(value, Seq):
            if isinstance(key, int) and -len(value.items) <= key < len(value.items):
                return value.items[key]
            if is_slice:
                return Items(element(value))
            return element(value)
        if isinstance(value, Items):
            return value if is_slice else value.elem
        if isinstance(value, DictV):
            if isinstance(node.slice, ast.Constant):
                return value.get(key)
            return join_all(value.values(), Assumption(Kind.ELEMENT, where(frame.module, node)))
        if isinstance(value, T):
            return self._index_tensor(value, node, frame)
        if isinstance(value, Dataset):
            return value.item
        if isinstance(value, Inst) and value.obj is not None:
            return self.method(value, "__getitem__", [T("num", "int")], {}, node, frame)
        if isinstance(value, Mod) and value.parts:
            return value.parts[key] if isinstance(key, int) and -len(value.parts) <= key < len(value.parts) \
                else join_all(value.parts)
        return UNKNOWN

    def _index_tensor(self, value: T, node: ast.Subscript, frame: Frame):
        if value.kind == "frame":
            if value.dtype != "f64":
                return value
            return T("frame", "f64", dtype_facts.born(where(frame.module, node), dtype_facts.Birth.PANDAS_VALUE), value.doubt)
        return replace(value, param=None, buffer=False)

    def binop(self, left, right, node, op, frame: Frame):
        if isinstance(op, ast.MatMult):
            self.meet(left, right, node, frame, "@")
        if isinstance(op, ast.BitOr) and isinstance(left, DictV):
            return left.merge(right)
        if isinstance(op, ast.Add) and isinstance(left, Seq) and isinstance(right, Seq):
            return Seq(left.items + right.items)
        values = [v for v in (left, right) if isinstance(v, T)]
        if not values:
            if isinstance(left, (Seq, Items)) or isinstance(right, (Seq, Items)):
                return Items(join(element(left), element(right)))
            return UNKNOWN
        result = self.arithmetic(values)
        if isinstance(op, ast.Div) and result.dtype == "int" and result.kind in ("array", "tensor"):
            return self._true_division(result, node, frame)
        return result

    def _true_division(self, result: T, node, frame: Frame) -> T:
        """``/`` of integers: NumPy gives float64 (``len(y) / np.bincount(y)``, class weights), torch the
        default float dtype."""
        if result.kind == "tensor":
            return replace(result, dtype=self.default_dtype)
        site = where(frame.module, node)
        return replace(result, dtype="f64", origin=dtype_facts.born(site, dtype_facts.Birth.INT_DIVISION))

    def arithmetic(self, values: list[T]) -> T:
        """The result of an element-wise operation (torch's and numpy's promotion, roughly)."""
        tensors = [v for v in values if v.kind == "tensor"]
        arrays = [v for v in values if v.kind in ("array", "frame")]
        req = any(v.req for v in values) and not self.state.no_grad
        grads = frozenset().union(*(v.grads for v in values)) if not self.state.no_grad else frozenset()
        src = frozenset().union(*(v.src | (v.grads if self.state.no_grad else frozenset()) for v in values))
        if tensors:
            result = self.promote(tensors)
            return replace(result, req=req, grads=grads, src=src)
        if arrays:
            f64 = next((v for v in arrays if v.f64), None)
            kind = "frame" if all(v.kind == "frame" for v in arrays) else "array"
            return T(kind, "f64" if f64 else arrays[0].dtype, f64.origin if f64 else arrays[0].origin,
                     f64.doubt if f64 else ())
        if any(v.kind == "?" for v in values):
            return T("?", grads=grads, src=src)
        floats = [v for v in values if v.kind == "pyfloat"]
        if floats:
            return floats[0]
        return T("num", "f64" if any(v.dtype == "f64" for v in values) else values[0].dtype)

    def promote(self, values: list) -> T:
        """torch.cat / stack / element-wise: float64 when any operand is float64."""
        tensors = [self.to_tensor(v, "?") if isinstance(v, T) and v.kind not in ("tensor", "?") else v
                   for v in values if isinstance(v, T)]
        if not tensors:
            return T("tensor")
        f64 = next((v for v in tensors if v.f64), None)
        floats = [v for v in tensors if v.dtype in ("f32", "f16")]
        dtype = "f64" if f64 else floats[0].dtype if floats else tensors[0].dtype
        req = any(v.req for v in tensors)
        grads = frozenset().union(*(v.grads for v in tensors))
        src = frozenset().union(*(v.src for v in tensors))
        return T("tensor", dtype, f64.origin if f64 else None, f64.doubt if f64 else (), req, grads, src=src)

    def meet(self, a, b, node: ast.AST, frame: Frame, op: str, exprs: tuple = ()) -> None:
        dtype_facts.meet(self.dtype, a, b, where(frame.module, node), self.state.stack, op, exprs)

    # -- calls ---------------------------------------------------------------------------------

    def call(self, node: ast.Call, frame: Frame):
        func = node.func
        if isinstance(func, ast.Attribute):
            owner = self.eval(func.value, frame)
            if isinstance(owner, ModRef):
                return self.call_value(self.resolve(f"{owner.module.name}.{func.attr}"), node, frame)
            if isinstance(owner, Lib):
                return self.library(f"{owner.qualname}.{func.attr}", node, frame)
            args, kwargs = self.arguments(node, frame)
            return self.method(owner, func.attr, args, kwargs, node, frame, receiver=func.value)
        return self.call_value(self.eval(func, frame), node, frame)

    def arguments(self, node: ast.Call, frame: Frame) -> tuple[list, dict]:
        args, _ = self._elements(node.args, frame)
        kwargs = {}
        for kw in node.keywords:
            value = self.eval(kw.value, frame)
            if kw.arg:
                kwargs[kw.arg] = value
            elif isinstance(value, DictV):
                kwargs.update({k: v for k, v in value.items if isinstance(k, str)})
                if value.rest is not None:
                    kwargs[REST] = value.rest  # **d with keys the analysis cannot name
        return args, kwargs

    def call_value(self, callee, node: ast.Call, frame: Frame):
        if isinstance(callee, Lib):
            return self.library(callee.qualname, node, frame)
        args, kwargs = self.arguments(node, frame)
        if isinstance(callee, Unknown):
            guess = _model_name(node.func, where(frame.module, node))
            if guess:
                return self.call_module(Mod(label=ast.unparse(node.func), guess=guess), args, kwargs, node, frame)
            return self._unseen(args, kwargs, node, frame)
        return self.call_resolved(callee, args, kwargs, node, frame)

    def call_resolved(self, callee, args, kwargs, node: ast.AST, frame: Frame):
        if isinstance(callee, Mod):
            return self.call_module(callee, args, kwargs, node, frame)
        if isinstance(callee, ClassRef):
            return self.instantiate(callee.info, args, kwargs, node, frame)
        if isinstance(callee, FuncRef):
            return self.call_function(callee.module, callee.node, args, kwargs, callee.self_value,
                                      where(frame.module, node), callee.closure)
        if isinstance(callee, Inst) and callee.obj is not None:
            return self.method(callee, "__call__", args, kwargs, node, frame)
        if isinstance(callee, Lib) and isinstance(node, ast.Call):  # map(float, ...), a library callback
            rule = library.handler(callee.qualname)
            if rule is not None:
                return rule(library.Call(self, callee.qualname, node, frame, list(args), dict(kwargs)))
        return self._unseen(args, kwargs, node, frame)

    def _unseen(self, args, kwargs, node: ast.AST, frame: Frame):
        """A call the analysis cannot see into: graphs pass through, and may escape into it."""
        values = [*args, *kwargs.values()]
        for value in values:
            self._escape(value, node, frame)
        return opaque(values)

    def _escape(self, value, node: ast.AST, frame: Frame) -> None:
        grad_facts.escape(self.grad, value, where(frame.module, node))

    def library(self, name: str, node: ast.Call, frame: Frame):
        args, kwargs = self.arguments(node, frame)
        rule = library.handler(name)
        if rule is None:
            return self._unseen(args, kwargs, node, frame)
        return rule(library.Call(self, name, node, frame, args, kwargs))

    def instantiate(self, info: ClassInfo, args, kwargs, node, frame: Frame):
        project = self.project
        bases = project.library_bases(info)
        obj = Obj(info, f64=self.default_dtype == "f64")
        if any(b.startswith("torch.nn") or b.endswith(("Module", "PreTrainedModel", "LightningModule")) for b in bases):
            value = Mod(obj=obj, label=info.name)
        else:
            value = Inst(obj)
        if any(map(library.is_training_config, bases)):  # class OurTrainingArguments(TrainingArguments)
            launch_facts.config(self.launch, node, where(frame.module, node), self.state.stack, info.name,
                                display(frame.module.path), lambda expr: self._int_value(expr, frame))
        init = project.find_method(info, "__init__")
        if init is not None:
            saved = self.state
            self.state = replace(saved, constructing=True)
            try:
                self.call_function(init[0].module, init[1], args, kwargs, value, where(frame.module, node))
            finally:
                self.state = saved
        if isinstance(value, Inst) and project.find_method(info, "__getitem__") is not None:
            obj.attrs.setdefault("__dataset__", True)
        return value

    def call_module(self, mod: Mod, args, kwargs, node: ast.AST, frame: Frame):
        site = where(frame.module, node)
        outer = self.state.in_forward == 0 and not self.state.no_grad
        if outer and self.state.repeated and not self.state.constructing and not mod.loss and mod.parametric:
            grad_facts.forward(self.grad, site, ast.unparse(node.func) if isinstance(node, ast.Call) else mod.label,
                         self.state, eval_mode=mod.obj is not None and not mod.obj.training, guess=mod.guess)
        saved = self.state
        if outer:
            self.state = replace(saved, outer=site)
            grad_facts.feeds(self.grad, site, [*args, *kwargs.values()])
        result = None
        if mod.obj is not None:
            found = self.project.find_method(mod.obj.cls, "forward")
            if found is not None:
                self.state = replace(self.state, in_forward=self.state.in_forward + 1)
                result = self.call_function(found[0].module, found[1], args, kwargs, mod, site)
        elif mod.builtin == "Sequential" and mod.parts:
            self.state = replace(self.state, in_forward=self.state.in_forward + 1)
            result = args[0] if args else UNKNOWN
            for part in mod.parts:
                result = self.call_module(part, [result], {}, node, frame)
        if result is None:
            result = self._library_forward(mod, args, kwargs, node, frame)
        self.state = saved
        if outer and not mod.loss:
            result = _with_site(result, site, definite=mod.guess is None)
        return result

    def _library_forward(self, mod: Mod, args, kwargs, node: ast.AST, frame: Frame):
        """What a library module's forward gives: its weights' dtype, the graphs of its inputs."""
        if mod.parametric and not mod.loss and not mod.is_f64:
            exprs = [ast.unparse(n) for n in node.args] if isinstance(node, ast.Call) else []
            dtype_facts.weights(self.dtype, mod.label, mod.guess, args, exprs, where(frame.module, node), self.state.stack)
        if mod.loss and mod.builtin:
            exprs = [ast.unparse(n) for n in node.args] if isinstance(node, ast.Call) else []
            dtype_facts.loss(self.dtype, mod.builtin, args, kwargs, exprs, where(frame.module, node), self.state.stack,
                             weight=mod.weight, guess=mod.guess)
        values = [v for v in [*args, *kwargs.values()] if isinstance(v, T)]
        req, grads = False, frozenset()
        for v in [*args, *kwargs.values()]:
            r, g = graph_of(v)
            req, grads = req or r, grads | g
        if self.state.no_grad:
            req, grads = False, frozenset()
        dtype = "f64" if mod.is_f64 else "f32"
        if mod.loss or not mod.parametric:
            dtype = next((v.dtype for v in values if v.kind == "tensor"), "f32")
        src = frozenset().union(*(sources_of(v) for v in [*args, *kwargs.values()])) - grads
        return T("tensor", dtype, req=(req or (mod.parametric and mod.guess is None)) and not self.state.no_grad,
                 grads=grads, src=src)

    def call_function(self, module: Module, node, args, kwargs, self_value, site: str | None,
                      closure: Frame | None = None):
        self.analysed.add(id(node))
        if node in self._active or len(self._active) >= MAX_DEPTH:
            return UNKNOWN
        decorated_no_grad = any(self._grad_mode(d, Frame(module, {})) for d in getattr(node, "decorator_list", []))
        try:
            modes = tuple(v.obj.training for v in [*args, self_value] if isinstance(v, (Mod, Inst)) and v.obj)
            key = (id(node), tuple(args), tuple(sorted(kwargs.items())), self_value, modes, self.state.no_grad,
                   self.state.repeated, self.state.in_forward > 0, self.state.outer, self.default_dtype, id(closure))
            hash(key)
        except TypeError:
            key = None
        if key is not None and key in self._memo:
            return self._memo[key]
        body = node.body if isinstance(node.body, list) else []
        frame = Frame(module, {}, self_value, assigned=_assigned_names(body), closure=closure)
        self._bind_parameters(node.args, args, kwargs, self_value, frame)
        saved = self.state
        self.state = replace(saved, stack=saved.stack + ((site,) if site else ()),
                             no_grad=saved.no_grad or decorated_no_grad)
        self._active.append(node)
        try:
            if isinstance(node, ast.Lambda):
                frame.returns.append(self.eval(node.body, frame))
            elif self.exec_block(body, frame) and frame.returns:
                frame.returns.append(NONE)
        finally:
            self._active.pop()
            self.state = saved
        name = getattr(node, "name", "lambda")
        result = join_all(frame.returns, Assumption(Kind.RETURN, where(module, node), f"{name}()")) \
            if frame.returns else NONE
        if decorated_no_grad or self.state.no_grad:
            result = drop_graph(result)
        if key is not None:
            self._memo[key] = result
        return result

    def _bind_parameters(self, params: ast.arguments, args, kwargs, self_value, frame: Frame) -> None:
        module = frame.module
        positional = [*params.posonlyargs, *params.args]
        values = list(args)
        if self_value is not None and positional:
            frame.locals[positional[0].arg] = self_value
            positional = positional[1:]
        defaults = [None] * (len(positional) - len(params.defaults)) + list(params.defaults)
        defaults_frame = Frame(module, self.globals.get(module, {}))
        used = {REST}
        for i, param in enumerate(positional):
            if i < len(values):
                frame.locals[param.arg] = values[i]
            elif param.arg in kwargs:
                frame.locals[param.arg] = kwargs[param.arg]
                used.add(param.arg)
            elif REST in kwargs:
                frame.locals[param.arg] = kwargs[REST]
            elif defaults[i] is not None:
                frame.locals[param.arg] = self.eval(defaults[i], defaults_frame)
            else:
                frame.locals[param.arg] = UNKNOWN
        for param, default in zip(params.kwonlyargs, params.kw_defaults, strict=True):
            if param.arg in kwargs:
                frame.locals[param.arg] = kwargs[param.arg]
                used.add(param.arg)
            else:
                frame.locals[param.arg] = self.eval(default, defaults_frame) if default is not None else UNKNOWN
        if params.vararg:
            frame.locals[params.vararg.arg] = Seq(tuple(values[len(positional):]))
        if params.kwarg:
            frame.locals[params.kwarg.arg] = DictV(tuple((k, v) for k, v in kwargs.items() if k not in used))

    # -- methods -------------------------------------------------------------------------------

    def method(self, owner, name: str, args, kwargs, node: ast.AST, frame: Frame, receiver=None):
        """``owner.name(*args, **kwargs)``: what it records on the way, then what it returns."""
        if name == "backward":
            return self._backward(owner, args, node, frame, receiver)
        args = self._method_events(owner, name, args, node, frame, receiver)
        if isinstance(owner, (Mod, Inst)) and owner.obj is not None:
            return self._object_method(owner, name, args, kwargs, node, frame, receiver)
        if isinstance(owner, Mod):
            return self._module_method(owner, name, args, kwargs, node, frame, receiver)
        if isinstance(owner, (Seq, Items)):
            return self._list_method(owner, name, args, node, frame, receiver)
        if isinstance(owner, DictV):
            return self._dict_method(owner, name, args, kwargs, node, frame, receiver)
        if isinstance(owner, (Loader, Dataset)):
            return owner
        if isinstance(owner, ClassRef):
            found = self.project.find_method(owner.info, name)
            if found is not None:
                return self.call_function(found[0].module, found[1], args, kwargs, None, where(frame.module, node))
            return UNKNOWN
        if isinstance(owner, T) or (isinstance(owner, Unknown) and name in ("double", "float", "to", "type", "astype",
                                                                           "half", "long")):
            return self._tensor_method(owner, name, args, kwargs, node, frame)
        if isinstance(owner, Const) and isinstance(owner.value, str):
            return Const("") if name in ("format", "join", "strip", "lower", "upper", "replace") else UNKNOWN
        return self._unseen(args, kwargs, node, frame)

    def _backward(self, owner, args, node, frame: Frame, receiver):
        grad_facts.trains(self.grad, Seq((owner, *args)))  # loss.backward(), or engine.backward(loss)
        if isinstance(owner, T) and not owner.req and isinstance(receiver, (ast.Name, ast.Attribute)):
            # .backward() raises on a tensor without a graph: past this line it certainly has one.
            self.assign(receiver, replace(owner, req=True), frame, node)
        return NONE

    def _method_events(self, owner, name: str, args, node, frame: Frame, receiver) -> list:
        """In-place buffer updates, moves to CUDA, and graphs kept by an accumulator; returns the
        arguments (an accumulated graph is tagged so that reaching .backward() later clears it)."""
        if isinstance(node, ast.Call):
            self._inplace_buffer(node, frame, args)
            if name == "cuda" or (name == "to" and self._cuda_arg(node, frame)):
                launch_facts.cuda(self.launch, where(frame.module, node), self.state.stack,
                                  f".{name}({'cuda' if name == 'to' else ''})")
        if name in ("append", "extend", "insert", "add") and args and receiver is not None \
                and self._persists(receiver, frame):
            kept = self._keep(args[-1], node, frame, ast.unparse(node), self._grows(receiver, frame))
            args = [*args[:-1], kept]
        return args

    def _object_method(self, owner, name: str, args, kwargs, node, frame: Frame, receiver):
        """A method of an instance of one of the script's own classes."""
        if name in owner.obj.attrs:
            return self._call_attribute(owner, owner.obj.attrs[name], args, kwargs, node, frame)
        if isinstance(owner, Mod):
            return self._module_method(owner, name, args, kwargs, node, frame, receiver)
        found = self.project.find_method(owner.obj.cls, name)
        if found is not None:
            return self.call_function(found[0].module, found[1], args, kwargs, owner, where(frame.module, node))
        return self._unseen(args, kwargs, node, frame)

    def _call_attribute(self, owner, callee, args, kwargs, node, frame: Frame):
        if isinstance(callee, Mod):
            if owner.obj.f64 and not callee.is_f64:
                callee = replace(callee, f64=True)
            return self.call_module(callee, args, kwargs, node, frame)
        if isinstance(callee, Lib):
            return self.library(callee.qualname, node, frame) if isinstance(node, ast.Call) else UNKNOWN
        return self.call_resolved(callee, args, kwargs, node, frame)

    def _module_method(self, mod: Mod, name, args, kwargs, node, frame: Frame, receiver=None):
        """``nn.Module`` methods: registering submodules and buffers, the mode and the dtype, the
        forward pass; a library model's other methods (save_pretrained, ...) are not forward passes."""
        if name in ("add_module", "register_module", "register_buffer", "register_parameter"):
            return self._register(mod, name, args, node)
        if name == "__getattr__" and isinstance(node, ast.Call) and node.args:
            return self.dynamic_attribute(mod, node.args[0], args[0])
        if mod.builtin in ("Sequential", "ModuleList") and name in ("append", "extend", "insert") and args:
            new = args[-1].items if name == "extend" and isinstance(args[-1], Seq) else (args[-1],)
            grown = replace(mod, parts=mod.parts + tuple(m for m in new if isinstance(m, Mod)))
            if isinstance(receiver, (ast.Name, ast.Attribute)):
                self.assign(receiver, grown, frame, node)
            return NONE
        if name in ("eval", "train", "double", "float", "half", "bfloat16", "to", "type") or name in MODULE_METHODS_SELF:
            return self._module_state(mod, name, node, frame)
        if name == "generate":
            return T("tensor", "int")  # Hugging Face generate() runs under torch.no_grad()
        if name in ("parameters", "buffers"):
            return Items(T("tensor", "f64" if mod.is_f64 else "f32", param="weight"))
        if name in ("forward", "__call__"):
            return self.call_module(mod, args, kwargs, node, frame)
        found = self.project.find_method(mod.obj.cls, name) if mod.obj is not None else None
        if found is not None:
            return self.call_function(found[0].module, found[1], args, kwargs, mod, where(frame.module, node))
        return UNKNOWN

    def _register(self, mod: Mod, name: str, args, node):
        """``add_module`` / ``register_buffer`` / ``register_parameter``: an attribute by name."""
        obj = mod.obj
        if obj is None or len(args) < 2 or not isinstance(node, ast.Call) or not node.args:
            return NONE
        if name in ("add_module", "register_module"):
            obj.attrs[_attr_key(node.args[0], args[0])] = args[1]
            return NONE
        key = _const(node.args[0])
        if isinstance(key, str):
            value = args[1]
            if name == "register_buffer":
                value = replace(value, buffer=True) if isinstance(value, T) else value
                obj.buffers.add(key)
            obj.attrs[key] = value
        return NONE

    def _module_state(self, mod: Mod, name: str, node, frame: Frame):
        """``.train()`` / ``.eval()``, ``.double()`` / ``.to(dtype)``, ``.to(device)``: the same module."""
        obj = mod.obj
        if name in ("eval", "train"):
            first = node.args[0] if isinstance(node, ast.Call) and node.args else None
            if obj is not None:
                obj.training = name == "train" and _const(first) is not False
            return mod
        dtype = self._call_dtype(node, frame) if name in ("to", "type") else None
        if name in ("double", "float", "half", "bfloat16") or dtype:
            to_f64 = name == "double" or dtype == "f64"
            if obj is not None:
                obj.f64 = to_f64
                return mod
            return replace(mod, f64=to_f64)
        return mod

    def _list_method(self, owner, name, args, node, frame: Frame, receiver):
        if name in ("append", "add", "insert") and args:
            updated = Items(join(element(owner), args[-1], Assumption(Kind.ELEMENT, where(frame.module, node))))
        elif name == "extend" and args:
            updated = Items(join(element(owner), self.iterate(args[0]),
                                 Assumption(Kind.ELEMENT, where(frame.module, node))))
        elif name in ("pop", "__getitem__"):
            return element(owner)
        elif name in ("copy",):
            return owner
        elif name in ("sort", "reverse", "clear", "remove"):
            return NONE
        else:
            return UNKNOWN
        if isinstance(receiver, (ast.Name, ast.Attribute)):
            self.assign(receiver, updated, frame, node)
        return NONE

    def _dict_method(self, owner: DictV, name, args, kwargs, node, frame: Frame, receiver):
        if name == "items":
            keys = [Const(k) for k, _ in owner.items] or [UNKNOWN]
            return Items(Seq((join_all(keys), join_all(owner.values(), Assumption(Kind.ELEMENT, where(frame.module, node))))))
        if name == "values":
            return Items(join_all(owner.values(), Assumption(Kind.ELEMENT, where(frame.module, node))))
        if name == "keys":
            return Items(join_all([Const(k) for k, _ in owner.items]))
        if name in ("get", "pop", "setdefault"):
            key = _const(node.args[0]) if isinstance(node, ast.Call) and node.args else None
            found = owner.get(key)
            if isinstance(found, Unknown) and len(args) > 1:
                return args[1]
            return found
        if name == "copy":
            return owner
        if name == "update":
            updated = owner.merge(args[0]) if args else owner
            for key, value in kwargs.items():
                updated = updated.set(key, value)
            if isinstance(receiver, (ast.Name, ast.Attribute)):
                self.assign(receiver, updated, frame, node)
            return NONE
        return UNKNOWN

    def _tensor_method(self, owner, name, args, kwargs, node, frame: Frame):
        value = owner if isinstance(owner, T) else None
        site = where(frame.module, node)
        if name in ("double", "float", "to", "type", "astype", "half", "bfloat16"):
            return self._cast(value, name, node, frame, site)
        if value is None:
            return T("num") if name == "item" else UNKNOWN
        if value.kind == "frame":
            return self._frame_method(value, name, node, frame, site)
        if name in GRAPH_DROPPING:
            if name == "numpy":
                return replace(value, kind="array", req=False, grads=frozenset(), param=None, buffer=False)
            if name in ("item", "tolist"):
                return T("pyfloat", "f64", value.origin, value.doubt) if value.f64 else T("num", value.dtype)
            return drop_graph(replace(value, param=None, buffer=False))
        if name in INPLACE:
            return value
        if name in NO_VALUE:
            return UNKNOWN
        if name in INT_METHODS:
            return T("tensor" if value.kind != "array" else "array", "int")
        result = replace(value, param=None, buffer=False)
        return drop_graph(result) if self.state.no_grad else result

    def _cast(self, value: T | None, name: str, node, frame: Frame, site: str):
        if name == "double":
            base = value or T("tensor")
            kind = base.kind if base.kind in ("array",) else "tensor"
            return T(kind, "f64", dtype_facts.born(site, dtype_facts.Birth.DOUBLE),
                     (), base.req, base.grads, src=base.src)
        if name in ("float", "half", "bfloat16"):
            base = value or T("tensor")
            kind = "array" if base.kind == "array" else "tensor"
            return replace(base, kind=kind, dtype="f32" if name == "float" else "f16", origin=None, doubt=(),
                           param=None, buffer=False)
        dtype = self._call_dtype(node, frame)
        if value is None:
            if dtype == "f64":
                return T("tensor", "f64", dtype_facts.born(site, dtype_facts.Birth.CAST_ARG, name=name))
            return T("tensor", dtype) if dtype else UNKNOWN
        if dtype == "f64":
            if value.f64:
                return value
            birth = dtype_facts.Birth.ASTYPE if name == "astype" else dtype_facts.Birth.CAST
            return replace(value, dtype="f64", origin=dtype_facts.born(site, birth, name=name), doubt=())
        if dtype is not None:
            kind = value.kind if value.kind in ("array", "tensor") else "tensor"
            return replace(value, kind=kind, dtype=dtype, origin=None, doubt=(), param=None, buffer=False)
        return replace(value, param=None, buffer=False)

    def _frame_method(self, value: T, name: str, node, frame: Frame, site: str):
        if name == "to_numpy":
            dtype = self._call_dtype(node, frame)
            if dtype and dtype != "f64":
                return T("array", dtype)
            return self._from_pandas(value, ".to_numpy()", site)
        if name == "tolist":
            if value.dtype != "f64":
                return UNKNOWN
            return T("pyfloat", "f64", dtype_facts.born(site, dtype_facts.Birth.PANDAS_TOLIST))
        if name in ("to_dict", "iterrows", "itertuples"):
            return UNKNOWN
        return value

    def _call_dtype(self, node, frame: Frame) -> str | None:
        if not isinstance(node, ast.Call):
            return None
        candidates = [kw.value for kw in node.keywords if kw.arg == "dtype"] + list(node.args)
        for expr in candidates:
            dtype = self.dtype_name(expr, frame)
            if dtype:
                return dtype
        return None

    def dtype_name(self, expr: ast.expr, frame: Frame) -> str | None:
        name = self.project.qualname(frame.module, expr)
        if name is None and isinstance(expr, ast.Constant) and isinstance(expr.value, str):
            name = expr.value
        if name is None and isinstance(expr, ast.Name) and expr.id in ("float", "int", "bool"):
            name = expr.id
        if name is None and isinstance(expr, (ast.Name, ast.Attribute)):
            value = self.eval(expr, frame)
            if isinstance(value, Lib):
                name = value.qualname
            elif isinstance(value, Const) and isinstance(value.value, str):
                name = value.value
        return library.dtype_of_name(name)

    def _cuda_arg(self, node: ast.Call, frame: Frame) -> bool:
        for expr in [*node.args, *(kw.value for kw in node.keywords if kw.arg == "device")]:
            text = _const(expr)
            if isinstance(text, str) and text.startswith("cuda"):
                return True
            if isinstance(expr, ast.Call) and self.project.qualname(frame.module, expr.func) == "torch.device":
                first = _const(expr.args[0]) if expr.args else None
                if isinstance(first, str) and first.startswith("cuda"):
                    return True
            if isinstance(expr, ast.Name):
                value = self.lookup(expr.id, frame)
                if isinstance(value, Const) and isinstance(value.value, str) and value.value.startswith("cuda"):
                    return True
        return False

    # -- values library rules ask for ----------------------------------------------------------

    def default_tensor(self, site: str, name: str) -> T:
        if self.default_dtype == "f64":
            return T("tensor", "f64", dtype_facts.born(site, dtype_facts.Birth.DEFAULT_DTYPE, self.default_set_at, name=name,
                                                how=self.default_set_at or "?"))
        return T("tensor", self.default_dtype)

    def to_tensor(self, value, site: str):
        """``torch.tensor(value)`` without a dtype."""
        if isinstance(value, T):
            if value.kind in ("array", "frame") and value.f64:
                return T("tensor", "f64", value.origin or dtype_facts.born(site, dtype_facts.Birth.ARRAY),
                         value.doubt)
            if value.kind in ("pyfloat", "num"):
                return self.default_tensor(site, "torch.tensor") if value.dtype == "f64" else T("tensor", value.dtype)
            return replace(value, kind="tensor", param=None, buffer=False)
        if isinstance(value, (Seq, Items)):
            inner = scalar(value)
            if isinstance(inner, T) and inner.kind in ("tensor", "array") and inner.f64:
                return T("tensor", "f64", inner.origin, inner.doubt)
            if isinstance(inner, T) and inner.dtype == "int":
                return T("tensor", "int")
            return self.default_tensor(site, "torch.tensor")
        return T("tensor")

    def torch_result(self, args, kwargs) -> T:
        values = [v for v in [*args, *kwargs.values()] if isinstance(v, T) and v.kind in ("tensor", "?")]
        if not values:
            return T("tensor")
        result = self.arithmetic(values)
        return result if result.kind == "tensor" else replace(result, kind="tensor")

    def dataset_item(self, dataset, node, frame: Frame | None):
        if isinstance(dataset, Dataset):
            return dataset.item
        if isinstance(dataset, Items):
            return self.dataset_item(dataset.elem, node, frame)
        if isinstance(dataset, (Inst, Mod)) and dataset.obj is not None:
            found = self.project.find_method(dataset.obj.cls, "__getitem__")
            if found is not None:
                site = where(frame.module, node) if frame is not None and node is not None else None
                return self.call_function(found[0].module, found[1], [T("num", "int")], {}, dataset, site)
        return UNKNOWN

    def collate(self, item, site: str):
        """What torch's default collate makes of one sample."""
        if isinstance(item, T):
            if item.kind in ("pyfloat", "array", "frame") and item.f64:
                origin = item.origin or dtype_facts.born(site, dtype_facts.Birth.SAMPLE)
                if item.kind in ("pyfloat", "frame"):
                    origin = dtype_facts.collated(origin)
                return T("tensor", "f64", origin, item.doubt)
            if item.kind == "num":
                if item.dtype == "f64":
                    return T("tensor", "f64", dtype_facts.born(site, dtype_facts.Birth.DATASET_FLOAT), item.doubt)
                return T("tensor", item.dtype)
            return replace(item, kind="tensor", req=False, grads=frozenset(), param=None, buffer=False)
        if isinstance(item, Seq):
            return Seq(tuple(self.collate(i, site) for i in item.items))
        if isinstance(item, Items):
            return Items(self.collate(item.elem, site))
        if isinstance(item, DictV):
            rest = self.collate(item.rest, site) if item.rest is not None else None
            return DictV(tuple((k, self.collate(v, site)) for k, v in item.items), rest)
        return UNKNOWN

    def iterate(self, value):
        """The value one iteration of ``for x in value`` binds."""
        if isinstance(value, Loader):
            return value.batch
        if isinstance(value, Dataset):
            return value.item
        if isinstance(value, (Seq, Items)):
            return element(value)
        if isinstance(value, DictV):
            return join_all([Const(k) for k, _ in value.items]) if value.items else UNKNOWN
        if isinstance(value, T):
            return replace(value, param=None, buffer=False)
        if isinstance(value, Mod) and value.parts:
            return join_all(value.parts)
        if isinstance(value, Inst) and "__dataset__" in value.obj.attrs:
            return self.dataset_item(value, None, None)
        return UNKNOWN

    # -- what the check families record -------------------------------------------------------

    def _buffer_update(self, obj: Obj, name: str, value, stmt, frame: Frame) -> None:
        if name not in obj.buffers or self.state.no_grad or not self.state.in_forward:
            return
        req, _ = graph_of(value)
        if req:
            grad_facts.buffer_update(self.grad, self.state.outer, where(frame.module, stmt), name)

    def _inplace_buffer(self, node: ast.Call, frame: Frame, args) -> None:
        func = node.func
        if not (isinstance(func, ast.Attribute) and func.attr in ("copy_", "lerp_", "mul_", "add_", "sub_")):
            return
        target = func.value
        if isinstance(target, ast.Attribute) and target.attr != "data":
            owner = self.eval(target.value, frame)
            if isinstance(owner, (Mod, Inst)) and owner.obj is not None:
                self._buffer_update(owner.obj, target.attr, Seq(tuple(args)), node, frame)

    def _persists(self, target: ast.expr, frame: Frame) -> bool:
        """Whether the accumulator ``target`` outlives one iteration (so what it keeps piles up)."""
        if isinstance(target, ast.Attribute):
            return True
        if not isinstance(target, ast.Name):
            return False
        if frame.loops:
            return target.id not in frame.loops[-1][0]
        if frame.assigned is not None:
            return target.id not in frame.assigned
        return True

    def _grows(self, target: ast.expr, frame: Frame) -> bool:
        """Whether what the accumulator keeps grows with the length of the run: it outlives a loop over
        data or steps, or the call itself (an attribute or a global), rather than a handful of known
        iterations inside one call (``for label in range(10)``)."""
        if not isinstance(target, ast.Name) or target.id in frame.global_names or frame.assigned is None:
            return True
        for fresh, few in reversed(frame.loops):
            if target.id in fresh:
                return False  # reset by this loop: it only spans the loops inside it, already checked
            if not few:
                return True
        return False

    def _keep(self, value, node, frame: Frame, text: str, grows: bool):
        """A value kept by an accumulator that outlives the iteration; tagged when it keeps a graph."""
        token = grad_facts.retention(self.grad, value, where(frame.module, node), text, self.state, grows)
        return _tag(value, token) if token else value

    def _int_value(self, expr: ast.expr, frame: Frame) -> int | None:
        value = _const(expr)
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(expr, ast.Name):
            for stmt in frame.module.tree.body:
                if (isinstance(stmt, ast.Assign) and len(stmt.targets) == 1
                        and isinstance(stmt.targets[0], ast.Name) and stmt.targets[0].id == expr.id):
                    inner = _const(stmt.value)
                    if isinstance(inner, int) and not isinstance(inner, bool):
                        return inner
        return None

    def _import(self, stmt, frame: Frame) -> None:
        module = frame.module
        names = []
        if isinstance(stmt, ast.Import):
            for alias in stmt.names:
                names.append(alias.name)
                frame.locals.pop(alias.asname or alias.name.split(".")[0], None)
        else:
            source = self.project._absolute(module, stmt)
            names.append(source)
            for alias in stmt.names:
                qualified = f"{source}.{alias.name}" if source else alias.name
                if self.project.find_local(qualified) is not None:
                    names.append(qualified)
        site = where(module, stmt)
        for name in names:
            if name.split(".")[0] == "unsloth":
                launch_facts.cuda(self.launch, site, self.state.stack, "import unsloth")
            local = self.project.modules.get(name)
            if local is not None and local not in self.globals:
                # Importing a package runs its __init__ first.
                parts = name.split(".")
                for cut in range(1, len(parts)):
                    parent = self.project.modules.get(".".join(parts[:cut]))
                    if parent is not None:
                        self.exec_module(parent, self.state.stack + (site,))
                self.exec_module(local, self.state.stack + (site,))
        if isinstance(stmt, ast.ImportFrom):
            for alias in stmt.names:
                if alias.name != "*":
                    frame.locals.pop(alias.asname or alias.name, None)
        if frame.assigned is not None:
            self._bind_local_import(stmt, frame)

    def _bind_local_import(self, stmt, frame: Frame) -> None:
        """An import inside a function binds a local name: it shadows a module-level function or
        value of the same name inside that function (and nowhere else)."""
        if isinstance(stmt, ast.Import):
            for alias in stmt.names:
                name = alias.name if alias.asname else alias.name.split(".")[0]
                frame.locals[alias.asname or name] = self.resolve(name)
            return
        source = self.project._absolute(frame.module, stmt)
        for alias in stmt.names:
            if alias.name != "*":
                qualified = f"{source}.{alias.name}" if source else alias.name
                frame.locals[alias.asname or alias.name] = self.resolve(qualified)


def analyse(project: Project) -> Interpreter:
    return Interpreter(project).run()
