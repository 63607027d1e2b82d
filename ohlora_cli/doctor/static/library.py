"""What library calls do to the abstract values: one table, keyed by qualified name.

``handler(name)`` finds the rule for a qualified name (``torch.from_numpy``, ``builtins.zip``,
``accelerate.Accelerator().backward`` for a method of a library object): an exact entry first, then
the families below in order. A name with no rule is *unmodelled*: the interpreter gives its result
no dtype, lets graphs pass through it, and notes where a graph escaped into code it cannot see.

Each rule takes a ``Call`` (the evaluated arguments, the AST node, the interpreter) and returns the
abstract value of the result.
"""

from __future__ import annotations

import ast
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from . import dtype as dtype_facts
from . import grad as grad_facts
from . import launch as launch_facts
from .project import display
from .values import (
    NONE,
    UNKNOWN,
    ClassRef,
    Const,
    Dataset,
    DictV,
    FuncRef,
    Items,
    Lib,
    Loader,
    Mod,
    Origin,
    Seq,
    T,
    join_all,
    opaque,
    scalar,
)

CVD = "CUDA_VISIBLE_DEVICES"
DIST_MARKERS = {"LOCAL_RANK", "WORLD_SIZE", "RANK", "LOCAL_WORLD_SIZE"}

# torch.nn classes with float weights an input must match (the rest are parameter-free).
NN_PARAMETRIC = {
    "Linear", "Bilinear", "LazyLinear", "Conv1d", "Conv2d", "Conv3d", "ConvTranspose1d", "ConvTranspose2d",
    "ConvTranspose3d", "LazyConv1d", "LazyConv2d", "LazyConv3d", "LayerNorm", "GroupNorm", "BatchNorm1d",
    "BatchNorm2d", "BatchNorm3d", "InstanceNorm1d", "InstanceNorm2d", "InstanceNorm3d", "RMSNorm", "LSTM",
    "GRU", "RNN", "LSTMCell", "GRUCell", "RNNCell", "MultiheadAttention", "Transformer", "Embedding",
    "TransformerEncoder", "TransformerDecoder", "TransformerEncoderLayer", "TransformerDecoderLayer",
    "Sequential", "ModuleList", "ModuleDict", "PReLU",
}
NN_CONTAINERS = {"Sequential", "ModuleList"}
MATMUL_OPS = {"matmul", "mm", "bmm", "mv", "addmm", "linear", "bilinear", "conv1d", "conv2d", "conv3d",
              "conv_transpose1d", "conv_transpose2d", "conv_transpose3d", "einsum"}
TORCH_FACTORIES = {"randn", "rand", "zeros", "ones", "empty", "full", "linspace", "logspace", "normal", "eye",
                   "randn_like", "rand_like", "zeros_like", "ones_like", "full_like", "empty_like"}
LOSS_FUNCTIONS = {"cross_entropy", "nll_loss", "binary_cross_entropy", "binary_cross_entropy_with_logits",
                  "huber_loss"}
TORCH_JOINS = {"stack", "cat", "concat", "concatenate", "hstack", "vstack", "dstack", "column_stack", "row_stack"}
TORCH_INT = {"randint", "randperm", "multinomial", "argmax", "argmin", "argsort", "bincount", "nonzero",
             "LongTensor", "IntTensor", "BoolTensor", "ByteTensor"}
NUMPY_F64_FACTORIES = {"zeros", "ones", "empty", "full", "linspace", "logspace", "eye", "identity",
                       "zeros_like", "ones_like", "full_like", "empty_like", "loadtxt", "genfromtxt"}
NUMPY_JOINS = {"array", "asarray", "stack", "concatenate", "vstack", "hstack", "asanyarray", "copy",
               "column_stack", "dstack"}
NUMPY_RANDOM_INT = {"randint", "integers", "choice", "permutation", "shuffle", "seed", "default_rng",
                    "RandomState", "get_state", "set_state", "binomial", "poisson"}
TRAINING_CONFIGS = ("TrainingArguments", "Seq2SeqTrainingArguments")

# np.float_ and np.float (NumPy < 2 / < 1.24) were aliases of float64.
F64_DTYPES = {"torch.float64", "torch.double", "numpy.float64", "numpy.double", "float", "float64", "double",
              "builtins.float", "torch.DoubleTensor", "numpy.float_", "numpy.float"}
