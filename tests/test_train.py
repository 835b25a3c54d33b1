"""The training loop: the run directory it leaves, exact resume, and clear errors."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from s2s import checkpoint
from s2s import config as config_lib
from s2s.errors import S2SError
from s2s.tasks.translation import make_batch
from s2s.train import build_optimizer, train

# How the 40 training pairs are cut into batches (the tiny corpus gives examples of 13-27 subword tokens).
LAYOUTS = {
    "mid_epoch": 80,  # 12 batches an epoch: the stop at step 2 falls inside the first epoch
    "crosses_epoch": 300,  # 3 batches an epoch: the resumed part crosses an epoch end (and validates there)
    "epoch_boundary": 100_000,  # 1 batch an epoch: the stop at step 2 falls on an epoch end
}


def _events(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text(encoding="utf-8").splitlines()]


def _losses(run: Path) -> dict[int, float]:
    return {e["step"]: e["train_loss"] for e in _events(run) if "train_loss" in e}


def _lrs(run: Path) -> dict[int, float]:
    return {e["step"]: e["lr"] for e in _events(run) if "train_loss" in e}


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
    losses_a, losses_b = _losses(a), _losses(b)
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
    losses = _losses(a)
    assert len(set(losses.values())) == 4


def test_run_directory_layout(resume_runs, corpus_dir, tiny_config):
    a, _ = resume_runs("mid_epoch")
    for name in ("config.yaml", "best.pt", "last.pt", "spm.src.model", "spm.tgt.model", "metrics.jsonl"):
        assert (a / name).is_file(), name
    assert not list(a.glob("*.tmp"))
    expected = tiny_config(corpus_dir, train={"max_tokens": LAYOUTS["mid_epoch"], "epochs": 10, "max_steps": 4})
    assert config_lib.load(a / "config.yaml") == expected
    best = checkpoint.load(a / checkpoint.BEST)
    assert config_lib.from_dict(best["config"]) == expected and best["task"] == "translation"
    last = checkpoint.load(a / checkpoint.LAST)
    assert {"model", "optimizer", "progress", "rng", "config"} <= last.keys()
    events = _events(a)
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
    assert _losses(run) == _losses(a)
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
    dev = lambda r: [(e["step"], e["epoch"], e["dev_bleu"]) for e in _events(r) if "dev_bleu" in e]  # noqa: E731
    assert dev(run) == dev(a) and dev(a)[0][:2] == (3, 1)


def test_training_into_a_used_run_directory_needs_resume(resume_runs, corpus_dir, tiny_config):
    a, _ = resume_runs("mid_epoch")
    before = (a / "metrics.jsonl").read_bytes(), (a / checkpoint.LAST).read_bytes()
    with pytest.raises(S2SError) as e:
        train(tiny_config(corpus_dir, train={"max_steps": 1}), a)
    assert str(a) in str(e.value) and "--resume" in str(e.value)
    assert ((a / "metrics.jsonl").read_bytes(), (a / checkpoint.LAST).read_bytes()) == before  # untouched


def test_resume_without_a_checkpoint_fails(tmp_path, corpus_dir, tiny_config):
    with pytest.raises(S2SError, match="no such checkpoint"):
        train(tiny_config(corpus_dir), tmp_path / "run", resume=True)


def test_resume_with_a_different_model_fails(resume_runs, corpus_dir, tiny_config):
    a, _ = resume_runs("mid_epoch")
    with pytest.raises(S2SError, match="different task, encoder, translation or vocab"):
        train(tiny_config(corpus_dir, encoder={"hidden_size": 16}), a, resume=True)
    with pytest.raises(S2SError, match="different task, encoder, translation or vocab"):
        train(tiny_config(corpus_dir, translation={"dec_hidden_size": 8}), a, resume=True)


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
