"""A small abstract interpreter over a script and its local modules (nothing is executed).

It walks the entry script top to bottom the way Python would run it: a local ``import`` runs that
module's top level at that point, calls to local functions and methods are followed (with the
abstract values of their arguments), loop bodies run twice, both branches of an ``if`` run. On the
way it records what the checks need:

- ``meetings``: a float64 tensor reaching float32 model code (nn.Linear/conv modules, ``matmul`` /
  ``@`` / ``F.linear`` with a float32 weight), with the float64's birth;
- ``forwards``: forward passes of a model that repeat (in a loop, or in a callback) with gradients
  enabled; ``training_sites``: the forward passes whose graph reaches ``.backward()``;
  ``retentions``: graph-carrying tensors kept across iterations (``losses.append(loss)``);
- ``timeline``: in execution order, ``CUDA_VISIBLE_DEVICES`` assignments, the first CUDA queries,
  and TrainingArguments / SFTConfig constructions.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass, field, replace

from .project import ClassInfo, Module, Project, display, where
from .values import (
    F32,
    UNKNOWN,
    ClassRef,
    Const,
    Dataset,
    DictV,
    Enum,
    FuncRef,
    Inst,
    Lib,
    Loader,
    Mod,
    ModRef,
    Obj,
    Origin,
    Seq,
    T,
    Unknown,
    Zip,
    drop_graph,
    graph_of,
    sources_of,
)

MAX_DEPTH = 14

MODEL_NAMES = {
    "model", "net", "network", "g", "d", "g_ema", "generator", "discriminator", "gen", "disc", "netg",
    "netd", "encoder", "decoder", "scorer", "cnn", "vae", "unet", "classifier", "regressor", "critic",
    "property_cnn", "score_cnn",
}

# torch.nn classes with float weights an input must match (the rest are parameter-free).
NN_PARAMETRIC = {
    "Linear", "Bilinear", "LazyLinear", "Conv1d", "Conv2d", "Conv3d", "ConvTranspose1d", "ConvTranspose2d",
    "ConvTranspose3d", "LazyConv1d", "LazyConv2d", "LazyConv3d", "LayerNorm", "GroupNorm", "BatchNorm1d",
    "BatchNorm2d", "BatchNorm3d", "InstanceNorm1d", "InstanceNorm2d", "InstanceNorm3d", "RMSNorm", "LSTM",
    "GRU", "RNN", "LSTMCell", "GRUCell", "RNNCell", "MultiheadAttention", "Transformer",
    "TransformerEncoder", "TransformerDecoder", "TransformerEncoderLayer", "TransformerDecoderLayer",
    "Sequential", "ModuleList", "ModuleDict", "PReLU",
}
MATMUL_OPS = {"matmul", "mm", "bmm", "mv", "addmm", "linear", "bilinear", "conv1d", "conv2d", "conv3d",
              "conv_transpose1d", "conv_transpose2d", "conv_transpose3d"}
TORCH_FACTORIES = {"randn", "rand", "zeros", "ones", "empty", "full", "linspace", "logspace", "normal", "eye",
                   "randn_like", "rand_like", "zeros_like", "ones_like", "full_like", "empty_like"}
NUMPY_F64_FACTORIES = {"zeros", "ones", "empty", "full", "linspace", "logspace", "eye", "identity",
                       "zeros_like", "ones_like", "full_like", "empty_like"}
NUMPY_RANDOM_INT = {"randint", "integers", "choice", "permutation", "shuffle", "seed", "default_rng",
                    "RandomState", "get_state", "set_state", "binomial", "poisson"}
GRAPH_DROPPING = {"detach", "item", "tolist", "numpy", "detach_", "__float__"}
TRAINING_CONFIGS = ("TrainingArguments", "Seq2SeqTrainingArguments")
DIST_MARKERS = {"LOCAL_RANK", "WORLD_SIZE", "RANK", "LOCAL_WORLD_SIZE"}
CVD = "CUDA_VISIBLE_DEVICES"

F64_DTYPES = {"torch.float64", "torch.double", "numpy.float64", "numpy.double", "float", "float64", "double",
              "builtins.float", "torch.DoubleTensor"}
F32_DTYPES = {"torch.float32", "torch.float", "numpy.float32", "numpy.single", "float32", "torch.FloatTensor"}
INT_DTYPES = {"torch.int64", "torch.long", "torch.int32", "torch.int", "numpy.int64", "numpy.int32", "int",
              "int64", "int32", "long", "torch.LongTensor", "torch.uint8", "numpy.uint8", "uint8", "bool",
              "torch.bool"}


@dataclass
class Meeting:
    site: str
    origin: Origin
    op: str
    expr: str
    stack: tuple


@dataclass
class Forward:
    site: str
    label: str
    stack: tuple
    loop: str | None
    buffers: list = field(default_factory=list)  # (site, buffer name) updated with a graph in train mode
    eval_mode: bool = False
    kept: str | None = None  # where its output is kept across calls


@dataclass
class Retention:
    site: str
    text: str
    stack: tuple
    loop: str | None


@dataclass
class Event:
    kind: str  # "env-set", "cuda", "config", "import"
    site: str
    stack: tuple
    detail: str = ""
    value: object = None  # env-set: the value (str) or None; config: (per_device, accumulation)
    owner: str | None = None  # config: the module that builds it


@dataclass
class State:
    no_grad: bool = False
    repeated: bool = False
    loop: str | None = None
    stack: tuple = ()
    in_forward: int = 0
    outer: str | None = None  # the outermost forward-call site being evaluated
    callback: bool = False


@dataclass
class Frame:
    module: Module
    locals: dict
    self_value: object = None
    returns: list = field(default_factory=list)
    assigned: set | None = None  # names a function assigns (None at module level)
    loops: list = field(default_factory=list)  # names each enclosing loop body assigns


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


def _const(node: ast.AST):
    if isinstance(node, ast.Constant):
        return node.value
    return None


def join(a, b):
    if a == b:
        return a
    if isinstance(a, Unknown):
        return b
    if isinstance(b, Unknown):
        return a
    if isinstance(a, T) and isinstance(b, T):
        f64 = a if a.f64 else b if b.f64 else None
        dtype = "f64" if f64 else (a.dtype if a.dtype == b.dtype else "?")
        kind = a.kind if a.kind == b.kind else ("tensor" if "tensor" in (a.kind, b.kind) else a.kind)
        return T(kind, dtype, f64.origin if f64 else None, a.req or b.req, a.grads | b.grads, src=a.src | b.src)
    if isinstance(a, Seq) and isinstance(b, Seq) and len(a.items) == len(b.items):
        return Seq(tuple(join(x, y) for x, y in zip(a.items, b.items, strict=False)))
    if isinstance(a, T) and a.f64:
        return a
    if isinstance(b, T) and b.f64:
        return b
    return a


def _join_all(values):
    result = UNKNOWN
    for value in values:
        result = join(result, value)
    return result


def _with_site(value, site: str):
    """A forward pass's output carries a graph from that site."""
    if isinstance(value, T):
        return replace(value, req=True, grads=value.grads | {site}, param=None, buffer=False)
    if isinstance(value, Seq):
        return Seq(tuple(_with_site(v, site) for v in value.items))
    if isinstance(value, DictV):
        return DictV(tuple((k, _with_site(v, site)) for k, v in value.items))
    if isinstance(value, Unknown):
        return T("tensor", "f32", req=True, grads=frozenset({site}))
    return value


