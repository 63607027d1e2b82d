"""A user's script and the local modules it imports, parsed (never run), with import aliases resolved.

A module is *local* when it is a ``.py`` file (or a package folder) under the script's folder, the
way ``python script.py`` puts that folder first on ``sys.path``, or under a folder the code adds to
``sys.path`` with a path the analysis can work out (``sys.path.append(os.path.dirname(__file__) +
...)``, ``Path(__file__).parents[1]`` ...). Everything else (torch, numpy, transformers ...) is a
library: its names are kept as dotted strings (``np.random.rand`` -> ``numpy.random.rand``) so
checks compare qualified names, never bare spellings.
"""

from __future__ import annotations

import ast
import codecs
import os
import re
import tokenize
from dataclasses import dataclass, field
from pathlib import Path

from ...errors import BadInputError

MAX_MODULES = 40  # a script's own helper modules (Oh-LoRA's largest trainer imports 27); more is a package


@dataclass(eq=False)
class ClassInfo:
    name: str
    qualname: str
    module: Module
    node: ast.ClassDef
    bases: list[str]  # resolved qualified names of the bases
    methods: dict[str, ast.FunctionDef]

    def __hash__(self) -> int:
        return id(self)


@dataclass(eq=False)
class Module:
    name: str  # dotted import name; "__main__" for the entry script
    path: Path
    tree: ast.Module
    package: str  # the package relative imports start from
    aliases: dict[str, str] = field(default_factory=dict)  # local name -> qualified name
    functions: dict[str, ast.FunctionDef] = field(default_factory=dict)
    classes: dict[str, ClassInfo] = field(default_factory=dict)

    def __hash__(self) -> int:
        return id(self)


def display(path: Path) -> str:
    """A path as the user would type it: relative to the current folder when it is below it."""
    try:
        return os.path.relpath(path)
    except ValueError:  # another drive on Windows
        return str(path)


_COOKIE = re.compile(rb"^[ \t\f]*#.*?coding[:=][ \t]*([-\w.]+)")


def _unknown_codec(path: Path) -> str | None:
    """The codec a coding cookie on the first two lines names, when this Python has no such codec."""
    with path.open("rb") as fh:
        lines = [fh.readline(), fh.readline()]
    for line in lines:
        match = _COOKIE.match(line)
        if match:
            name = match.group(1).decode("ascii", "replace")
            try:
                codecs.lookup(name)
            except LookupError:
                return name
            return None
    return None


