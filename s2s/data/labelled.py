"""Labelled text for classification: JSONL, TSV (a header, literal cells) and CSV (a header, RFC 4180 quoting).

Read with Python's json and csv modules rather than HF datasets' loaders: those neither say which
line is broken nor refuse a CSV row with a missing field (it becomes None), and every problem here
must name file and line.
"""
from __future__ import annotations

import array
import csv
import io
import json
import math
import random
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from s2s.data.io import BOM, read_text
from s2s.errors import S2SError

FORMATS = ("jsonl", "tsv", "csv")


@dataclass
class Example:
    text: str
    label: str
    line: int  # 1-based line of the row in its file, for messages


def _label(value) -> str | None:
    """A label as a string: JSON 1 and CSV "1" are the same label. NaN and infinities are no labels."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, (int, float)):
        return str(int(value)) if isinstance(value, float) and value.is_integer() else str(value)
    if isinstance(value, str) and value.strip():
        return value.strip()
    return None


def format_of(path: str | Path, default: str = "jsonl") -> str:
    """The file format by extension (.jsonl, .tsv, .csv), else `default`."""
    suffix = Path(path).suffix.lstrip(".").lower()
    return suffix if suffix in FORMATS else default


def _json(raw: str, where: str) -> object:
    """One JSON line; a malformed one (too deeply nested, a number too long to convert...) fails with `where`."""
    try:
        return json.loads(raw)
    except json.JSONDecodeError as e:
        raise S2SError(f"{where}: not valid JSON ({e.msg} at column {e.colno})") from None
    except RecursionError:
        raise S2SError(f"{where}: JSON nested too deeply") from None
    except ValueError as e:  # e.g. an integer of more than 4300 digits
        raise S2SError(f"{where}: not valid JSON ({str(e).splitlines()[0]})") from None


def _text(value: str, what: str, where: str) -> str:
    """`value`, which must be writable as UTF-8: JSON can escape lone surrogates ("\\ud800"), which are not text."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as e:
        raise S2SError(f"{where}: the {what} holds {value[e.start]!r}, half of a UTF-16 surrogate pair, not a character") from None
    return value


def _names(names) -> str:
    """Field names for a message, each as written unless it would not print as itself on one line (then quoted)."""
    return ", ".join(n if isinstance(n, str) and n.isprintable() and n.strip() == n and n else repr(n) for n in names)


def _open(path: Path):
    try:
        return open(path, "rb")
    except FileNotFoundError:
        raise S2SError(f"{path}: no such file") from None
    except OSError as e:
        raise S2SError(f"{path}: cannot read ({e.strerror or e})") from None


def _json_lines(path: Path):
    """(line number, line) of a JSONL file, read as needed: split at \\n only, one \\r before it dropped, U+FEFF removed."""
    with _open(path) as f:
        for number, raw in enumerate(f, start=1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise S2SError(f"{path}:{number}: not valid UTF-8 (byte {raw[e.start]:#04x})") from None
            line = line[:-1] if line.endswith("\n") else line
            yield number, (line[:-1] if line.endswith("\r") else line).replace(BOM, "")


def _table_lines(path: Path):
    """A TSV/CSV file's lines for csv.reader, read as needed (line ends kept: csv needs them inside quoted fields)."""
    with _open(path) as f, io.TextIOWrapper(f, encoding="utf-8", newline="") as text:
        try:
            for line in text:
                yield line.replace(BOM, "")
        except UnicodeDecodeError:
            read_text(path)  # reads the whole file once more, only to name the line of the bad byte
            raise


def _rows(path: Path, fmt: str):
    """(line, row dict) per record of a JSONL, TSV or CSV file, read as needed; blank lines are not records."""
    if fmt == "jsonl":
        for number, raw in _json_lines(path):
            if not raw.strip():
                continue
            row = _json(raw, f"{path}:{number}")
            if not isinstance(row, dict):
                raise S2SError(f"{path}:{number}: expected a JSON object, got {type(row).__name__}")
            yield number, row
        return
    if fmt not in ("tsv", "csv"):
        raise S2SError(f"{path}: unknown format {fmt!r} for labelled text; valid: {', '.join(FORMATS)}")
    # TSV cells are literal (no quoting, as in s2s.data); CSV follows RFC 4180 quoting.
    if fmt == "tsv":
        reader = csv.reader(_table_lines(path), delimiter="\t", quoting=csv.QUOTE_NONE, strict=True)
    else:
        reader = csv.reader(_table_lines(path), strict=True)
    header = None
    try:
        for row in reader:
            if not row or (len(row) == 1 and not row[0].strip()):
                continue
            if header is None:
                header = [h.strip() for h in row]
                continue
            if len(row) != len(header):
                raise S2SError(f"{path}:{reader.line_num}: expected {len(header)} {fmt.upper()} fields ({_names(header)}), got {len(row)}")
            yield reader.line_num, dict(zip(header, row))
    except csv.Error as e:
        raise S2SError(f"{path}:{reader.line_num}: not a valid {fmt.upper()} row ({e})") from None


def iter_labelled(path: str | Path, fmt: str, text_field: str = "text", label_field: str = "label") -> Iterator[Example]:
    """The rows of a labelled file one at a time, read as needed, checked: a row that cannot be parsed, or
    has no text or no label, fails with file:line and why. Nothing is skipped except blank lines."""
    path = Path(path)
    for number, row in _rows(path, fmt):
        text = row.get(text_field)
        if not isinstance(text, str) or not text.strip():
            found = f"; keys: {_names(row)}" if text_field not in row else ""
            raise S2SError(f"{path}:{number}: no text in {text_field!r}{found}")
        label = _label(row.get(label_field))
        if label is None:
            found = f"; keys: {_names(row)}" if label_field not in row else f", got {row[label_field]!r}"
            raise S2SError(f"{path}:{number}: no label in {label_field!r}{found}")
        where = f"{path}:{number}"
        yield Example(_text(text, "text", where), _text(label, "label", where), number)


def read_labelled(path: str | Path, fmt: str, text_field: str = "text", label_field: str = "label") -> list[Example]:
    """Every row of a labelled file (see iter_labelled); a file without rows fails."""
    examples = list(iter_labelled(path, fmt, text_field, label_field))
    if not examples:
        raise S2SError(f"{path}: no labelled rows")
    return examples


def texts_from_jsonl(lines: list[str], where: str, text_field: str = "text", first_line: int = 1) -> list[str]:
    """The texts of JSONL input to classify; a blank line gives an empty text (an empty output line).
    `first_line` numbers the first of `lines` in messages (a chunk of a longer input)."""
    texts = []
    for number, raw in enumerate(lines, start=first_line):
        if not raw.strip():
            texts.append("")
            continue
        row = _json(raw, f"{where}:{number}")
        if not isinstance(row, dict) or not isinstance(row.get(text_field), str):
            raise S2SError(f"{where}:{number}: expected a JSON object with a text field {text_field!r}")
        texts.append(_text(row[text_field], "text", f"{where}:{number}"))
    return texts


def hold_out_order(count: int, size: int, seed: int, where: str) -> array.array:
    """Row indices 0..count-1 shuffled by `seed`: the first `size` are the held-out dev rows, the rest the
    training rows (4 bytes a row, so that millions of rows can be split)."""
    if not 0 < size < count:
        raise S2SError(f"{where}: data.dev_size={size} must be between 1 and the number of rows minus one ({count - 1})")
    order = array.array("l", range(count))
    random.Random(seed).shuffle(order)
    return order

