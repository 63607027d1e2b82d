"""Snapshots of folders, to check that a command created, changed or deleted nothing in them."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path


def snapshot(*roots: Path) -> dict:
    """Every entry under ``roots`` (the roots too): kind, size, content hash and mtime of files,
    and the mtime of folders (a file created and removed again still changes its folder's mtime)."""
    found = {}
    for root in roots:
        root = Path(root)
        if not root.exists():
            found[str(root)] = None
            continue
        for folder, _dirs, files in os.walk(root):
            stat = os.stat(folder)
            found[folder] = ("dir", stat.st_mtime_ns)
            for name in files:
                path = os.path.join(folder, name)
                stat = os.stat(path)
                digest = hashlib.sha256(Path(path).read_bytes()).hexdigest()
                found[path] = ("file", stat.st_size, digest, stat.st_mtime_ns)
    return found


def difference(before: dict, after: dict) -> dict:
    """What changed between two snapshots: {path: (before, after)}."""
    return {k: (before.get(k), after.get(k)) for k in before.keys() | after.keys() if before.get(k) != after.get(k)}