F32_DTYPES = {"torch.float32", "torch.float", "numpy.float32", "numpy.single", "float32", "torch.FloatTensor"}
F16_DTYPES = {"torch.float16", "torch.half", "torch.bfloat16", "numpy.float16", "float16", "bfloat16", "half",
              "torch.HalfTensor", "torch.BFloat16Tensor"}
INT_DTYPES = {"torch.int64", "torch.long", "torch.int32", "torch.int", "numpy.int64", "numpy.int32", "int",
              "builtins.int", "int64", "int32", "long", "torch.LongTensor", "torch.uint8", "numpy.uint8", "uint8",
              "bool", "builtins.bool", "torch.bool", "torch.IntTensor", "torch.int16", "torch.int8"}


def dtype_of_name(name: str | None) -> str | None:
    if name is None:
        return None
    name = name.replace("torch.cuda.", "torch.")
    for dtype, names in (("f64", F64_DTYPES), ("f32", F32_DTYPES), ("f16", F16_DTYPES), ("int", INT_DTYPES)):
        if name in names:
            return dtype
    return None


@dataclass
class Call:
    """One library call being evaluated."""

    interp: Any  # the Interpreter
    name: str  # qualified name
    node: ast.Call
    frame: Any
    args: list
    kwargs: dict

    @property
    def short(self) -> str:
        return self.name.rsplit(".", 1)[-1]

    @property
    def first(self):
        return self.args[0] if self.args else UNKNOWN

    @property
    def site(self) -> str:
        return self.interp.where(self.frame, self.node)

    @property
    def stack(self) -> tuple:
        return self.interp.state.stack

    def launched(self, what: str) -> None:
        launch_facts.launched(self.interp.launch, self.site, what, self.interp.state.branch)

    def config(self, cls: str, *, from_cli: bool = False) -> None:
        launch_facts.config(self.interp.launch, self.node, self.site, self.stack, cls, display(self.frame.module.path),
                            lambda expr: self.interp._int_value(expr, self.frame), from_cli=from_cli)

    def trains(self, value) -> None:
        grad_facts.trains(self.interp.grad, value)

    def arg(self, index: int, keyword: str):
        if keyword in self.kwargs:
            return self.kwargs[keyword]
        return self.args[index] if len(self.args) > index else UNKNOWN

    def const_arg(self, index: int = 0):
        if len(self.node.args) > index and isinstance(self.node.args[index], ast.Constant):
            return self.node.args[index].value
        return None

    def dtype(self) -> str | None:
        """The ``dtype=`` keyword, resolved."""
        for kw in self.node.keywords:
            if kw.arg == "dtype":
                return self.interp.dtype_name(kw.value, self.frame)
        return None

    def dtype_anywhere(self) -> str | None:
        """A dtype given by keyword or positionally (``.to(torch.float64)``, ``.type(torch.FloatTensor)``)."""
        candidates = [kw.value for kw in self.node.keywords if kw.arg == "dtype"] + list(self.node.args)
        for expr in candidates:
            dtype = self.interp.dtype_name(expr, self.frame)
            if dtype:
                return dtype
        return None


Handler = Callable[[Call], Any]
EXACT: dict[str, Handler] = {}
FAMILIES: list[tuple[Callable[[str, str], bool], Handler]] = []


def rule(*names: str):
    def register(fn: Handler) -> Handler:
        for name in names:
            EXACT[name] = fn
        return fn
    return register


def family(test: Callable[[str, str], bool]):
    def register(fn: Handler) -> Handler:
        FAMILIES.append((test, fn))
        return fn
    return register


def handler(name: str) -> Handler | None:
    found = EXACT.get(name)
    if found is not None:
        return found
    short = name.rsplit(".", 1)[-1]
    for test, fn in FAMILIES:
        if test(name, short):
            return fn
    return None


def _returns(value):
    return lambda c: value


def _first(c: Call):
    return c.first


# -- environment, launchers, CUDA ----------------------------------------------------------------

@rule("os.environ.update")
def _environ_update(c: Call):
    mapping = c.first if isinstance(c.first, DictV) else DictV(tuple(c.kwargs.items()))
    if any(k == CVD for k, _ in mapping.items):
        launch_facts.env_set(c.interp.launch, c.site, c.stack, mapping.get(CVD))
    return NONE


@rule("os.environ.setdefault", "os.putenv")
def _environ_setdefault(c: Call):
    if c.const_arg(0) == CVD:
        launch_facts.env_set(c.interp.launch, c.site, c.stack, c.args[1] if len(c.args) > 1 else UNKNOWN)
    return NONE


