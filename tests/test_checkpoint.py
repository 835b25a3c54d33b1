"""Checkpoints: atomic saves that survive a full disk, checksums that catch a damaged file, clear errors for
corrupt or foreign files, loading that cannot run code, which checkpoint a --model argument names, and
run directories of s2s 0.1 (loaded as they are, rewritten by `s2s upgrade`)."""
from __future__ import annotations

import errno
import io
import json
import os
import pickle
import zipfile
import shutil
from pathlib import Path

import pytest
import torch
import yaml

from s2s import checkpoint
from s2s import config as config_lib
from s2s.checkpoint import BEST, CONFIG, LAST
from s2s.cli import main
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


class FailingFile:
    """A file that takes `room` bytes, then raises `error` (ENOSPC: a full disk; KeyboardInterrupt: Ctrl-C)."""

    def __init__(self, path, mode, error: BaseException, room: int = 20):
        self.f, self.error, self.room = open(path, mode), error, room

    def write(self, data) -> int:
        self.f.write(bytes(data)[: self.room])
        self.f.flush()
        raise self.error

    def __getattr__(self, name):
        return getattr(self.f, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.f.close()


def _failing_writes(monkeypatch, error: BaseException) -> None:
    monkeypatch.setattr(checkpoint, "open", lambda path, mode: FailingFile(path, mode, error), raising=False)


def test_a_crash_while_saving_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / LAST
    checkpoint.save(_payload(0), path)
    _failing_writes(monkeypatch, KeyboardInterrupt())
    with pytest.raises(KeyboardInterrupt):
        checkpoint.save(_payload(1), path)
    monkeypatch.undo()
    assert torch.equal(checkpoint.load(path)["model"]["weight"], _payload(0)["model"]["weight"])
    assert [p.name for p in tmp_path.iterdir()] == [LAST]  # the half-written temporary file is gone


@pytest.mark.parametrize("where", ["write", "fsync"])
def test_a_full_disk_while_saving_keeps_the_previous_checkpoint(tmp_path, monkeypatch, where):
    """A full disk (ENOSPC while writing, or reported only at fsync) fails in one line naming the file; the
    half-written temporary file is removed and the previous checkpoint is kept."""
    path = tmp_path / LAST
    checkpoint.save(_payload(0), path)
    full = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    if where == "write":
        _failing_writes(monkeypatch, full)
    else:
        monkeypatch.setattr(os, "fsync", lambda fd: (_ for _ in ()).throw(full))
    with pytest.raises(S2SError) as e:
        checkpoint.save(_payload(1), path)
    monkeypatch.undo()
    assert str(e.value) == f"{path}: cannot save (No space left on device); the previous last.pt is kept"
    assert [p.name for p in tmp_path.iterdir()] == [LAST]
    assert torch.equal(checkpoint.load(path)["model"]["weight"], _payload(0)["model"]["weight"])


def test_a_full_disk_on_the_first_save_says_nothing_was_written(tmp_path, monkeypatch):
    _failing_writes(monkeypatch, OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)))
    with pytest.raises(S2SError, match="cannot save \\(No space left on device\\); no best.pt was written"):
        checkpoint.save(_payload(), tmp_path / BEST)
    assert list(tmp_path.iterdir()) == []