class Interpreter:
    def __init__(self, project: Project):
        self.project = project
        self.globals: dict[Module, dict] = {}
        self.meetings: dict[tuple, Meeting] = {}
        self.forwards: dict[str, Forward] = {}
        self.training_sites: set[str] = set()
        self.feeds: dict[str, set] = {}  # forward site -> forward sites whose outputs it consumed
        self.retentions: dict[str, Retention] = {}
        self.timeline: list[Event] = []
        self.torchrun: str | None = None
        self.default_f64: str | None = None
        self.analysed: set = set()
        self._memo: dict = {}
        self._active: list = []
        self.state = State()

    # -- entry points --------------------------------------------------------------------------

    def run(self) -> Interpreter:
        self.default_f64 = self._find_default_f64()
        self.exec_module(self.project.entry, ())
        entry = self.project.entry
        for node in entry.functions.values():
            if id(node) not in self.analysed:
                self.call_function(entry, node, [], {}, None, None)
        for module in list(self.project.modules.values()):
            for info in module.classes.values():
                if any(b.rsplit(".", 1)[-1].endswith("Callback") for b in self.project.library_bases(info)):
                    self._run_callbacks(info)
        return self

    def trained(self) -> set[str]:
        """Forward sites that are part of training: their graph reaches .backward(), or their output
        (even detached, like a GAN's ``D(fake.detach())``) feeds a forward pass that does."""
        trained = set(self.training_sites)
        todo = list(trained)
        while todo:
            for source in self.feeds.get(todo.pop(), ()):
                if source not in trained:
                    trained.add(source)
                    todo.append(source)
        return trained

    def _find_default_f64(self) -> str | None:
        for module in self.project.modules.values():
            for node in ast.walk(module.tree):
                if (isinstance(node, ast.Call) and self.project.qualname(module, node.func) == "torch.set_default_dtype"
                        and node.args and self._dtype_name(module, node.args[0]) == "f64"):
                    return where(module, node)
        return None

    def _run_callbacks(self, info: ClassInfo) -> None:
        obj = Obj(info)
        inst = Inst(obj)
        saved = self.state
        for name, node in info.methods.items():
            if name.startswith("on_"):
                self.state = State(repeated=True, loop=where(info.module, node), callback=True)
                self.call_function(info.module, node, [], {}, inst, None)
        self.state = saved

    # -- modules -------------------------------------------------------------------------------

    def exec_module(self, module: Module, stack: tuple) -> None:
        if module in self.globals:
            return
        env = self.globals[module] = {}
        saved = self.state
        self.state = State(stack=stack)
        frame = Frame(module, env)
        self.exec_block(module.tree.body, frame)
        self.state = saved

    # -- statements ----------------------------------------------------------------------------

    def exec_block(self, body: list, frame: Frame) -> None:
        saved_no_grad = self.state.no_grad
        for stmt in body:
            self.exec_stmt(stmt, frame)
        self.state.no_grad = saved_no_grad

    def exec_stmt(self, stmt: ast.stmt, frame: Frame) -> None:  # noqa: C901 - one dispatch
        module = frame.module
        if isinstance(stmt, ast.Expr):
            if isinstance(stmt.value, ast.Call):
                self._grad_switch(stmt.value, frame)
            self.eval(stmt.value, frame)
        elif isinstance(stmt, ast.Assign):
            value = self.eval(stmt.value, frame)
            for target in stmt.targets:
                self.assign(target, value, frame, stmt)
        elif isinstance(stmt, ast.AnnAssign):
            if stmt.value is not None:
                self.assign(stmt.target, self.eval(stmt.value, frame), frame, stmt)
        elif isinstance(stmt, ast.AugAssign):
            value = self.eval(stmt.value, frame)
            current = self.eval(stmt.target, frame)
            if self._persists(stmt.target, frame):
                self._check_retention(value, stmt, frame, f"{ast.unparse(stmt)}")
            self.assign(stmt.target, self.binop(current, value, stmt, stmt.op, frame), frame, stmt, aug=True)
        elif isinstance(stmt, (ast.Import, ast.ImportFrom)):
            self._import(stmt, frame)
        elif isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef)):
            frame.locals[stmt.name] = FuncRef(module, stmt)
        elif isinstance(stmt, ast.ClassDef):
            info = module.classes.get(stmt.name)
            if info is not None:
                frame.locals[stmt.name] = ClassRef(info)
        elif isinstance(stmt, ast.Return):
            frame.returns.append(self.eval(stmt.value, frame) if stmt.value else Const(None))
        elif isinstance(stmt, ast.If):
            self._exec_if(stmt, frame)
        elif isinstance(stmt, (ast.For, ast.AsyncFor)):
            items = self.iterate(self.eval(stmt.iter, frame))
            self._loop(stmt, frame, lambda: self.assign(stmt.target, items, frame, stmt))
        elif isinstance(stmt, ast.While):
            self._loop(stmt, frame, lambda: self.eval(stmt.test, frame))
        elif isinstance(stmt, (ast.With, ast.AsyncWith)):
            saved = self.state.no_grad
            for item in stmt.items:
                mode = self._grad_mode(item.context_expr, module)
                if mode is not None:
                    self.state.no_grad = mode
                value = self.eval(item.context_expr, frame)
                if item.optional_vars is not None:
                    self.assign(item.optional_vars, value, frame, stmt)
            self.exec_block(stmt.body, frame)
            self.state.no_grad = saved
        elif isinstance(stmt, ast.Try) or type(stmt).__name__ == "TryStar":
            self.exec_block(stmt.body, frame)
            for handler in stmt.handlers:
                if handler.name:
                    frame.locals[handler.name] = UNKNOWN
                self.exec_block(handler.body, frame)
            self.exec_block(stmt.orelse, frame)
            self.exec_block(stmt.finalbody, frame)
        elif isinstance(stmt, ast.Match):
            for case in stmt.cases:
                self.exec_block(case.body, frame)

    def _loop(self, stmt, frame: Frame, bind) -> None:
        saved = self.state
        self.state = replace(saved, repeated=True, loop=saved.loop or where(frame.module, stmt))
        fresh = _assigned_names(stmt.body)
        if isinstance(stmt, ast.For):
            fresh |= {n.id for n in ast.walk(stmt.target) if isinstance(n, ast.Name)}
        frame.loops.append(fresh)
        for _ in range(2):
            bind()
            self.exec_block(stmt.body, frame)
        frame.loops.pop()
        self.state = saved
        self.exec_block(stmt.orelse, frame)

    def _exec_if(self, stmt: ast.If, frame: Frame) -> None:
        branch = self._static_test(stmt.test, frame)
        if branch is True:
            self.exec_block(stmt.body, frame)
            return
        if branch is False:
            self.exec_block(stmt.orelse, frame)
            return
        self.eval(stmt.test, frame)
        before = dict(frame.locals)
        self.exec_block(stmt.body, frame)
        after_body = frame.locals
        frame.locals = dict(before)
        self.exec_block(stmt.orelse, frame)
        merged = {key: join(after_body.get(key, UNKNOWN), frame.locals.get(key, UNKNOWN))
                  for key in after_body.keys() | frame.locals.keys()}
        if frame.module in self.globals and self.globals[frame.module] is after_body:
            after_body.clear()
            after_body.update(merged)
            frame.locals = after_body
        else:
            frame.locals = merged

    def _static_test(self, test: ast.expr, frame: Frame) -> bool | None:
        """``if __name__ == "__main__"`` and ``if self.training`` are decided; others are not."""
        if (isinstance(test, ast.Compare) and isinstance(test.left, ast.Name) and test.left.id == "__name__"
                and len(test.comparators) == 1 and _const(test.comparators[0]) == "__main__"):
            equal = isinstance(test.ops[0], ast.Eq)
            return (frame.module is self.project.entry) == equal
        if isinstance(test, ast.UnaryOp) and isinstance(test.op, ast.Not):
            inner = self._static_test(test.operand, frame)
            return None if inner is None else not inner
        if isinstance(test, ast.BoolOp) and isinstance(test.op, ast.And):
            first = self._static_test(test.values[0], frame)
            return False if first is False else None
        if isinstance(test, ast.Attribute) and test.attr == "training":
            owner = self.eval(test.value, frame)
            obj = owner.obj if isinstance(owner, (Mod, Inst)) else None
            if obj is not None:
                return obj.training
        return None

    # -- no_grad -------------------------------------------------------------------------------

    def _grad_mode(self, expr: ast.expr, module: Module) -> bool | None:
        """True when entering ``expr`` turns gradients off, False when it turns them on."""
        call = expr if isinstance(expr, ast.Call) else None
        name = self.project.qualname(module, call.func if call else expr) or ""
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
        return None

    def _grad_switch(self, call: ast.Call, frame: Frame) -> None:
        name = self.project.qualname(frame.module, call.func) or ""
        if name == "torch.set_grad_enabled" and call.args and isinstance(_const(call.args[0]), bool):
            self.state.no_grad = not _const(call.args[0])

    # -- assignment ----------------------------------------------------------------------------

    def assign(self, target: ast.expr, value, frame: Frame, stmt: ast.stmt, aug: bool = False) -> None:
        if isinstance(target, ast.Name):
            frame.locals[target.id] = value
        elif isinstance(target, (ast.Tuple, ast.List)):
            items = value.items if isinstance(value, Seq) else None
            for i, element in enumerate(target.elts):
                if isinstance(element, ast.Starred):
                    self.assign(element.value, UNKNOWN, frame, stmt)
                    continue
                part = items[i] if items is not None and i < len(items) else self._element(value)
                self.assign(element, part, frame, stmt)
        elif isinstance(target, ast.Attribute):
            owner = self.eval(target.value, frame)
            obj = owner.obj if isinstance(owner, (Mod, Inst)) else None
            if obj is not None:
                if isinstance(value, T) and value.param:
                    value = replace(value, param=target.attr)
                self._buffer_update(obj, target.attr, value, stmt, frame)
                if isinstance(value, T) and obj.attrs.get(target.attr) is not None:
                    old = obj.attrs[target.attr]
                    if isinstance(old, T) and old.buffer:
                        value = replace(value, buffer=True)
                obj.attrs[target.attr] = value
            elif (isinstance(owner, T) and owner.req and not self.state.no_grad) or aug:
                pass
        elif isinstance(target, ast.Subscript):
            base = self.project.qualname(frame.module, target.value)
            if base == "os.environ" and _const(target.slice) == CVD:
                self._env_set(stmt, frame, value)

    def _element(self, value):
        """One element of an iterable value when it is destructured."""
        if isinstance(value, Seq):
            return _join_all(value.items)
        if isinstance(value, T):
            return value
        return UNKNOWN

    # -- expressions ---------------------------------------------------------------------------

    def eval(self, node: ast.expr | None, frame: Frame):  # noqa: C901 - one dispatch
        if node is None:
            return UNKNOWN
        if isinstance(node, ast.Constant):
            value = node.value
            if isinstance(value, bool) or value is None or isinstance(value, str):
                return Const(value)
            if isinstance(value, float):
                return T("num", "f64")
            if isinstance(value, int):
                return T("num", "int")
            return UNKNOWN
        if isinstance(node, ast.Name):
            return self.lookup(node.id, frame)
        if isinstance(node, ast.Attribute):
            return self.attribute(node, frame)
        if isinstance(node, ast.Call):
            return self.call(node, frame)
        if isinstance(node, ast.BinOp):
            left, right = self.eval(node.left, frame), self.eval(node.right, frame)
            return self.binop(left, right, node, node.op, frame)
        if isinstance(node, ast.UnaryOp):
            return self.eval(node.operand, frame)
        if isinstance(node, (ast.Tuple, ast.List)):
            items = tuple(self.eval(e, frame) for e in node.elts)
            if items and all(isinstance(i, T) and i.kind in ("num", "pyfloat") for i in items):
                floats = [i for i in items if i.dtype == "f64"]
                if floats:
                    origin = next((i.origin for i in floats if i.origin), None)
                    return T("pyfloat", "f64", origin or Origin(where(frame.module, node), "a list of Python floats",
                                                                "np.array(..., dtype=np.float32)"))
            return Seq(items)
        if isinstance(node, ast.Dict):
            return DictV(tuple((_const(k) if k is not None else None, self.eval(v, frame))
                               for k, v in zip(node.keys, node.values, strict=False)))
        if isinstance(node, ast.Subscript):
            return self.subscript(node, frame)
        if isinstance(node, (ast.ListComp, ast.SetComp, ast.GeneratorExp)):
            return self._comprehension(node, frame, [node.elt])
        if isinstance(node, ast.DictComp):
            self._comprehension(node, frame, [node.key, node.value])
            return UNKNOWN
        if isinstance(node, ast.IfExp):
            self.eval(node.test, frame)
            return join(self.eval(node.body, frame), self.eval(node.orelse, frame))
        if isinstance(node, ast.BoolOp):
            return _join_all(self.eval(v, frame) for v in node.values)
        if isinstance(node, ast.Compare):
            self.eval(node.left, frame)
            for c in node.comparators:
                self.eval(c, frame)
            return UNKNOWN
        if isinstance(node, ast.Starred):
            return self.eval(node.value, frame)
        if isinstance(node, ast.JoinedStr):
            for v in node.values:
                if isinstance(v, ast.FormattedValue):
                    self.eval(v.value, frame)
            return Const(None)
        if isinstance(node, ast.NamedExpr):
            value = self.eval(node.value, frame)
            self.assign(node.target, value, frame, node)
            return value
        return UNKNOWN

    def _comprehension(self, node, frame: Frame, elts: list):
        saved = self.state
        self.state = replace(saved, repeated=True, loop=saved.loop or where(frame.module, node))
        inner = Frame(frame.module, dict(frame.locals), frame.self_value)
        for gen in node.generators:
            self.assign(gen.target, self.iterate(self.eval(gen.iter, inner)), inner, node)
            for cond in gen.ifs:
                self.eval(cond, inner)
        results = [self.eval(e, inner) for e in elts]
        self.state = saved
        return results[-1]

    def lookup(self, name: str, frame: Frame):
        if name in frame.locals:
            return frame.locals[name]
        module_env = self.globals.get(frame.module, {})
        if name in module_env:
            return module_env[name]
        qualified = frame.module.aliases.get(name)
        if qualified:
            return self.resolve(qualified)
        if name == "float":
            return Lib("builtins.float")
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

    def attribute(self, node: ast.Attribute, frame: Frame):
        owner = self.eval(node.value, frame)
        attr = node.attr
        if isinstance(owner, Lib):
            return Lib(f"{owner.qualname}.{attr}")
        if isinstance(owner, ModRef):
            return self.resolve(f"{owner.module.name}.{attr}")
        if isinstance(owner, (Mod, Inst)) and owner.obj is not None:
            obj = owner.obj
            if attr == "training":
                return Const(obj.training)
            value = obj.attrs.get(attr, UNKNOWN)
            if isinstance(owner, Mod) and obj.f64 and isinstance(value, T) and value.param:
                return replace(value, dtype="f64")
            if isinstance(value, Mod) and obj.f64 and not value.is_f64:
                return replace(value, f64=True)
            return value
        if isinstance(owner, T):
            if owner.kind == "frame":
                if attr == "values":
                    return self._from_pandas(owner, node, frame, ".values")
                if attr in ("iloc", "loc", "at", "iat", "T"):
                    return owner
                return UNKNOWN
            if attr in ("T", "mT", "data", "real"):
                return drop_graph(owner) if attr == "data" else owner
        return UNKNOWN

    def _from_pandas(self, frame_value: T, node: ast.AST, frame: Frame, how: str) -> T:
        if frame_value.dtype != "f64":
            return T("array", frame_value.dtype)
        origin = Origin(where(frame.module, node), f"pandas {how} gives float64",
                        ".to_numpy(dtype=np.float32)")
        return T("array", "f64", origin)

    def subscript(self, node: ast.Subscript, frame: Frame):
        base = self.project.qualname(frame.module, node.value)
        key = _const(node.slice)
        if base == "os.environ" and key in DIST_MARKERS:
            self.torchrun = self.torchrun or where(frame.module, node)
        value = self.eval(node.value, frame)
        self.eval(node.slice, frame)
        if isinstance(value, Seq):
            if isinstance(key, int) and -len(value.items) <= key < len(value.items):
                return value.items[key]
            return _join_all(value.items)
        if isinstance(value, DictV):
            return value.get(key)
        if isinstance(value, T):
            if value.kind == "frame":
                if value.dtype != "f64":
                    return value
                return T("frame", "f64", Origin(where(frame.module, node), "a pandas value is float64",
                                                 "np.float32(...) or .to_numpy(dtype=np.float32)"))
            return replace(value, param=None, buffer=False)
        if isinstance(value, Dataset):
            return value.item
        if isinstance(value, Inst) and value.obj is not None:
            return self.method(value, "__getitem__", [T("num", "int")], {}, node, frame)
        return UNKNOWN

    def binop(self, left, right, node, op, frame: Frame):
        if isinstance(op, ast.MatMult):
            self.meet(left, right, node, frame, "@")
        values = [v for v in (left, right) if isinstance(v, T)]
        if not values:
            if isinstance(left, Seq) or isinstance(right, Seq):
                return left if isinstance(left, Seq) else right
            return UNKNOWN
        tensors = [v for v in values if v.kind == "tensor"]
        arrays = [v for v in values if v.kind in ("array", "frame")]
        req = any(v.req for v in values) and not self.state.no_grad
        grads = frozenset().union(*(v.grads for v in values)) if req else frozenset()
        if tensors:
            f64 = next((v for v in tensors if v.f64), None)
            dtype = "f64" if f64 else ("f32" if any(v.dtype == "f32" for v in tensors) else tensors[0].dtype)
            src = frozenset().union(*(v.src for v in tensors))
            return T("tensor", dtype, f64.origin if f64 else None, req, grads, src=src)
        if arrays:
            f64 = next((v for v in arrays if v.f64), None)
            kind = "frame" if all(v.kind == "frame" for v in arrays) else "array"
            return T(kind, "f64" if f64 else arrays[0].dtype, f64.origin if f64 else arrays[0].origin)
        floats = [v for v in values if v.kind == "pyfloat"]
        if floats:
            return floats[0]
        return T("num", "f64" if any(v.dtype == "f64" for v in values) else values[0].dtype)

    # -- float64 meets float32 -----------------------------------------------------------------

    def meet(self, a, b, node: ast.AST, frame: Frame, op: str, exprs: tuple = ()) -> None:
        if self.default_f64:
            return
        for i, (x, y) in enumerate(((a, b), (b, a))):
            if (isinstance(x, T) and x.kind == "tensor" and x.f64 and isinstance(y, T) and y.kind == "tensor"
                    and y.dtype == "f32"):
                weight = f" float32 nn.Parameter '{y.param}'" if y.param else " a float32 tensor"
                expr = exprs[i] if i < len(exprs) else ""
                self._meeting(x, node, frame, f"{op} with{weight}", expr)

    def _meeting(self, value: T, node: ast.AST, frame: Frame, op: str, expr: str) -> None:
        site = where(frame.module, node)
        origin = value.origin or Origin(site, "a float64 tensor", "x.float()")
        key = (origin.where, site)
        if key not in self.meetings:
            self.meetings[key] = Meeting(site, origin, op, expr, self.state.stack)

    # -- calls ---------------------------------------------------------------------------------

    def call(self, node: ast.Call, frame: Frame):  # noqa: C901 - one dispatch
        module = frame.module
        func = node.func
        if isinstance(func, ast.Attribute) and not self._is_alias_path(func.value, frame):
            owner = self.eval(func.value, frame)
            if isinstance(owner, ModRef):
                callee = self.resolve(f"{owner.module.name}.{func.attr}")
                return self.call_value(callee, node, frame)
            if isinstance(owner, Lib):
                return self.library(f"{owner.qualname}.{func.attr}", node, frame)
            args, kwargs = self.arguments(node, frame)
            return self.method(owner, func.attr, args, kwargs, node, frame, receiver=func.value)
        qualified = self.project.qualname(module, func) if not self._is_bound(func, frame) else None
        if qualified:
            callee = self.resolve(qualified)
            if isinstance(callee, Lib):
                return self.library(qualified, node, frame)
            return self.call_value(callee, node, frame)
        callee = self.eval(func, frame)
        return self.call_value(callee, node, frame)

    def _is_bound(self, expr: ast.expr, frame: Frame) -> bool:
        while isinstance(expr, ast.Attribute):
            expr = expr.value
        return isinstance(expr, ast.Name) and (expr.id in frame.locals or expr.id in self.globals.get(frame.module, {}))

    def _is_alias_path(self, expr: ast.expr, frame: Frame) -> bool:
        return not self._is_bound(expr, frame) and self.project.qualname(frame.module, expr) is not None

    def arguments(self, node: ast.Call, frame: Frame) -> tuple[list, dict]:
        args = [self.eval(a, frame) for a in node.args]
        kwargs = {kw.arg: self.eval(kw.value, frame) for kw in node.keywords if kw.arg}
        for kw in node.keywords:
            if kw.arg is None:
                self.eval(kw.value, frame)
        return args, kwargs

    def call_value(self, callee, node: ast.Call, frame: Frame):
        if isinstance(callee, Lib):
            return self.library(callee.qualname, node, frame)
        args, kwargs = self.arguments(node, frame)
        return self._call_resolved(callee, args, kwargs, node, frame)

    def _call_resolved(self, callee, args, kwargs, node: ast.Call, frame: Frame):
        if isinstance(callee, Mod):
            return self.call_module(callee, args, kwargs, node, frame)
        if isinstance(callee, ClassRef):
            return self.instantiate(callee.info, args, kwargs, node, frame)
        if isinstance(callee, FuncRef):
            return self.call_function(callee.module, callee.node, args, kwargs, callee.self_value,
                                      where(frame.module, node))
        if isinstance(callee, Unknown) and _model_name(node.func):
            return self.call_module(Mod(label=ast.unparse(node.func)), args, kwargs, node, frame)
        return UNKNOWN

    def instantiate(self, info: ClassInfo, args, kwargs, node, frame: Frame):
        project = self.project
        bases = project.library_bases(info)
        obj = Obj(info)
        if any(b.startswith("torch.nn") or b.endswith(("Module", "PreTrainedModel", "LightningModule")) for b in bases):
            value = Mod(obj=obj, label=info.name)
        else:
            value = Inst(obj)
        init = project.find_method(info, "__init__")
        if init is not None:
            self.call_function(init[0].module, init[1], args, kwargs, value, where(frame.module, node))
        if isinstance(value, Inst) and project.find_method(info, "__getitem__") is not None:
            obj.attrs.setdefault("__dataset__", True)
        return value

    def call_module(self, mod: Mod, args, kwargs, node: ast.Call, frame: Frame):
        site = where(frame.module, node)
        outer = self.state.in_forward == 0 and not self.state.no_grad
        if outer and self.state.repeated and not mod.loss and mod.parametric:
            self.forwards.setdefault(site, Forward(
                site, ast.unparse(node.func), self.state.stack, self.state.loop,
                eval_mode=mod.obj is not None and not mod.obj.training))
        saved = self.state
        if outer:
            self.state = replace(saved, outer=site)
            for value in [*args, *kwargs.values()]:
                self.feeds.setdefault(site, set()).update(sources_of(value))
        result = None
        if mod.obj is not None:
            found = self.project.find_method(mod.obj.cls, "forward")
            if found is not None:
                self.state = replace(self.state, in_forward=self.state.in_forward + 1)
                result = self.call_function(found[0].module, found[1], args, kwargs, mod, site)
        if result is None:
            if mod.parametric and not mod.loss and not mod.is_f64:
                for arg_node, arg in zip(node.args, args, strict=False):
                    if isinstance(arg, T) and arg.kind == "tensor" and arg.f64:
                        self._meeting(arg, node, frame, f"{mod.label} with float32 weights", ast.unparse(arg_node))
            values = [v for v in [*args, *kwargs.values()] if isinstance(v, T)]
            req, grads = False, frozenset()
            for v in [*args, *kwargs.values()]:
                r, g = graph_of(v)
                req, grads = req or r, grads | g
            dtype = "f64" if mod.is_f64 else "f32"
            if mod.loss or not mod.parametric:
                dtype = next((v.dtype for v in values if v.kind == "tensor"), "f32")
            result = T("tensor", dtype, req=(req or mod.parametric) and not self.state.no_grad, grads=grads)
        self.state = saved
        if outer:
            result = _with_site(result, site)
        return result

    def call_function(self, module: Module, node, args, kwargs, self_value, site: str | None):
        self.analysed.add(id(node))
        if node in self._active or len(self._active) >= MAX_DEPTH:
            return UNKNOWN
        decorated_no_grad = any(self._grad_mode(d, module) for d in node.decorator_list)
        try:
            modes = tuple(v.obj.training for v in [*args, self_value] if isinstance(v, (Mod, Inst)) and v.obj)
            key = (id(node), tuple(args), tuple(sorted(kwargs.items())), self_value, modes, self.state.no_grad,
                   self.state.repeated, self.state.in_forward > 0, self.state.outer)
            hash(key)
        except TypeError:
            key = None
        if key is not None and key in self._memo:
            return self._memo[key]
        frame = Frame(module, {}, self_value, assigned=_assigned_names(node.body))
        params = node.args
        positional = [*params.posonlyargs, *params.args]
        values = list(args)
        if self_value is not None and positional:
            frame.locals[positional[0].arg] = self_value
            positional = positional[1:]
        defaults = [None] * (len(positional) - len(params.defaults)) + list(params.defaults)
        for i, param in enumerate(positional):
            if i < len(values):
                frame.locals[param.arg] = values[i]
            elif param.arg in kwargs:
                frame.locals[param.arg] = kwargs[param.arg]
            elif defaults[i] is not None and _const(defaults[i]) is not None:
                frame.locals[param.arg] = self.eval(defaults[i], Frame(module, {}))
            else:
                frame.locals[param.arg] = UNKNOWN
        for param in params.kwonlyargs:
            frame.locals[param.arg] = kwargs.get(param.arg, UNKNOWN)
        if params.vararg:
            frame.locals[params.vararg.arg] = Seq(tuple(values[len(positional):]))
        if params.kwarg:
            frame.locals[params.kwarg.arg] = DictV(tuple(kwargs.items()))
        saved = self.state
        self.state = replace(saved, stack=saved.stack + ((site,) if site else ()),
                             no_grad=saved.no_grad or decorated_no_grad)
        self._active.append(node)
        try:
            self.exec_block(node.body, frame)
        finally:
            self._active.pop()
            self.state = saved
        result = _join_all(frame.returns) if frame.returns else Const(None)
        if decorated_no_grad or self.state.no_grad:
            result = drop_graph(result)
        if key is not None:
            self._memo[key] = result
        return result

    # -- methods -------------------------------------------------------------------------------

    def method(self, owner, name: str, args, kwargs, node: ast.Call, frame: Frame, receiver=None):  # noqa: C901
        site = where(frame.module, node)
        if name == "backward":
            self.training_sites |= graph_of(owner)[1]
            return Const(None)
        self._inplace_buffer(node, frame, args)
        if name in ("cuda",) or (name == "to" and self._cuda_arg(node, frame)):
            self._cuda_event(node, frame, f".{name}({'cuda' if name == 'to' else ''})")
        if name in ("append", "extend", "insert") and args and receiver is not None and self._persists(receiver, frame):
            self._check_retention(args[-1], node, frame, ast.unparse(node))
        if name == "setdefault" and receiver is not None and self.project.qualname(frame.module, receiver) == "os.environ":
            if node.args and _const(node.args[0]) == CVD:
                self._env_set(node, frame, args[1] if len(args) > 1 else UNKNOWN)
        if isinstance(owner, (Mod, Inst)) and owner.obj is not None and name in owner.obj.attrs:
            callee = owner.obj.attrs[name]
            if isinstance(callee, Mod):
                if owner.obj.f64 and not callee.is_f64:
                    callee = replace(callee, f64=True)
                return self.call_module(callee, args, kwargs, node, frame)
            if isinstance(callee, (FuncRef, ClassRef)):
                return self._call_resolved(callee, args, kwargs, node, frame)
        if isinstance(owner, (Mod, Inst)) and owner.obj is not None and receiver is not None \
                and self.project.find_method(owner.obj.cls, name) is None and _model_name_text(name):
            return self.call_module(Mod(label=ast.unparse(node.func)), args, kwargs, node, frame)
        if isinstance(owner, Unknown) and _model_name_text(name) and name not in ("generate",):
            return self.call_module(Mod(label=ast.unparse(node.func)), args, kwargs, node, frame)
        if isinstance(owner, Mod):
            return self._module_method(owner, name, args, kwargs, node, frame)
        if isinstance(owner, Inst):
            found = self.project.find_method(owner.obj.cls, name)
            if found is not None:
                return self.call_function(found[0].module, found[1], args, kwargs, owner, site)
            return UNKNOWN
        if isinstance(owner, Lib):
            return UNKNOWN
        if isinstance(owner, T) or isinstance(owner, Unknown):
            return self._tensor_method(owner, name, args, kwargs, node, frame)
        if isinstance(owner, (Loader, Dataset)):
            return owner
        return UNKNOWN

    def _module_method(self, mod: Mod, name, args, kwargs, node, frame):
        obj = mod.obj
        if name in ("eval", "train"):
            training = name == "train" and (not node.args or _const(node.args[0]) is not False)
            if obj is not None:
                obj.training = training
            return mod
        if name in ("double", "float", "half", "bfloat16") or (name == "to" and self._dtype_arg(node, frame)):
            to_f64 = name == "double" or (name == "to" and self._dtype_arg(node, frame) == "f64")
            if obj is not None:
                obj.f64 = to_f64
                return mod
            return replace(mod, f64=to_f64)
        if name in ("to", "cuda", "cpu", "requires_grad_", "zero_grad", "apply"):
            return mod
        if name == "generate":
            return T("tensor", "int")  # Hugging Face generate() runs under torch.no_grad()
        if name == "register_buffer" and obj is not None and node.args and len(args) > 1:
            key = _const(node.args[0])
            if isinstance(key, str):
                value = args[1]
                obj.attrs[key] = replace(value, buffer=True) if isinstance(value, T) else value
                obj.buffers.add(key)
            return Const(None)
        if name == "register_parameter" and obj is not None and node.args and len(args) > 1:
            key = _const(node.args[0])
            if isinstance(key, str):
                obj.attrs[key] = args[1]
            return Const(None)
        if name == "forward":
            return self.call_module(mod, args, kwargs, node, frame)
        if obj is not None:
            found = self.project.find_method(obj.cls, name)
            if found is not None:
                return self.call_function(found[0].module, found[1], args, kwargs, mod,
                                          where(frame.module, node))
        return UNKNOWN

    def _tensor_method(self, owner, name, args, kwargs, node, frame):  # noqa: C901
        site = where(frame.module, node)
        value = owner if isinstance(owner, T) else None
        if name == "double":
            base = value or T("tensor")
            kind = "tensor" if base.kind in ("tensor", "num", "pyfloat") or isinstance(owner, Unknown) else base.kind
            return T(kind, "f64", Origin(site, "`.double()` makes it float64", "`.float()` instead of `.double()`"),
                     base.req, base.grads)
        if name == "float":
            base = value or T("tensor")
            return replace(base, kind="tensor" if base.kind != "array" else "array", dtype="f32", origin=None,
                           param=None, buffer=False)
        if name in ("to", "type", "astype"):
            dtype = self._dtype_arg(node, frame)
            if value is None:
                if dtype == "f64":
                    return T("tensor", "f64", Origin(site, f"`.{name}(float64)` makes it float64",
                                                     f"`.{name}(torch.float32)`"))
                return T("tensor", dtype or "?") if dtype else UNKNOWN
            if dtype == "f64":
                if value.f64:
                    return value
                return replace(value, dtype="f64", origin=Origin(
                    site, f"`.{name}(...)` makes it float64",
                    "`.astype(np.float32)`" if name == "astype" else f"`.{name}(torch.float32)`"))
            if dtype is not None:
                return replace(value, dtype=dtype, origin=None, param=None, buffer=False)
            return replace(value, param=None, buffer=False)
        if value is None:
            if name == "item":
                return T("num")
            return UNKNOWN
        if value.kind == "frame":
            if name == "to_numpy":
                dtype = self._dtype_arg(node, frame)
                if dtype and dtype != "f64":
                    return T("array", dtype)
                return self._from_pandas(value, node, frame, ".to_numpy()")
            if name == "tolist":
                if value.dtype != "f64":
                    return UNKNOWN
                return T("pyfloat", "f64", Origin(site, "pandas .tolist() gives Python floats",
                                                   ".to_numpy(dtype=np.float32)"))
            if name in ("to_dict", "iterrows", "itertuples"):
                return UNKNOWN
            return value
        if name in GRAPH_DROPPING:
            if name == "numpy":
                return replace(value, kind="array", req=False, grads=frozenset(), param=None, buffer=False)
            if name in ("item", "tolist"):
                if value.f64:
                    return T("pyfloat", "f64", value.origin)
                return T("num", value.dtype)
            return drop_graph(replace(value, param=None, buffer=False))
        if name in ("copy_", "lerp_", "mul_", "add_", "sub_", "div_", "fill_", "zero_", "clamp_"):
            return value
        if name in ("size", "dim", "numel", "shape", "tolist", "any", "all", "nelement", "element_size"):
            return UNKNOWN
        if value.kind == "array" and name in ("mean", "std", "sum", "min", "max", "reshape", "flatten", "copy",
                                                "squeeze", "transpose", "clip", "round"):
            return value
        result = replace(value, param=None, buffer=False)
        if self.state.no_grad:
            result = drop_graph(result)
        return result

    def _dtype_arg(self, node: ast.Call, frame: Frame) -> str | None:
        candidates = [kw.value for kw in node.keywords if kw.arg == "dtype"] + list(node.args)
        for expr in candidates:
            dtype = self._dtype_name(frame.module, expr, frame)
            if dtype:
                return dtype
        return None

    def _dtype_name(self, module: Module, expr: ast.expr, frame: Frame | None = None) -> str | None:
        name = self.project.qualname(module, expr)
        if name is None and isinstance(expr, ast.Constant) and isinstance(expr.value, str):
            name = expr.value
        if name is None and isinstance(expr, ast.Name) and expr.id in ("float", "int", "bool"):
            name = expr.id
        if name is None and frame is not None and isinstance(expr, (ast.Name, ast.Attribute)):
            value = self.eval(expr, frame)
            if isinstance(value, Lib):
                name = value.qualname
            elif isinstance(value, Const) and isinstance(value.value, str):
                name = value.value
        if name is None:
            return None
        name = name.replace("torch.cuda.", "torch.")
        if name in F64_DTYPES:
            return "f64"
        if name in F32_DTYPES:
            return "f32"
        if name in INT_DTYPES:
            return "int"
        if name in ("torch.float16", "torch.half", "torch.bfloat16", "numpy.float16", "float16", "bfloat16"):
            return "f16"
        return None

    def _cuda_arg(self, node: ast.Call, frame: Frame) -> bool:
        for expr in [*node.args, *(kw.value for kw in node.keywords if kw.arg == "device")]:
            text = _const(expr)
            if isinstance(text, str) and text.startswith("cuda"):
                return True
            if isinstance(expr, ast.Call) and self.project.qualname(frame.module, expr.func) == "torch.device":
                if expr.args and isinstance(_const(expr.args[0]), str) and _const(expr.args[0]).startswith("cuda"):
                    return True
            if isinstance(expr, ast.Name):
                value = self.lookup(expr.id, frame)
                if isinstance(value, Const) and isinstance(value.value, str) and value.value.startswith("cuda"):
                    return True
        return False

    # -- library calls -------------------------------------------------------------------------

    def library(self, q: str, node: ast.Call, frame: Frame):  # noqa: C901 - the library model
        args, kwargs = self.arguments(node, frame)
        module = frame.module
        site = where(module, node)
        short = q.rsplit(".", 1)[-1]
        first = args[0] if args else UNKNOWN
        dtype = self._dtype_arg(node, frame) if any(kw.arg == "dtype" for kw in node.keywords) else None

        # environment, launch and CUDA
        if q in ("os.environ.update",) and args and isinstance(first, DictV):
            if any(k == CVD for k, _ in first.items):
                self._env_set(node, frame, first.get(CVD))
            return Const(None)
        if q == "os.environ.setdefault" and node.args and _const(node.args[0]) == CVD:
            self._env_set(node, frame, args[1] if len(args) > 1 else UNKNOWN)
            return Const(None)
        if q in ("os.putenv",) and node.args and _const(node.args[0]) == CVD:
            self._env_set(node, frame, args[1] if len(args) > 1 else UNKNOWN)
            return Const(None)
        if q in ("os.environ.get", "os.getenv") and node.args and _const(node.args[0]) in DIST_MARKERS:
            self.torchrun = self.torchrun or site
            return UNKNOWN
        if q in ("torch.distributed.init_process_group", "accelerate.Accelerator",
                 "torch.nn.parallel.DistributedDataParallel"):
            self.torchrun = self.torchrun or site
            return Lib(q + "()")
        if short == "backward" and args:
            self.training_sites |= graph_of(first)[1]
            return Const(None)
        if q.startswith("torch.cuda.") and not q.startswith(("torch.cuda.amp", "torch.cuda.manual_seed")) \
                and short[:1].islower():
            self._cuda_event(node, frame, f"{q.replace('torch.cuda.', 'torch.cuda.')}()")
            if short == "device_count":
                return T("num", "int")
            return UNKNOWN
        if short in TRAINING_CONFIGS or (q.startswith("trl.") and short.endswith("Config")):
            self._config_event(node, frame, short)
            return Lib(q + "()")
        if q == "torch.set_grad_enabled":
            return UNKNOWN

        # grad bookkeeping
        if q == "torch.autograd.grad":
            outputs = kwargs.get("outputs", first)
            self.training_sites |= graph_of(outputs)[1]
            return UNKNOWN
        if short in ("no_grad", "inference_mode", "enable_grad"):
            return UNKNOWN

        # builtins and iteration helpers
        if q == "builtins.float":
            return T("pyfloat", "f64", Origin(site, "`float(...)` is a Python float", "np.float32(...)"))
        if q in ("enumerate", "builtins.enumerate"):
            return Enum(first)
        if q.endswith("tqdm") or q in ("iter", "list", "tuple", "sorted", "reversed"):
            return first
        if q in ("zip",):
            return Zip(tuple(args))
        if q == "next":
            return self.iterate(first)
        if q == "sum":
            return first if isinstance(first, T) else UNKNOWN
        if q in ("len", "int", "range", "round", "min", "max", "abs", "print", "isinstance", "str", "repr",
                 "getattr", "hasattr", "setattr", "open", "super", "dict", "set", "bool", "type", "id"):
            if q == "int":
                return T("num", "int")
            return UNKNOWN

        # numpy
        if q.startswith("numpy.random."):
            if short in NUMPY_RANDOM_INT:
                return Lib("numpy.random.Generator") if short in ("default_rng", "RandomState") else T("array", "int")
            return self._np_random(short, dtype, site)
        if q.startswith("numpy.random.Generator.") or q.startswith("numpy.random.RandomState."):
            if short in NUMPY_RANDOM_INT:
                return T("array", "int")
            return self._np_random(short, dtype, site)
        if q.startswith("numpy."):
            return self._numpy(q, short, args, dtype, site)

        # pandas
        if q.startswith("pandas.") and short.startswith(("read_", "DataFrame", "Series", "concat", "merge")):
            return T("frame", "f64")

        # torch values
        if q in ("torch.tensor", "torch.as_tensor", "torch.asarray"):
            if dtype:
                return T("tensor", dtype, self._born(dtype, site, q))
            return self._to_tensor(first, site)
        if q == "torch.from_numpy":
            if isinstance(first, T) and first.f64:
                return T("tensor", "f64", first.origin or Origin(site, "a float64 numpy array", ".astype(np.float32)"))
            return T("tensor", first.dtype if isinstance(first, T) else "?")
        if q in ("torch.Tensor", "torch.FloatTensor", "torch.cuda.FloatTensor"):
            return F32
        if q in ("torch.DoubleTensor", "torch.cuda.DoubleTensor"):
            return T("tensor", "f64", Origin(site, "torch.DoubleTensor is float64", "torch.FloatTensor"))
        if q in ("torch.LongTensor", "torch.randint", "torch.randperm", "torch.multinomial", "torch.argmax"):
            return T("tensor", "int")
        if q.startswith("torch.") and short in TORCH_FACTORIES:
            if dtype:
                return T("tensor", dtype, self._born(dtype, site, q))
            if short.endswith("_like") and isinstance(first, T):
                return T("tensor", first.dtype, first.origin)
            return T("tensor", "f64" if self.default_f64 else "f32")
        if q == "torch.arange":
            if dtype:
                return T("tensor", dtype, self._born(dtype, site, q))
            floats = any(isinstance(a, T) and a.dtype == "f64" and a.kind == "num" for a in args)
            return T("tensor", "f32" if floats else "int")
        if q in ("torch.nn.Parameter", "torch.nn.parameter.Parameter"):
            base = first if isinstance(first, T) else F32
            return replace(base, kind="tensor", param=self._param_name(node), req=True, grads=frozenset())
        if q in ("torch.stack", "torch.cat", "torch.concat", "torch.concatenate", "torch.hstack", "torch.vstack"):
            items = first.items if isinstance(first, Seq) else [first]
            result = _join_all(items)
            return result if isinstance(result, T) else UNKNOWN
        if q.startswith(("torch.", "torch.nn.functional.")) and short in MATMUL_OPS:
            exprs = tuple(ast.unparse(a) for a in node.args[:2])
            if len(args) >= 2:
                op = f"{q.replace('torch.nn.functional.', 'F.')}()"
                self.meet(args[0], args[1], node, frame, op, exprs)
            return self._torch_result(args, kwargs)
        if q.startswith("torch.nn.") and short[:1].isupper() and q.count(".") in (2, 3):
            if short in ("Parameter", "ParameterList", "ParameterDict"):
                return UNKNOWN
            is_loss = short.endswith("Loss")
            return Mod(builtin=short, parametric=short in NN_PARAMETRIC, loss=is_loss, label=f"nn.{short}")
        if q in ("torch.utils.data.DataLoader", "torch.utils.data.dataloader.DataLoader"):
            dataset = kwargs.get("dataset", first)
            if any(kw.arg == "collate_fn" for kw in node.keywords):
                return Loader(UNKNOWN)
            return Loader(self.collate(self._dataset_item(dataset, node, frame), site))
        if q in ("torch.utils.data.TensorDataset",):
            return Dataset(Seq(tuple(args)))
        if q in ("torch.utils.data.random_split",):
            return Seq((first, first))
        if q in ("torch.utils.data.Subset",):
            return first
        if q.startswith("torch.") and not q.startswith(("torch.utils", "torch.optim", "torch.distributed")):
            if short[:1].isupper():
                return Lib(q + "()")  # GradScaler(), device objects ...
            return self._torch_result(args, kwargs)

        # models from libraries
        if short == "from_pretrained" or q.endswith(("get_peft_model", "prepare_model_for_kbit_training")):
            lowered = q.lower()
            if "tokenizer" in lowered or "config" in lowered or "processor" in lowered:
                return UNKNOWN
            if "fastlanguagemodel" in lowered or "fastmodel" in lowered:
                return Seq((Mod(label="model"), UNKNOWN))
            return Mod(label="model")
        if q.startswith("torchvision.models.") and short[:1].islower():
            return Mod(label=short)
        return UNKNOWN

    def _param_name(self, node: ast.AST) -> str:
        return "weight"

    def _born(self, dtype: str, site: str, q: str) -> Origin | None:
        if dtype != "f64":
            return None
        return Origin(site, f"`{q.replace('torch.', 'torch.')}(..., dtype=float64)` is float64", "dtype=torch.float32")

    def _np_random(self, short: str, dtype: str | None, site: str) -> T:
        if dtype and dtype != "f64":
            return T("array", dtype)
        return T("array", "f64", Origin(site, f"np.random.{short}(...) is float64", f"np.random.{short}(...).astype(np.float32)"))

    def _numpy(self, q: str, short: str, args, dtype, site: str):
        first = args[0] if args else UNKNOWN
        if short in ("float32", "single"):
            return T("array", "f32")
        if short in ("float64", "double"):
            return T("array", "f64", Origin(site, f"np.{short}(...) is float64", "np.float32(...)"))
        if short in ("array", "asarray", "stack", "concatenate", "vstack", "hstack", "asanyarray", "copy"):
            if dtype:
                return T("array", dtype, Origin(site, f"np.{short}(..., dtype=float64)", "dtype=np.float32")
                         if dtype == "f64" else None)
            items = first.items if isinstance(first, Seq) else [first]
            values = [v for v in items if isinstance(v, T)]
            if any(v.f64 for v in values):
                source = next(v for v in values if v.f64)
                if source.kind in ("array",) and source.origin:
                    return T("array", "f64", source.origin)
                return T("array", "f64", Origin(site, f"np.{short}(...) of floats is float64",
                                                f"np.{short}(..., dtype=np.float32)"))
            if values:
                return T("array", values[0].dtype)
            return UNKNOWN
        if short in NUMPY_F64_FACTORIES:
            if dtype:
                return T("array", dtype)
            return T("array", "f64", Origin(site, f"np.{short}(...) is float64", f"np.{short}(..., dtype=np.float32)"))
        if short == "arange":
            return T("array", "int")
        arrays = [v for v in args if isinstance(v, T) and v.kind in ("array", "frame", "pyfloat", "num")]
        if arrays:
            f64 = next((v for v in arrays if v.f64 and v.kind != "num"), None)
            if f64 is not None:
                return T("array", "f64", f64.origin)
            return T("array", arrays[0].dtype)
        return UNKNOWN

    def _to_tensor(self, value, site: str):
        if isinstance(value, T):
            if value.kind in ("array", "frame") and value.f64:
                return T("tensor", "f64", value.origin or Origin(site, "a float64 array", ".astype(np.float32)"))
            if value.kind in ("pyfloat", "num"):
                return T("tensor", "f64" if self.default_f64 else ("f32" if value.dtype == "f64" else value.dtype))
            return replace(value, kind="tensor", param=None, buffer=False)
        if isinstance(value, Seq):
            inner = _join_all(value.items)
            if isinstance(inner, T) and inner.kind in ("tensor", "array") and inner.f64:
                return T("tensor", "f64", inner.origin)
            return T("tensor", "f64" if self.default_f64 else "f32")
        return T("tensor")

    def _torch_result(self, args, kwargs):
        values = [v for v in [*args, *kwargs.values()] if isinstance(v, T) and v.kind == "tensor"]
        if not values:
            return T("tensor")
        f64 = next((v for v in values if v.f64), None)
        req = any(v.req for v in values) and not self.state.no_grad
        grads = frozenset().union(*(v.grads for v in values)) if req else frozenset()
        src = frozenset().union(*(v.src for v in values))
        return T("tensor", "f64" if f64 else values[0].dtype, f64.origin if f64 else None, req, grads, src=src)

    # -- data ----------------------------------------------------------------------------------

    def _dataset_item(self, dataset, node, frame):
        if isinstance(dataset, Dataset):
            return dataset.item
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
                origin = item.origin or Origin(site, "a float64 sample", "np.float32(...)")
                what, fix = origin.what, origin.fix
                if item.kind in ("pyfloat", "frame"):
                    what += " returned by the Dataset; the DataLoader's default collate makes it a float64 tensor"
                    fix = "return torch.tensor(..., dtype=torch.float32) from __getitem__"
                return T("tensor", "f64", replace(origin, what=what, fix=fix))
            if item.kind == "num":
                if item.dtype == "f64":
                    return T("tensor", "f64", Origin(site, "a Python float from the Dataset; the DataLoader's "
                                                     "default collate turns it into a float64 tensor",
                                                     "torch.tensor(..., dtype=torch.float32)"))
                return T("tensor", item.dtype)
            return replace(item, kind="tensor", req=False, grads=frozenset(), param=None, buffer=False)
        if isinstance(item, Seq):
            return Seq(tuple(self.collate(i, site) for i in item.items))
        if isinstance(item, DictV):
            return DictV(tuple((k, self.collate(v, site)) for k, v in item.items))
        return UNKNOWN

    def iterate(self, value):
        """The value one iteration of ``for x in value`` binds."""
        if isinstance(value, Loader):
            return value.batch
        if isinstance(value, Dataset):
            return value.item
        if isinstance(value, Enum):
            return Seq((T("num", "int"), self.iterate(value.inner)))
        if isinstance(value, Zip):
            return Seq(tuple(self.iterate(p) for p in value.parts))
        if isinstance(value, Seq):
            return _join_all(value.items)
        if isinstance(value, T):
            return replace(value, param=None, buffer=False)
        if isinstance(value, Inst) and "__dataset__" in value.obj.attrs:
            return self._dataset_item(value, None, None)
        return UNKNOWN

    # -- events --------------------------------------------------------------------------------

    def _buffer_update(self, obj: Obj, name: str, value, stmt, frame: Frame) -> None:
        if name not in obj.buffers or self.state.no_grad or not self.state.in_forward:
            return
        req, _ = graph_of(value)
        if req and self.state.outer in self.forwards:
            self.forwards[self.state.outer].buffers.append((where(frame.module, stmt), name))

    def _inplace_buffer(self, node: ast.Call, frame: Frame, args) -> None:
        func = node.func
        if not (isinstance(func, ast.Attribute) and func.attr in ("copy_", "lerp_", "mul_", "add_", "sub_")):
            return
        target = func.value
        if isinstance(target, ast.Attribute) and target.attr == "data":
            return
        if isinstance(target, ast.Attribute):
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
            return target.id not in frame.loops[-1]
        if frame.assigned is not None:
            return target.id not in frame.assigned
        return True

    def _check_retention(self, value, node, frame: Frame, text: str) -> None:
        req, _ = graph_of(value)
        if req and not self.state.no_grad and self.state.repeated and not self.state.in_forward:
            site = where(frame.module, node)
            self.retentions.setdefault(site, Retention(site, text, self.state.stack, self.state.loop))

    def _env_set(self, node, frame: Frame, value) -> None:
        text = value.value if isinstance(value, Const) and isinstance(value.value, str) else None
        self.timeline.append(Event("env-set", where(frame.module, node), self.state.stack, value=text))

    def _cuda_event(self, node, frame: Frame, detail: str) -> None:
        self.timeline.append(Event("cuda", where(frame.module, node), self.state.stack, detail))

    def _config_event(self, node: ast.Call, frame: Frame, cls: str) -> None:
        per_device, accumulation = 8, 1
        for kw in node.keywords:
            value = self._int_value(kw.value, frame)
            if kw.arg == "per_device_train_batch_size" and value is not None:
                per_device = value
            elif kw.arg == "gradient_accumulation_steps" and value is not None:
                accumulation = value
        self.timeline.append(Event("config", where(frame.module, node), self.state.stack, cls,
                                   (per_device, accumulation), owner=display(frame.module.path)))

    def _int_value(self, expr: ast.expr, frame: Frame) -> int | None:
        value = _const(expr)
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(expr, ast.Name):
            for module in (frame.module,):
                for stmt in module.tree.body:
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
                bound = alias.asname or alias.name.split(".")[0]
                frame.locals.pop(bound, None)
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
                self.timeline.append(Event("cuda", site, self.state.stack, "import unsloth"))
            local = self.project.modules.get(name)
            if local is not None and local not in self.globals:
                # Importing a package runs its __init__ first.
                parts = name.split(".")
                for cut in range(1, len(parts)):
                    parent = self.project.modules.get(".".join(parts[:cut]))
                    if parent is not None:
                        self.exec_module(parent, self.state.stack + (site,))
                before = len(self.timeline)
                self.exec_module(local, self.state.stack + (site,))
                for event in self.timeline[before:]:
                    event.detail = event.detail or ""
        if isinstance(stmt, ast.ImportFrom):
            for alias in stmt.names:
                if alias.name != "*":
                    frame.locals.pop(alias.asname or alias.name, None)


def _model_name(expr: ast.expr) -> bool:
    name = expr.id if isinstance(expr, ast.Name) else expr.attr if isinstance(expr, ast.Attribute) else ""
    return _model_name_text(name)


def _model_name_text(name: str) -> bool:
    lowered = name.lower()
    return lowered in MODEL_NAMES or lowered.endswith(("_model", "_net", "_generator", "_cnn"))


def analyse(project: Project) -> Interpreter:
    return Interpreter(project).run()