@rule("os.environ.get", "os.getenv")
def _getenv(c: Call):
    if c.const_arg(0) in DIST_MARKERS:
        c.launched(f"reads {c.const_arg(0)} (set by torchrun)")
    return UNKNOWN


def _launcher(what: str, result=None):
    def handle(c: Call):
        c.launched(what)
        return result(c) if result else Lib(c.name + "()")
    return handle


for _name, _what in (
    ("torch.distributed.init_process_group", "torch.distributed.init_process_group"),
    ("accelerate.Accelerator", "accelerate's Accelerator (run with `accelerate launch`)"),
    ("accelerate.PartialState", "accelerate's PartialState (run with `accelerate launch`)"),
    ("accelerate.state.PartialState", "accelerate's PartialState (run with `accelerate launch`)"),
    ("accelerate.accelerator.Accelerator", "accelerate's Accelerator (run with `accelerate launch`)"),
    ("deepspeed.init_distributed", "deepspeed.init_distributed"),
    ("lightning.Trainer", "Lightning's Trainer (one process per device)"),
    ("lightning.pytorch.Trainer", "Lightning's Trainer (one process per device)"),
    ("pytorch_lightning.Trainer", "Lightning's Trainer (one process per device)"),
    ("lightning.Fabric", "Lightning's Fabric (one process per device)"),
):
    EXACT[_name] = _launcher(_what)


@rule("torch.nn.parallel.DistributedDataParallel", "torch.nn.parallel.DataParallel", "torch.nn.DataParallel")
def _wrap_parallel(c: Call):
    if c.short == "DistributedDataParallel":
        c.launched("DistributedDataParallel")
    return c.first if isinstance(c.first, Mod) else Mod(label="model")


@rule("torch.distributed.is_initialized")
def _dist_initialized(c: Call):
    # In execution order: no launcher or process group seen so far means a plain single process.
    return Const(False) if c.interp.launch.launcher is None and c.interp.launch.maybe_launcher is None else UNKNOWN


@rule("deepspeed.initialize")
def _deepspeed_initialize(c: Call):
    c.launched("deepspeed.initialize (run with the `deepspeed` launcher)")
    model = c.kwargs.get("model", c.first)
    return Seq((model if isinstance(model, Mod) else Mod(label="model"), UNKNOWN, UNKNOWN, UNKNOWN))


@rule("torch.multiprocessing.spawn", "torch.multiprocessing.start_processes")
def _spawn(c: Call):
    c.launched("torch.multiprocessing.spawn (one process per GPU)")
    target, extra = c.first, c.kwargs.get("args", c.args[1] if len(c.args) > 1 else Seq(()))
    if isinstance(target, FuncRef):
        rest = list(extra.items) if isinstance(extra, Seq) else []
        c.interp.call_resolved(target, [T("num", "int"), *rest], {}, c.node, c.frame)
    return NONE


@family(lambda name, short: name.startswith("argparse.") and short == "add_argument")
def _add_argument(c: Call):
    if any(isinstance(a, ast.Constant) and a.value in ("--local_rank", "--local-rank") for a in c.node.args):
        c.launched("a --local_rank argument (torch.distributed.launch)")
    return NONE


@family(lambda name, short: name.startswith("torch.cuda.") and short[:1].islower()
        and not name.startswith(("torch.cuda.amp", "torch.cuda.manual_seed")))
def _cuda_query(c: Call):
    launch_facts.cuda(c.interp.launch, c.site, c.stack, f"{c.name}()")
    return T("num", "int") if c.short == "device_count" else UNKNOWN


def is_training_config(qualname: str) -> bool:
    """transformers' TrainingArguments and trl's SFTConfig & co. (trl's ModelConfig is not one)."""
    short = qualname.rsplit(".", 1)[-1]
    return short in TRAINING_CONFIGS or (qualname.startswith("trl.") and short.endswith("Config")
                                         and short != "ModelConfig")


@family(lambda name, short: is_training_config(name))
def _training_config(c: Call):
    c.config(c.short)
    if any(kw.arg == "deepspeed" for kw in c.node.keywords):
        c.launched("TrainingArguments(deepspeed=...) (run with the `deepspeed` launcher)")
    return Lib(c.name + "()")


