"""Checkpoints: atomic saves, clear errors for corrupt or foreign files, and loading that cannot run code."""
from __future__ import annotations

import pickle
from pathlib import Path

import pytest
import torch

from s2s import checkpoint
from s2s.checkpoint import BEST, LAST
from s2s.errors import S2SError


def _payload(seed: int = 0) -> dict:
    torch.manual_seed(seed)
    model = torch.nn.Linear(3, 2)
    return {"version": "0.0", "task": "translation", "config": {"train": {"lr": 0.1}}, "model": model.state_dict()}


def test_save_then_load_round_trip_leaves_no_temporary_file(tmp_path):
    path = tmp_path / BEST
    payload = _payload()
    checkpoint.save(payload, path)
    assert sorted(p.name for p in tmp_path.iterdir()) == [BEST]  # no .tmp left behind
    loaded = checkpoint.load(path)
    assert loaded["config"] == payload["config"] and loaded["task"] == "translation"
    for key, value in payload["model"].items():
        assert torch.equal(loaded["model"][key], value)


def test_save_overwrites_atomically(tmp_path):
    path = tmp_path / LAST
    checkpoint.save(_payload(0), path)
    checkpoint.save(_payload(1), path)
    assert torch.equal(checkpoint.load(path)["model"]["weight"], _payload(1)["model"]["weight"])
    assert [p.name for p in tmp_path.iterdir()] == [LAST]


def test_a_crash_while_saving_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / LAST
    checkpoint.save(_payload(0), path)

    def crash(obj, f, *args, **kwargs):
        Path(f).write_bytes(b"PK\x03\x04 half a zip")
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", crash)
    with pytest.raises(KeyboardInterrupt):
        checkpoint.save(_payload(1), path)
    monkeypatch.undo()
    assert torch.equal(checkpoint.load(path)["model"]["weight"], _payload(0)["model"]["weight"])


@pytest.mark.parametrize("keep", [0.5, 0.9, 0.0])
def test_truncated_file_is_reported_as_corrupt(tmp_path, keep):
    path = tmp_path / BEST
    checkpoint.save(_payload(), path)
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    with pytest.raises(S2SError) as e:
        checkpoint.load(path)
    assert str(path) in str(e.value) and "corrupt" in str(e.value)
    assert "\n" not in str(e.value)


def test_random_bytes_are_reported_as_corrupt(tmp_path):
    path = tmp_path / BEST
    path.write_bytes(bytes(range(256)) * 10)
    with pytest.raises(S2SError, match="corrupt"):
        checkpoint.load(path)


@pytest.mark.parametrize(
    "pickled",
    [b"\x80\x02h\x09.", b"\x80\x02.", b"\x80\x02N\x86."],
    ids=["memo-KeyError", "empty-stack-IndexError", "tuple2-IndexError"],
)
def test_a_damaged_pickle_inside_an_intact_zip_is_reported_as_corrupt(tmp_path, damage_pickle, pickled):
    path = tmp_path / BEST
    checkpoint.save(_payload(), path)
    damage_pickle(path, pickled)
    with pytest.raises(S2SError, match="corrupt"):
        checkpoint.load(path)


@pytest.mark.parametrize(
    "content",
    [[1, 2, 3], {"model": {}}, {"config": {}}, torch.zeros(3), "text"],
    ids=["list", "no-config", "no-model", "tensor", "str"],
)
def test_a_torch_file_that_is_not_a_checkpoint_is_refused(tmp_path, content):
    path = tmp_path / BEST
    torch.save(content, path)
    with pytest.raises(S2SError, match="not an s2s checkpoint"):
        checkpoint.load(path)


def test_a_plain_pickle_is_refused(tmp_path):
    path = tmp_path / BEST
    path.write_bytes(pickle.dumps({"model": {}, "config": {}}, protocol=2))
    with pytest.raises(S2SError, match="corrupt|not an s2s checkpoint"):
        checkpoint.load(path)


def _leave_a_mark(path: str) -> dict:
    Path(path).write_text("code ran while loading", encoding="utf-8")
    return {}


class Payload:
    """Unpickling this object calls _leave_a_mark: what a malicious checkpoint would do."""

    def __init__(self, mark: Path):
        self.mark = str(mark)

    def __reduce__(self):
        return _leave_a_mark, (self.mark,)


class Plain:
    def __init__(self):
        self.x = 1


@pytest.mark.parametrize("kind", ["reduce", "instance"])
def test_loading_refuses_arbitrary_objects_without_running_them(tmp_path, kind):
    mark = tmp_path / "mark.txt"
    path = tmp_path / BEST
    extra = Payload(mark) if kind == "reduce" else Plain()
    torch.save({"version": "0", "task": "translation", "config": {}, "model": {}, "extra": extra}, path)
    assert not mark.exists()
    with pytest.raises(S2SError) as e:
        checkpoint.load(path)
    assert not mark.exists(), "loading executed code from the checkpoint"
    assert str(path) in str(e.value)
    # The same file does run code under a plain (unsafe) load: the test file really is malicious.
    if kind == "reduce":
        torch.load(path, weights_only=False)
        assert mark.exists()


def test_load_missing_file(tmp_path):
    with pytest.raises(S2SError, match="no such checkpoint"):
        checkpoint.load(tmp_path / BEST)


def test_find_on_an_empty_directory_says_there_is_no_checkpoint(tmp_path):
    with pytest.raises(S2SError) as e:
        checkpoint.find(tmp_path)
    assert str(tmp_path) in str(e.value) and "no checkpoint" in str(e.value)


def test_find_on_a_missing_directory(tmp_path):
    with pytest.raises(S2SError, match="no such run directory"):
        checkpoint.find(tmp_path / "nope")


def test_find_prefers_best_and_falls_back_to_last(tmp_path):
    (tmp_path / LAST).write_bytes(b"")
    assert checkpoint.find(tmp_path) == tmp_path / LAST
    (tmp_path / BEST).write_bytes(b"")
    assert checkpoint.find(tmp_path) == tmp_path / BEST
    assert checkpoint.find(tmp_path, prefer=LAST) == tmp_path / LAST
