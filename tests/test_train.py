"""The training loop: the run directory it leaves, exact resume, and clear errors."""
from __future__ import annotations

import errno
import json
import math
import os
import shutil
from pathlib import Path

import pytest
import torch
from conftest import metrics_events, train_losses

from s2s import checkpoint
from s2s import config as config_lib
from s2s.cli import main
from s2s.errors import S2SError
from s2s.tasks.translation import make_batch
from s2s.train import _records_up_to, absolute_paths, build_optimizer, summary, train

# How the 40 training pairs are cut into batches (the tiny corpus gives examples of 13-27 subword tokens).
LAYOUTS = {
    "mid_epoch": 80,  # 12 batches an epoch: the stop at step 2 falls inside the first epoch
    "crosses_epoch": 300,  # 3 batches an epoch: the resumed part crosses an epoch end (and validates there)
    "epoch_boundary": 100_000,  # 1 batch an epoch: the stop at step 2 falls on an epoch end
}


def _lrs(run: Path) -> dict[int, float]:
    return {e["step"]: e["lr"] for e in metrics_events(run) if "train_loss" in e}


@pytest.fixture(scope="module")
def resume_runs(tmp_path_factory, corpus_dir, tiny_config):
    """layout -> (uninterrupted run dir, interrupted-and-resumed run dir), each trained for 4 updates."""
    cache: dict[str, tuple[Path, Path]] = {}

    def get(layout: str) -> tuple[Path, Path]:
        if layout not in cache:
            root = tmp_path_factory.mktemp(f"resume-{layout}")
            settings = {"max_tokens": LAYOUTS[layout], "epochs": 10}
            config = lambda steps: tiny_config(corpus_dir, train=settings | {"max_steps": steps})  # noqa: E731
            train(config(4), root / "a")
            train(config(2), root / "b")
            train(config(4), root / "b", resume=True)
            cache[layout] = (root / "a", root / "b")
        return cache[layout]

    return get


@pytest.mark.parametrize(
    "layout",
    ["mid_epoch", "crosses_epoch", "epoch_boundary"],
)
def test_resume_equals_uninterrupted(resume_runs, layout):
    a, b = resume_runs(layout)
    losses_a, losses_b = train_losses(a), train_losses(b)
    assert sorted(losses_a) == sorted(losses_b) == [1, 2, 3, 4]
    assert losses_b[3] == losses_a[3] and losses_b[4] == losses_a[4]  # exactly, not approximately
    assert _lrs(b) == _lrs(a)
    last_a, last_b = checkpoint.load(a / checkpoint.LAST), checkpoint.load(b / checkpoint.LAST)
    assert last_a["progress"]["step"] == last_b["progress"]["step"] == 4
    for key, value in last_a["model"].items():
        assert torch.equal(value, last_b["model"][key]), key


def test_the_runs_really_differ_by_step(resume_runs):
    """Guard against a vacuous resume test: the loss changes from step to step."""
    a, _ = resume_runs("mid_epoch")
    losses = train_losses(a)
    assert len(set(losses.values())) == 4


def test_run_directory_layout(resume_runs, corpus_dir, tiny_config):
    a, _ = resume_runs("mid_epoch")
    for name in ("config.yaml", "best.pt", "last.pt", "spm.src.model", "spm.tgt.model", "metrics.jsonl"):
        assert (a / name).is_file(), name
    assert not list(a.glob("*.tmp")) and not (a / checkpoint.LOCK).exists()  # the lock goes with the run
    expected = tiny_config(corpus_dir, train={"max_tokens": LAYOUTS["mid_epoch"], "epochs": 10, "max_steps": 4})
    assert config_lib.load(a / "config.yaml") == expected
    best = checkpoint.load(a / checkpoint.BEST)
    assert config_lib.from_dict(best["config"]) == expected and best["task"] == "translation"
    last = checkpoint.load(a / checkpoint.LAST)
    assert {"model", "optimizer", "progress", "rng", "config"} <= last.keys()
    events = metrics_events(a)
    assert any("dev_bleu" in e and "dev_chrf" in e for e in events)
    assert all(e["train_loss"] > 0 for e in events if "train_loss" in e)


