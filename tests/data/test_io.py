"""Reading text: UTF-8 only, lines split at line feeds only, byte-order marks dropped, and errors
that name the file and line; stdin and stdout that are closed or full fail with one line."""
from __future__ import annotations

import errno
import io
import sys

import pytest

from s2s.data.io import decode_lines, flush_stdout, read_lines, read_text, write_lines, write_stdout
from s2s.errors import S2SError


def test_read_lines_strips_line_ends(tmp_path):
    path = tmp_path / "a.txt"
    path.write_bytes("eins\r\nzwei\n\ndrei".encode("utf-8"))
    assert read_lines(path) == ["eins", "zwei", "", "drei"]


def test_read_lines_missing_file_names_it(tmp_path):
    with pytest.raises(S2SError, match=r"nope\.de: no such file"):
        read_lines(tmp_path / "nope.de")


def test_read_lines_directory_is_refused(tmp_path):
    with pytest.raises(S2SError, match="cannot read"):
        read_lines(tmp_path)


def test_read_lines_non_utf8_names_file_and_line(tmp_path):
    path = tmp_path / "bad.de"
    path.write_bytes("gut\nauch gut\nschlecht: ".encode("utf-8") + b"\xe4\n" + b"danach\n")
    with pytest.raises(S2SError) as e:
        read_lines(path)
    assert str(e.value).startswith(f"{path}:3: not valid UTF-8")
    assert "0xe4" in str(e.value)


@pytest.mark.parametrize("separator", ["\u2028", "\x0c", "\x85"], ids=["U+2028", "form-feed", "NEL"])
def test_read_lines_splits_only_on_line_ends(tmp_path, separator):
    path = tmp_path / "a.txt"
    path.write_text(f"eins{separator}zwei\ndrei\n", encoding="utf-8")
    assert read_lines(path) == [f"eins{separator}zwei", "drei"]


# --- U+FEFF -----------------------------------------------------------------------------------------
# Editors write a byte-order mark at the start of a file, and files pasted together carry it mid-text:
# kept, it would be read as part of a token, and a line holding only it would not be blank.

BOM = "\ufeff"


def test_bom_is_stripped_at_the_start_of_a_file(tmp_path):
    path = tmp_path / "a.txt"
    path.write_bytes((BOM + "eins\nzwei\n").encode("utf-8"))
    assert read_lines(path) == ["eins", "zwei"]
    assert read_text(path) == "eins\nzwei\n"


def test_bom_is_stripped_mid_line(tmp_path):
    path = tmp_path / "a.txt"
    path.write_bytes(f"eins zw{BOM}ei\ndrei {BOM}vier\n".encode("utf-8"))
    assert read_lines(path) == ["eins zwei", "drei vier"]


def test_line_of_only_a_bom_becomes_blank(tmp_path):
    path = tmp_path / "a.txt"
    path.write_bytes(f"eins\n{BOM}\r\n{BOM}zwei\n".encode("utf-8"))  # a second file's first line, pasted on
    lines = read_lines(path)
    assert lines == ["eins", "", "zwei"]
    assert lines[1].strip() == ""  # a blank line: what separates CoNLL sentences


def test_bom_is_stripped_from_bytes_too():
    """Bytes read from stdin go through the same decoding as files."""
    data = f"{BOM}eins\n{BOM}\nzw{BOM}ei\n".encode("utf-8")
    assert decode_lines(data, "<stdin>") == ["eins", "", "zwei"]
    assert not any(BOM in line for line in decode_lines(data, "<stdin>"))


# --- stdin and stdout -----------------------------------------------------------------------------------------


class _FullDisk(io.StringIO):
    """A stdout whose writes land in a buffer and whose flush finds the disk full (`> /dev/full`)."""

    def flush(self):
        raise OSError(errno.ENOSPC, "No space left on device")


class _ClosedPipe(io.StringIO):
    def flush(self):
        raise BrokenPipeError(errno.EPIPE, "Broken pipe")


def test_stdout_that_is_closed_or_full_is_one_error(monkeypatch):
    monkeypatch.setattr(sys, "stdout", None)  # what Python makes of `>&-`: print() would write nothing
    with pytest.raises(S2SError, match=r"cannot write to stdout \(it is closed\)"):
        write_lines(None, ["eins"])
    flush_stdout()  # nothing written, nothing to flush: no error
    monkeypatch.setattr(sys, "stdout", _FullDisk())
    with pytest.raises(S2SError, match=r"cannot write to stdout \(No space left on device\)"):
        write_stdout("eins\n")  # flushed at once: the failure shows here, not at exit
    with pytest.raises(S2SError, match="No space left on device"):
        flush_stdout()


def test_a_closed_pipe_stays_a_broken_pipe(monkeypatch):
    """`s2s ... | head`: the CLI ends quietly on BrokenPipeError, so it is not turned into an error line."""
    monkeypatch.setattr(sys, "stdout", _ClosedPipe())
    with pytest.raises(BrokenPipeError):
        write_lines("-", ["eins"])


def test_carriage_returns_inside_lines_are_refused_with_the_line():
    from s2s.data.io import refuse_carriage_returns

    assert refuse_carriage_returns(["a", "b"], "f") == ["a", "b"]
    with pytest.raises(S2SError, match=r"^f:2: a carriage return inside the line \(CR-only line ends\?\)"):
        refuse_carriage_returns(["a", "b\rc"], "f")


@pytest.mark.parametrize("data", [b"a\nb\n", b"a\r\nb", b"\xef\xbb\xbfa\n\n b \n", b"", b"\n", b"x\xe2\x80\xa8y\n",
                                  b"ok\nbad \xff\n", b"ok\nmid\rline\n", b"a\n\xef\xbb\xbfb\n",
                                  "zwölf\nüber\r\n".encode(), b"1\n2\n3\n\xc3"])
def test_iter_file_lines_reads_as_read_lines_does(tmp_path, data):
    """The streaming reader gives the same lines, or fails with the same message, as reading the file whole,
    whatever its blocks (3 bytes: lines and characters cut across blocks)."""
    from s2s.data.io import iter_file_lines, read_lines, refuse_carriage_returns

    path = tmp_path / "f.txt"
    path.write_bytes(data)
    try:
        expected = refuse_carriage_returns(read_lines(path), str(path))
    except S2SError as e:
        for block_size in (3, 1 << 20):
            with pytest.raises(S2SError) as streamed:
                list(iter_file_lines(path, block_size))
            assert str(streamed.value) == str(e)
    else:
        assert list(iter_file_lines(path, 3)) == list(iter_file_lines(path)) == expected
