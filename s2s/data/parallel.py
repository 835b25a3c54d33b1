"""Parallel text for translation: aligned files, TSV/JSONL tables, or a Hugging Face hub set.

Every reader fails with the file (and line, where there is one) and what is wrong.
"""
from __future__ import annotations

import csv
import socket
from pathlib import Path

from s2s.config import DataConfig
from s2s.data.io import BOM, read_lines, refuse_carriage_returns
from s2s.errors import S2SError


def _lines(path: str | Path) -> list[str]:
    return refuse_carriage_returns(read_lines(path), str(path))


def read_parallel(src_path: str | Path, tgt_path: str | Path) -> tuple[list[str], list[str]]:
    src, tgt = _lines(src_path), _lines(tgt_path)
    if len(src) != len(tgt):
        raise S2SError(
            f"misaligned parallel files: {src_path} has {len(src)} lines but {tgt_path} has {len(tgt)}"
        )
    return src, tgt


def _hub_reachable(timeout: float = 5.0) -> bool:
    try:
        socket.create_connection(("huggingface.co", 443), timeout=timeout).close()
        return True
    except OSError:
        return False


def _columns(table, columns: tuple[str, str], where: str) -> tuple[list[str], list[str]]:
    missing = [c for c in columns if c not in table.column_names]
    if missing:
        raise S2SError(f"{where}: no column {missing[0]!r} (columns: {', '.join(table.column_names)})")
    out = []
    for column in columns:
        values = table[column]
        for i, value in enumerate(values):
            if not isinstance(value, str):
                raise S2SError(f"{where}: row {i + 1}: column {column!r} is {value!r}, not text")
        out.append([value.replace(BOM, "") for value in values])
    return out[0], out[1]


def load_split(data: DataConfig, split: str) -> tuple[list[str], list[str]]:
    """(source sentences, target sentences) of one split, aligned."""
    langs = (data.src_lang, data.tgt_lang)
    match data.format:
        case "text":
            folder = Path(data.dir)
            return read_parallel(folder / f"{split}.{langs[0]}", folder / f"{split}.{langs[1]}")
        case "tsv" | "jsonl":
            import datasets

            path = Path(data.dir) / f"{split}.{data.format}"
            if not path.is_file():
                raise S2SError(f"{path}: no such file")
            try:
                if data.format == "tsv":
                    # TSV cells are literal: no quote characters, and no type guessing ("1" stays text).
                    with path.open(encoding="utf-8-sig", newline="") as f:
                        header = f.readline().rstrip("\r\n").split("\t")
                    features = datasets.Features({name: datasets.Value("string") for name in header})
                    table = datasets.load_dataset(
                        "csv", data_files=str(path), delimiter="\t", quoting=csv.QUOTE_NONE, features=features, encoding="utf-8-sig",
                        keep_default_na=False, split="train",
                    )
                else:
                    table = datasets.load_dataset("json", data_files=str(path), split="train")
            except Exception as e:  # datasets raises many types for a malformed file
                raise S2SError(f"{path}: cannot parse as {data.format} ({str(e).splitlines()[0]})") from None
            return _columns(table, langs, str(path))
        case "hub":
            if not _hub_reachable():
                raise S2SError(
                    f"cannot reach the Hugging Face hub to load {data.hub!r}; use local files instead (--data DIR)"
                )
            import datasets

            try:
                table = datasets.load_dataset(data.hub, split=split)
            except Exception as e:
                raise S2SError(f"hub dataset {data.hub!r}, split {split!r}: {str(e).splitlines()[0]}") from None
            return _columns(table, langs, f"{data.hub}[{split}]")
    raise S2SError(f"data.format: unknown format {data.format!r}")


def describe(data: DataConfig, split: str) -> str:
    """Where a split comes from, for messages."""
    if data.format == "text":
        return str(Path(data.dir) / f"{split}.{{{data.src_lang},{data.tgt_lang}}}")
    if data.format == "hub":
        return f"{data.hub}[{split}]"
    return str(Path(data.dir) / f"{split}.{data.format}")