def _interrupt(monkeypatch, where: str, at_call: int) -> None:
    """Raise KeyboardInterrupt (as Ctrl-C would) in the at_call-th update, before its forward pass
    ("before_forward") or after its forward and backward passes ("inside_step")."""
    from s2s.tasks.translation import Seq2Seq

    calls = {"n": 0}

    def interrupting(original):
        def wrapper(*args, **kwargs):
            calls["n"] += 1
            if calls["n"] == at_call:
                raise KeyboardInterrupt
            return original(*args, **kwargs)

        return wrapper

    if where == "before_forward":
        monkeypatch.setattr(Seq2Seq, "forward", interrupting(Seq2Seq.forward))
    else:
        monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", interrupting(torch.nn.utils.clip_grad_norm_))


@pytest.mark.parametrize(
    "where",
    [
        "before_forward",
        "inside_step",
    ],
)
def test_resume_after_ctrl_c_equals_uninterrupted(resume_runs, tmp_path, monkeypatch, corpus_dir, tiny_config, where):
    a, _ = resume_runs("mid_epoch")
    config = tiny_config(corpus_dir, train={"max_tokens": LAYOUTS["mid_epoch"], "epochs": 10, "max_steps": 4})
    run = tmp_path / "run"
    with monkeypatch.context() as m:
        _interrupt(m, where, at_call=3)
        with pytest.raises(S2SError) as e:
            train(config, run)
    assert "interrupted at step" in str(e.value) and "--resume" in str(e.value)
    assert checkpoint.load(run / checkpoint.LAST)["progress"]["step"] == 2  # the third update never happened
    train(config, run, resume=True)
    assert train_losses(run) == train_losses(a)
    last_a, last = checkpoint.load(a / checkpoint.LAST), checkpoint.load(run / checkpoint.LAST)
    for key, value in last_a["model"].items():
        assert torch.equal(value, last["model"][key]), key


def test_ctrl_c_during_validation_validates_again_on_resume(resume_runs, tmp_path, monkeypatch, corpus_dir, tiny_config):
    from s2s.tasks.translation import Task as TranslationTask

    a, _ = resume_runs("crosses_epoch")
    config = tiny_config(corpus_dir, train={"max_tokens": LAYOUTS["crosses_epoch"], "epochs": 10, "max_steps": 4})
    run = tmp_path / "run"
    with monkeypatch.context() as m:
        m.setattr(TranslationTask, "validate", lambda *args: (_ for _ in ()).throw(KeyboardInterrupt))
        with pytest.raises(S2SError, match="interrupted at step 3"):  # the first epoch end
            train(config, run)
    train(config, run, resume=True)
    dev = lambda r: [(e["step"], e["epoch"], e["dev_bleu"]) for e in metrics_events(r) if "dev_bleu" in e]  # noqa: E731
    assert dev(run) == dev(a) and dev(a)[0][:2] == (3, 1)


def test_training_into_a_used_run_directory_needs_resume(resume_runs, corpus_dir, tiny_config):
    a, _ = resume_runs("mid_epoch")
    before = (a / "metrics.jsonl").read_bytes(), (a / checkpoint.LAST).read_bytes()
    with pytest.raises(S2SError) as e:
        train(tiny_config(corpus_dir, train={"max_steps": 1}), a)
    assert str(a) in str(e.value) and "--resume" in str(e.value)
    assert ((a / "metrics.jsonl").read_bytes(), (a / checkpoint.LAST).read_bytes()) == before  # untouched


