"""Reading text: UTF-8 only, lines split at line feeds only, byte-order marks dropped.

Every reader fails with the file (and line, where there is one) and what is wrong.
"""
from __future__ import annotations

import sys
from pathlib import Path

from s2s.errors import S2SError

BOM = "\ufeff"


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
    """UTF-8 bytes -> text without any U+FEFF: editors write it at the start of a file, and files
    pasted together carry it mid-text, where it would be read as part of a token or a line that is
    not blank."""
    try:
        return data.decode("utf-8").replace(BOM, "")
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
    """Lines split at \\n only (and a \\r before it): str.splitlines() would also split on U+2028,
    U+0085, form feeds..., turning one sentence into two and misaligning parallel data."""
    lines = text.split("\n")
    if lines[-1] == "":
        lines.pop()  # the final line end does not start another line
    return [line[:-1] if line.endswith("\r") else line for line in lines]


def write_lines(path: str | Path | None, lines: list[str]) -> None:
    """Lines to a file (its folder made as needed), or to stdout for None or '-'."""
    text = "".join(line + "\n" for line in lines)
    if path is None or path == "-":
        sys.stdout.write(text)
        return
    try:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(text, encoding="utf-8")
    except OSError as e:
        raise S2SError(f"{path}: cannot write ({e.strerror or e})") from None
