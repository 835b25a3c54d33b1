"""Streaming prediction's input and output (s2s.data.stream): the reader gives what read_lines gives, checked the
same way, line by line and in growing chunks; writers write as they go; progress goes to the log."""
from __future__ import annotations

import io
import logging
import os
import sys
import threading

import pytest

from s2s.data import stream
from s2s.data.io import decode_lines
from s2s.data.stream import LineReader, LineWriter, Progress, chunks
from s2s.errors import S2SError

TEXTS = [b"", b"a\n", b"a", b"a\nb\n", b"a\r\nb\r\n\n", b"\xef\xbb\xbfa b\nc\xef\xbb\xbfd\n", b"\n\n\nx", b"\xc3\xa4\xe2\x80\xa8x\ny\r",
         "der hund\u2028die katze\n\u00fcber\n".encode(), b"x" * 200_000 + b"\ny\n"]


def _read_all(reader: LineReader, count: int) -> list[str]:
    lines = []
    while more := reader.read(count):
        lines += more
    return lines


@pytest.mark.parametrize("data", TEXTS)
@pytest.mark.parametrize("block", [1, 3, 1 << 16])
def test_reader_gives_what_read_lines_gives(tmp_path, monkeypatch, data, block):
    monkeypatch.setattr(stream, "BLOCK", block)
    path = tmp_path / "in.txt"
    path.write_bytes(data)
    with LineReader(path) as reader:
        assert reader.size == len(data)
        assert _read_all(reader, 2) == decode_lines(data, str(path))
        assert reader.at_end and reader.number == len(decode_lines(data, str(path)))
        assert reader.done_bytes == len(data) + (not data.endswith(b"\n") and bool(data))


def _stdin(monkeypatch, data: bytes) -> None:
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(data), encoding="utf-8"))


@pytest.mark.parametrize("data, message", [(b"a\nb\n\xff\nc\n", "<stdin>:3: not valid UTF-8 (byte 0xff)"),
                                           (b"a\nb\nc\rd\ne\n", "<stdin>:3: a carriage return inside the line")])
def test_a_bad_line_fails_after_the_lines_before_it(monkeypatch, data, message):
    _stdin(monkeypatch, data)
    with LineReader(None) as reader:
        assert reader.read(10) == ["a", "b"]  # what comes before it is handed out first
        with pytest.raises(S2SError) as e:
            reader.read(10)
    assert str(e.value).startswith(message)


def test_reading_a_missing_file_or_a_closed_stdin_is_one_line(tmp_path, monkeypatch):
    with pytest.raises(S2SError, match="nope.txt: no such file"):
        LineReader(tmp_path / "nope.txt")
    monkeypatch.setattr(sys, "stdin", None)
    with pytest.raises(S2SError, match=r"cannot read stdin \(it is closed\); give --input FILE"):
        LineReader("-")


def test_a_pipe_is_read_as_lines_arrive(monkeypatch):
    """A chunk does not wait for lines that have not been written yet: each line typed gets its answer."""
    read_end, write_end = os.pipe()
    with os.fdopen(read_end, "rb") as pipe, os.fdopen(write_end, "wb", buffering=0) as writer:
        monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(pipe))
        with LineReader(None) as reader:
            assert reader.size is None
            writer.write(b"one\ntwo\nthr")
            assert reader.read(100) == ["one", "two"]
            timer = threading.Timer(0.2, writer.write, [b"ee\nfour\n"])  # the read waits for the next line
            timer.start()
            assert reader.read(100) == ["three", "four"]
            timer.join()
            writer.close()
            assert reader.read(100) == [] and reader.at_end


def _chunks_of(lines: list[str], monkeypatch, **kwargs) -> list[tuple[int, list[str]]]:
    _stdin(monkeypatch, "".join(line + "\n" for line in lines).encode())
    with LineReader(None) as reader:
        return list(chunks(reader, **kwargs))


