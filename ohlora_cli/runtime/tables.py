"""CSV headers, read with the standard library only: the engines check them when they read the
data, and ``ohlora_cli.cli`` checks them before an engine (torch) is imported, so an ambiguous
header is answered in a fraction of a second."""

from __future__ import annotations

import csv
from pathlib import Path

from ..errors import DataError


def check_columns_once(path: str | Path, header: list[str], used: list[str]) -> None:
    """A column the recipe reads must appear once in the header: with two, which one is read is
    undefined. DataError naming the file, the column and its positions."""
    twice = [c for c in dict.fromkeys(used) if c and header.count(c) > 1]
    if twice:
        places = "; ".join(f"'{c}' is columns {', '.join(str(i + 1) for i, h in enumerate(header) if h == c)}"
                           for c in twice)
        raise DataError(f"{path}:1: the header names a column twice ({places}): which one the recipe means is "
                        "ambiguous", hint="Rename or remove the duplicate column in the CSV header.")


def check_csv_header(path: str | Path, used: list[str], *, strip: bool) -> None:
    """``check_columns_once`` on a CSV file's first row. Reads only that row; a file that is not
    there or not readable is left to the engine, which reports it in full."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            header = next(csv.reader(fh), None)
    except (OSError, UnicodeDecodeError, csv.Error):
        return
    if header:
        check_columns_once(path, [h.strip() for h in header] if strip else header, used)
