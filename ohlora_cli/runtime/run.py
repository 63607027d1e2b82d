"""A run folder (``output_dir``): the one owner of what every run writes there, for both engines.

A run goes through it in this order:

1. ``RunFolder(output_dir).check()``: a new folder, an empty one, or an ohlora run's (reads only;
   ``ohlora doctor`` asks the same).
2. ``folder.resume_point(found, resume=...)``: the engine finds its latest complete checkpoint
   (its own format); this refuses a fresh start over an earlier run and a ``--resume`` with
   nothing to continue.
3. ``folder.open(recipe_text, report=..., resume=...)`` (rank 0): claims the folder (its marker),
   writes the resolved recipe (on ``--resume``, a recipe that differs is kept beside the first
   one, never over it), the preflight's ``doctor.json``, and sends library output to
   ``train.log``.
4. ``folder.write_run_info(...)``: ``run.json``, the plan the run trains with.

The file names every run writes live here (and nowhere else). Nothing here imports torch.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import yaml

from ..console import info, warn
from ..errors import CheckpointError, RecipeError
from . import builds, quiet
from .files import write_json, write_text

RECIPE = "recipe.yaml"
STATS = "stats.jsonl"
DOCTOR = "doctor.json"
RUN_INFO = "run.json"
LOG = "train.log"
REPORT = "report.html"
CHECKPOINTS = "checkpoints"


class RunFolder:
    def __init__(self, output_dir: str | os.PathLike):
        self.path = Path(output_dir).expanduser()
        self.recipe_file: Path | None = None  # the recipe this segment runs with, once opened

    # file names -----------------------------------------------------------------------------
    @property
    def recipe_path(self) -> Path:
        return self.path / RECIPE

    @property
    def stats(self) -> Path:
        return self.path / STATS

    @property
    def checkpoints(self) -> Path:
        return self.path / CHECKPOINTS

    @property
    def report(self) -> Path:
        return self.path / REPORT

    @property
    def log(self) -> Path:
        return self.path / LOG

    # before anything is written ---------------------------------------------------------------
    def check(self) -> None:
        builds.check_output_dir(self.path)

    def resume_point(self, found: Path | None, *, resume: bool, what: str = "checkpoint") -> Path | None:
        """``found``: the engine's latest complete checkpoint here, or None. A fresh start over it
        is refused (nothing is lost); ``--resume`` without one too."""
        if not resume:
            if found is not None:
                raise RecipeError(f"output_dir: {self.path} already holds a run ({found.name})",
                                  hint=f"Pass --resume to continue it, or start elsewhere: --set output_dir={self.path}-2")
            return None
        if found is None:
            raise CheckpointError(f"--resume: {self.checkpoints} holds no complete {what} to continue from",
                                  hint="Run without --resume to start, or point output_dir at the earlier run.")
        return found

    # writing ----------------------------------------------------------------------------------
    def open(self, recipe_text: str, *, report=None, resume: bool = False, log: bool = True) -> Path:
        """Claim the folder, write the recipe and the preflight's report; library output to train.log.
        Returns the recipe file this segment runs with."""
        builds.claim_output_dir(self.path)
        self.recipe_file = self.write_recipe(recipe_text, resume=resume)
        if report is not None:
            write_json(self.path / DOCTOR, report.to_dict())
        if log:
            self.open_log()
        return self.recipe_file

    def open_log(self) -> None:
        quiet.log_to(self.log)

    def write_recipe(self, text: str, *, resume: bool) -> Path:
        """``recipe.yaml``; on ``--resume`` with a recipe that differs from the run's, the changes are
        listed key by key and the new recipe kept as ``recipe-resume-N.yaml`` (``recipe.yaml`` stays
        the first segment's)."""
        first = self.path / RECIPE
        if not resume or not first.is_file():
            write_text(first, text)
            return first
        latest = self.latest_recipe()
        try:
            before = yaml.safe_load(latest.read_text(encoding="utf-8"))
        except (OSError, yaml.YAMLError):
            before = None
        changes = recipe_changes(before if isinstance(before, dict) else {}, yaml.safe_load(text))
        if not changes:
            return latest
        n = 1
        while (self.path / f"recipe-resume-{n}.yaml").exists():
            n += 1
        kept = self.path / f"recipe-resume-{n}.yaml"
        write_text(kept, text)
        warn(f"resuming with a recipe that differs from {latest.name}: "
             + "; ".join(f"{key} {a} -> {b}" for key, a, b in changes)
             + f". Kept as {kept} ({RECIPE} stays the first segment's)")
        return kept

    def latest_recipe(self) -> Path:
        """The recipe the run's last segment ran with."""
        resumed = [p for p in self.path.glob("recipe-resume-*.yaml") if p.stem.rsplit("-", 1)[-1].isdigit()]
        return max(resumed, key=lambda p: int(p.stem.rsplit("-", 1)[-1]), default=self.path / RECIPE)

    def write_run_info(self, figures: dict) -> None:
        write_json(self.path / RUN_INFO, figures)

    def read_run_info(self) -> dict:
        try:
            return json.loads((self.path / RUN_INFO).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}


def resuming(path: Path, step: int, detail: str = "") -> None:
    """The line both engines print when they continue a run."""
    info(f"resuming from checkpoint {path} (step {step}{', ' + detail if detail else ''})")


def flatten(tree, prefix: str = "") -> dict:
    """{'a.b': value} for a nested mapping (lists are values)."""
    if not isinstance(tree, dict):
        return {prefix: tree}
    flat = {}
    for key, value in tree.items():
        flat.update(flatten(value, f"{prefix}.{key}" if prefix else str(key)))
    return flat


def recipe_changes(before: dict, after: dict) -> list[tuple[str, object, object]]:
    """(dotted key, old value, new value) for every key whose value differs; a missing key reads
    as ``(absent)``."""
    a, b = flatten(before), flatten(after)
    missing = "(absent)"
    return [(key, a.get(key, missing), b.get(key, missing)) for key in sorted(set(a) | set(b))
            if a.get(key, missing) != b.get(key, missing)]
