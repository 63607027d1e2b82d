"""Dialogue data: read CSV / JSONL rows, check them, split train / valid, build prompt / completion pairs.

Rows are numbered from 1 (the first data row) and know the line of the file they end on. Every bad
row is reported in one DataError, as ``file:line`` (the GAN's style). Nothing here imports torch.
"""

from __future__ import annotations

import csv
import json
import random
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from ..errors import DataError
from ..runtime.tables import check_columns_once
from .config import LlmData

PACKAGE_PREFIX = "package:"
MAX_LISTED = 10


@dataclass(frozen=True)
class Row:
    number: int  # 1-based data row
    input: str
    output: str
    split: str | None = None  # 'train' / 'valid' from the split column, else None
    line: int = 0  # the file's line the row ends on (1-based; a CSV's header is line 1)


def resolve_path(path: str) -> Path:
    """A data path relative to the current directory, or ``package:NAME`` for a file shipped in ohlora_cli/data."""
    if path.startswith(PACKAGE_PREFIX):
        name = path[len(PACKAGE_PREFIX):]
        shipped = Path(str(resources.files("ohlora_cli"))) / "data" / name
        if not shipped.is_file():
            available = sorted(p.name for p in shipped.parent.glob("*") if p.is_file() and p.suffix != ".py")
            raise DataError(f"data.path: {path}: no such file shipped with ohlora",
                            hint=f"Shipped data files: {', '.join(available) or 'none'}.")
        return shipped
    return Path(path).expanduser()


def _bad(path: Path, problems: list[str], hint: str) -> DataError:
    shown = problems[:MAX_LISTED]
    more = f"\n  ... and {len(problems) - MAX_LISTED} more" if len(problems) > MAX_LISTED else ""
    count = len(problems)
    return DataError(f"{path}: {count} bad row{'s' if count != 1 else ''}:\n  " + "\n  ".join(shown) + more,
                     hint=hint)


class _DuplicateKey(ValueError):
    pass


def _pairs(pairs: list[tuple]) -> dict:
    record = {}
    for key, value in pairs:
        if key in record:
            raise _DuplicateKey(key)
        record[key] = value
    return record


def _read_records(path: Path) -> tuple[list[str], list[dict], list[int]]:
    """(column names, records, the line each record ends on) from a CSV or JSONL file."""
    if not path.is_file():
        raise DataError(f"data.path: {path}: no such file", hint="Set data.path to your CSV or JSONL file.")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not UTF-8 text (byte {exc.start})",
                        hint="Save the file as UTF-8 (e.g. from cp949/EUC-KR) and run again.") from None
    except OSError as exc:
        raise DataError(f"{path}: cannot read ({exc.strerror})") from None
    if path.suffix.lower() in (".jsonl", ".json", ".ndjson"):
        records, columns, problems, lines = [], {}, [], []
        for line_no, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line, object_pairs_hook=_pairs)
            except json.JSONDecodeError as exc:
                problems.append(f"{path}:{line_no}: not valid JSON ({exc.msg})")
                continue
            except _DuplicateKey as exc:
                problems.append(f"{path}:{line_no}: key '{exc.args[0]}' appears twice (which one to read is undefined)")
                continue
            if not isinstance(record, dict):
                problems.append(f"{path}:{line_no}: expected a JSON object, got {type(record).__name__}")
                continue
            records.append(record)
            lines.append(line_no)
            columns.update(dict.fromkeys(record))
        if problems:
            raise _bad(path, problems, "Each line of a JSONL file must be one JSON object.")
        return list(columns), records, lines
    reader = csv.DictReader(text.splitlines())
    records, lines = [], []
    try:
        for record in reader:
            records.append(dict(record))
            lines.append(reader.line_num)
    except csv.Error as exc:
        raise DataError(f"{path}:{reader.line_num}: malformed CSV ({exc})",
                        hint="Check quoting around that line.") from None
    header = list(reader.fieldnames or [])
    return header, records, lines


