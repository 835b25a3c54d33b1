"""The token store: a task's training examples, encoded once into flat arrays on disk.

Training then reads each batch's examples from disk, so its memory does not grow with the corpus, and a
restart (`--resume`, a crash, every torchrun rank) opens the store instead of reading and encoding the
corpus again. A folder holds:

    meta.json       what the store was built from (its key), the fields and their id types, the example
                    count, and the size and SHA-256 of every file below
    lengths.npy     (N,) the batching cost of each example, read into memory (2 or 4 bytes per example)
    FIELD.ids       every example's ids of that field end to end (uint8 or uint16 when its vocabulary allows, else int32)
    FIELD.offsets   (N + 1,) int64: example i of the field is ids[offsets[i] : offsets[i + 1]]
    NAME.npy        arrays a task keeps beside the examples (e.g. each sentence's document), read into memory

Examples are read with positioned reads (os.pread), not through a memory map: mapped pages count in the
process's resident memory once an epoch has touched them, which would make it grow with the corpus again.
A store is written into a temporary folder and renamed into place complete, so a killed build leaves
none half-made; one built from other data, another tokenizer or other settings is rebuilt, never reused.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from itertools import chain
from pathlib import Path

import numpy as np

from s2s.errors import S2SError

log = logging.getLogger(__name__)

VERSION = 1
META = "meta.json"
LENGTHS = "lengths.npy"


def fingerprint(*paths: str | Path) -> list:
    """What files hold, for a store's key: each one's name, size and SHA-256."""
    out = []
    for path in map(Path, paths):
        if not path.is_file():
            raise S2SError(f"{path}: no such file")
        out.append([path.name, path.stat().st_size, file_digest(path)])
    return out


def file_digest(path: str | Path) -> str:
    """SHA-256 of a file's bytes, read in blocks (constant memory)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


class TokenStore:
    """Read side: `len(store)`, `store.lengths`, `store.get(field, indices)`."""

    def __init__(self, folder: Path, meta: dict, lengths: np.ndarray, arrays: dict[str, np.ndarray]):
        self.folder, self.meta, self.lengths, self.arrays = folder, meta, lengths, arrays
        self.dtypes = {field: np.dtype(dtype) for field, dtype in meta["fields"].items()}
        self._files: dict[str, tuple[int, int]] = {}  # field -> (ids fd, offsets fd), opened on first use

    def __len__(self) -> int:
        return int(self.meta["count"])

    @property
    def fields(self) -> list[str]:
        return list(self.meta["fields"])

    def get(self, field: str, indices) -> list[list[int]]:
        """The ids of examples `indices` in `field`, as lists."""
        ids_fd, offsets_fd = self._open(field)
        dtype = self.dtypes[field]
        size = dtype.itemsize
        out = []
        for i in indices:
            start, end = np.frombuffer(os.pread(offsets_fd, 16, int(i) * 8), dtype=np.int64)
            out.append(np.frombuffer(os.pread(ids_fd, int(end - start) * size, int(start) * size), dtype=dtype).tolist())
        return out

    def _open(self, field: str) -> tuple[int, int]:
        if field not in self._files:
            if field not in self.meta["fields"]:
                raise KeyError(field)
            self._files[field] = (os.open(self.folder / f"{field}.ids", os.O_RDONLY),
                                  os.open(self.folder / f"{field}.offsets", os.O_RDONLY))
        return self._files[field]

    def close(self) -> None:
        for fds in self._files.values():
            for fd in fds:
                os.close(fd)
        self._files.clear()

    def __del__(self):
        self.close()

    # Each process opens the files for itself (a store handed to a worker process reopens them there).
    def __getstate__(self) -> dict:
        return {"folder": self.folder, "meta": self.meta, "lengths": self.lengths, "arrays": self.arrays}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["folder"], state["meta"], state["lengths"], state["arrays"])


def rebuild_hint(folder: Path) -> str:
    return f"delete {folder} and start again: it is rebuilt from the data"