def _config_class(c: Call, value) -> str | None:
    """The training config class an argument parser is given: a library one, or a local subclass of
    one (``class OurTrainingArguments(TrainingArguments)``)."""
    if isinstance(value, Lib) and is_training_config(value.qualname):
        return value.qualname.rsplit(".", 1)[-1]
    if isinstance(value, ClassRef) and any(map(is_training_config, c.interp.project.library_bases(value.info))):
        return value.info.name
    return None


@rule("transformers.HfArgumentParser", "transformers.hf_argparser.HfArgumentParser", "trl.TrlParser",
      "trl.scripts.utils.TrlParser")
def _argument_parser(c: Call):
    """Remember which training config the parser will build: ``HfArgumentParser(...)(SFTConfig)``."""
    types = list(c.first.items) if isinstance(c.first, Seq) else [c.first]
    built = next(filter(None, (_config_class(c, t) for t in types)), None)
    return Lib(f"{c.name}({built or ''})")


@family(lambda name, short: "Parser(" in name and short.startswith("parse") and "Parser()" not in name)
def _parse_config(c: Call):
    built = c.name[c.name.index("Parser(") + 7:c.name.index(")", c.name.index("Parser("))]
    c.config(built, from_cli=True)
    return UNKNOWN


# -- autograd ----------------------------------------------------------------------------------

@family(lambda name, short: short == "backward")
def _backward(c: Call):
    c.trains(c.first)
    return NONE


@rule("torch.autograd.grad")
def _autograd_grad(c: Call):
    c.trains(c.kwargs.get("outputs", c.first))
    return UNKNOWN


for _name in ("torch.no_grad", "torch.inference_mode", "torch.enable_grad", "torch.set_grad_enabled",
              "torch.autocast", "torch.amp.autocast", "torch.cuda.amp.autocast", "torch.cpu.amp.autocast"):
    EXACT[_name] = _returns(UNKNOWN)


@rule("torch.set_default_dtype", "torch.set_default_tensor_type")
def _set_default_dtype(c: Call):
    dtype = c.dtype_anywhere()
    if dtype:
        c.interp.default_dtype, c.interp.default_set_at = dtype, c.site
    return NONE


# -- optimizers, scalers, accelerate ---------------------------------------------------------------

@family(lambda name, short: name.startswith("torch.optim.") or ".GradScaler()." in name)
def _optimizer(c: Call):
    if c.short == "step":
        for value in c.args:
            if isinstance(value, FuncRef):  # LBFGS-style closure
                c.interp.call_resolved(value, [], {}, c.node, c.frame)
    if c.short == "scale":
        return c.first
    if "()" not in c.name:
        return Lib(c.name + "()")
    return UNKNOWN


@family(lambda name, short: name.startswith("accelerate.") and "()." in name)
def _accelerator_method(c: Call):
    short = c.short
    if short == "prepare":
        return c.first if len(c.args) == 1 else Seq(tuple(c.args))
    if short == "backward":
        c.trains(c.first)
        return NONE
    if short in ("unwrap_model", "gather", "gather_for_metrics", "reduce", "pad_across_processes", "prepare_model"):
        return c.first
    return UNKNOWN


# -- builtins and iteration helpers ---------------------------------------------------------------

@rule("builtins.float")
def _float(c: Call):
    return T("pyfloat", "f64", Origin(c.site, "`float(...)` is a Python float", "np.float32(...)"))


@rule("builtins.int", "builtins.len", "builtins.round", "builtins.hash", "builtins.ord")
def _int(c: Call):
    return T("num", "int")


@rule("builtins.enumerate")
def _enumerate(c: Call):
    return Items(Seq((T("num", "int"), c.interp.iterate(c.first))))


@rule("builtins.zip")
def _zip(c: Call):
    return Items(Seq(tuple(c.interp.iterate(a) for a in c.args)))


@rule("builtins.iter")
def _iter(c: Call):
    return c.first


@rule("builtins.next")
def _next(c: Call):
    return c.interp.iterate(c.first)


@rule("builtins.list", "builtins.tuple", "builtins.sorted", "builtins.reversed", "builtins.set",
      "builtins.frozenset")
def _list(c: Call):
    if not c.args:
        return Seq(())
    if isinstance(c.first, (Seq, Items)) or (isinstance(c.first, T) and c.first.kind == "pyfloat"):
        return c.first
    return Items(c.interp.iterate(c.first))