class Project:
    """The entry script plus every local module reachable through its imports."""

    def __init__(self, entry: Path):
        entry = Path(entry)
        if not entry.is_file():
            raise BadInputError(f"{entry}: no such script", hint="Pass the path of a Python file.")
        self.root = entry.resolve().parent
        # sys.path as Python starts the script: its folder, then PYTHONPATH; appends come later
        self.roots: list[Path] = [self.root, *_pythonpath()]
        self.modules: dict[str, Module] = {}
        self.codecs: list[tuple[str, str]] = []  # (path:1, codec) of files read as UTF-8: codec not installed
        self.entry = self._parse("__main__", entry.resolve(), package="")
        self._index(self.entry)

    # -- loading -------------------------------------------------------------------------------

    def _parse(self, name: str, path: Path, package: str) -> Module:
        try:
            source = self._read(path)
        except (OSError, UnicodeDecodeError, SyntaxError) as exc:
            raise BadInputError(f"{display(path)}: cannot read the script ({exc})") from exc
        try:
            tree = ast.parse(source, filename=str(path))
        except SyntaxError as exc:
            raise BadInputError(
                f"{display(path)}:{exc.lineno}: not valid Python ({exc.msg})",
                hint="The doctor parses scripts without running them; fix the syntax first.",
            ) from exc
        module = Module(name=name, path=path, tree=tree, package=package)
        self.modules[name] = module
        return module

    def _read(self, path: Path) -> str:
        """The source as Python reads it (a BOM or a coding cookie, else UTF-8). A cookie naming a codec
        this Python does not have: read as UTF-8 (unreadable bytes replaced), and noted in ``codecs``."""
        try:
            with tokenize.open(path) as fh:
                return fh.read()
        except SyntaxError as exc:
            codec = _unknown_codec(path)
            if codec is None:
                raise exc from None
            self.codecs.append((f"{display(path)}:1", codec))
            return path.read_bytes().decode("utf-8", errors="replace")

    def find_local(self, name: str) -> Path | None:
        if not name:
            return None
        parts = name.split(".")
        for root in self.roots:
            base = root.joinpath(*parts)
            for candidate in (base.with_suffix(".py"), base / "__init__.py"):
                if candidate.is_file():
                    return candidate
        return None

    def load(self, name: str) -> Module | None:
        """The local module of this dotted name (parsed once), or None for a library."""
        if name in self.modules:
            return self.modules[name]
        if len(self.modules) >= MAX_MODULES:
            return None
        path = self.find_local(name)
        if path is None:
            return None
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        module = self._parse(name, path, package)
        self._index(module)
        return module

    def _absolute(self, module: Module, node: ast.ImportFrom) -> str:
        if not node.level:
            return node.module or ""
        base = module.package.split(".") if module.package else []
        if node.level > 1:
            base = base[: len(base) - (node.level - 1)]
        return ".".join([*base, *([node.module] if node.module else [])])

    def _alias(self, module: Module, name: str, qualified: str) -> None:
        """Bind an import alias. ``try: from utils import x`` / ``except ImportError: from pkg.utils
        import x``: the spelling that resolves to a local module wins over one that does not."""
        known = module.aliases.get(name)
        if known is not None and self._is_local(known) and not self._is_local(qualified):
            return
        module.aliases[name] = qualified

    def _is_local(self, qualified: str) -> bool:
        """A local module, or a name in one."""
        return bool(self.find_local(qualified) or self.find_local(qualified.rpartition(".")[0]))

    def _index(self, module: Module) -> None:
        """Aliases from every import (any depth: imports inside functions count), top-level defs."""
        imports = []
        for node in ast.walk(module.tree):  # one walk: sys.path changes first, then the imports they affect
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                imports.append(node)
            elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) \
                    and node.func.attr in ("append", "insert"):
                self._sys_path_entry(module, node)
        for node in imports:
            if isinstance(node, ast.Import):
                self._index_import(module, node)
            else:
                self._index_import_from(module, node)
        self._index_definitions(module)

    def _index_import(self, module: Module, node: ast.Import) -> None:
        for alias in node.names:
            if alias.asname:
                self._alias(module, alias.asname, alias.name)
            else:
                top = alias.name.split(".")[0]
                self._alias(module, top, top)
            self.load(alias.name)

    def _index_import_from(self, module: Module, node: ast.ImportFrom) -> None:
        source = self._absolute(module, node)
        for alias in node.names:
            if alias.name == "*":
                self._star_import(module, source)
                continue
            qualified = f"{source}.{alias.name}" if source else alias.name
            self._alias(module, alias.asname or alias.name, qualified)
            # ``from pkg import submodule`` imports a module, not a name.
            if self.find_local(qualified) is not None:
                self.load(qualified)
        if source:
            self.load(source)

    def _index_definitions(self, module: Module) -> None:
        for stmt in module.tree.body:
            if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef)):
                module.functions[stmt.name] = stmt
                module.aliases[stmt.name] = f"{module.name}.{stmt.name}"
            elif isinstance(stmt, ast.ClassDef):
                methods = {
                    item.name: item for item in stmt.body if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef))
                }
                info = ClassInfo(stmt.name, f"{module.name}.{stmt.name}", module, stmt, [], methods)
                module.classes[stmt.name] = info
                module.aliases[stmt.name] = info.qualname
        for info in module.classes.values():
            info.bases = [self.qualname(module, base) or "" for base in info.node.bases]

    def _star_import(self, module: Module, source: str) -> None:
        """``from models import *``: the local module's public names (its ``__all__`` when it has one)."""
        local = self.load(source) if source else None
        if local is None:
            return
        exported = dict(local.aliases)
        for stmt in local.tree.body:
            if isinstance(stmt, ast.Assign):
                for target in stmt.targets:
                    for name in ast.walk(target):
                        if isinstance(name, ast.Name):
                            exported.setdefault(name.id, f"{local.name}.{name.id}")
        public = _literal_names(local.tree)
        for name, qualified in exported.items():
            if (name in public) if public is not None else not name.startswith("_"):
                self._alias(module, name, qualified)

    # -- sys.path ------------------------------------------------------------------------------

    def _sys_path_entry(self, module: Module, call: ast.Call) -> None:
        """``sys.path.append(p)`` / ``sys.path.insert(i, p)`` with a path worked out from ``__file__``."""
        func = call.func
        if not (isinstance(func, ast.Attribute) and func.attr in ("append", "insert")
                and isinstance(func.value, ast.Attribute) and func.value.attr == "path"
                and isinstance(func.value.value, ast.Name) and func.value.value.id == "sys" and call.args):
            return
        folder = _static_path(module, call.args[-1])
        if folder is not None and folder.is_absolute() and folder.is_dir() and folder not in self.roots:
            self.roots.append(folder)

    # -- names ---------------------------------------------------------------------------------

    def qualname(self, module: Module, expr: ast.AST) -> str | None:
        """``np.random.rand`` -> ``numpy.random.rand``; None when the base is a local variable."""
        if isinstance(expr, ast.Name):
            return module.aliases.get(expr.id)
        if isinstance(expr, ast.Attribute):
            base = self.qualname(module, expr.value)
            return f"{base}.{expr.attr}" if base else None
        return None

    def split(self, qualname: str) -> tuple[Module, str] | None:
        """A qualified name inside a local module: (module, rest), else None."""
        parts = qualname.split(".")
        for cut in range(len(parts) - 1, 0, -1):
            name = ".".join(parts[:cut])
            module = self.modules.get(name)
            if module is not None:
                return module, ".".join(parts[cut:])
        return None

    def local_class(self, qualname: str | None) -> ClassInfo | None:
        if not qualname:
            return None
        found = self.split(qualname)
        if found is None:
            return None
        module, rest = found
        info = module.classes.get(rest)
        if info is None and rest in module.aliases and module.aliases[rest] != qualname:
            return self.local_class(module.aliases[rest])  # re-exported from another local module
        return info

    def local_function(self, qualname: str | None) -> tuple[Module, ast.FunctionDef] | None:
        if not qualname:
            return None
        found = self.split(qualname)
        if found is None:
            return None
        module, rest = found
        if rest in module.functions:
            return module, module.functions[rest]
        if rest in module.aliases and module.aliases[rest] != qualname:
            return self.local_function(module.aliases[rest])
        return None

    def class_chain(self, info: ClassInfo) -> list[ClassInfo]:
        """The class and its local base classes, most derived first."""
        chain, todo = [], [info]
        while todo:
            current = todo.pop(0)
            if current in chain:
                continue
            chain.append(current)
            todo.extend(base for base in map(self.local_class, current.bases) if base is not None)
        return chain

    def library_bases(self, info: ClassInfo) -> list[str]:
        return [b for c in self.class_chain(info) for b in c.bases if b and self.local_class(b) is None]

    def find_method(self, info: ClassInfo, name: str) -> tuple[ClassInfo, ast.FunctionDef] | None:
        for current in self.class_chain(info):
            if name in current.methods:
                return current, current.methods[name]
        return None


