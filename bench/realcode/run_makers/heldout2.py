"""Makers for the heldout2 manifest (see __init__.py).

Every maker writes a few synthetic samples in the on-disk schema the script reads (nothing from
the upstream datasets, nothing copied from the repositories) and returns the arguments that keep
one epoch short. The number of samples is chosen so that an epoch lasts longer than the doctor's
``--steps``: a tensor accumulated over an epoch then outlives several step boundaries, as it does
in a real run.
"""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np

MAKERS: dict = {}


def maker(name: str):
    def register(fn):
        MAKERS[name] = fn
        return fn
    return register


def _rng(entry: dict) -> np.random.Generator:
    return np.random.default_rng(int(entry["commit"][:8], 16))


# --- torchvision MNIST (jostmey/NakedAttention) -----------------------------------------------

def _idx_file(path: Path, array: np.ndarray) -> None:
    """An uncompressed IDX file (big-endian dims after a magic of 0, 0, type 0x08 = ubyte, ndim),
    the format torchvision's MNIST reads from raw/ once the archive names without .gz exist."""
    path.parent.mkdir(parents=True, exist_ok=True)
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(struct.pack(">I", n) for n in array.shape)
    path.write_bytes(header + array.astype(np.uint8).tobytes())


def write_mnist(folder: Path, rng: np.random.Generator, n_train: int, n_test: int) -> None:
    raw = folder / "MNIST" / "raw"
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        _idx_file(raw / f"{prefix}-images-idx3-ubyte", rng.integers(0, 256, (n, 28, 28)))
        _idx_file(raw / f"{prefix}-labels-idx1-ubyte", rng.integers(0, 10, n))


@maker("nakedattention")
def nakedattention(root: Path, entry: dict) -> dict:
    # load_mnist keeps 5/6 of the training set, batch 16 with drop_last: 240 images -> 12 steps
    # per epoch, so e_train lives across every boundary of a short run. No arguments.
    write_mnist(root, _rng(entry), n_train=240, n_test=32)
    return {"cwd": root, "args": [], "env": {}}
