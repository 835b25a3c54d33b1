"""Checkpoints: atomic saves, clear errors for corrupt or foreign files, loading that cannot run code, and
run directories of s2s 0.1 (loaded as they are, rewritten by `s2s upgrade`)."""
from __future__ import annotations

import pickle
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