def test_resume_of_a_missing_run_directory_fails(tmp_path, corpus_dir, tiny_config):
    with pytest.raises(S2SError, match="no such run directory to resume; start the run without --resume"):
        train(tiny_config(corpus_dir), tmp_path / "run", resume=True)
    assert not (tmp_path / "run").exists()


def test_resume_after_kill_9_before_any_save_says_there_is_nothing_to_resume(tmp_path, corpus_dir, tiny_config, capsys):
    """What kill -9 before the first save leaves: config.yaml and a few metrics, no last.pt. --resume says so
    and how to start again; starting again drops the dead run's metrics (nothing of it can be resumed)."""
    config = tiny_config(corpus_dir, train={"max_steps": 2})
    run = tmp_path / "run"
    run.mkdir()
    config_lib.save(config, run / checkpoint.CONFIG)
    (run / "metrics.jsonl").write_text('{"step": 1, "epoch": 1, "train_loss": 9.0}\n{"step": 2, "ep', encoding="utf-8")
    assert main(["-q", "train", str(run / checkpoint.CONFIG), "--out", str(run), "--resume"]) == 2
    err = capsys.readouterr().err
    assert err == (f"error: {run}: nothing to resume (no last.pt: the run stopped before its first save); "
                   f"start it again without --resume: s2s train CONFIG --out {run}\n")
    train(config, run)
    assert [e["step"] for e in metrics_events(run) if "train_loss" in e] == [1, 2]
    assert all(e.get("train_loss") != 9.0 for e in metrics_events(run))


@pytest.mark.parametrize(
    "changes, key",
    [
        ({"encoder": {"hidden_size": 16}}, "encoder.hidden_size"),
        ({"translation": {"dec_hidden_size": 8}}, "translation.dec_hidden_size"),
        ({"data": {"src_lang": "en", "tgt_lang": "de"}}, "data.src_lang"),
        ({"data": {"max_train": 20}}, "data.max_train"),
        ({"vocab": {"src_size": 30}}, "vocab.src_size"),
    ],
)
def test_resume_refuses_a_change_of_anything_but_train_and_decode(resume_runs, corpus_dir, tiny_config, changes, key):
    a, _ = resume_runs("mid_epoch")
    saved = config_lib.to_dict(config_lib.load(a / checkpoint.CONFIG))
    before = {p.name: p.read_bytes() for p in a.iterdir() if p.is_file()}
    with pytest.raises(S2SError) as e:
        train(tiny_config(corpus_dir, train={"max_tokens": 80, "epochs": 10, "max_steps": 5}, **changes), a, resume=True)
    section, name = key.split(".")
    new = {**saved[section], **changes[section]}[name]
    assert str(e.value) == (f"{a}: --resume with '{key}' changed ({saved[section][name]!r} in the run, {new!r} now); "
                            "only train.* and decode.* keys may change, start another run (--out) for the rest")
    assert {p.name: p.read_bytes() for p in a.iterdir() if p.is_file()} == before  # nothing written


def test_resume_refuses_another_task(resume_runs):
    a, _ = resume_runs("mid_epoch")
    tagging = config_lib.from_dict({"task": "tagging", "data": {"dir": str(a)}})
    with pytest.raises(S2SError, match="'task' changed \\('translation' in the run, 'tagging' now\\)"):
        train(tagging, a, resume=True)


def test_resume_accepts_changed_train_and_decode_keys(tmp_path, corpus_dir, tiny_config):
    train(tiny_config(corpus_dir, train={"max_steps": 1}), tmp_path / "run")
    for name in ("best.pt.tmp", "last.pt.tmp"):  # what kill -9 in a save leaves
        (tmp_path / "run" / name).write_bytes(b"PK\x03\x04 half a zip")
    changed = tiny_config(corpus_dir, train={"max_steps": 2, "lr": 0.005, "clip": 1.0, "log_every": 2}, decode={"batch_size": 2})
    assert train(changed, tmp_path / "run", resume=True)["step"] == 2
    assert config_lib.load(tmp_path / "run" / checkpoint.CONFIG) == changed
    assert not list((tmp_path / "run").glob("*.tmp"))


