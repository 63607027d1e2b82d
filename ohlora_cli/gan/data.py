"""The GAN dataset: a CSV of image paths and label columns.

Rules (issue 4): image paths are relative to the CSV's folder, or absolute; an absolute path
from another machine is remapped with ``data.image_root`` (its folder is replaced by
``image_root``). Images are converted to RGB and resized to the model's resolution (with a
warning). Labels become float32 here, at the dataset boundary (the seed's first failure was a
float64 label batch from Python floats through the default collate). Optional standardisation
(z-scores); its mean and std travel in the checkpoint. Every bad row, cell or file raises a
DataError that names the file, the row (as the CSV line number) and the column.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath, PureWindowsPath

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from ..errors import DataError
from ..runtime.tables import check_columns_once

MAX_LISTED = 5


@dataclass
class LabelTable:
    """The CSV, read and checked: one image path and one float32 label vector per row."""

    csv: Path
    image_column: str
    label_names: list[str]
    paths: list[Path]
    lines: list[int]  # CSV line number of each row (the header is line 1)
    labels: np.ndarray  # (N, L) float32, as in the CSV
    mean: np.ndarray | None = None
    std: np.ndarray | None = None
    warnings: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.paths)

    @property
    def model_labels(self) -> np.ndarray:
        """Labels as the networks see them: standardised when asked, float32 always."""
        if self.mean is None:
            return self.labels
        return ((self.labels - self.mean) / self.std).astype(np.float32)

    def raw_spread(self) -> tuple[np.ndarray, np.ndarray] | None:
        """(mean, sd) of each label column when the networks see raw labels (None when they are
        standardised: then 0 and 1); what a grid sweeps around instead of -2..+2 in raw units."""
        if self.mean is not None:
            return None
        labels = self.labels.astype(np.float64)
        return labels.mean(0), labels.std(0).clip(min=1e-12)


def _is_absolute(raw: str) -> bool:
    return PurePosixPath(raw).is_absolute() or PureWindowsPath(raw).is_absolute()


def _basename(raw: str) -> str:
    return PureWindowsPath(raw).name if "\\" in raw else PurePosixPath(raw).name


def read_table(data_cfg, *, csv_path: str | Path | None = None) -> LabelTable:
    """Read ``data.csv``; check the columns, every label cell and every image path."""
    path = Path(csv_path or data_cfg.csv)
    if not path.is_file():
        raise DataError(f"{path}: data.csv does not exist", hint="Point data.csv at your labels CSV (paths are relative to the current directory).")
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            reader = csv.reader(fh)
            header = next(reader, None)
            body = list(reader)
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DataError(f"{path}: cannot read the CSV ({exc})") from exc
    if not header:
        raise DataError(f"{path}: the CSV is empty; it needs a header row and one row per image")
    header = [h.strip() for h in header]
    wanted = [data_cfg.image_column, *data_cfg.label_columns]
    check_columns_once(path, header, wanted)
    absent = [c for c in wanted if c not in header]
    if absent:
        keys = ["data.image_column" if c == data_cfg.image_column else "data.label_columns" for c in absent]
        raise DataError(
            f"{path}: column{'s' if len(absent) > 1 else ''} {', '.join(repr(c) for c in absent)} "
            f"(from {', '.join(sorted(set(keys)))}) not in the header; the CSV has: {', '.join(header)}",
            hint="Fix the column names in the recipe or in the CSV header.",
        )
    problems: list[str] = []
    paths, lines, rows = _read_rows(path, header, body, data_cfg, problems)
    if problems:
        shown = "\n  ".join(problems[:MAX_LISTED])
        more = " (and more)" if len(problems) > MAX_LISTED else ""
        raise DataError(f"{path}: bad rows{more}:\n  {shown}", hint="Fix or remove these rows; labels must be finite numbers.")
    if not paths:
        raise DataError(f"{path}: no data rows under the header")
    table = LabelTable(path, data_cfg.image_column, list(data_cfg.label_columns), paths, lines,
                       np.asarray(rows, dtype=np.float32))
    _check_paths(table, data_cfg)
    if data_cfg.standardize_labels:
        mean = table.labels.astype(np.float64).mean(axis=0)
        std = table.labels.astype(np.float64).std(axis=0)
        flat = [name for name, s in zip(table.label_names, std, strict=True) if s < 1e-12]
        if flat:
            raise DataError(f"{path}: column{'s' if len(flat) > 1 else ''} {', '.join(flat)} never change(s); "
                            "they cannot be standardised", hint="Drop constant columns from data.label_columns.")
        table.mean, table.std = mean.astype(np.float32), std.astype(np.float32)
    return table



def _read_rows(path: Path, header: list[str], body: list[list[str]], data_cfg, problems: list[str]):
    """(image paths, CSV line numbers, label rows) of the rows that are right; ``problems`` gets
    one line per bad cell or row (at most MAX_LISTED + 1)."""
    image_at = header.index(data_cfg.image_column)
    label_at = [header.index(c) for c in data_cfg.label_columns]
    image_root = Path(data_cfg.image_root) if data_cfg.image_root else None
    paths, lines, rows = [], [], []
    for number, row in enumerate(body, start=2):
        if not any(cell.strip() for cell in row):
            continue  # blank line
        if len(row) < len(header):
            problems.append(f"{path}:{number}: {len(row)} cells, the header has {len(header)}")
            continue
        values = _label_values(path, number, row, data_cfg.label_columns, label_at, problems)
        raw = row[image_at].strip()
        if not raw:
            problems.append(f"{path}:{number}: column '{data_cfg.image_column}' is empty")
            continue
        if _is_absolute(raw):
            image = image_root / _basename(raw) if image_root else Path(raw)
        else:
            image = path.parent / raw
        if len(values) == len(label_at):
            paths.append(image)
            lines.append(number)
            rows.append(values)
        if len(problems) > MAX_LISTED:
            break
    return paths, lines, rows


def _label_values(path: Path, number: int, row: list[str], columns, label_at, problems: list[str]) -> list[float]:
    values = []
    for column, at in zip(columns, label_at, strict=True):
        cell = row[at].strip()
        try:
            value = float(cell)
        except ValueError:
            problems.append(f"{path}:{number}: column '{column}': {cell!r} is not a number")
            continue
        if not math.isfinite(value):
            problems.append(f"{path}:{number}: column '{column}': {cell!r} is not finite")
        values.append(value)
    return values

def _check_paths(table: LabelTable, data_cfg) -> None:
    missing = [(line, p) for line, p in zip(table.lines, table.paths, strict=True) if not p.is_file()]
    if not missing:
        return
    line, first = missing[0]
    absolute = _is_absolute(str(first)) and not data_cfg.image_root
    listed = "\n  ".join(f"{table.csv}:{ln}: column '{table.image_column}': {p} not found" for ln, p in missing[:MAX_LISTED])
    if absolute and all(_is_absolute(str(p)) for _, p in missing):
        hint = ("These are absolute paths, perhaps from another machine: set data.image_root to the folder "
                "that holds the images here (each path's folder is replaced by it).")
    else:
        hint = f"Relative image paths are read from the CSV's folder ({table.csv.parent}); fix the paths or move the files."
    raise DataError(f"{len(missing)} of {len(table)} image files are missing:\n  {listed}", hint=hint)


def load_image(path: Path, resolution: int, *, line: int | None = None, csv_path: Path | None = None,
               column: str = "") -> tuple[np.ndarray, bool]:
    """RGB uint8 ``(3, R, R)``; the flag says whether it had to be resized."""
    try:
        with Image.open(path) as img:
            img = img.convert("RGB")
            resized = img.size != (resolution, resolution)
            if resized:
                img = img.resize((resolution, resolution), Image.Resampling.BICUBIC)
            array = np.asarray(img, dtype=np.uint8)
    except (OSError, UnidentifiedImageError, ValueError) as exc:
        where = f"{csv_path}:{line}: column '{column}': " if line is not None else ""
        raise DataError(f"{where}{path}: cannot read the image ({exc})",
                        hint="Replace or remove the broken file (PNG/JPEG, any mode is converted to RGB).") from exc
    return array.transpose(2, 0, 1).copy(), resized


def scan_images(table: LabelTable, resolution: int) -> dict:
    """Open every image's header: unreadable files raise DataError; returns sizes seen."""
    sizes: dict[tuple[int, int], int] = {}
    bad = []
    for line, path in zip(table.lines, table.paths, strict=True):
        try:
            with Image.open(path) as img:
                img.verify()
                sizes[img.size] = sizes.get(img.size, 0) + 1
        except (OSError, UnidentifiedImageError, ValueError, SyntaxError) as exc:
            bad.append(f"{table.csv}:{line}: column '{table.image_column}': {path}: {exc}")
            if len(bad) >= MAX_LISTED:
                break
    if bad:
        raise DataError("unreadable image files:\n  " + "\n  ".join(bad),
                        hint="Replace or remove the broken files.")
    off = sum(n for size, n in sizes.items() if size != (resolution, resolution))
    return {"sizes": sizes, "resized": off}


