"""The recipe a train command runs: read, validated, and the header of its data CSV checked, with
pydantic, yaml and the standard library only. A bad or hostile file is answered in a fraction of a
second, before the engine imports torch."""

from __future__ import annotations

from .. import recipes
from ..runtime.tables import check_csv_header


def load_checked(recipe: str, overrides: list[str], kind: str):
    loaded = recipes.load(recipe, overrides, expect_kind=kind)
    data = loaded.data
    if kind == "gan":
        check_csv_header(data.csv, [data.image_column, *data.label_columns], strip=True)
    elif data.path.lower().endswith(".csv") and not data.path.startswith("package:"):
        check_csv_header(data.path, [data.input_column, data.output_column, data.split_column], strip=False)
    return loaded


def arguments(args: list[str] | None, set_: list[str] | None, *, command: str, default: str) -> tuple[str, list[str]]:
    """A train command's bare arguments and --set options -> (recipe, overrides): ``KEY=VALUE``
    arguments are overrides beside --set (after them, so a bare one wins), the other is the recipe."""
    targets, bare = recipes.split_arguments(args or [], command=command)
    return (targets[0] if targets else default), [*(set_ or []), *bare]