@rule("builtins.map")
def _map(c: Call):
    if len(c.args) < 2:
        return Items(UNKNOWN)
    elements = [c.interp.iterate(a) for a in c.args[1:]]
    return Items(c.interp.call_resolved(c.first, elements, {}, c.node, c.frame))


@rule("builtins.filter")
def _filter(c: Call):
    return Items(c.interp.iterate(c.args[1])) if len(c.args) > 1 else Items(UNKNOWN)


@rule("builtins.range", "tqdm.trange", "tqdm.auto.trange")
def _range(c: Call):
    return Items(T("num", "int"))


@rule("builtins.sum")
def _sum(c: Call):
    item = c.interp.iterate(c.first)
    return item if isinstance(item, T) else UNKNOWN


@rule("builtins.min", "builtins.max")
def _min_max(c: Call):
    values = c.args if len(c.args) > 1 else [c.interp.iterate(c.first)]
    return join_all(values) if all(isinstance(v, T) for v in values) else UNKNOWN


@rule("builtins.abs")
def _abs(c: Call):
    return c.first


@rule("builtins.dict")
def _dict(c: Call):
    base = c.first
    if isinstance(base, DictV):
        result = base
    elif isinstance(base, (Items, Seq)) or c.args:
        pair = c.interp.iterate(base)
        result = DictV((), pair.items[1] if isinstance(pair, Seq) and len(pair.items) == 2 else UNKNOWN)
    else:
        result = DictV(())
    for key, value in c.kwargs.items():
        result = result.set(key, value)
    return result


@rule("builtins.getattr")
def _getattr(c: Call):
    if len(c.node.args) < 2:
        return UNKNOWN
    return c.interp.dynamic_attribute(c.first, c.node.args[1], c.args[1])


@rule("copy.deepcopy", "copy.copy")
def _copy(c: Call):
    value = c.first
    if isinstance(value, Mod) and value.obj is not None:
        return replace(value, obj=value.obj.copy())
    return value


for _name in ("builtins.print", "builtins.isinstance", "builtins.hasattr", "builtins.setattr", "builtins.open",
              "builtins.super", "builtins.type", "builtins.id", "builtins.bool", "builtins.str", "builtins.repr",
              "builtins.format", "builtins.callable", "builtins.vars", "builtins.input", "builtins.any",
              "builtins.all", "builtins.issubclass", "builtins.exit", "builtins.quit"):
    EXACT[_name] = _returns(UNKNOWN)


@family(lambda name, short: short in ("tqdm", "cycle", "islice", "chain", "tee") or name in (
    "tqdm.auto.tqdm", "tqdm.notebook.tqdm"))
def _passthrough_iter(c: Call):
    if c.short == "chain":
        return Items(join_all(c.interp.iterate(a) for a in c.args))
    if c.short == "tqdm" and "()" in c.name:
        return UNKNOWN  # a progress bar's own methods (update, set_postfix ...)
    return c.first if c.args else UNKNOWN


# -- where outputs go to be looked at (they never train) -------------------------------------------

@family(lambda name, short: name.startswith(("logging.", "wandb.", "matplotlib.", "PIL.", "cv2.", "imageio.",
                                             "torch.utils.tensorboard.", "tensorboardX.", "json.", "pickle.",
                                             "time.", "os.path.", "shutil.", "warnings.", "sys.", "mlflow."))
        or name in ("torch.save", "numpy.save", "numpy.savez", "os.makedirs", "os.mkdir", "torchvision.utils.save_image"))
def _sink(c: Call):
    return UNKNOWN


@rule("torchvision.utils.make_grid")
def _make_grid(c: Call):
    first = c.first
    return replace(first, kind="tensor", param=None, buffer=False) if isinstance(first, T) else UNKNOWN


# -- numpy -----------------------------------------------------------------------------------------

def _np_random(c: Call, short: str):
    if short in NUMPY_RANDOM_INT:
        return Lib("numpy.random.Generator") if short in ("default_rng", "RandomState") else T("array", "int")
    dtype = c.dtype()
    if dtype and dtype != "f64":
        return T("array", dtype)
    return T("array", "f64", Origin(c.site, f"np.random.{short}(...) is float64",
                                    f"np.random.{short}(...).astype(np.float32)"))


@family(lambda name, short: name.startswith(("numpy.random.", "numpy.random.Generator.",
                                             "numpy.random.RandomState.")))
def _numpy_random(c: Call):
    return _np_random(c, c.short)


