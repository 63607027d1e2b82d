"""Recipes: find, load (safe YAML), override (``--set a.b=c``) and validate as a whole.

Recipes are data (torchtune's rule): YAML holds scalars and names, the engines build objects.
Every problem is reported in one go, each with its dotted key path; an unknown key is answered
with the closest known key.
"""

from __future__ import annotations

import difflib
import importlib
import re
import reprlib
import types
import typing
from importlib import resources
from pathlib import Path
from typing import Annotated, Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError

from .errors import RecipeError

# kind -> "module:Class" of its pydantic model; imported only when a recipe of that kind is read.
KINDS = {
    "gan": "ohlora_cli.gan.config:GanRecipe",
    "llm": "ohlora_cli.llm.config:LlmRecipe",
}


class Section(BaseModel):
    """Base of every recipe section: unknown keys are errors, values are validated on assignment."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, protected_namespaces=())


CpuThreads = Annotated[int | None, Field(
    ge=1, description="torch threads when training on the CPU; default: torch's own (one per core). A tiny model "
    "gains nothing from more than 1, and a CPU shared with another job slows down several times with more "
    "(gan-demo and llm-demo use 1)")]
"""``train.cpu_threads`` of both kinds."""


class RecipeBase(Section):
    """Base of each kind's top-level model; remembers the file it was read from."""

    _source: Path | None = PrivateAttr(default=None)

    @property
    def source(self) -> Path | None:
        return self._source


def recipes_dir() -> Path:
    """Folder of the packaged recipes (package data; ``recipes/`` at the top of the source tree links here)."""
    return Path(str(resources.files("ohlora_cli"))) / "recipes"


def packaged_recipes() -> list[str]:
    return sorted(p.stem for p in recipes_dir().glob("*.yaml"))


# Files people pass where a recipe is expected, by suffix: what each is, and where it goes instead.
_NOT_RECIPES = {
    **dict.fromkeys((".csv", ".tsv", ".jsonl", ".json"), (
        "data, not a recipe",
        "Name it in a recipe: data.csv (GAN) or data.path (LLM). Start from a copy: ohlora recipes copy gan-demo "
        "my.yaml (or llm-demo), set the data key, then: ohlora doctor my.yaml")),
    **dict.fromkeys((".pth", ".pt", ".safetensors", ".ckpt", ".bin"), (
        "a checkpoint, not a recipe",
        "A GAN recipe starts from it with model.checkpoint; to draw images from it: ohlora generate FILE -o out.png")),
    **dict.fromkeys((".png", ".jpg", ".jpeg"), (
        "an image, not a recipe", "Images are listed in the CSV that a GAN recipe names in data.csv.")),
    **dict.fromkeys((".txt", ".md", ".rst", ".log", ".toml", ".ini", ".cfg"), (
        "not a recipe", "A recipe is a YAML file (.yaml); ohlora recipes lists the packaged ones, and ohlora recipes "
        "copy NAME writes one to edit. The doctor also reads Python scripts (.py).")),
}


def find(recipe: str) -> Path:
    """A recipe argument is a path to a YAML file or the name of a packaged recipe."""
    path = Path(recipe).expanduser()
    if path.is_file():
        known = _NOT_RECIPES.get(path.suffix.lower())
        if known is not None:
            raise RecipeError(f"{recipe}: a {path.suffix.lower()} file is {known[0]}", hint=known[1])
        return path
    if path.is_dir():
        resolved = path / "recipe.yaml"
        if resolved.is_file():
            raise RecipeError(
                f"{recipe}: a run folder (an output_dir), not a recipe",
                hint=f"Its resolved recipe is {resolved}: pass that (with --resume to continue the run). "
                     f"To use the trained model: ohlora generate {recipe} (GAN) or ohlora chat {recipe} (LLM).")
        raise RecipeError(f"{recipe}: a folder, not a recipe",
                          hint=f"Pass a recipe YAML file, or one of: {', '.join(packaged_recipes())} "
                               "(ohlora recipes lists them).")
    name = recipe[:-5] if recipe.endswith((".yaml", ".yml")) and "/" not in recipe else recipe
    packaged = recipes_dir() / f"{name}.yaml"
    if "/" not in name and packaged.is_file():
        return packaged
    names = packaged_recipes()
    close = difflib.get_close_matches(name, names, n=1) if "/" not in name else []
    hint = f"did you mean '{close[0]}'? " if close else ""
    raise RecipeError(
        f"recipe '{recipe}': no such file, and no packaged recipe of that name",
        hint=f"{hint}Pass a path to a YAML file, or one of: {', '.join(names)}.",
    )


