"""Parallel text for translation: aligned files, TSV/JSONL tables, or a Hugging Face hub set.

Every reader fails with the file (and line, where there is one) and what is wrong. `iter_pairs` reads a
split in chunks as they are needed, so a corpus larger than memory can be read through.
"""
from __future__ import annotations

import csv
import socket
from collections.abc import Iterator
from itertools import islice
from pathlib import Path

from s2s.config import DataConfig
from s2s.data.io import BOM, iter_file_lines
from s2s.errors import S2SError

CHUNK = 10_000  # pairs per chunk of iter_pairs


def iter_parallel(src_path: str | Path, tgt_path: str | Path, chunk_size: int = CHUNK) -> Iterator[tuple[list[str], list[str]]]:
    """Aligned files in chunks of (source lines, target lines); files of different lengths fail with both counts."""
    src, tgt = iter_file_lines(src_path), iter_file_lines(tgt_path)
    count = 0
    while True:
        src_chunk, tgt_chunk = list(islice(src, chunk_size)), list(islice(tgt, chunk_size))
        if len(src_chunk) != len(tgt_chunk):
            src_count = count + len(src_chunk) + sum(1 for _ in src)
            tgt_count = count + len(tgt_chunk) + sum(1 for _ in tgt)
            raise S2SError(f"misaligned parallel files: {src_path} has {src_count} lines but {tgt_path} has {tgt_count}")
        if not src_chunk:
            return
        count += len(src_chunk)
        yield src_chunk, tgt_chunk


def read_parallel(src_path: str | Path, tgt_path: str | Path) -> tuple[list[str], list[str]]:
    return _joined(iter_parallel(src_path, tgt_path))


def _joined(chunks: Iterator[tuple[list[str], list[str]]]) -> tuple[list[str], list[str]]:
    src: list[str] = []
    tgt: list[str] = []
    for s, t in chunks:
        src += s
        tgt += t
    return src, tgt


def _hub_reachable(timeout: float = 5.0) -> bool:
    try:
        socket.create_connection(("huggingface.co", 443), timeout=timeout).close()
        return True
    except OSError:
        return False


def _table(data: DataConfig, split: str):
    """A TSV, JSONL or hub split as a `datasets` table (Arrow, memory-mapped from its cache) and its name for messages."""
    import datasets

    if data.format == "hub":
        if not _hub_reachable():
            raise S2SError(f"cannot reach the Hugging Face hub to load {data.hub!r}; use local files instead (--data DIR)")
        try:
            return datasets.load_dataset(data.hub, split=split), f"{data.hub}[{split}]"
        except Exception as e:
            raise S2SError(f"hub dataset {data.hub!r}, split {split!r}: {str(e).splitlines()[0]}") from None
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
    return table, str(path)


def _table_pairs(table, columns: tuple[str, str], where: str, chunk_size: int) -> Iterator[tuple[list[str], list[str]]]:
    missing = [c for c in columns if c not in table.column_names]
    if missing:
        raise S2SError(f"{where}: no column {missing[0]!r} (columns: {', '.join(table.column_names)})")
    for start in range(0, len(table), chunk_size):
        rows = table.select_columns(list(columns))[start : start + chunk_size]
        out = []
        for column in columns:
            values = rows[column]
            for i, value in enumerate(values):
                if not isinstance(value, str):
                    raise S2SError(f"{where}: row {start + i + 1}: column {column!r} is {value!r}, not text")
            out.append([value.replace(BOM, "") for value in values])
        yield out[0], out[1]


def iter_pairs(data: DataConfig, split: str, chunk_size: int = CHUNK) -> Iterator[tuple[list[str], list[str]]]:
    """One split as chunks of (source sentences, target sentences), aligned, read as they are needed."""
    langs = (data.src_lang, data.tgt_lang)
    if data.format == "text":
        folder = Path(data.dir)
        return iter_parallel(folder / f"{split}.{langs[0]}", folder / f"{split}.{langs[1]}", chunk_size)
    if data.format in ("tsv", "jsonl", "hub"):
        table, where = _table(data, split)
        return _table_pairs(table, langs, where, chunk_size)
    raise S2SError(f"data.format: unknown format {data.format!r}")


def load_split(data: DataConfig, split: str) -> tuple[list[str], list[str]]:
    """(source sentences, target sentences) of one split, aligned, in memory (dev and test sets)."""
    return _joined(iter_pairs(data, split))


def fingerprint(data: DataConfig, split: str) -> list:
    """What a split's content is, for keying what was built from it: the size and SHA-256 of each file,
    or a hub set's name and the `datasets` fingerprint of its cached table."""
    from s2s.data import store

    match data.format:
        case "text":
            return store.fingerprint(*(Path(data.dir) / f"{split}.{lang}" for lang in (data.src_lang, data.tgt_lang)))
        case "tsv" | "jsonl":
            return store.fingerprint(Path(data.dir) / f"{split}.{data.format}")
    table, where = _table(data, split)
    return [where, table._fingerprint]


def describe(data: DataConfig, split: str) -> str:
    """Where a split comes from, for messages."""
    if data.format == "text":
        return str(Path(data.dir) / f"{split}.{{{data.src_lang},{data.tgt_lang}}}")
    if data.format == "hub":
        return f"{data.hub}[{split}]"
    return str(Path(data.dir) / f"{split}.{data.format}")