@family(lambda name, short: name.startswith("numpy."))
def _numpy(c: Call):
    short, first, site = c.short, c.first, c.site
    dtype = c.dtype()
    if short in ("float32", "single"):
        return T("array", "f32")
    if short in ("float64", "double", "float_", "float"):  # np.float_ / np.float: old aliases of float64
        return T("array", "f64", Origin(site, f"np.{short}(...) is float64", "np.float32(...)"))
    if short in NUMPY_JOINS:
        if dtype:
            return T("array", dtype, Origin(site, f"np.{short}(..., dtype=float64)", "dtype=np.float32")
                     if dtype == "f64" else None)
        items = list(first.items) if isinstance(first, Seq) else [first]
        values = [v for v in map(scalar, items) if isinstance(v, T)]
        f64 = next((v for v in values if v.f64), None)
        if f64 is not None:
            if f64.kind == "array" and f64.origin:
                return T("array", "f64", f64.origin, f64.doubt)
            return T("array", "f64", Origin(site, f"np.{short}(...) of Python floats is float64",
                                            f"np.{short}(..., dtype=np.float32)"), f64.doubt)
        return T("array", values[0].dtype) if values else UNKNOWN
    if short in NUMPY_F64_FACTORIES:
        if dtype:
            return T("array", dtype)
        return T("array", "f64", Origin(site, f"np.{short}(...) is float64", f"np.{short}(..., dtype=np.float32)"))
    if short == "arange":
        return T("array", dtype or "int")
    arrays = [v for v in c.args if isinstance(v, T) and v.kind in ("array", "frame", "pyfloat", "num")]
    if arrays:
        # numpy keeps an array's dtype against a Python scalar; an array of float64 wins.
        f64 = next((v for v in arrays if v.f64 and v.kind != "num"), None)
        if f64 is not None:
            return T("array", "f64", f64.origin or Origin(site, f"np.{short}(...) of a float64 value is float64",
                                                          "np.float32(...)"), f64.doubt)
        if arrays[0].dtype == "f64":  # np.sqrt(2.0): a NumPy float64 scalar, which promotes a float32 array
            return T("array", "f64", Origin(site, f"np.{short}(...) of a Python float is a NumPy float64 scalar",
                                            "np.float32(...)"))
        return T("array", arrays[0].dtype)
    return UNKNOWN


# -- pandas ----------------------------------------------------------------------------------------

@family(lambda name, short: name.startswith("pandas.") and short.startswith(
    ("read_", "DataFrame", "Series", "concat", "merge")))
def _pandas(c: Call):
    return T("frame", "f64")


# -- torch values ----------------------------------------------------------------------------------

def born(c: Call, dtype: str | None) -> Origin | None:
    if dtype != "f64":
        return None
    return Origin(c.site, f"`{c.name}(..., dtype=float64)` is float64", "dtype=torch.float32")


@rule("torch.tensor", "torch.as_tensor", "torch.asarray")
def _tensor(c: Call):
    dtype = c.dtype()
    if dtype:
        return T("tensor", dtype, born(c, dtype))
    return c.interp.to_tensor(c.first, c.site)


@rule("torch.from_numpy")
def _from_numpy(c: Call):
    first = c.first
    if isinstance(first, T) and first.f64:
        return T("tensor", "f64", first.origin or Origin(c.site, "a float64 numpy array", ".astype(np.float32)"),
                 first.doubt)
    return T("tensor", first.dtype if isinstance(first, T) else "?")


@rule("torch.Tensor", "torch.FloatTensor", "torch.cuda.FloatTensor")
def _float_tensor(c: Call):
    return T("tensor", "f32")


@rule("torch.DoubleTensor", "torch.cuda.DoubleTensor")
def _double_tensor(c: Call):
    return T("tensor", "f64", Origin(c.site, "torch.DoubleTensor is float64", "torch.FloatTensor"))


@family(lambda name, short: name.startswith("torch.") and short in TORCH_INT)
def _int_tensor(c: Call):
    return T("tensor", "int")