class GanDataset(torch.utils.data.Dataset):
    """``(image uint8 (3, R, R), labels float32 (L,))`` per row; decoded images held in memory
    when they fit in ``cache_mb``."""

    def __init__(self, table: LabelTable, resolution: int, *, cache_mb: int = 4096):
        self.table = table
        self.resolution = resolution
        self.labels = torch.from_numpy(table.model_labels.astype(np.float32))
        self.resized = 0
        self.cache: torch.Tensor | None = None
        if len(table) * 3 * resolution * resolution <= cache_mb * 2**20:
            cache = torch.empty(len(table), 3, resolution, resolution, dtype=torch.uint8)
            for i in range(len(table)):
                array, resized = self._read(i)
                cache[i] = torch.from_numpy(array)
                self.resized += resized
            self.cache = cache

    def _read(self, i: int) -> tuple[np.ndarray, bool]:
        return load_image(self.table.paths[i], self.resolution, line=self.table.lines[i],
                          csv_path=self.table.csv, column=self.table.image_column)

    def __len__(self) -> int:
        return len(self.table)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        image = self.cache[i] if self.cache is not None else torch.from_numpy(self._read(i)[0])
        return image, self.labels[i]


class IndexStream:
    """The data order: a fresh permutation per epoch from ``(seed, epoch)``, so the images of
    any global step are known without replaying the run (resume needs nothing but the step)."""

    def __init__(self, n: int, seed: int):
        self.n, self.seed = n, seed
        self._perms: dict[int, torch.Tensor] = {}

    def _perm(self, epoch: int) -> torch.Tensor:
        if epoch not in self._perms:
            self._perms = {epoch: torch.randperm(self.n, generator=torch.Generator().manual_seed(self.seed * 100003 + epoch))}
        return self._perms[epoch]

    def batch(self, step: int, global_batch: int, rank: int = 0, world: int = 1) -> list[int]:
        per_rank = global_batch // world
        start = step * global_batch + rank * per_rank
        return [int(self._perm(p // self.n)[p % self.n]) for p in range(start, start + per_rank)]


def iter_batches(dataset: GanDataset, *, seed: int, start_step: int, global_batch: int, rank: int = 0,
                 world: int = 1, num_workers: int = 0):
    """Yield ``(images uint8, labels float32)`` of this rank for steps ``start_step, start_step+1, ...``."""
    stream = IndexStream(len(dataset), seed)

    def batches():
        step = start_step
        while True:
            yield stream.batch(step, global_batch, rank, world)
            step += 1

    if dataset.cache is not None:
        for idx in batches():
            index = torch.tensor(idx)
            yield dataset.cache[index], dataset.labels[index]
    else:
        loader = torch.utils.data.DataLoader(dataset, batch_sampler=batches(), num_workers=num_workers,
                                             persistent_workers=num_workers > 0, pin_memory=torch.cuda.is_available())
        yield from loader