def test_a_relative_data_dir_is_kept_absolute_so_the_run_works_from_another_folder(tmp_path, corpus_dir, tiny_config,
                                                                                  monkeypatch, capsys):
    shutil.copytree(corpus_dir, tmp_path / "data")
    monkeypatch.chdir(tmp_path)
    train(tiny_config(Path("data"), train={"max_steps": 1}), Path("run"))
    for saved in (config_lib.load(tmp_path / "run" / checkpoint.CONFIG), checkpoint.load_trained(tmp_path / "run", "translation")[0]):
        assert saved.data.dir == str(tmp_path / "data")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert main(["-q", "evaluate", "--model", str(tmp_path / "run"), "--split", "test", "--json"]) == 0
    assert "bleu" in json.loads(capsys.readouterr().out)
    # Resuming from another folder with the same (relative) config refers to other data: refused by name.
    with pytest.raises(S2SError, match="'data.dir' changed"):
        train(tiny_config(Path("data"), train={"max_steps": 2}), tmp_path / "run", resume=True)


def test_word_vectors_are_kept_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = config_lib.from_dict({"task": "tagging", "data": {"dir": "ner"}, "vocab": {"word_vectors": "vec/words.txt"}})
    config = absolute_paths(config)
    assert (config.data.dir, config.vocab.word_vectors) == (str(tmp_path / "ner"), str(tmp_path / "vec" / "words.txt"))
    hub = config_lib.from_dict({"data": {"format": "hub", "hub": "bentrevett/multi30k"}})
    assert absolute_paths(hub).data.dir == ""  # a hub set has no folder


# --- the run directory: one writer, saves that survive a full disk or kill -9 ---------------------------------


def test_a_second_writer_fails_at_once_naming_the_first(tmp_path, corpus_dir, tiny_config, capsys):
    config = tiny_config(corpus_dir, train={"max_steps": 1})
    run = tmp_path / "run"
    config_path = tmp_path / "tiny.yaml"
    config_lib.save(config, config_path)
    with checkpoint.lock(run):  # another `s2s train` (this process, through another open file)
        assert (run / checkpoint.LOCK).read_text() == f"{os.getpid()}\n"
        for extra in ([], ["--resume"]):
            assert main(["-q", "train", str(config_path), "--out", str(run), *extra]) == 2
            assert capsys.readouterr().err == (f"error: {run}: in use by another `s2s train` (process {os.getpid()}); "
                                               "wait for it to end or choose another --out\n")
        assert sorted(p.name for p in run.iterdir()) == [checkpoint.LOCK]  # nothing written
    assert not (run / checkpoint.LOCK).exists()
    assert train(config, run)["step"] == 1  # free again