@family(lambda name, short: name.startswith("torch.") and short in TORCH_FACTORIES)
def _factory(c: Call):
    dtype = c.dtype()
    if dtype:
        return T("tensor", dtype, born(c, dtype))
    if c.short == "full":
        fill = c.node.args[1] if len(c.node.args) > 1 else next(
            (kw.value for kw in c.node.keywords if kw.arg == "fill_value"), None)
        value = fill.value if isinstance(fill, ast.Constant) else None
        if isinstance(value, int):  # torch infers the dtype from the fill value: 1 is int64, True bool
            return T("tensor", "int", Origin(c.site, f"`{c.name}(..., {value})` with an int fill value is int64",
                                             f"a float fill value ({float(value)}) or dtype=torch.float32"))
    if c.short.endswith("_like") and isinstance(c.first, T):
        return T("tensor", c.first.dtype, c.first.origin, c.first.doubt)
    return c.interp.default_tensor(c.site, c.name)


@rule("torch.arange")
def _arange(c: Call):
    dtype = c.dtype()
    if dtype:
        return T("tensor", dtype, born(c, dtype))
    floats = any(isinstance(a, T) and a.dtype == "f64" and a.kind == "num" for a in c.args)
    return c.interp.default_tensor(c.site, c.name) if floats else T("tensor", "int")


@rule("torch.nn.Parameter", "torch.nn.parameter.Parameter")
def _parameter(c: Call):
    base = c.first if isinstance(c.first, T) else c.interp.default_tensor(c.site, c.name)
    return replace(base, kind="tensor", param="weight", req=True, grads=frozenset())


@family(lambda name, short: name.startswith("torch.") and short in TORCH_JOINS)
def _torch_join(c: Call):
    first = c.first
    parts = list(first.items) if isinstance(first, Seq) else [c.interp.iterate(first)]
    return c.interp.promote(parts) if any(isinstance(p, T) for p in parts) else UNKNOWN


@family(lambda name, short: name.startswith(("torch.", "torch.nn.functional.")) and short in MATMUL_OPS)
def _matmul(c: Call):
    args = c.args[1:] if c.short == "einsum" else c.args
    nodes = c.node.args[1:] if c.short == "einsum" else c.node.args
    if len(args) >= 2:
        op = f"{c.name.replace('torch.nn.functional.', 'F.')}()"
        dtype_facts.meet(c.interp.dtype, args[0], args[1], c.site, c.stack, op, tuple(ast.unparse(a) for a in nodes[:2]))
    return c.interp.torch_result(c.args, c.kwargs)


@family(lambda name, short: name.startswith("torch.nn.") and short[:1].isupper() and name.count(".") in (2, 3)
        and short not in ("Parameter", "ParameterList", "ParameterDict", "Module"))
def _nn_module(c: Call):
    short = c.short
    parts: tuple = ()
    if short in NN_CONTAINERS or short == "ModuleDict":
        first = c.first
        items = list(c.args)
        if len(c.args) == 1 and isinstance(first, Seq):
            items = list(first.items)
        elif len(c.args) == 1 and isinstance(first, (Items, DictV)):
            items = first.values() if isinstance(first, DictV) else [first.elem]
        parts = tuple(i for i in items if isinstance(i, Mod))
    loss = short.endswith("Loss")
    weight = c.arg(0, "weight") if loss and short in dtype_facts.CLASS_WEIGHTED else None
    return Mod(builtin=short, parametric=short in NN_PARAMETRIC, loss=loss, label=f"nn.{short}",
               f64=c.interp.default_dtype == "f64", parts=parts, weight=weight)


@family(lambda name, short: name.startswith("torch.nn.functional.") and short in LOSS_FUNCTIONS)
def _loss_function(c: Call):
    exprs = [ast.unparse(a) for a in c.node.args]
    dtype_facts.loss(c.interp.dtype, c.name, c.args, c.kwargs, exprs, c.site, c.stack)
    return c.interp.torch_result(c.args, c.kwargs)


@rule("torch.utils.data.DataLoader", "torch.utils.data.dataloader.DataLoader")
def _dataloader(c: Call):
    if any(kw.arg == "collate_fn" for kw in c.node.keywords):
        collate = c.kwargs.get("collate_fn")
        if isinstance(collate, FuncRef):
            item = c.interp.dataset_item(c.kwargs.get("dataset", c.first), c.node, c.frame)
            return Loader(c.interp.call_resolved(collate, [Items(item)], {}, c.node, c.frame))
        return Loader(UNKNOWN)
    dataset = c.kwargs.get("dataset", c.first)
    return Loader(c.interp.collate(c.interp.dataset_item(dataset, c.node, c.frame), c.site))


@rule("torch.utils.data.TensorDataset")
def _tensor_dataset(c: Call):
    return Dataset(Seq(tuple(c.interp.iterate(a) for a in c.args)))


