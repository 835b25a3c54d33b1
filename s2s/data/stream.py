"""Streaming prediction's input and output: lines read from a file or stdin as they are needed and handed out
in chunks that grow from a few lines to a few thousand, each chunk's output written (and flushed) as soon as
it is predicted, and a progress report on stderr. Memory stays constant in the size of the input, the first
output line comes after a moment, and lines already written stay written if the run is stopped.
"""
from __future__ import annotations

import logging
import os
import select
import stat
import sys
import time
from collections import deque
from collections.abc import Callable, Iterator
from pathlib import Path

from s2s.data.io import BOM, refuse_carriage_returns, write_stdout
from s2s.errors import S2SError

log = logging.getLogger(__name__)

BLOCK = 1 << 16  # bytes per read
# Chunk sizes in lines: the first small, so that the first output line comes at once; doubling up to
# MAX_CHUNK, enough for batching by length within a chunk to cost no throughput against sorting the whole
# input, or to BATCHES_PER_CHUNK times the sentences predicted at once (batch size x workers) where that is
# more, so that every worker has batches to the end of a chunk and beam search keeps its batches full.
FIRST_CHUNK = 16
MAX_CHUNK = 4096
BATCHES_PER_CHUNK = 16
PROGRESS_EVERY = 30.0  # seconds between progress log lines when stderr is not a terminal


def decode_line(raw: bytes, where: str, number: int) -> str:
    """One line's bytes (without its \\n) as text, checked as read_lines checks a whole file: UTF-8, U+FEFF
    dropped, a \\r only before the line end; `number` is the line's in `where`, for the error."""
    try:
        line = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise S2SError(f"{where}:{number}: not valid UTF-8 (byte {raw[e.start]:#04x})") from None
    if BOM in line:
        line = line.replace(BOM, "")
    if line.endswith("\r"):
        line = line[:-1]
    if "\r" in line:
        refuse_carriage_returns([line], where, number)
    return line


class LineReader:
    """The lines of a UTF-8 file, or of stdin for None or "-", read as they are needed and checked as they are
    handed out (see decode_line): a bad line fails with its number, after the lines before it were handed out."""

    def __init__(self, path: str | Path | None):
        self.number = 0  # lines handed out
        self.done_bytes = 0  # bytes of the lines handed out
        self.size: int | None = None  # bytes of the input when it is a regular file (an ETA needs it)
        self._raw: deque[bytes] = deque()  # lines read, not yet handed out (without \n)
        self._partial: list[bytes] = []  # the start of a line whose end is not read yet
        self._eof = False
        self._own = path not in (None, "-")
        if self._own:
            self.where = str(path)
            try:
                self._stream = open(path, "rb")
            except FileNotFoundError:
                raise S2SError(f"{path}: no such file") from None
            except OSError as e:
                raise S2SError(f"{path}: cannot read ({e.strerror or e})") from None
        else:
            self.where = "<stdin>"
            if sys.stdin is None:  # `<&-`: Python sets sys.stdin to None
                raise S2SError("cannot read stdin (it is closed); give --input FILE")
            self._stream = getattr(sys.stdin, "buffer", None)
            if self._stream is None:
                raise S2SError("cannot read stdin (it is not a byte stream); give --input FILE")
        self._read = getattr(self._stream, "read1", self._stream.read)
        self._fd = None  # a pipe or terminal, asked whether more has arrived before waiting for it
        try:
            fd = self._stream.fileno()
            if stat.S_ISREG(os.fstat(fd).st_mode):
                self.size = os.fstat(fd).st_size
            else:
                self._fd = fd
        except (OSError, ValueError, AttributeError):  # not a real file (a test's BytesIO): all there is has arrived
            pass

    @property
    def at_end(self) -> bool:
        """Whether every line has been handed out."""
        return self._eof and not self._raw and not self._partial

    def read(self, count: int) -> list[str]:
        """Up to `count` more lines, at least one unless the input has ended ([]): waits for the first, then
        takes only what has already arrived, so that lines typed or piped in slowly get their output at once."""
        while not self._eof and (not self._raw or (len(self._raw) < count and self._arrived())):
            self._fill()
        lines: list[str] = []
        while self._raw and len(lines) < count:
            try:
                lines.append(decode_line(self._raw[0], self.where, self.number + 1))
            except S2SError:
                if lines:  # the lines before it first (their output is written); the next read fails
                    break
                raise
            self.number += 1
            self.done_bytes += len(self._raw.popleft()) + 1
        return lines

    def _arrived(self) -> bool:
        return self._fd is None or bool(select.select([self._fd], [], [], 0)[0])

    def _fill(self) -> None:
        try:
            data = self._read(BLOCK)
        except (OSError, ValueError) as e:  # ValueError: a closed file object
            reason = getattr(e, "strerror", None) or e
            raise S2SError(f"{self.where}: cannot read ({reason})" if self._own else
                           f"cannot read stdin ({reason}); give --input FILE") from None
        if not data:
            self._eof = True
            if self._partial:  # a last line without a line end
                self._raw.append(b"".join(self._partial))
                self._partial = []
            return
        if b"\n" not in data:
            self._partial.append(data)  # joined once its end comes: a long line costs no quadratic copying
            return
        lines = data.split(b"\n")
        if self._partial:
            lines[0] = b"".join([*self._partial, lines[0]])
        last = lines.pop()
        self._partial = [last] if last else []
        self._raw.extend(lines)

    def close(self) -> None:
        if self._own:
            self._stream.close()

    def __enter__(self) -> LineReader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class LineWriter:
    """Lines to a file as they come, each write flushed (the file opened at the first write, its folder made as
    needed; a run without error leaves the file even when nothing was written), or to stdout for None or "-"."""

    def __init__(self, path: str | Path | None):
        self.path = None if path in (None, "-") else Path(path)
        self._file = None

    def write(self, lines: list[str]) -> None:
        text = "".join(line + "\n" for line in lines)
        if self.path is None:
            if text:
                write_stdout(text)
            return
        try:
            if self._file is None:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self._file = open(self.path, "w", encoding="utf-8")
            self._file.write(text)
            self._file.flush()
        except OSError as e:
            raise S2SError(f"{self.path}: cannot write ({e.strerror or e})") from None

    def __enter__(self) -> LineWriter:
        return self

    def __exit__(self, kind, value, traceback) -> None:
        try:
            if kind is None and self.path is not None and self._file is None:
                self.write([])  # an empty input gives an empty file, as write_lines makes
        finally:
            if self._file is not None:
                try:
                    self._file.close()
                except OSError as e:
                    if kind is None:
                        raise S2SError(f"{self.path}: cannot write ({e.strerror or e})") from None