# Hostile or mistaken files (a data file passed as the recipe, a binary, a generated monster) get a
# message before the YAML parser sees them: the parser takes minutes on a few MB, and libyaml
# crashes the interpreter on deep enough nesting.
MAX_BYTES = 1_000_000
MAX_DEPTH = 32
MAX_VALUES = 10_000
_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml when present: several times faster
_SHAPE_HINT = "A recipe is a short YAML file of sections and values; check that this is the file you meant."


_FLOW = re.compile(r"""[\[\]{}\n#]|(?:(?<=[\s\[{,:])|^)(?:"(?:[^"\\\n]|\\.)*"|'(?:[^'\n]|'')*')""", re.M)


def _check_flow_nesting(text: str, path: Path) -> None:
    """Flow nesting (``[[[...``) deeper than MAX_DEPTH, counted on the text itself, before any parser:
    parsers stop such a file in their own ways (one libyaml build reports 'exceeded maximum nesting
    depth' from its scanner, before the events reach this module), and the message must not depend
    on which one is installed. Quoted scalars and comments are skipped; block nesting is left to the
    parser's events (``_check_nesting``)."""
    depth, line, comment = 0, 1, False
    for match in _FLOW.finditer(text):
        token = match.group()
        if token == "\n":
            line, comment = line + 1, False
        elif comment or token[0] in "\"'":
            continue
        elif token == "#":
            start = match.start()
            comment = start == 0 or text[start - 1] in " \t\n"
        elif token in "[{":
            start = match.start()
            if depth == 0 and start > 0 and text[start - 1] not in " \t\n":
                continue  # inside a plain scalar (key: a[1]), not a flow collection
            depth += 1
            if depth + 1 > MAX_DEPTH:  # + 1: the recipe's own top-level mapping, as the parser counts it
                raise RecipeError(f"{path}:{line}: nested deeper than {MAX_DEPTH} levels", hint=_SHAPE_HINT)
        else:
            depth = max(depth - 1, 0)


def _check_nesting(text: str, path: Path) -> None:
    """Nesting deeper than MAX_DEPTH, found from the parser's events (no tree is built, no recursion)."""
    _check_flow_nesting(text, path)
    depth = 0
    for event in yaml.parse(text, Loader=_Loader):
        if isinstance(event, (yaml.MappingStartEvent, yaml.SequenceStartEvent)):
            depth += 1
            if depth > MAX_DEPTH:
                line = event.start_mark.line + 1 if event.start_mark else "?"
                raise RecipeError(f"{path}:{line}: nested deeper than {MAX_DEPTH} levels", hint=_SHAPE_HINT)
        elif isinstance(event, (yaml.MappingEndEvent, yaml.SequenceEndEvent)):
            depth -= 1


def _check_values(data: Any, path: Path) -> None:
    """At most MAX_VALUES values, aliases counted at every use (a YAML 'billion laughs' or a
    self-referencing alias expands without end)."""
    stack, seen = [data], 0
    while stack:
        node = stack.pop()
        seen += 1
        if seen > MAX_VALUES:
            raise RecipeError(f"{path}: more than {MAX_VALUES:,} values (YAML aliases count at every use)",
                              hint=_SHAPE_HINT)
        if isinstance(node, dict):
            stack.extend(node.keys())
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)


