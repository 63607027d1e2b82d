"""Folders ohlora makes, and the rule that keeps it off everything else.

Two kinds of folder carry a marker file, ``.ohlora.json``, written when ohlora creates them:

- **builder folders**: what a demo builder (``data.synthetic``, ``model.tiny``) builds. A builder
  builds only into a folder that does not exist yet, or into one that holds its own marker from an
  earlier build and nothing but the files that build wrote (the marker lists them). It builds in
  a fresh temporary folder beside the target and renames it into place in one step: a crash
  leaves no half-built folder, and nothing that was there before is overwritten.
- **run folders** (``output_dir``): a run writes into one that does not exist yet, is empty (or
  holds only builder folders: a demo builds its data or tiny model inside its output_dir), or
  holds the run marker of an earlier ohlora run. A folder with other things in it is refused.

Anything else is refused with a RecipeError (exit 2) that names the recipe key, the folder and
what is in it. Nothing here imports torch.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

from .. import __version__
from ..errors import RecipeError
from .files import _umask

MARKER = ".ohlora.json"
RUN = "run"  # made_by of an output_dir
SHOWN = 6


def listing(folder: Path, names: list[str] | None = None) -> str:
    """'a, b/, c ... (N entries)': what a folder holds, for a message."""
    if names is None:
        try:
            names = sorted(p.name + ("/" if p.is_dir() else "") for p in folder.iterdir())
        except OSError as exc:
            return f"unreadable: {exc.strerror}"
    if not names:
        return "nothing"
    more = f" ... ({len(names)} entries)" if len(names) > SHOWN else ""
    return ", ".join(names[:SHOWN]) + more


def read_marker(folder: Path) -> dict | None:
    """The marker of a folder ohlora made, or None (no marker, or not one of ours)."""
    try:
        data = json.loads((folder / MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and isinstance(data.get("made_by"), str) else None


def inside(path: str | os.PathLike, folder: str | os.PathLike) -> bool:
    """Whether ``path`` lies strictly inside ``folder`` (both resolved; neither needs to exist)."""
    path, folder = Path(path).expanduser().resolve(), Path(folder).expanduser().resolve()
    return path != folder and folder in path.parents


# ------------------------------------------------------------------------------ builder folders


def _foreign(folder: Path, marker: dict) -> list[str]:
    """Entries of a marked builder folder that its build did not write."""
    written = set(marker.get("files") or [])
    dirs = {str(Path(f).parent) for f in written} - {"."}
    dirs |= {str(p) for d in list(dirs) for p in Path(d).parents if str(p) != "."}
    found = []
    for path in sorted(folder.rglob("*")):
        rel = str(path.relative_to(folder))
        if rel == MARKER or rel in written or (path.is_dir() and rel in dirs):
            continue
        found.append(rel + ("/" if path.is_dir() else ""))
    return found


def check_build_folder(folder: str | os.PathLike, *, made_by: str, key: str, what: str,
                       same: dict | None = None, why: str = "", demo_hint: str = "") -> bool:
    """May ``made_by`` build ``what`` into ``folder``? True: the folder does not exist; False: it
    holds an earlier build of ours (same ``same`` entries) and only what that build wrote, so it may
    be rebuilt. Otherwise a RecipeError naming ``key``, the folder and what is in it."""
    folder = Path(folder).expanduser()
    if not folder.exists():
        return True
    hint = (f"If {key} is mistyped, fix it{demo_hint}. Otherwise point {key} into a folder that does not exist "
            "yet: ohlora builds only into a folder it creates, and never writes over what is already there.")
    if not folder.is_dir():
        raise RecipeError(f"{key}: {why}{made_by} would build {what} at {folder}, but that is a file, not a folder",
                          hint=hint)
    marker = read_marker(folder)
    if marker is None or marker.get("made_by") != made_by:
        made = f" (made by ohlora's {marker['made_by']})" if marker else ", which ohlora did not create"
        raise RecipeError(
            f"{key}: {why}{made_by} would build {what} in {folder}, but that folder already exists{made}; "
            f"it holds: {listing(folder)}", hint=hint)
    for name, value in (same or {}).items():
        if marker.get(name) != value:
            raise RecipeError(
                f"{key}: {folder} holds {made_by}'s earlier build with {name} {marker.get(name)!r}, not {value!r}; "
                "ohlora will not rebuild over it", hint=hint)
    foreign = _foreign(folder, marker)
    if foreign:
        raise RecipeError(
            f"{key}: {folder} was built by ohlora's {made_by}, but now also holds files that build did not "
            f"write: {listing(folder, foreign)}; ohlora will not rebuild over them", hint=hint)
    return False


def build_folder(folder: str | os.PathLike, write: Callable[[Path], None], *, made_by: str, key: str, what: str,
                 same: dict | None = None, why: str = "", demo_hint: str = "") -> bool:
    """Build ``folder`` with ``write(tmp)`` into a fresh temporary folder beside it, add the marker
    (listing every file written) and rename it into place. The rule of ``check_build_folder`` is
    checked first and again at the rename. Returns False when another process (a torchrun rank)
    put the same build in place first."""
    folder = Path(folder).expanduser()
    fresh = check_build_folder(folder, made_by=made_by, key=key, what=what, same=same, why=why, demo_hint=demo_hint)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.building-", dir=folder.parent))
    old = None
    try:
        os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes 0700; the built folder gets the usual permissions
        write(tmp)
        files = sorted(str(p.relative_to(tmp)) for p in tmp.rglob("*") if p.is_file())
        marker = {"made_by": made_by, "ohlora": __version__, **(same or {}), "files": files}
        (tmp / MARKER).write_text(json.dumps(marker, indent=1) + "\n", encoding="utf-8")
        if not fresh:  # our own earlier build, checked above: set it aside, then swap
            old = Path(tempfile.mkdtemp(prefix=f".{folder.name}.old-", dir=folder.parent))
            os.replace(folder, old)  # onto the empty folder mkdtemp just made
        try:
            os.rename(tmp, folder)
        except OSError:
            if fresh and folder.is_dir() and (read_marker(folder) or {}).get("made_by") == made_by:
                return False  # a concurrent rank built it first
            raise
        return True
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # ours (mkdtemp); gone already after the rename
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)  # our earlier build, checked file by file above


# -------------------------------------------------------------------------------- run folders


def check_output_dir(output_dir: str | os.PathLike, *, key: str = "output_dir") -> None:
    """A run may write into ``output_dir`` when it does not exist, is empty, or is an ohlora run
    folder (it holds the run marker). Reads only."""
    folder = Path(output_dir).expanduser()
    if not folder.exists():
        return
    if not folder.is_dir():
        raise RecipeError(f"{key}: {folder} is a file, not a folder", hint=f"Set {key} to a new folder.")
    marker = read_marker(folder)
    if marker is not None and marker.get("made_by") == RUN:
        return
    try:
        entries = list(folder.iterdir())
    except OSError as exc:
        raise RecipeError(f"{key}: {folder}: cannot read the folder ({exc.strerror})") from None
    # Empty, or holding only what a demo builder built there (a demo keeps its data and tiny model
    # under its output_dir, and builds them before the run claims the folder).
    if all(entry.is_dir() and (read_marker(entry) or {}).get("made_by") not in (None, RUN) for entry in entries):
        return
    made = f" (it was made by ohlora's {marker['made_by']})" if marker else ""
    raise RecipeError(
        f"{key}: {folder} is not an ohlora run folder{made}; it holds: {listing(folder)}",
        hint=f"A run writes its files into {key} and never writes over files it did not create: "
             f"point {key} at a new folder (or an earlier ohlora run's, with --resume to continue it).")


def claim_output_dir(output_dir: str | os.PathLike, *, key: str = "output_dir") -> Path:
    """Create (or adopt, when empty) ``output_dir`` as an ohlora run folder; the rule of
    ``check_output_dir`` first."""
    folder = Path(output_dir).expanduser()
    check_output_dir(folder, key=key)
    folder.mkdir(parents=True, exist_ok=True)
    if read_marker(folder) is None:
        (folder / MARKER).write_text(json.dumps({"made_by": RUN, "ohlora": __version__}) + "\n", encoding="utf-8")
    return folder