def test_chunks_double_up_to_the_cap(monkeypatch):
    got = _chunks_of([str(i) for i in range(40)], monkeypatch, first=2, cap=8)
    assert [len(c) for _, c in got] == [2, 4, 8, 8, 8, 8, 2]
    assert [n for n, _ in got] == [1, 3, 7, 15, 23, 31, 39]
    assert [line for _, c in got for line in c] == [str(i) for i in range(40)]


def test_chunks_hold_enough_batches_for_what_is_predicted_at_once(monkeypatch):
    monkeypatch.setattr(stream, "MAX_CHUNK", 4)
    monkeypatch.setattr(stream, "BATCHES_PER_CHUNK", 3)
    lines = [str(i) for i in range(40)]
    assert [len(c) for _, c in _chunks_of(lines, monkeypatch, first=2)] == [2, 4, 4, 4, 4, 4, 4, 4, 4, 4, 2]
    assert [len(c) for _, c in _chunks_of(lines, monkeypatch, first=2, in_flight=2)] == [2, 4, 6, 6, 6, 6, 6, 4]


@pytest.mark.parametrize("first, cap", [(1, 2), (3, 4)])  # (3, 4): the first chunk leaves its "b" to the next
def test_chunks_end_where_cut_says(monkeypatch, first, cap):
    """cut takes a chunk's lines up to its last "|" line; none there: the chunk grows (doubling) until it has one."""
    lines = ["a", "|", "b", "c", "d", "e", "f", "|", "g", "|", "h"]

    def cut(chunk: list[str], at_end: bool) -> int:
        assert not at_end
        return max((i + 1 for i, line in enumerate(chunk) if line == "|"), default=0)

    got = _chunks_of(lines, monkeypatch, first=first, cap=cap, cut=cut)
    assert got == [(1, ["a", "|"]), (3, ["b", "c", "d", "e", "f", "|", "g", "|"]), (11, ["h"])]


def test_writer_writes_each_chunk_at_once_and_makes_the_folder(tmp_path):
    path = tmp_path / "new" / "out.txt"
    with LineWriter(path) as out:
        assert not path.exists()  # opened at the first write: a run that fails before has not emptied the file
        out.write(["a", ""])
        assert path.read_text(encoding="utf-8") == "a\n\n"  # flushed, not held in a buffer
        out.write(["b"])
        assert path.read_text(encoding="utf-8") == "a\n\nb\n"


def test_writer_makes_an_empty_file_only_when_the_run_ends_well(tmp_path):
    with LineWriter(tmp_path / "empty.txt"):
        pass
    assert (tmp_path / "empty.txt").read_text() == ""
    with pytest.raises(S2SError), LineWriter(tmp_path / "failed.txt"):
        raise S2SError("bad input")
    assert not (tmp_path / "failed.txt").exists()


def test_writer_to_a_path_under_a_file_is_one_line(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(S2SError, match="cannot write"), LineWriter(tmp_path / "file" / "out.txt") as out:
        out.write(["a"])


def test_progress_without_a_terminal_logs_lines_with_the_time_left(tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(stream, "PROGRESS_EVERY", 0.0)
    path = tmp_path / "in.txt"
    path.write_text("".join(f"line {i}\n" for i in range(100)), encoding="utf-8")
    with caplog.at_level(logging.INFO, logger="s2s.data.stream"), LineReader(path) as reader:
        assert sum(len(c) for _, c in chunks(reader, progress=Progress("translate", reader), first=10, cap=40)) == 100
    messages = [r.getMessage() for r in caplog.records]
    assert messages[0].startswith("translate: 10 lines, ") and f"of {path}, about " in messages[0] and "left" in messages[0]
    assert messages[-1].startswith("translate: 100 lines in 0:0")  # the end of a run that logged its progress


def test_progress_is_quiet_under_q(tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(stream, "PROGRESS_EVERY", 0.0)
    path = tmp_path / "in.txt"
    path.write_text("a\nb\nc\n", encoding="utf-8")
    with caplog.at_level(logging.WARNING), LineReader(path) as reader:
        list(chunks(reader, progress=Progress("tag", reader), first=1))
    assert not caplog.records