def read_rows(cfg: LlmData) -> list[Row]:
    """Read and check every row. Raises one DataError naming every bad row."""
    path = resolve_path(cfg.path)
    columns, records, lines = _read_records(path)
    check_columns_once(path, columns, [cfg.input_column, cfg.output_column, cfg.split_column])
    if not records:
        raise DataError(f"{path}: no data rows", hint="Add rows with an input and an output column.")
    missing = [c for c in (cfg.input_column, cfg.output_column) if c not in columns]
    if missing:
        keys = {cfg.input_column: "data.input_column", cfg.output_column: "data.output_column"}
        raise DataError(
            f"{path}: no column {', '.join(repr(c) for c in missing)} "
            f"(set by {', '.join(keys[c] for c in missing)}); the file has: {', '.join(columns) or 'no header'}",
            hint="Rename the column in the file, or point the recipe key at the right column.",
        )
    use_split = cfg.split_column is not None and cfg.split_column in columns
    rows, problems = [], []
    for number, (record, line) in enumerate(zip(records, lines, strict=True), start=1):
        at = f"{path}:{line}"
        found = []
        for column in (cfg.input_column, cfg.output_column):
            value = record.get(column)
            if value is None or (isinstance(value, str) and not value.strip()):
                found.append(f"{at}: {column} is empty")
            elif not isinstance(value, str):
                found.append(f"{at}: {column} is {type(value).__name__} {value!r}, not text")
        split = None
        if use_split:
            raw = record.get(cfg.split_column)
            split = raw.strip().lower() if isinstance(raw, str) else raw
            if split not in ("train", "valid"):
                found.append(f"{at}: {cfg.split_column} is {raw!r}; expected 'train' or 'valid'")
        problems += found
        if not found:
            rows.append(Row(number, record[cfg.input_column].strip(), record[cfg.output_column].strip(), split,
                            line=line))
    if problems:
        raise _bad(path, problems, "Fix or remove these rows.")
    return rows


def split_rows(rows: list[Row], cfg: LlmData, seed: int) -> tuple[list[Row], list[Row]]:
    """Train / valid by the split column when the file has one, else a seeded valid_fraction hold-out."""
    if any(row.split is not None for row in rows):
        return [r for r in rows if r.split == "train"], [r for r in rows if r.split == "valid"]
    count = round(len(rows) * cfg.valid_fraction)
    if cfg.valid_fraction > 0 and len(rows) > 1:
        count = min(max(count, 1), len(rows) - 1)
    order = list(range(len(rows)))
    random.Random(seed).shuffle(order)
    held = set(order[:count])
    return [r for i, r in enumerate(rows) if i not in held], [r for i, r in enumerate(rows) if i in held]


def prompt_and_completion(row_input: str, row_output: str | None, cfg: LlmData) -> tuple[str, str]:
    """Split the template into a prompt and a completion.

    The prompt ends without trailing whitespace: the whitespace goes to the completion, so the
    tokenized prompt stays a prefix of the tokenized prompt + completion (byte-level BPE glues a
    space to the next word).
    """
    before, after = cfg.template.split("{output}", 1)
    prompt = before.replace("{input}", row_input)
    stripped = prompt.rstrip()
    completion = prompt[len(stripped):] + (row_output or "") + after.rstrip()
    return stripped, completion


def example(row: Row, cfg: LlmData) -> dict:
    """One trl prompt / completion example (conversational when data.chat_template)."""
    if cfg.chat_template:
        return {"prompt": [{"role": "user", "content": row.input}],
                "completion": [{"role": "assistant", "content": row.output}]}
    prompt, completion = prompt_and_completion(row.input, row.output, cfg)
    return {"prompt": prompt, "completion": completion}


def generation_prompt(row_input: str, cfg: LlmData, tokenizer) -> str:
    """The text a model is given to answer ``row_input`` (as in training, without the answer)."""
    if cfg.chat_template:
        return tokenizer.apply_chat_template([{"role": "user", "content": row_input}], tokenize=False,
                                             add_generation_prompt=True)
    return prompt_and_completion(row_input, None, cfg)[0]


def check_tokens(rows: list[Row], cfg: LlmData, tokenizer, source: str) -> None:
    """Rows longer than data.max_length tokens, a template the tokenizer cannot render: one DataError."""
    if cfg.chat_template and not getattr(tokenizer, "chat_template", None):
        raise DataError("data.chat_template: true, but the tokenizer has no chat template",
                        hint="Use data.template (Oh-LoRA style) for this model, or a model with a chat template.")
    problems = []
    for row in rows:
        item = example(row, cfg)
        if cfg.chat_template:
            ids = tokenizer.apply_chat_template(item["prompt"] + item["completion"], tokenize=True)
            ids = ids["input_ids"] if isinstance(ids, dict) else ids
            length = len(ids)
        else:
            length = len(tokenizer(item["prompt"] + item["completion"])["input_ids"]) + 1  # + EOS
        if length > cfg.max_length:
            problems.append(f"{source}:{row.line}: {length} tokens, over data.max_length {cfg.max_length}"
                            if row.line else f"row {row.number}: {length} tokens, over data.max_length {cfg.max_length}")
    if problems:
        raise _bad(Path(source), problems,
                   "Shorten these rows, or raise data.max_length (memory grows with it).")