@rule("torch.utils.data.random_split")
def _random_split(c: Call):
    return Items(c.first)


@rule("torch.utils.data.Subset")
def _subset(c: Call):
    return c.first


@rule("torch.utils.data.default_collate", "torch.utils.data.dataloader.default_collate")
def _default_collate(c: Call):
    return c.interp.collate(c.interp.iterate(c.first), c.site)


@family(lambda name, short: name.startswith("torch.") and not name.startswith(
    ("torch.utils", "torch.distributed", "torch.hub", "torch.jit", "torch.compile", "torch.backends")))
def _torch_other(c: Call):
    if c.short[:1].isupper():
        carried = opaque([*c.args, *c.kwargs.values()])
        if isinstance(carried, T):  # a distribution of a model's output carries its graph
            return carried
        return Lib(c.name + "()")  # GradScaler(), device objects, generators ...
    if c.short in ("manual_seed", "seed", "set_num_threads", "set_printoptions", "use_deterministic_algorithms",
                   "set_float32_matmul_precision", "device", "is_tensor", "numel", "set_anomaly_enabled"):
        return UNKNOWN
    return c.interp.torch_result(c.args, c.kwargs)


for _name in ("torch.compile", "torch.jit.script", "torch.jit.trace"):
    EXACT[_name] = _first


# -- models from libraries -------------------------------------------------------------------------

@family(lambda name, short: short in ("from_pretrained", "from_config"))
def _from_pretrained(c: Call):
    lowered = c.name.lower()
    if any(word in lowered for word in ("tokenizer", "config", "processor", "extractor", "scheduler",
                                        "pipeline", "generationconfig")):
        return UNKNOWN
    if "fastlanguagemodel" in lowered or "fastmodel" in lowered:
        return Seq((Mod(label="model"), UNKNOWN))
    dtype = None
    for kw in c.node.keywords:
        if kw.arg in ("dtype", "torch_dtype"):
            dtype = c.interp.dtype_name(kw.value, c.frame)
    launch_facts.placement(c.interp.launch, c.node, c.site, c.stack)
    return Mod(label="model", f64=dtype == "f64")


@family(lambda name, short: short in ("get_peft_model", "prepare_model_for_kbit_training", "PeftModel")
        or name.endswith("FastLanguageModel.get_peft_model"))
def _peft(c: Call):
    return c.first if isinstance(c.first, Mod) else Mod(label="model")


@family(lambda name, short: (name.startswith("torchvision.models.") and short[:1].islower()
                             and short not in ("get_weight", "list_models"))
        or name in ("timm.create_model", "torch.hub.load"))
def _zoo_model(c: Call):
    return Mod(label=c.short, f64=c.interp.default_dtype == "f64")


@family(lambda name, short: (name.startswith(("transformers.", "trl.")) and short.endswith("Trainer"))
        or short in ("get_scheduler", "get_linear_schedule_with_warmup", "get_cosine_schedule_with_warmup"))
def _hf_trainer(c: Call):
    return Lib(c.name + "()")


@family(lambda name, short: name.startswith(("transformers.", "trl.", "peft.", "datasets.")) and "()." in name)
def _hf_object_method(c: Call):
    # A Trainer's train()/save_model()/evaluate(), a dataset's map() ...: library code runs the model
    # itself (forward and backward); nothing here is a forward pass of the script's own.
    return UNKNOWN


# -- torchvision transforms ------------------------------------------------------------------------

@rule("torchvision.transforms.ToTensor", "torchvision.transforms.transforms.ToTensor")
def _to_tensor_transform(c: Call):
    return Lib("torchvision.transforms.ToTensor()")


@rule("torchvision.transforms.ToTensor()", "torchvision.transforms.functional.to_tensor")
def _to_tensor(c: Call):
    """ToTensor scales uint8 images to float32 in [0, 1]; any other numpy array keeps its dtype, so a
    float64 array stays float64 (only uint8 input is converted)."""
    first = c.first
    if isinstance(first, T) and first.kind in ("array", "frame") and first.f64:
        return T("tensor", "f64", Origin(c.site, "ToTensor() keeps a float64 numpy array float64 (only uint8 is "
                                                 "scaled to float32)", ".astype(np.float32) before ToTensor()"),
                 first.doubt)
    if isinstance(first, T) and first.kind == "array" and first.dtype in ("f32", "int"):
        return T("tensor", "f32")
    return T("tensor")