def read_yaml(path: Path) -> dict[str, Any]:
    """The recipe file as a dict. Every way it can be unreadable is a RecipeError naming the file."""
    try:
        with open(path, "rb") as fh:
            raw = fh.read(MAX_BYTES + 1)  # never more, whatever the file claims to be
    except OSError as exc:
        raise RecipeError(f"{path}: cannot read the recipe ({exc.strerror})") from exc
    if len(raw) > MAX_BYTES:
        try:
            size = f"{path.stat().st_size:,} bytes"
        except OSError:
            size = "too large"
        raise RecipeError(f"{path}: {size}; a recipe is at most {MAX_BYTES // 1_000_000} MB (it was not parsed)",
                          hint=_SHAPE_HINT)
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise RecipeError(f"{path}: not UTF-8 text (byte {exc.start} is 0x{raw[exc.start]:02x})",
                          hint="A recipe is a YAML text file saved as UTF-8; check that this is the file you meant.") from None
    try:
        _check_nesting(text, path)
        data = yaml.load(text, Loader=_Loader)  # noqa: S506 (a safe loader: plain data only)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        problem = getattr(exc, "problem", None) or str(exc)
        raise RecipeError(
            f"{where}: malformed YAML ({problem})",
            hint="Fix the YAML syntax at that line (indentation, a missing ':' or quote).",
        ) from exc
    if data is None:
        raise RecipeError(f"{path}: the recipe is empty",
                          hint=f"Start from a packaged recipe (one of: {', '.join(packaged_recipes())}), "
                               f"e.g. copy {recipes_dir() / 'gan-demo.yaml'}.")
    if not isinstance(data, dict):
        raise RecipeError(f"{path}: a recipe must be a mapping of keys to values, got {type(data).__name__}")
    _check_values(data, path)
    return data


_KEY = re.compile(r"[A-Za-z_][\w-]*(\.[A-Za-z_0-9][\w-]*)*")


def is_override(arg: str) -> bool:
    """Whether a bare command-line argument is a ``KEY=VALUE`` override (torchtune's habit) rather
    than a recipe: a dotted key before the first '=', and not the name of an existing file."""
    key, sep, _ = arg.partition("=")
    return bool(sep) and _KEY.fullmatch(key.strip()) is not None and not Path(arg).expanduser().exists()


def split_arguments(args: list[str], *, command: str, many: bool = False) -> tuple[list[str], list[str]]:
    """Bare arguments -> (recipes, ``KEY=VALUE`` overrides), order kept. A train command takes at
    most one recipe (``many=False``)."""
    targets = [a for a in args if not is_override(a)]
    overrides = [a for a in args if is_override(a)]
    if not many and len(targets) > 1:
        raise RecipeError(
            f"{command}: one recipe, got {len(targets)}: {', '.join(repr(t) for t in targets)}",
            hint="Overrides are KEY=VALUE with a dotted key (train.kimg=5) or --set KEY=VALUE; "
                 "the other argument is the recipe.")
    return targets, overrides


def parse_override(text: str) -> tuple[list[str], Any]:
    key, sep, value = text.partition("=")
    key = key.strip()
    if not sep or not key or any(not part for part in key.split(".")):
        raise RecipeError(
            f"--set '{text}': expected KEY=VALUE with a dotted key, e.g. --set train.batch_size=8"
        )
    try:
        parsed = yaml.safe_load(value) if value.strip() else None
    except yaml.YAMLError as exc:
        problem = getattr(exc, "problem", None) or "unreadable"
        raise RecipeError(
            f"override {key}={value}: the value is not valid YAML ({problem})",
            hint=f"Values are read as YAML (8, 0.5, true, [a, b]). To pass it as text, quote it: "
                 f"{key}='\"{value}\"'") from None
    return key.split("."), parsed


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> list[str]:
    """Apply ``a.b=c`` overrides in place; returns the dotted keys that were set."""
    keys = []
    for text in overrides:
        parts, value = parse_override(text)
        node = data
        for i, part in enumerate(parts[:-1]):
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            elif not isinstance(child, dict):
                raise RecipeError(
                    f"--set {'.'.join(parts)}: '{'.'.join(parts[: i + 1])}' is a value, not a section"
                )
            node = child
        node[parts[-1]] = value
        keys.append(".".join(parts))
    return keys


