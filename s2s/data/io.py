"""Reading text: UTF-8 only, lines split at line feeds only, byte-order marks dropped.

Every reader fails with the file (and line, where there is one) and what is wrong.
"""
from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

from s2s.errors import S2SError

BOM = "\ufeff"
CARRIAGE_RETURN = "a carriage return inside the line (CR-only line ends?); save the file with \\n line ends"


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
    """UTF-8 bytes -> lines, as read_lines reads a file."""
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
        write_stdout(text)
        return
    try:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(text, encoding="utf-8")
    except OSError as e:
        raise S2SError(f"{path}: cannot write ({e.strerror or e})") from None


def write_stdout(text: str) -> None:
    """Text to stdout, flushed at once: a closed stdout (`>&-`, where Python sets sys.stdout to None
    and print() writes nothing) or a full disk (`> /dev/full`) fails here with one line, not at exit
    with a traceback, or not at all while the output is lost. A closed pipe (`| head`) raises
    BrokenPipeError, which the CLI ends on quietly."""
    if sys.stdout is None:
        raise S2SError("cannot write to stdout (it is closed)")
    _write_and_flush(text)


def flush_stdout() -> None:
    """Flush what stdout still holds (see write_stdout); nothing to do when it is closed."""
    if sys.stdout is not None:
        _write_and_flush("")


def _write_and_flush(text: str) -> None:
    try:
        if text:
            sys.stdout.write(text)
        sys.stdout.flush()
    except BrokenPipeError:
        _silence_stdout()
        raise
    except (OSError, ValueError) as e:  # ValueError: a closed file object
        _silence_stdout()
        raise S2SError(f"cannot write to stdout ({getattr(e, 'strerror', None) or e})") from None


def _silence_stdout() -> None:
    """Point stdout's file descriptor at /dev/null: what is still buffered then goes nowhere at exit
    instead of failing again there with a second report (the recipe of Python's `signal` docs)."""
    try:
        fd = sys.stdout.fileno()
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, fd)
        os.close(devnull)
    except (OSError, ValueError, AttributeError):
        pass  # not a real file (a test's capture): nothing is flushed at exit


def refuse_carriage_returns(lines: list[str], where: str, first_line: int = 1) -> list[str]:
    """`lines`, unless one holds a carriage return: a file with CR-only line ends (old Mac editors) reads as
    one long line, which would pair sentences wrongly or merge tokens, so it is refused with its line
    (`lines` starting at line `first_line` of `where`)."""
    for number, line in enumerate(lines, start=first_line):
        if "\r" in line:
            raise S2SError(f"{where}:{number}: {CARRIAGE_RETURN}")
    return lines


def iter_file_lines(path: str | Path, block_size: int = 1 << 20) -> Iterator[str]:
    """The lines of a UTF-8 text file one at a time, read a block at a time as they are needed (constant
    memory), with the checks of read_lines and refuse_carriage_returns: the file and line of the first problem."""
    try:
        handle = open(path, "rb")
    except FileNotFoundError:
        raise S2SError(f"{path}: no such file") from None
    except OSError as e:
        raise S2SError(f"{path}: cannot read ({e.strerror or e})") from None
    with handle:
        done, rest = 0, b""  # lines yielded; the start of a line the last block cut
        while True:
            try:
                block = handle.read(block_size)
            except OSError as e:
                raise S2SError(f"{path}: cannot read ({e.strerror or e})") from None
            if not block:
                break
            block = rest + block
            cut = block.rfind(b"\n") + 1  # no UTF-8 sequence holds the byte \n: a cut there splits no character
            block, rest = block[:cut], block[cut:]
            if block:
                lines = _block_lines(block, path, done)
                done += len(lines)
                yield from lines
        if rest:
            yield from _block_lines(rest + b"\n", path, done)


def _block_lines(block: bytes, path: str | Path, done: int) -> list[str]:
    """The lines of `block` (whole lines, each ending in \n), the file's lines done + 1 on."""
    try:
        text = block.decode("utf-8")
    except UnicodeDecodeError as e:
        line = done + block[: e.start].count(b"\n") + 1
        raise S2SError(f"{path}:{line}: not valid UTF-8 (byte {block[e.start]:#04x})") from None
    if BOM in text:
        text = text.replace(BOM, "")
    lines = text.split("\n")
    lines.pop()  # after the last \n
    if "\r" in text:
        lines = [line[:-1] if line.endswith("\r") else line for line in lines]
        refuse_carriage_returns(lines, str(path), first_line=done + 1)
    return lines