@pytest.mark.parametrize("where", ["missing", "existing"])
def test_a_run_directory_that_cannot_be_written_is_one_line(tmp_path, corpus_dir, tiny_config, monkeypatch, where):
    config = tiny_config(corpus_dir, train={"max_steps": 1})
    run = tmp_path / "run"
    if where == "existing":
        run.mkdir()

    def refuse(*args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(Path, "mkdir", refuse)
    monkeypatch.setattr(os, "open", refuse)
    with pytest.raises(S2SError) as e:
        train(config, run)
    assert str(e.value) == f"{run}: cannot write the run directory (Permission denied)"


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root writes into read-only folders")
def test_a_read_only_output_folder_is_one_line(tmp_path, corpus_dir, tiny_config):
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        for run in (folder / "run", folder):
            with pytest.raises(S2SError, match=f"{run}: cannot write the run directory \\(Permission denied\\)"):
                train(tiny_config(corpus_dir, train={"max_steps": 1}), run)
    finally:
        folder.chmod(0o755)


def test_an_output_folder_under_a_file_is_one_line(tmp_path, corpus_dir, tiny_config):
    (tmp_path / "file").write_text("not a folder")
    with pytest.raises(S2SError, match="cannot write the run directory \\(Not a directory\\)"):
        train(tiny_config(corpus_dir, train={"max_steps": 1}), tmp_path / "file" / "run")


def _saves(monkeypatch) -> list[tuple[str, int | None]]:
    """Record each checkpoint save as (file name, step in last.pt's progress or None)."""
    saves = []
    original = checkpoint.save

    def recording(payload, path):
        saves.append((Path(path).name, payload.get("progress", {}).get("step")))
        original(payload, path)

    monkeypatch.setattr(checkpoint, "save", recording)
    return saves


@pytest.mark.parametrize("save_every, expected", [(0.0, [3]), (1e-9, [1, 2, 3])])
def test_last_pt_is_saved_every_save_every_minutes(tmp_path, corpus_dir, tiny_config, monkeypatch, save_every, expected):
    """Besides each validation (here only at max_steps: 12 batches an epoch), last.pt is written once
    train.save_every minutes have passed since the last save, checked after each update."""
    saves = _saves(monkeypatch)
    train(tiny_config(corpus_dir, train={"max_tokens": 80, "epochs": 10, "max_steps": 3, "save_every": save_every}), tmp_path / "run")
    assert [step for name, step in saves if name == checkpoint.LAST] == expected


def test_save_every_follows_the_clock(tmp_path, corpus_dir, tiny_config, monkeypatch):
    """A minute per update on a mocked clock, train.save_every 2: last.pt after updates 2 and 4 (and at
    the validation at max_steps 5)."""
    import s2s.train

    now = {"t": 0.0}

    def tick(*args, **kwargs):
        now["t"] += 60.0
        return original_update(*args, **kwargs)

    original_update = s2s.train.Trainer.update
    monkeypatch.setattr(s2s.train, "clock", lambda: now["t"])
    monkeypatch.setattr(s2s.train.Trainer, "update", tick)
    saves = _saves(monkeypatch)
    train(tiny_config(corpus_dir, train={"max_tokens": 80, "epochs": 10, "max_steps": 5, "save_every": 2.0}), tmp_path / "run")
    assert [step for name, step in saves if name == checkpoint.LAST] == [2, 4, 5]


class FullDisk:
    """A file on a disk that fills up after `room` bytes: writes fail with ENOSPC (OSError), as on a real full disk."""

    def __init__(self, path, mode, room: int = 100):
        self.f, self.room = open(path, mode), room

    def write(self, data) -> int:
        data = bytes(data)
        self.f.write(data[: self.room])
        self.f.flush()
        if len(data) > self.room:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self.room -= len(data)
        return len(data)

    def __getattr__(self, name):
        return getattr(self.f, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.f.close()


def test_a_full_disk_during_a_save_keeps_the_previous_last_pt_and_resume_goes_on(resume_runs, tmp_path, corpus_dir, tiny_config,
                                                                                  monkeypatch, capsys):
    a, _ = resume_runs("mid_epoch")  # 4 updates without a stop
    settings = {"max_tokens": LAYOUTS["mid_epoch"], "epochs": 10}
    run = tmp_path / "run"
    train(tiny_config(corpus_dir, train=settings | {"max_steps": 2}), run)
    config_path = tmp_path / "tiny.yaml"
    config_lib.save(tiny_config(corpus_dir, train=settings | {"max_steps": 4, "save_every": 1e-9}), config_path)
    with monkeypatch.context() as m:  # the disk is full when last.pt is next saved, after update 3
        m.setattr(checkpoint, "open", lambda path, mode: FullDisk(path, mode) if str(path).endswith(".tmp") else open(path, mode),
                  raising=False)
        assert main(["-q", "train", str(config_path), "--out", str(run), "--resume"]) == 2
    err = capsys.readouterr().err
    assert err == f"error: {run / 'last.pt'}: cannot save (No space left on device); the previous last.pt is kept\n"
    assert sorted(p.name for p in run.iterdir() if p.suffix == ".tmp" or p.name == checkpoint.LOCK) == []
    assert checkpoint.load(run / checkpoint.LAST)["progress"]["step"] == 2
    assert max(e["step"] for e in metrics_events(run)) == 3  # update 3 was logged before the failed save
    assert main(["-q", "train", str(config_path), "--out", str(run), "--resume"]) == 0
    assert [e["step"] for e in metrics_events(run) if "train_loss" in e] == [1, 2, 3, 4]  # cut back to step 2 on --resume
    assert train_losses(run) == train_losses(a)
    last_a, last = checkpoint.load(a / checkpoint.LAST), checkpoint.load(run / checkpoint.LAST)
    for key, value in last_a["model"].items():
        assert torch.equal(value, last["model"][key]), key


def test_resume_cuts_metrics_back_to_the_step_of_last_pt():
    lines = ['{"step": 1, "train_loss": 3.0}\n', "not json but kept\n", '{"step": 2, "dev_bleu": 1.0}\n',
             '{"step": 3, "train_loss": 2.0}\n', '{"step": 2, "note": "kept"}\n', '{"step": 4, "tr']
    assert _records_up_to("".join(lines), 2) == "".join(lines[:3] + [lines[4]])
    assert _records_up_to('{"step": 1}', 1) == '{"step": 1}\n'  # a complete last record without its line end
    # Resumed in a validation that will run again: its dev record (if it got out) goes, the loss record stays.
    assert _records_up_to("".join(lines[:3]), 2, drop_dev=True) == "".join(lines[:2])


def test_the_summary_is_json_before_any_validation():
    for best in (-math.inf, math.inf, math.nan):
        out = summary({"step": 3, "best": best, "best_step": 0, "seconds": 1.0})
        assert out["best"] is None and json.loads(json.dumps(out, allow_nan=False)) == out
    assert summary({"best": 12.5})["best"] == 12.5


def test_weight_average_is_validated_saved_and_resumed(tmp_path, corpus_dir, tiny_config):
    """train.ema: the moving average of the weights after every update is what validation scores and
    best.pt holds; last.pt keeps the raw weights and the average, and a resumed run continues both.
    The decay warms up: after n averaged updates the next one weighs 1 - min(ema, (1 + n) / (10 + n))."""
    decay = 0.5
    # 12 batches an epoch: the one validation is at max_steps, so best.pt is written there.
    config = lambda steps: tiny_config(corpus_dir, train={"max_tokens": 80, "epochs": 10, "max_steps": steps, "ema": decay})  # noqa: E731
    raw = []
    for steps in (1, 2, 3, 4):
        train(config(steps), tmp_path / f"to{steps}")
        raw.append(checkpoint.load(tmp_path / f"to{steps}" / checkpoint.LAST)["model"])
    expected = dict(raw[0])
    for n, weights in enumerate(raw[1:], start=1):
        d = min(decay, (1 + n) / (10 + n))
        expected = {k: d * expected[k] + (1 - d) * w if w.is_floating_point() else w for k, w in weights.items()}
    last = checkpoint.load(tmp_path / "to4" / checkpoint.LAST)
    averaged = {k.removeprefix("module."): v for k, v in last["ema"].items() if k.startswith("module.")}
    best = checkpoint.load(tmp_path / "to4" / checkpoint.BEST)["model"]
    assert averaged.keys() == best.keys() == raw[3].keys()
    for key, weight in expected.items():
        torch.testing.assert_close(averaged[key], weight, msg=key)
        assert torch.equal(best[key], averaged[key]), key
    assert any(not torch.equal(best[k], raw[3][k]) for k in best)  # the average, not the last weights

    train(config(2), tmp_path / "resumed")
    train(config(4), tmp_path / "resumed", resume=True)
    resumed = checkpoint.load(tmp_path / "resumed" / checkpoint.LAST)["ema"]
    for key, value in last["ema"].items():
        assert torch.equal(value, resumed[key]), key


@pytest.mark.parametrize("decay", [1.0, -0.5])
def test_weight_average_decay_out_of_range_fails(tmp_path, corpus_dir, tiny_config, decay):
    with pytest.raises(S2SError, match="train.ema"):
        train(tiny_config(corpus_dir, train={"max_steps": 1, "ema": decay}), tmp_path / "run")


def test_joint_vocabulary_and_other_language_suffixes(tmp_path, corpus_writer, tiny_config):
    data = corpus_writer(tmp_path / "data", {"train": 20, "val": 3}, src_lang="xx", tgt_lang="yy")
    config = tiny_config(data, data={"src_lang": "xx", "tgt_lang": "yy"}, vocab={"joint": True}, train={"max_steps": 2})
    progress = train(config, tmp_path / "run")
    assert progress["step"] == 2
    assert (tmp_path / "run" / "spm.joint.model").is_file() and not (tmp_path / "run" / "spm.src.model").exists()
    model = checkpoint.load(tmp_path / "run" / checkpoint.BEST)["model"]
    # One SentencePiece model: both embeddings have the same number of rows.
    assert model["encoder.embed.weight"].shape[0] == model["decoder.embed.weight"].shape[0]


def _write(folder: Path, src: list[str], tgt: list[str]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for split in ("train", "val"):
        (folder / f"{split}.de").write_text("".join(s + "\n" for s in src), encoding="utf-8")
        (folder / f"{split}.en").write_text("".join(t + "\n" for t in tgt), encoding="utf-8")
    return folder


def test_empty_training_data_fails(tmp_path, tiny_config):
    data = _write(tmp_path / "data", [], [])
    with pytest.raises(S2SError):
        train(tiny_config(data), tmp_path / "run")


def test_training_data_of_only_empty_lines_fails(tmp_path, tiny_config):
    data = _write(tmp_path / "data", ["", " "], ["", ""])
    with pytest.raises(S2SError, match="no text"):
        train(tiny_config(data), tmp_path / "run")


def test_training_data_without_a_usable_pair_fails(tmp_path, tiny_config, pairs):
    rows = pairs(10, seed=0)
    data = _write(tmp_path / "data", [s for s, _ in rows], [t for _, t in rows])
    with pytest.raises(S2SError, match="no usable training pairs"):
        train(tiny_config(data, data={"max_len": 1}), tmp_path / "run")


def test_misaligned_training_data_fails(tmp_path, tiny_config):
    data = _write(tmp_path / "data", ["a b", "c d"], ["a b", "c d"])
    (data / "train.en").write_text("a b\n", encoding="utf-8")
    with pytest.raises(S2SError, match="misaligned"):
        train(tiny_config(data), tmp_path / "run")


def test_missing_dev_data_fails_before_training(tmp_path, tiny_config, corpus_dir):
    with pytest.raises(S2SError, match="no such file"):
        train(tiny_config(corpus_dir, data={"dev": "nope"}), tmp_path / "run")
    assert not (tmp_path / "run" / checkpoint.LAST).exists()


# --- fast paths -----------------------------------------------------------------------------------


def test_fused_adam_equals_plain_adam(tiny_seq2seq, id_pairs):
    fused_model, plain_model = tiny_seq2seq(seed=3), tiny_seq2seq(seed=3)
    fused, plain = build_optimizer(fused_model, 0.01), torch.optim.Adam(plain_model.parameters(), lr=0.01, foreach=False)
    batch = make_batch(*id_pairs())
    for _ in range(5):
        for model, optimizer in ((fused_model, fused), (plain_model, plain)):
            optimizer.zero_grad()
            model(batch).loss.backward()
            optimizer.step()
    for (name, a), b in zip(fused_model.named_parameters(), plain_model.parameters()):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5, msg=name)


def test_training_with_cpu_amp_runs_and_resumes(tmp_path, corpus_dir, tiny_config):
    """train.cpu_amp goes through the same loop (bf16 autocast where the CPU has it, fp32 elsewhere):
    finite losses, fp32 weights in the checkpoint, and an exact resume."""
    from s2s import checkpoint
    from s2s.train import train

    config = lambda steps: tiny_config(corpus_dir, train={"max_tokens": 80, "epochs": 10, "max_steps": steps, "cpu_amp": True})  # noqa: E731
    train(config(4), tmp_path / "a")
    train(config(2), tmp_path / "b")
    train(config(4), tmp_path / "b", resume=True)
    a, b = (checkpoint.load(tmp_path / run / checkpoint.LAST)["model"] for run in ("a", "b"))
    for name, weight in a.items():
        assert weight.dtype in (torch.float32, torch.int64, torch.bool), name
        torch.testing.assert_close(weight, b[name], msg=name)
        if weight.is_floating_point():
            assert torch.isfinite(weight).all(), name


def test_every_metrics_line_has_a_utc_timestamp_and_seconds_counted_across_resume(resume_runs):
    from datetime import datetime, timedelta

    _, b = resume_runs("mid_epoch")  # trained for 2 updates, then resumed to 4
    events = metrics_events(b)
    assert events and all({"time", "seconds"} <= e.keys() for e in events)
    for e in events:
        stamp = datetime.fromisoformat(e["time"].replace("Z", "+00:00"))
        assert stamp.utcoffset() == timedelta(0) and e["time"].endswith("Z")
    seconds = [e["seconds"] for e in events]
    assert seconds == sorted(seconds) and seconds[0] >= 0  # the resumed part counts on from the first run's seconds
    assert seconds[-1] <= checkpoint.load(b / checkpoint.LAST)["progress"]["seconds"] + 0.1


def test_tensorboard_events_carry_the_values_of_metrics_jsonl(tmp_path, corpus_dir, tiny_config):
    pytest.importorskip("tensorboard", reason="train.tensorboard needs tensorboard (pip install -e '.[tensorboard]')")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    settings = {"max_tokens": LAYOUTS["mid_epoch"], "epochs": 10, "log_every": 1, "valid_every": 2, "tensorboard": True}
    run = tmp_path / "run"
    train(tiny_config(corpus_dir, train=settings | {"max_steps": 2}), run)
    train(tiny_config(corpus_dir, train=settings | {"max_steps": 4}), run, resume=True)
    expected: dict[str, dict[int, float]] = {}
    for e in metrics_events(run):
        for name, value in e.items():
            if name not in ("step", "epoch", "time") and isinstance(value, (int, float)):
                expected.setdefault(name, {})[e["step"]] = value
    assert {"train_loss", "lr", "seconds", "dev_bleu"} <= expected.keys()
    events = EventAccumulator(str(run / "tensorboard"), size_guidance={"scalars": 0})
    events.Reload()
    assert set(events.Tags()["scalars"]) == expected.keys()
    for name, by_step in expected.items():
        got = {s.step: s.value for s in events.Scalars(name)}  # the last value TensorBoard shows at each step
        assert got.keys() == by_step.keys(), name
        for step, value in by_step.items():
            assert got[step] == pytest.approx(value, rel=1e-6), (name, step)


def test_tensorboard_without_the_package_says_what_to_install(tmp_path, corpus_dir, tiny_config, monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_tensorboard(name, *args, **kwargs):
        if name.startswith(("torch.utils.tensorboard", "tensorboard")):
            raise ImportError(f"No module named {name!r}")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_tensorboard)
    with pytest.raises(S2SError, match=r'pip install -e "\.\[tensorboard\]"'):
        train(tiny_config(corpus_dir, train={"max_steps": 1, "tensorboard": True}), tmp_path / "run")