_REF = re.compile(r"\$\{([^}]*)\}")


def resolve_references(data: dict[str, Any], source: str) -> None:
    """``${output_dir}`` (any ``${dotted.key}`` of a scalar) in a string value is replaced, in place,
    by that key's value after the overrides: a demo keeps what it builds under its output_dir,
    whatever output_dir is set to (torchtune's interpolation, without the rest of OmegaConf)."""

    def lookup(ref: str, at: str) -> str:
        node: Any = data
        for part in ref.split("."):
            node = node.get(part) if isinstance(node, dict) else None
        if node is None or isinstance(node, (dict, list)) or (isinstance(node, str) and _REF.search(node)):
            raise RecipeError(
                f"{source}: {at}: '${{{ref}}}' names no plain value of the recipe",
                hint="A ${KEY} reference takes the value of another key, e.g. ${output_dir}/data/labels.csv.")
        return str(node)

    def walk(node: Any, at: str) -> Any:
        if isinstance(node, dict):
            for key, value in node.items():
                node[key] = walk(value, f"{at}.{key}" if at else str(key))
        elif isinstance(node, list):
            return [walk(value, f"{at}[{i}]") for i, value in enumerate(node)]
        elif isinstance(node, str) and "${" in node:
            return _REF.sub(lambda m: lookup(m.group(1), at), node)
        return node

    walk(data, "")


def model_class(kind: Any) -> type[BaseModel]:
    if not isinstance(kind, str) or kind not in KINDS:
        known = ", ".join(sorted(KINDS))
        raise RecipeError(
            f"kind: {'missing' if kind is None else repr(kind)}; every recipe needs 'kind', one of: {known}"
        )
    module, _, cls = KINDS[kind].partition(":")
    return getattr(importlib.import_module(module), cls)


def _known_keys(model: type[BaseModel], loc: tuple) -> list[str]:
    """Field names of the section at ``loc`` (the location of the unknown key's parent)."""
    current: Any = model
    for part in loc:
        field = current.model_fields.get(part) if isinstance(current, type) else None
        if field is None:
            return []
        current = _section_type(field.annotation)
        if current is None:
            return []
    return list(current.model_fields) if isinstance(current, type) else []