def _flip_a_bit_in_tensor_data(path: Path, entry: int = 0) -> None:
    """Flip one bit in the middle of the `entry`-th largest tensor record of a torch checkpoint, leaving
    the zip layer and the pickle intact."""
    data = bytearray(path.read_bytes())
    with zipfile.ZipFile(io.BytesIO(bytes(data))) as z:
        records = sorted((z.read(i.filename) for i in z.infolist() if "/data/" in i.filename), key=len, reverse=True)
    record = records[entry]
    at = data.find(record)
    assert at > 0 and data.find(record, at + 1) < 0
    data[at + len(record) // 2] ^= 0x10
    path.write_bytes(bytes(data))


def test_a_flipped_bit_in_tensor_data_is_a_checksum_mismatch(tmp_path):
    path = tmp_path / BEST
    checkpoint.save(_payload(), path)
    _flip_a_bit_in_tensor_data(path)
    # The damage is silent for torch: the file loads, with another weight.
    raw = torch.load(path, weights_only=True)
    assert not torch.equal(raw["model"]["weight"], _payload()["model"]["weight"])
    with pytest.raises(S2SError) as e:
        checkpoint.load(path)
    assert str(e.value) == f"{path}: checksum mismatch in its model weights (damaged file); use the run's other checkpoint or train again"


def test_the_checksum_covers_the_optimizer_state_too(tmp_path):
    torch.manual_seed(0)  # an Adam state_dict's layout, with moments larger than the model's weights
    state = {0: {"step": torch.tensor(3.0), "exp_avg": torch.randn(20, 30), "exp_avg_sq": torch.rand(20, 30)}}
    optimizer = {"state": state, "param_groups": [{"lr": 0.01, "params": [0]}]}
    path = tmp_path / LAST
    checkpoint.save(_payload() | {"optimizer": optimizer}, path)
    _flip_a_bit_in_tensor_data(path)  # in the largest tensor record: one of the moments
    with pytest.raises(S2SError, match="checksum mismatch in its optimizer state"):
        checkpoint.load(path)


def test_a_checkpoint_without_a_checksum_still_loads(tmp_path):
    """Runs saved before checksums (s2s 0.1) load as they are."""
    path = tmp_path / BEST
    torch.save(_payload(), path)
    loaded = checkpoint.load(path)
    assert torch.equal(loaded["model"]["weight"], _payload()["model"]["weight"]) and "checksum" not in loaded


def test_a_damaged_best_pt_is_one_line_for_the_cli(trained_run, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    _flip_a_bit_in_tensor_data(run / BEST)
    source = tmp_path / "in.txt"
    source.write_text("der hund sieht ein ball\n", encoding="utf-8")
    assert main(["translate", "--model", str(run), "--input", str(source)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {run / BEST}: checksum mismatch in its model weights (damaged file)") and err.count("\n") == 1


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


def test_find_takes_best_and_refuses_a_run_that_has_not_validated(tmp_path):
    """A run with last.pt alone (stopped before its first validation) holds weights no dev score chose:
    prediction refuses it, saying how to go on, rather than serving them silently."""
    (tmp_path / LAST).write_bytes(b"")
    with pytest.raises(S2SError) as e:
        checkpoint.find(tmp_path)
    assert str(e.value) == (f"{tmp_path}: the run has not validated yet (no best.pt, only last.pt); resume it with "
                            f"`s2s train {tmp_path / CONFIG} --out {tmp_path} --resume`, or pass --model {tmp_path / LAST} "
                            "to use its current weights")
    assert checkpoint.find(tmp_path, LAST) == tmp_path / LAST
    (tmp_path / BEST).write_bytes(b"")
    assert checkpoint.find(tmp_path) == tmp_path / BEST


def test_a_checkpoint_file_names_itself_and_its_run(trained_run):
    """--model RUN/best.pt or RUN/last.pt: that checkpoint of that run."""
    for name in (BEST, LAST):
        assert checkpoint.find(trained_run / name) == trained_run / name
        assert checkpoint.run_dir_of(trained_run / name) == trained_run
        assert checkpoint.run_task(trained_run / name) == "translation"
        config, payload, path = checkpoint.load_trained(trained_run / name, "translation")
        assert path == trained_run / name and config == checkpoint.load_trained(trained_run, "translation")[0]
        assert payload["progress" if name == LAST else "model"] is not None
    assert checkpoint.run_dir_of(trained_run) == trained_run


def test_model_given_a_checkpoint_file_uses_that_checkpoint_of_that_run(trained_run, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    source = tmp_path / "in.txt"
    source.write_text("der hund sieht ein ball\n", encoding="utf-8")
    outputs = {}
    for model in (run, run / BEST, run / LAST):
        assert main(["translate", "--model", str(model), "--input", str(source)]) == 0
        outputs[model.name] = capsys.readouterr().out
    assert outputs["run"] == outputs[BEST]
    assert main(["evaluate", "--model", str(run / LAST), "--split", "test", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["hypotheses"].startswith(str(run / "eval"))


def test_a_run_that_has_not_validated_is_refused_for_prediction(trained_run, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    (run / BEST).unlink()
    with pytest.raises(S2SError, match="has not validated yet"):
        checkpoint.load_trained(run, "translation")
    assert main(["evaluate", "--model", str(run), "--split", "test"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {run}: the run has not validated yet") and err.count("\n") == 1
    assert checkpoint.run_task(run) == "translation"  # its task is still known


# --- run directories of s2s 0.1 -------------------------------------------------------------------------------

# s2s 0.1 kept the encoder's and the head's keys in one `model` section, the beam settings in `decode`,
# data.max_train_pairs, and saved every key of every task.
BEAM_KEYS = ("beam_size", "length_penalty", "max_len_a", "max_len_b", "max_src_len", "valid_beam_size")
OTHER_TASKS_KEYS = {"model": {"crf": True, "tag_scheme": "bioes", "char_filters": 50, "pooling": "max+mean", "head_hidden": 0},
                    "data": {"scheme": "iob1", "label_field": "label", "dev_size": 0, "max_dev": 0},
                    "vocab": {"word_vectors": "", "lowercase": True, "max_words": 0},
                    "train": {"unk_replace": 0.0, "trim_batches": True, "word_dropout": 0.0}}


def in_0_1_layout(raw: dict) -> dict:
    """A translation config (nested dicts of this version) as s2s 0.1 saved it."""
    old: dict = {"task": raw["task"], "model": {}}
    for section, values in raw.items():
        if section == "task":
            continue
        for k, v in values.items():
            if section == "translation" and k in BEAM_KEYS:
                old.setdefault("decode", {})[k] = v
            elif section in ("encoder", "translation"):
                old["model"][k] = v
            elif (section, k) == ("data", "max_train"):
                old["data"]["max_train_pairs"] = v
            else:
                old.setdefault(section, {})[k] = v
    for section, values in OTHER_TASKS_KEYS.items():
        old[section] |= values
    return old


def make_0_1_run(run: Path) -> None:
    """Rewrite a run directory trained by this version into s2s 0.1's layout (weights untouched)."""
    raw = yaml.safe_load((run / CONFIG).read_text(encoding="utf-8"))
    (run / CONFIG).write_text(yaml.safe_dump(in_0_1_layout(raw), sort_keys=False), encoding="utf-8")
    for name in (BEST, LAST):
        payload = checkpoint.load(run / name)
        payload["config"], payload["version"] = in_0_1_layout(payload["config"]), "0.1.0"
        checkpoint.save(payload, run / name)


@pytest.fixture
def old_run(trained_run, tmp_path) -> Path:
    run = tmp_path / "old"
    shutil.copytree(trained_run, run)
    make_0_1_run(run)
    assert config_lib.is_legacy(yaml.safe_load((run / CONFIG).read_text(encoding="utf-8")))
    return run


def test_a_0_1_run_directory_loads_and_translates_as_before(trained_run, old_run, pairs):
    from s2s.tasks.translation import Translator

    sources = [s for s, _ in pairs(8, seed=11)] + [""]
    new, old = Translator.load(trained_run, device="cpu"), Translator.load(old_run, device="cpu")
    assert old.config == new.config and old.config.translation.beam_size == 3  # decode.beam_size of 0.1 is translation's now
    assert old.translate(sources) == new.translate(sources)
    assert old.translate(sources, beam_size=1) == new.translate(sources, beam_size=1)
    assert checkpoint.run_task(old_run) == "translation"
    assert checkpoint.load_trained(old_run, "translation")[0] == new.config


def test_s2s_upgrade_rewrites_a_0_1_run_directory_once(trained_run, old_run, capsys):
    before = {name: checkpoint.load(old_run / name) for name in (BEST, LAST)}
    assert main(["upgrade", str(old_run)]) == 0
    out, _ = capsys.readouterr()
    assert out == f"{old_run}: rewrote {CONFIG}, {BEST}, {LAST} in the s2s 0.2 layout\n"
    saved = yaml.safe_load((old_run / CONFIG).read_text(encoding="utf-8"))
    assert not config_lib.is_legacy(saved) and saved == yaml.safe_load((trained_run / CONFIG).read_text(encoding="utf-8"))
    assert config_lib.load(old_run / CONFIG) == config_lib.load(trained_run / CONFIG)  # a config to train from again
    for name in (BEST, LAST):
        payload, original = checkpoint.load(old_run / name), checkpoint.load(trained_run / name)
        assert payload["config"] == original["config"]
        assert payload.keys() == before[name].keys()
        for key, value in before[name]["model"].items():  # the weights are untouched
            assert torch.equal(payload["model"][key], value)
    assert checkpoint.load(old_run / LAST)["progress"] == before[LAST]["progress"]

    stamps = {name: (old_run / name).stat().st_mtime_ns for name in (CONFIG, BEST, LAST)}
    assert main(["upgrade", str(old_run)]) == 0
    out, _ = capsys.readouterr()
    assert out == f"{old_run}: already in the s2s 0.2 layout\n"
    assert stamps == {name: (old_run / name).stat().st_mtime_ns for name in (CONFIG, BEST, LAST)}


def test_s2s_upgrade_rewrites_a_0_1_config_file(tmp_path, corpus_dir, capsys):
    # configs/smoke.yaml as s2s 0.1 shipped it (a few keys; the others take their defaults)
    old = {"task": "translation",
           "data": {"format": "text", "dir": str(corpus_dir), "train": "train", "dev": "val", "test": "test", "max_train_pairs": 30},
           "vocab": {"src_size": 40, "tgt_size": 40},
           "model": {"emb_dim": 8, "hidden_size": 8, "dec_hidden_size": 16, "attn_size": 8, "dropout": 0.1},
           "train": {"epochs": 3, "lr": 0.003, "threads": 1},
           "decode": {"beam_size": 3, "max_len_a": 1.2, "max_len_b": 5, "batch_size": 8}}
    path = tmp_path / "smoke.yaml"
    path.write_text(yaml.safe_dump(old, sort_keys=False), encoding="utf-8")
    with pytest.raises(S2SError, match="`s2s upgrade"):
        config_lib.load(path)
    assert main(["upgrade", str(path)]) == 0
    assert capsys.readouterr().out == f"{path}: rewritten in the s2s 0.2 layout\n"
    config = config_lib.load(path)
    assert (config.encoder.emb_dim, config.encoder.hidden_size, config.encoder.dropout) == (8, 8, 0.1)
    assert (config.translation.dec_hidden_size, config.translation.attn_size) == (16, 8)
    assert (config.translation.beam_size, config.translation.max_len_a, config.translation.max_len_b) == (3, 1.2, 5)
    assert (config.decode.batch_size, config.data.max_train, config.train.lr) == (8, 30, 0.003)
    assert main(["upgrade", str(path)]) == 0
    assert capsys.readouterr().out == f"{path}: already in the s2s 0.2 layout\n"


def test_s2s_upgrade_of_what_is_not_a_run(tmp_path, capsys):
    assert main(["upgrade", str(tmp_path / "nope")]) == 2
    assert "no such run directory" in capsys.readouterr().err
    assert main(["upgrade", str(tmp_path)]) == 2
    assert f"{tmp_path}: not a run directory" in capsys.readouterr().err