class Progress:
    """Lines done, lines/s and, when the input's size is known, the time left, on stderr: a tqdm bar for a
    person at a terminal (`bar`), otherwise a log line every PROGRESS_EVERY seconds (a log keeps every redraw of
    a bar); a last line at the end of a run that long; nothing while logging is above INFO (-q)."""

    def __init__(self, what: str, reader: LineReader, bar: bool = True):
        self.what, self.reader = what, reader
        self.start = self.last_log = time.monotonic()
        self.lines, self.bar = 0, None
        if bar and sys.stderr is not None and sys.stderr.isatty() and log.isEnabledFor(logging.INFO):
            from tqdm import tqdm

            if reader.size:  # the bar and its time left by bytes read, the count in lines
                self.bar = tqdm(total=reader.size, unit="B", unit_scale=True, desc=what, leave=False, dynamic_ncols=True,
                                bar_format="{desc}: {percentage:3.0f}%|{bar}| {elapsed}<{remaining}{postfix}")
            else:
                self.bar = tqdm(unit=" lines", desc=what, leave=False, dynamic_ncols=True)

    def update(self, lines: int) -> None:
        """`lines` lines are done (their output written)."""
        now = time.monotonic()
        rate = lines / max(now - self.start, 1e-9)
        if self.bar is not None:
            if self.reader.size:
                self.bar.set_postfix_str(f"{lines} lines, {rate:.0f} lines/s", refresh=False)
                self.bar.update(self.reader.done_bytes - self.bar.n)
            else:
                self.bar.update(lines - self.lines)
        elif now - self.last_log >= PROGRESS_EVERY and log.isEnabledFor(logging.INFO):
            log.info("%s: %d lines, %.0f lines/s%s", self.what, lines, rate, self._left(now))
            self.last_log = now
        self.lines = lines

    def _left(self, now: float) -> str:
        size, done = self.reader.size, self.reader.done_bytes
        if not size or not done:
            return ""
        left = (now - self.start) * max(size - done, 0) / done
        return f", {100 * min(done / size, 1):.0f}% of {self.reader.where}, about {_duration(left)} left"

    def finish(self, lines: int) -> None:
        """The run ended without error after `lines` lines: a log line, when it ran long enough to log its progress."""
        self.close()
        elapsed = time.monotonic() - self.start
        if elapsed >= PROGRESS_EVERY:
            log.info("%s: %d lines in %s, %.0f lines/s", self.what, lines, _duration(elapsed), lines / max(elapsed, 1e-9))

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()  # before any error or last line, so that it starts a line of its own
            self.bar = None


def _duration(seconds: float) -> str:
    minutes, s = divmod(round(seconds), 60)
    return f"{minutes // 60}:{minutes % 60:02d}:{s:02d}" if minutes >= 60 else f"{minutes}:{s:02d}"


def chunks(reader: LineReader, cut: Callable[[list[str], bool], int] | None = None, progress: Progress | None = None,
           first: int | None = None, cap: int | None = None, in_flight: int = 0) -> Iterator[tuple[int, list[str]]]:
    """(number of its first line, lines) for each chunk of the reader's lines: `first` lines, then twice as many
    each time up to `cap` (fewer when a pipe has not delivered more yet). cut(lines, at_end) says how many of a
    chunk's lines to hand out now, the rest starting the next chunk (0: none, read more first; at the end of the
    input it must take them all); None takes them all. Each chunk counts as done in `progress` once the next is
    asked for, that is once its output is written. `first` defaults to FIRST_CHUNK, `cap` to MAX_CHUNK or
    BATCHES_PER_CHUNK times `in_flight`, the sentences predicted at once, whichever is more."""
    first, cap = first or FIRST_CHUNK, cap or max(MAX_CHUNK, BATCHES_PER_CHUNK * in_flight)
    pending: list[str] = []
    size, number = first, 1
    try:
        while True:
            if len(pending) < size and not reader.at_end:
                pending += reader.read(size - len(pending))
            if not pending:
                break
            take = len(pending) if cut is None or reader.at_end else cut(pending, False)
            if not take:  # the chunk ends inside something that must stay whole: read on
                size = 2 * len(pending)
                continue
            yield number, pending[:take]
            number += take
            pending = pending[take:]
            size = min(2 * size, max(cap, first))
            if progress is not None and (pending or not reader.at_end):  # the last chunk: finish says it
                progress.update(number - 1)
        if progress is not None:
            progress.finish(number - 1)
    finally:
        if progress is not None:
            progress.close()