def _section_type(annotation: Any) -> type[BaseModel] | None:
    """The section model of a field typed as one (or as one or None); None otherwise. A dict or
    list of models is one key whose value is a mapping or list, not a section."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        for arg in typing.get_args(annotation):
            found = _section_type(arg)
            if found is not None:
                return found
    return None


# Names from Hugging Face (TrainingArguments, peft), trl, torchtune, axolotl and NVlabs' StyleGAN
# for ideas that have another name here: an unknown key with one of these names is answered with
# ours, not with the nearest spelling (learning_rate is not extra_g_ratio). kind -> name -> (our
# dotted key, a note).
_PER_DEVICE = "train.batch_size is the GLOBAL batch; per-device batch and accumulation are derived from it"
_GAN_LENGTH = "a GAN run's length is train.kimg, thousands of real images shown"
ALIASES: dict[str, dict[str, tuple[str, str]]] = {
    "gan": {
        **dict.fromkeys(("learning_rate", "lr", "glr"), ("train.g_lr", "and train.d_lr: one per network")),
        "dlr": ("train.d_lr", ""),
        **dict.fromkeys(("lr_scheduler_type", "lr_schedule", "scheduler"), ("train.lr_scheduler", "")),
        **dict.fromkeys(("steps", "max_steps", "total_steps", "num_train_epochs", "epochs", "num_epochs",
                         "total_kimg"), ("train.kimg", _GAN_LENGTH)),
        **dict.fromkeys(("per_device_train_batch_size", "train_batch_size", "micro_batch_size", "batch",
                         "gradient_accumulation_steps"), ("train.batch_size", _PER_DEVICE)),
        **dict.fromkeys(("image_size", "img_size", "img_resolution"), ("model.resolution", "")),
        **dict.fromkeys(("gamma", "r1"), ("train.r1_gamma", "")),
        **dict.fromkeys(("ema", "ema_decay"), ("train.ema_kimg", "a half-life in kimg")),
        **dict.fromkeys(("snap", "snapshot_steps"), ("train.snapshot_kimg", "")),
        **dict.fromkeys(("outdir", "output", "out_dir"), ("output_dir", "")),
        **dict.fromkeys(("labels", "cond", "label_names"), ("data.label_columns", "")),
    },
    "llm": {
        **dict.fromkeys(("lr",), ("train.learning_rate", "")),
        **dict.fromkeys(("lr_scheduler_type", "lr_schedule", "scheduler"), ("train.lr_scheduler", "")),
        **dict.fromkeys(("num_train_epochs", "num_epochs"), ("train.epochs", "")),
        **dict.fromkeys(("steps", "total_steps", "num_steps"), ("train.max_steps", "")),
        **dict.fromkeys(("per_device_train_batch_size", "train_batch_size", "micro_batch_size", "batch",
                         "gradient_accumulation_steps"), ("train.batch_size", _PER_DEVICE)),
        **dict.fromkeys(("warmup_steps",), ("train.warmup_ratio", "a share of the steps")),
        **dict.fromkeys(("bf16", "fp16", "dtype", "torch_dtype", "mixed_precision"), ("train.precision", "")),
        **dict.fromkeys(("lora_r", "rank", "lora_rank"), ("lora.r", "")),
        "lora_alpha": ("lora.alpha", ""),
        "lora_dropout": ("lora.dropout", ""),
        "lora_target_modules": ("lora.target_modules", ""),
        **dict.fromkeys(("model_name_or_path", "base_model", "model_name", "pretrained_model_name_or_path",
                         "model_id"), ("model.path", "")),
        **dict.fromkeys(("dataset", "dataset_path", "train_file", "data_files", "datasets"), ("data.path", "")),
        **dict.fromkeys(("max_seq_length", "max_seq_len", "sequence_len", "cutoff_len", "max_len"),
                        ("data.max_length", "")),
        **dict.fromkeys(("outdir", "output", "out_dir"), ("output_dir", "")),
    },
}

# Keys renamed so both kinds call one idea by one name: the old name is still read, with a note.
RENAMED: dict[str, dict[str, str]] = {"gan": {"train.lr_schedule": "train.lr_scheduler"}}


def _rename_old_keys(data: dict[str, Any], kind: Any, source: str) -> None:
    from .console import info

    for old, new in RENAMED.get(kind, {}).items() if isinstance(kind, str) else ():
        *parents, leaf = old.split(".")
        node: Any = data
        for part in parents:
            node = node.get(part) if isinstance(node, dict) else None
        if not isinstance(node, dict) or leaf not in node:
            continue
        new_leaf = new.split(".")[-1]
        if new_leaf in node:
            raise RecipeError(f"{source}: {old} and {new} are one key ({old} is its old name); give {new} only")
        node[new_leaf] = node.pop(leaf)
        info(f"[dim]note: {source}: {old} is now called {new} (as in the other kind); read as {new}[/dim]")


def _alias(kind: str, loc: tuple) -> str | None:
    """'; 'learning_rate' is 'train.g_lr' here (and train.d_lr: one per network)' for a name
    another tool uses, or None."""
    found = ALIASES.get(kind, {}).get(str(loc[-1]).lower())
    if found is None or found[0] == ".".join(map(str, loc)):
        return None
    ours, note = found
    return f"; '{loc[-1]}' is '{ours}' here" + (f" ({note})" if note else "")


def format_errors(exc: ValidationError, model: type[BaseModel], source: str, from_set: list[str]) -> str:
    lines = []
    for error in exc.errors():
        loc = tuple(error["loc"])
        key = ".".join(str(p) for p in loc) or "(top level)"
        origin = " (from --set)" if key in from_set else ""
        alias = _alias(_kind_of(model), loc) if error["type"] == "extra_forbidden" else None
        if alias:
            lines.append(f"  {key}{origin}: unknown key{alias}")
        elif error["type"] == "extra_forbidden":
            known = _known_keys(model, loc[:-1])
            close = difflib.get_close_matches(str(loc[-1]), known, n=1, cutoff=0.5)
            suggestion = f"; did you mean '{'.'.join(str(p) for p in (*loc[:-1], close[0]))}'?" if close else ""
            listing = f" Known keys here: {', '.join(known)}." if known and not close else ""
            lines.append(f"  {key}{origin}: unknown key{suggestion}{listing}")
        elif error["type"] == "missing":
            lines.append(f"  {key}: required key is missing")
        else:
            got = error.get("input")
            shown = "" if isinstance(got, dict) else f" (got {reprlib.repr(got)})"
            lines.append(f"  {key}{origin}: {error['msg']}{shown}")
    count = len(lines)
    return f"{source}: {count} problem{'s' if count != 1 else ''} in the recipe:\n" + "\n".join(lines)


def _kind_of(model: type[BaseModel]) -> str:
    return next((kind for kind, target in KINDS.items() if target.endswith(f":{model.__name__}")), "")


def validate(data: dict[str, Any], *, source: str = "recipe", from_set: list[str] | None = None) -> BaseModel:
    try:
        model = model_class(data.get("kind"))
    except RecipeError as exc:
        raise RecipeError(f"{source}: {exc}", hint=exc.hint) from None
    _rename_old_keys(data, data.get("kind"), source)
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise RecipeError(
            format_errors(exc, model, source, from_set or []),
            hint="Fix these keys in the recipe (or the --set overrides) and run again.",
        ) from None


def load(recipe: str, overrides: list[str] | None = None, *, expect_kind: str | None = None) -> BaseModel:
    """Find, read, override and validate a recipe; returns the kind's pydantic model."""
    path = find(recipe)
    data = read_yaml(path)
    if expect_kind is not None and not isinstance(data.get("kind", expect_kind), str):
        raise RecipeError(f"{path}: kind: {data.get('kind')!r}; it must be one of: {', '.join(sorted(KINDS))}")
    if expect_kind is not None and data.get("kind", expect_kind) != expect_kind:
        raise RecipeError(
            f"{path}: kind: {data.get('kind')!r}, but this command trains kind '{expect_kind}'",
            hint=f"Use 'ohlora train-{data.get('kind')}' for this recipe, or pass a '{expect_kind}' recipe.",
        )
    if expect_kind is not None:
        data.setdefault("kind", expect_kind)
    from_set = apply_overrides(data, overrides or [])
    resolve_references(data, str(path))
    loaded = validate(data, source=str(path), from_set=from_set)
    loaded._source = path
    return loaded


def reference(kind: str) -> list[tuple[str, str, str]]:
    """(dotted key, default, description) of every key of a kind: docs/recipes.md."""

    def walk(model: type[BaseModel], prefix: str):
        for name, field in model.model_fields.items():
            section = _section_type(field.annotation)
            if section is not None:
                yield from walk(section, f"{prefix}{name}.")
            else:
                default = "required" if field.is_required() else repr(field.get_default(call_default_factory=True))
                yield f"{prefix}{name}", default, field.description or ""

    return list(walk(model_class(kind), ""))


def dump(recipe: BaseModel) -> str:
    """The resolved recipe as YAML (what a run writes to ``output_dir/recipe.yaml``)."""
    return yaml.safe_dump(recipe.model_dump(mode="json"), sort_keys=False, allow_unicode=True)
