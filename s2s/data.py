"""Reading and checking parallel text, and length-bucketed batches.

Every reader fails with the file (and line, where there is one) and what is wrong.
"""
from __future__ import annotations

import csv
import logging
import random
import socket
from pathlib import Path
from typing import NamedTuple

import torch

from s2s.config import DataConfig
from s2s.errors import S2SError
from s2s.tokenizer import BOS, EOS, PAD

log = logging.getLogger(__name__)


def read_text(path: str | Path) -> str:
    """A UTF-8 file's text; a missing, unreadable or non-UTF-8 file fails with the file (and line)."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise S2SError(f"{path}: no such file") from None
    except OSError as e:
        raise S2SError(f"{path}: cannot read ({e.strerror or e})") from None
    return decode_text(data, str(path))


def decode_text(data: bytes, where: str) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise S2SError(f"{where}:{line}: not valid UTF-8 (byte {data[e.start]:#04x})") from None


def read_lines(path: str | Path) -> list[str]:
    """All lines of a UTF-8 text file, without line ends."""
    return split_lines(read_text(path))


def decode_lines(data: bytes, where: str) -> list[str]:
    """UTF-8 bytes (e.g. stdin) -> lines."""
    return split_lines(decode_text(data, where))


def split_lines(text: str) -> list[str]:
    """Lines split at \n only (and a \r before it): str.splitlines() would also split on U+2028,
    U+0085, form feeds..., turning one sentence into two and misaligning parallel data."""
    lines = text.split("\n")
    if lines[-1] == "":
        lines.pop()  # the final line end does not start another line
    return [line[:-1] if line.endswith("\r") else line for line in lines]


def read_parallel(src_path: str | Path, tgt_path: str | Path) -> tuple[list[str], list[str]]:
    src, tgt = read_lines(src_path), read_lines(tgt_path)
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
        out.append(list(values))
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
                    with path.open(encoding="utf-8", newline="") as f:
                        header = f.readline().rstrip("\r\n").split("\t")
                    features = datasets.Features({name: datasets.Value("string") for name in header})
                    table = datasets.load_dataset(
                        "csv", data_files=str(path), delimiter="\t", quoting=csv.QUOTE_NONE, features=features,
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


class Batch(NamedTuple):
    src: torch.Tensor  # (B, S) source ids, PAD-padded
    src_lengths: torch.Tensor  # (B,)
    tgt_in: torch.Tensor  # (B, T) BOS + target
    tgt_out: torch.Tensor  # (B, T) target + EOS
    num_tokens: int  # real target tokens (including EOS)

    def to(self, device: torch.device) -> "Batch":
        return Batch(*(x.to(device, non_blocking=True) for x in self[:4]), self.num_tokens)


def pad(seqs: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Token lists -> (B, T) PAD-padded tensor and (B,) lengths."""
    lengths = torch.tensor([len(s) for s in seqs], dtype=torch.long)
    out = torch.full((len(seqs), int(lengths.max())), PAD, dtype=torch.long)
    for i, s in enumerate(seqs):
        out[i, : len(s)] = torch.tensor(s, dtype=torch.long)
    return out, lengths


def make_batch(src: list[list[int]], tgt: list[list[int]]) -> Batch:
    src_t, src_lengths = pad(src)
    tgt_in, _ = pad([[BOS] + t for t in tgt])
    tgt_out, tgt_lengths = pad([t + [EOS] for t in tgt])
    return Batch(src_t, src_lengths, tgt_in, tgt_out, int(tgt_lengths.sum()))


def token_batches(lengths: list[int], max_tokens: int, seed: int, epoch: int) -> list[list[int]]:
    """Group example indices into batches of similar length, each with at most
    max_tokens padded tokens (batch size * longest example), in a shuffled order.

    The order depends only on (seed, epoch), so a resumed run sees the same batches.
    """
    rng = random.Random(seed * 100_003 + epoch)
    order = sorted(range(len(lengths)), key=lambda i: (lengths[i], rng.random()))
    batches: list[list[int]] = []
    current: list[int] = []
    for i in order:
        longest = max(lengths[i], lengths[current[-1]] if current else 0)  # sorted: the newest is longest
        if current and longest * (len(current) + 1) > max_tokens:
            batches.append(current)
            current = []
        current.append(i)
    if current:
        batches.append(current)
    rng.shuffle(batches)
    return batches
