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


# --- ImVisible (traffic-light CSV + photos) -----------------------------------------------------

PANDAS2 = "/tmp/ohlora-bench-pandas2"
PANDAS2_HOW = f"pip install --no-deps --target {PANDAS2} pandas==2.3.3 pytz"


def _pandas2_env() -> dict:
    """pandas 3 removed the positional fallback of ``Series[int]`` on a labelled Series, which
    ImVisible's dataset uses (``points[0]`` on a row slice): the script needs the pandas of its
    time. A pandas 2 overlay, installed with --target outside the shared environment, goes first
    on PYTHONPATH for the run only."""
    import os

    import pandas

    if int(pandas.__version__.split(".")[0]) < 3:
        return {}
    if not Path(PANDAS2, "pandas").is_dir():
        raise RuntimeError(f"pandas {pandas.__version__} cannot run this script; make the overlay: {PANDAS2_HOW}")
    rest = os.environ.get("PYTHONPATH", "")
    return {"PYTHONPATH": PANDAS2 + (os.pathsep + rest if rest else "")}


def _jpeg(path: Path, rng: np.random.Generator, width: int, height: int) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    # a smooth random picture (small JPEG) rather than noise
    small = rng.integers(0, 256, (height // 32 + 1, width // 32 + 1, 3)).astype(np.uint8)
    Image.fromarray(small).resize((width, height)).save(path, quality=80)


@maker("imvisible")
def imvisible(root: Path, entry: dict) -> dict:
    # training.py reads its annotation CSVs and photos from the placeholder paths it ships with
    # (relative to Model/), BATCH_SIZE 32 and 800 epochs are constants. The dataset crops 768x576
    # out of 876x657 pictures (train and validation alike) and scales the midline points, given
    # in 4032x3024 coordinates. Four training photos: one step per epoch, and the per-epoch lists
    # (train_losses, ...) then carry one graph per step; one validation photo.
    rng = _rng(entry)
    base = root / "PATH" / "TO"
    for csv, images, n in (("TRAINING", "876x657", 4), ("VALIDATION", "768x576", 1)):
        rows = ["file,mode,x1,y1,x2,y2,block"]
        for i in range(n):
            name = f"light_{csv.lower()}_{i}.jpg"
            _jpeg(base / images / "IMAGES" / name, rng, 876, 657)
            x1, x2 = rng.integers(800, 3200, 2)
            y1, y2 = int(rng.integers(200, 1500)), int(rng.integers(1600, 3024))
            rows.append(f"{name},{int(rng.integers(0, 5))},{x1},{y1},{x2},{y2},not_blocked")
        (base / csv).mkdir(parents=True, exist_ok=True)
        (base / csv / "ANNOTATIONS").write_text("\n".join(rows) + "\n")
    return {"cwd": root, "args": [], "env": _pandas2_env()}