def open_store(folder: str | Path, key: dict, verify: bool = True) -> TokenStore | None:
    """The store in `folder` if it was built with `key`; None when there is none or it was built from something
    else (the reason is logged). A truncated or corrupt store fails with one line saying how to rebuild it.
    verify=False checks the sizes only, not the checksums (a torchrun rank after rank 0 has verified)."""
    folder = Path(folder)
    meta_path = folder / META
    if not meta_path.is_file():
        return None
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        files, count = meta["files"], int(meta["count"])
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise S2SError(f"{meta_path}: not a token store's description ({e}); {rebuild_hint(folder)}") from None
    if meta.get("version") != VERSION:
        log.info("%s: built by another version of s2s; rebuilding it", folder)
        return None
    if meta.get("key") != key:
        log.info("%s: built from %s; rebuilding it", folder, _difference(meta.get("key"), key))
        return None
    for name, (size, digest) in files.items():
        path = folder / name
        actual = path.stat().st_size if path.is_file() else None
        if actual != size:
            state = "missing" if actual is None else f"{actual} bytes instead of {size}"
            raise S2SError(f"{path}: truncated or damaged token store ({state}); {rebuild_hint(folder)}")
        if verify and file_digest(path) != digest:
            raise S2SError(f"{path}: corrupt token store (its checksum does not match); {rebuild_hint(folder)}")
    try:
        lengths = np.load(folder / LENGTHS, allow_pickle=False)
        arrays = {name: np.load(folder / f"{name}.npy", allow_pickle=False) for name in meta.get("arrays", [])}
    except (OSError, ValueError) as e:
        raise S2SError(f"{folder}: unreadable token store ({e}); {rebuild_hint(folder)}") from None
    if lengths.shape != (count,):
        raise S2SError(f"{folder / LENGTHS}: {lengths.shape} lengths for {count} examples; {rebuild_hint(folder)}")
    return TokenStore(folder, meta, lengths, arrays)


def _difference(before: dict | None, now: dict) -> str:
    """What differs between two store keys, for the log line."""
    if not isinstance(before, dict):
        return "an older s2s"
    names = [k for k in sorted(set(before) | set(now)) if before.get(k) != now.get(k)]
    return "other " + ", ".join(names) if names else "other settings"


class StoreWriter:
    """Build a store chunk by chunk: `add(columns, lengths)` then `finish(key)`. `fields` maps each field
    to its vocabulary size; `meta` takes anything else to keep in meta.json and `arrays` numpy arrays to
    keep beside the examples. Files are written into FOLDER.tmp and renamed into place by finish."""

    def __init__(self, folder: str | Path, fields: dict[str, int]):
        self.folder = Path(folder)
        self.tmp = self.folder.with_name(self.folder.name + ".tmp")
        shutil.rmtree(self.tmp, ignore_errors=True)  # a build that was killed
        self.tmp.mkdir(parents=True)
        self.dtypes = {f: np.dtype(np.uint8 if size <= 2**8 else np.uint16 if size <= 2**16 else np.int32) for f, size in fields.items()}
        self.fields = list(fields)
        self.meta: dict = {}
        self.arrays: dict[str, np.ndarray] = {}
        self.ids = {f: open(self.tmp / f"{f}.ids", "wb") for f in fields}
        self.offsets = {f: open(self.tmp / f"{f}.offsets", "wb") for f in fields}
        self.ends = dict.fromkeys(fields, 0)  # ids written so far per field
        for f in fields:
            self.offsets[f].write(np.zeros(1, np.int64).tobytes())
        self.lengths: list[np.ndarray] = []
        self.count = 0

    def add(self, columns: dict[str, list[list[int]]], lengths) -> None:
        """One chunk of examples: the same number of id lists per field, and their batching costs."""
        n = len(lengths)
        for f in self.fields:
            seqs = columns[f]
            sizes = np.fromiter(map(len, seqs), dtype=np.int64, count=n)
            total = int(sizes.sum())
            np.fromiter(chain.from_iterable(seqs), dtype=self.dtypes[f], count=total).tofile(self.ids[f])
            (self.ends[f] + np.cumsum(sizes)).tofile(self.offsets[f])
            self.ends[f] += total
        self.lengths.append(np.asarray(lengths, dtype=np.int32))
        self.count += n

    def finish(self, key: dict) -> TokenStore:
        for handle in chain(self.ids.values(), self.offsets.values()):
            handle.flush()
            os.fsync(handle.fileno())
            handle.close()
        lengths = np.concatenate(self.lengths) if self.lengths else np.zeros(0, np.int32)
        if lengths.size and lengths.max() < 2**15:
            lengths = lengths.astype(np.int16)
        np.save(self.tmp / LENGTHS, lengths, allow_pickle=False)
        for name, array in self.arrays.items():
            np.save(self.tmp / f"{name}.npy", array, allow_pickle=False)
        files = {p.name: (p.stat().st_size, file_digest(p)) for p in sorted(self.tmp.iterdir())}
        meta = {**self.meta, "version": VERSION, "key": key, "fields": {f: d.str for f, d in self.dtypes.items()}, "count": self.count,
                "arrays": list(self.arrays), "files": files}
        (self.tmp / META).write_text(json.dumps(meta, indent=1) + "\n", encoding="utf-8")
        if self.folder.exists():
            shutil.rmtree(self.folder)
        os.replace(self.tmp, self.folder)
        return TokenStore(self.folder, meta, lengths, dict(self.arrays))

    def abort(self) -> None:
        for handle in chain(self.ids.values(), self.offsets.values()):
            handle.close()
        shutil.rmtree(self.tmp, ignore_errors=True)
