"""Pretraining the shared encoder as a language model (`s2s pretrain`) and fine-tuning heads from it (encoder.init)."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from conftest import run_recipe

from s2s import checkpoint
from s2s import config as config_lib
from s2s.cli import main
from s2s.errors import S2SError
from s2s.nn.lm import BidirectionalLM
from s2s.tasks import classification, pretraining, tagging
from s2s.train import _seed, build_optimizer, train

ROOT = Path(__file__).resolve().parents[1]
IMDB = ROOT.parent / "shared" / "data" / "imdb"
CONLL = ROOT.parent / "shared" / "data" / "conll2003"

WORDS = "the a film movie good bad great plot actor scene was is not very and but".split()
NAMES = "Paris London Smith Jones Reuters Bonn".split()


def _texts(n: int, seed: int) -> list[str]:
    g = torch.Generator().manual_seed(seed)
    pool = WORDS + NAMES
    return [" ".join(pool[i] for i in torch.randint(len(pool), (int(torch.randint(3, 9, (1,), generator=g)),), generator=g))
            for _ in range(n)]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    """Unlabelled text (JSONL and plain), a labelled classification split and CoNLL files, all on ~25 words."""
    root = tmp_path_factory.mktemp("pretrain-data")
    (root / "unsup.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in _texts(60, 1)), encoding="utf-8")
    (root / "news.txt").write_text("\n".join(_texts(40, 2)) + "\n", encoding="utf-8")
    for split, seed in (("train", 3), ("dev", 4)):
        rows = [{"text": t, "label": int("good" in t or "great" in t)} for t in _texts(30, seed)]
        rows[0]["label"], rows[1]["label"] = 0, 1
        (root / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    for split, seed in (("train", 5), ("valid", 6)):
        lines = []
        for i, text in enumerate(_texts(12, seed)):
            if i % 4 == 0:
                lines += ["-DOCSTART- -X- O O", ""]
            lines += [f"{w} NN O {'I-LOC' if w in ('Paris', 'London') else 'I-PER' if w in ('Smith', 'Jones') else 'O'}" for w in text.split()]
            lines.append("")
        (root / f"{split}.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return root


def _dir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


def _pre_config(corpus: Path, head: str = "classification", **sections) -> config_lib.Config:
    raw = {"task": "pretraining", "data": {"dir": str(corpus)},
           "encoder": {"emb_dim": 8, "hidden_size": 8, "dropout": 0.1},
           "pretraining": {"head": head, "text": "unsup.jsonl news.txt", "conll": "train.txt" if head == "tagging" else "",
                           "bptt": 7, "dev_every": 10, "shortlist": 8, "char_emb_dim": 4, "char_filters": 6, "case_dim": 3},
           "train": {"threads": 1, "epochs": 1, "max_tokens": 70, "valid_every": 5, "log_every": 2, "save_every": 0}}
    for name, values in sections.items():
        raw.setdefault(name, {}).update(values)
    return config_lib.from_dict(raw)


def _cls_config(corpus: Path, **encoder) -> config_lib.Config:
    return config_lib.from_dict({"task": "classification", "data": {"dir": str(corpus)},
                                 "encoder": {"emb_dim": 8, "hidden_size": 8} | encoder,
                                 "train": {"threads": 1, "epochs": 1, "max_tokens": 200, "log_every": 1}})


def _tag_config(corpus: Path, **encoder) -> config_lib.Config:
    return config_lib.from_dict({"task": "tagging", "data": {"dir": str(corpus)}, "encoder": {"emb_dim": 8, "hidden_size": 8} | encoder,
                                 "tagging": {"char_emb_dim": 4, "char_filters": 6, "case_dim": 3, "lm_vocab": 10},
                                 "train": {"threads": 1, "epochs": 1, "max_tokens": 100, "log_every": 1}})


@pytest.fixture(scope="module")
def pretrained(corpus, tmp_path_factory) -> dict[str, Path]:
    """A pretraining run per head."""
    root = tmp_path_factory.mktemp("pretrain-runs")
    runs = {}
    for head in ("classification", "tagging"):
        train(_pre_config(corpus, head), root / head)
        runs[head] = root / head
    return runs


def test_pretraining_logs_a_falling_dev_perplexity(pretrained):
    events = [json.loads(line) for line in (pretrained["classification"] / "metrics.jsonl").read_text().splitlines()]
    ppl = [e["dev_perplexity"] for e in events if "dev_perplexity" in e]
    assert len(ppl) >= 2 and all(math.isfinite(p) and p > 1 for p in ppl)
    assert ppl[-1] < ppl[0]
    assert all("dev_forward_perplexity" in e and "dev_backward_perplexity" in e for e in events if "dev_perplexity" in e)
    vocab = json.loads((pretrained["classification"] / pretraining.VOCAB_FILE).read_text())
    assert vocab["words"][:3] == ["<pad>", "<unk>", pretraining.BOUNDARY] and "film" in vocab["words"]
    assert "Paris" not in vocab["words"] and "paris" in vocab["words"]  # the classifier's tokens: lowercased


def test_lm_never_sees_the_word_it_predicts():
    """Changing token t changes neither the forward loss of predicting t from before it nor, in a one-layer Bi-LSTM,
    the forward states up to t - 1: the next-word objective cannot be solved by copying."""
    torch.manual_seed(0)
    from s2s.nn.encoder import Encoder

    enc, lm = Encoder(20, 8, 8), BidirectionalLM(8, 20, 8)
    enc.eval()
    tokens = torch.tensor([[3, 4, 5, 6, 7]])
    changed = tokens.clone()
    changed[0, 3] = 9
    lengths = torch.tensor([5])
    with torch.no_grad():
        a, b = enc(tokens, lengths).states, enc(changed, lengths).states
    assert torch.allclose(a[0, :3, :8], b[0, :3, :8])  # forward halves before the change
    assert torch.allclose(a[0, 4:, 8:], b[0, 4:, 8:])  # backward halves after it
    mask = torch.ones(1, 5, dtype=torch.bool)
    next_nll, prev_nll, count = lm(a, tokens, mask)
    assert count == 4 and next_nll > 0 and prev_nll > 0


def test_fine_tuning_loads_the_pretrained_encoder_by_word(pretrained, corpus, tmp_path):
    run = pretrained["classification"]
    config = config_lib.apply_overrides(_cls_config(corpus), [f"encoder.init={run}"])
    task = classification.Task(config, _dir(tmp_path / "ft"))
    pre = checkpoint.load(run / checkpoint.BEST)["model"]
    pre_vocab = pretraining.LMVocab.load(run / pretraining.VOCAB_FILE)
    model = task.model.state_dict()
    for name, value in pre.items():
        if name.startswith("encoder.rnn."):
            assert torch.equal(model[name], value), name
    head_words = task.vocab.words.items
    shared = [w for w in head_words if w in pre_vocab.words.ids and w != "<pad>"]
    assert len(shared) >= 10
    for w in shared:
        assert torch.equal(model["encoder.embed.weight"][task.vocab.words.ids[w]], pre["encoder.embed.weight"][pre_vocab.words.ids[w]]), w
    assert torch.count_nonzero(model["encoder.embed.weight"][0]) == 0  # padding stays zero
    # And the run trains from there.
    result = train(config, tmp_path / "ft2")
    assert result["best"] is not None


def test_tagger_fine_tuning_loads_chars_and_shapes(pretrained, corpus, tmp_path):
    run = pretrained["tagging"]
    config = config_lib.apply_overrides(_tag_config(corpus), [f"encoder.init={run}"])
    task = tagging.Task(config, _dir(tmp_path / "ft"))
    pre = checkpoint.load(run / checkpoint.BEST)["model"]
    pre_vocab = pretraining.LMVocab.load(run / pretraining.VOCAB_FILE)
    model = task.model.state_dict()
    for name in ("chars.conv.weight", "case_embed.weight", "encoder.rnn.weight_ih_l0", "encoder.rnn.weight_hh_l0_reverse"):
        assert torch.equal(model[name], pre[name]), name
    assert "paris" in pre_vocab.words.ids  # tagging words are normalised (lowercased) ...
    assert "P" in pre_vocab.chars.ids  # ... while the characters keep the case
    for c in ("P", "a", "S"):
        assert torch.equal(model["chars.embed.weight"][task.vocab.chars.ids[c]], pre["chars.embed.weight"][pre_vocab.chars.ids[c]])
    w = "paris"
    assert torch.equal(model["encoder.embed.weight"][task.vocab.words.ids[w]], pre["encoder.embed.weight"][pre_vocab.words.ids[w]])


@pytest.mark.parametrize("override, message", [
    ("encoder.hidden_size=16", "encoder.init {run}: encoder.hidden_size is 8 there, 16 here"),
    ("encoder.cell=gru", "encoder.init {run}: encoder.cell is 'lstm' there, 'gru' here"),
    ("encoder.emb_dim=6", "encoder.init {run}: encoder.emb_dim is 8 there, 6 here"),
    ("vocab.lowercase=false", "encoder.init {run}: vocab.lowercase is True there, False here"),
])
def test_an_incompatible_pretrained_run_names_the_key(pretrained, corpus, tmp_path, override, message):
    run = pretrained["classification"]
    config = config_lib.apply_overrides(_cls_config(corpus), [f"encoder.init={run}", override])
    with pytest.raises(S2SError) as e:
        classification.Task(config, _dir(tmp_path / "ft"))
    assert str(e.value).startswith(message.format(run=run))


def test_a_pretrained_run_of_another_head_is_refused(pretrained, corpus, tmp_path):
    run = pretrained["tagging"]
    config = config_lib.apply_overrides(_cls_config(corpus), [f"encoder.init={run}"])
    with pytest.raises(S2SError, match=r"pretraining.head is 'tagging' there, 'classification' here"):
        classification.Task(config, _dir(tmp_path / "ft"))
    with pytest.raises(S2SError, match=r"pretraining.char_filters is 6 there, 5 here \(tagging.char_filters\)"):
        tagging.Task(config_lib.apply_overrides(_tag_config(corpus), [f"encoder.init={run}", "tagging.char_filters=5"]), _dir(tmp_path / "t"))


def test_pretraining_resume_equals_uninterrupted(corpus, tmp_path):
    steps = lambda n: _pre_config(corpus, train={"max_steps": n, "epochs": 5})  # noqa: E731
    train(steps(6), tmp_path / "a")
    train(steps(3), tmp_path / "b")
    train(steps(6), tmp_path / "b", resume=True)
    a, b = checkpoint.load(tmp_path / "a" / checkpoint.LAST), checkpoint.load(tmp_path / "b" / checkpoint.LAST)
    assert a["progress"]["step"] == b["progress"]["step"] == 6
    for name, value in a["model"].items():
        assert torch.equal(value, b["model"][name]), name


def test_layer_depths_lrs_and_gradual_unfreezing(corpus, tmp_path):
    config = config_lib.apply_overrides(_cls_config(corpus), ["encoder.layer_lr_decay=2.0"])
    model = classification.Task(config, _dir(tmp_path / "c")).model
    depth = {name: pretraining.layer_depth(name, 1) for name, _ in model.named_parameters()}
    assert depth["encoder.embed.weight"] == 2 and depth["encoder.rnn.weight_hh_l0_reverse"] == 1 and depth["head.weight"] == 0
    optimizer = build_optimizer(model, 1e-3, 2.0, 1)
    assert [g["lr"] for g in optimizer.param_groups] == [1e-3, 5e-4, 2.5e-4]
    pretraining.depth_mask(model, 1, 0)
    assert {n for n, p in model.named_parameters() if p.requires_grad} == {n for n, d in depth.items() if d == 0}
    # Through the training loop: with unfreeze=1 the first epoch leaves the encoder as it was.
    config = config_lib.apply_overrides(_cls_config(corpus), ["encoder.unfreeze=1", "train.epochs=1"])
    _seed(config.train.seed)  # as the training loop does before building the model
    before = classification.Task(config, _dir(tmp_path / "probe")).model.state_dict()
    train(config, tmp_path / "u")
    after = checkpoint.load(tmp_path / "u" / checkpoint.LAST)["model"]
    assert torch.equal(after["encoder.embed.weight"], before["encoder.embed.weight"])
    assert torch.equal(after["encoder.rnn.weight_ih_l0"], before["encoder.rnn.weight_ih_l0"])
    assert not torch.equal(after["head.weight"], before["head.weight"])


def test_pretrain_command_refuses_another_task(corpus, tmp_path, capsys):
    path = tmp_path / "c.yaml"
    config_lib.save(_cls_config(corpus), path)
    assert main(["pretrain", str(path), "--out", str(tmp_path / "r")]) == 2
    assert "is a classification config; `s2s pretrain` takes task: pretraining" in capsys.readouterr().err


def test_a_deep_bidirectional_language_model_is_refused(corpus):
    with pytest.raises(S2SError, match="needs a one-layer encoder"):
        _pre_config(corpus, encoder={"num_layers": 2})


@pytest.mark.skipif(not (IMDB / "unsup.jsonl").is_file(), reason=f"IMDB not found at {IMDB}")
def test_sentiment_smoke_recipe_pretrained(tmp_path):
    result = run_recipe("sentiment.sh", "--smoke", "--pretrained", "--out", str(tmp_path / "run"), timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "encoder.init" in result.stderr and "accuracy" in result.stdout.splitlines()[-1]
    assert (tmp_path / "run-pretrain" / checkpoint.BEST).is_file()


@pytest.mark.skipif(not (CONLL / "train.txt").is_file(), reason=f"CoNLL-2003 not found at {CONLL}")
def test_ner_smoke_recipe_pretrained(tmp_path):
    result = run_recipe("ner.sh", "--smoke", "--pretrained", "--members", "1", "--out", str(tmp_path / "run"), timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert (tmp_path / "run" / "pretrain" / checkpoint.BEST).is_file()
    assert "encoder.init" in (tmp_path / "run" / "member1.log").read_text()


def test_windows_run_the_texts_end_to_end_with_a_boundary():
    texts = [["a", "b", "c"], ["d"], ["e", "f"]]
    out = list(pretraining.windows(iter(texts), 3))
    b = pretraining.BOUNDARY
    assert out == [["a", "b", "c"], [b, "d", b], ["e", "f", b]]
    assert list(pretraining.windows(iter([["a"]]), 5)) == [["a", b]]
