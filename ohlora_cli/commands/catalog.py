"""``ohlora recipes`` (the packaged recipes, one line each) and ``ohlora recipes copy NAME [DEST]``
(a commented copy the user owns; never written over an existing file). torchtune's ``tune ls`` /
``tune cp``. Reads the packaged YAML files only: no torch."""

from __future__ import annotations

from pathlib import Path

from .. import __version__, recipes
from ..console import info, out
from ..errors import BadInputError


def summary(path: Path) -> tuple[str, str]:
    """(kind, one-line summary): the recipe's ``kind`` and the first line of its header comment."""
    data = recipes.read_yaml(path)
    with open(path, encoding="utf-8") as fh:
        first = fh.readline().strip()
    return str(data.get("kind", "?")), first.lstrip("#").strip() if first.startswith("#") else ""


def list_recipes() -> None:
    from rich.markup import escape
    from rich.table import Table

    table = Table(title="packaged recipes", title_justify="left", show_edge=False)
    table.add_column("name", no_wrap=True, style="bold")
    table.add_column("kind", no_wrap=True)
    table.add_column("what it trains")
    for name in recipes.packaged_recipes():
        kind, line = summary(recipes.recipes_dir() / f"{name}.yaml")
        table.add_row(name, kind, escape(line))
    out.print(table)
    info("Run one: ohlora train-gan NAME / ohlora train-llm NAME. Own a copy to edit: ohlora recipes copy NAME [DEST]")


def copy(name: str, dest: Path | None) -> Path:
    names = recipes.packaged_recipes()
    stem = name[:-5] if name.endswith(".yaml") else name
    if stem not in names:
        import difflib

        close = difflib.get_close_matches(stem, names, n=1)
        raise BadInputError(f"recipes copy {name}: no packaged recipe of that name",
                            hint=(f"did you mean '{close[0]}'? " if close else "") + f"One of: {', '.join(names)}.")
    target = Path(f"{stem}.yaml") if dest is None else dest.expanduser()
    if target.is_dir():
        target = target / f"{stem}.yaml"
    if target.suffix.lower() not in (".yaml", ".yml"):
        raise BadInputError(f"recipes copy: {target}: name the copy *.yaml")
    if target.exists():
        raise BadInputError(f"recipes copy: {target} already exists",
                            hint="Name a new file; ohlora never writes over one.")
    if not target.parent.is_dir():
        raise BadInputError(f"recipes copy: {target.parent}: no such folder", hint="Create it first, or name another.")
    source = recipes.recipes_dir() / f"{stem}.yaml"
    kind, _ = summary(source)
    text = source.read_text(encoding="utf-8")
    header = (f"# Copied from ohlora's packaged recipe '{stem}' (ohlora {__version__}): yours to edit.\n"
              f"# Run it: ohlora train-{kind} {target}\n")
    try:
        with open(target, "x", encoding="utf-8") as fh:  # "x": never over a file that appeared meanwhile
            fh.write(header + text)
    except FileExistsError:
        raise BadInputError(f"recipes copy: {target} already exists",
                            hint="Name a new file; ohlora never writes over one.") from None
    except OSError as exc:
        raise BadInputError(f"recipes copy: {target}: cannot write ({exc.strerror})") from None
    out.print(f"wrote {target}; run it: ohlora train-{kind} {target}", highlight=False, markup=False)
    return target
