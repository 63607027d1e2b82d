"""Makers for ``python bench/doctor_accuracy.py --run``: each prepares what one real script reads
(synthetic data in the schema it expects, a tiny local model built from a config) in the folder
extracted from the public repository, so the script runs unchanged under ``ohlora doctor --run``.

A manifest entry names its maker in ``"run": {"maker": NAME, ...}``. A maker is
``make(root: Path, entry: dict) -> dict`` where ``root`` is the extracted entry folder; it returns
``{"cwd": Path, "args": [...], "env": {...}}`` (each optional: cwd defaults to ``root``).
Nothing here is copied from the repositories; the makers only write data files.
"""

from __future__ import annotations

from . import heldout2, ohlora

MAKERS = {**ohlora.MAKERS, **heldout2.MAKERS}