def _pythonpath() -> list[Path]:
    """The PYTHONPATH folders (the user's own code, e.g. a repository root set for ``python
    scripts/train.py``); installed packages are libraries to the doctor, never read as local code."""
    folders = [Path(p).resolve() for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    return [f for f in folders if f.is_dir() and not {"site-packages", "dist-packages"} & set(f.parts)]


def _literal_names(tree: ast.Module) -> set[str] | None:
    """A module's ``__all__`` when it is a literal list or tuple of names."""
    for stmt in tree.body:
        if (isinstance(stmt, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "__all__" for t in stmt.targets)
                and isinstance(stmt.value, (ast.List, ast.Tuple))):
            return {e.value for e in stmt.value.elts if isinstance(e, ast.Constant) and isinstance(e.value, str)}
    return None


def _static_path(module: Module, expr: ast.AST, depth: int = 0) -> Path | None:
    """The folder a path expression names, when it depends on ``__file__`` and constants only."""
    if depth > 12:
        return None
    if isinstance(expr, ast.Name):
        if expr.id == "__file__":
            return module.path
        for stmt in module.tree.body:
            if (isinstance(stmt, ast.Assign) and len(stmt.targets) == 1 and isinstance(stmt.targets[0], ast.Name)
                    and stmt.targets[0].id == expr.id):
                return _static_path(module, stmt.value, depth + 1)
        return None
    if isinstance(expr, ast.Constant) and isinstance(expr.value, str):
        return Path(expr.value)
    if isinstance(expr, ast.BinOp) and isinstance(expr.op, (ast.Div, ast.Add)):
        left, right = _static_path(module, expr.left, depth + 1), _static_path(module, expr.right, depth + 1)
        if left is None or right is None:
            return None
        return left / right if isinstance(expr.op, ast.Div) else Path(str(left) + str(right))
    if isinstance(expr, ast.Attribute) and expr.attr == "parent":
        inner = _static_path(module, expr.value, depth + 1)
        return inner.parent if inner is not None else None
    if isinstance(expr, ast.Subscript) and isinstance(expr.value, ast.Attribute) and expr.value.attr == "parents" \
            and isinstance(expr.slice, ast.Constant) and isinstance(expr.slice.value, int):
        inner = _static_path(module, expr.value.value, depth + 1)
        return inner.resolve().parents[expr.slice.value] if inner is not None else None
    if isinstance(expr, ast.Call):
        return _static_path_call(module, expr, depth)
    return None


def _static_path_call(module: Module, expr: ast.Call, depth: int) -> Path | None:
    """``os.path.dirname`` / ``abspath`` / ``join``, ``Path(...)``, ``.resolve()``, ``str(...)``."""
    name = expr.func.attr if isinstance(expr.func, ast.Attribute) else getattr(expr.func, "id", "")
    args = [_static_path(module, a, depth + 1) for a in expr.args]
    if name == "dirname" and len(args) == 1 and args[0] is not None:
        return args[0].parent
    if name in ("abspath", "realpath", "normpath", "resolve", "absolute", "expanduser"):
        target = args[0] if args else (_static_path(module, expr.func.value, depth + 1)
                                       if isinstance(expr.func, ast.Attribute) else None)
        return Path(os.path.normpath(target.resolve())) if target is not None else None
    if name == "join" and args and all(a is not None for a in args):
        return Path(os.path.normpath(os.path.join(*map(str, args))))
    if name in ("str", "Path", "PurePath", "fspath") and len(args) == 1:
        return args[0]
    return None


def where(module: Module, node: ast.AST) -> str:
    return f"{display(module.path)}:{getattr(node, 'lineno', 0)}"
