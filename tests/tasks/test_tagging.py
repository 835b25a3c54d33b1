"""The tagging head: tokeniser, model, Tagger API, span F1 against seqeval, `s2s tag` / `s2s evaluate --conll`, recipe."""
from __future__ import annotations

import json
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from s2s import checkpoint, config as config_lib
from s2s.cli import main
from s2s.conll import check_tags, read_conll, span_scores, spans, to_tags
from s2s.config import Config
from s2s.errors import S2SError
from s2s.models import build_model
from s2s.tagging import Tagger, Vocab, make_batch, runs_of, tokenize

ROOT = Path(__file__).resolve().parents[1]
CONLL = ROOT.parent / "shared" / "data" / "conll2003"

PEOPLE = ["Alan Shearer", "Peter", "Ann Lee"]
PLACES = ["Paris", "New York", "Italy"]
ORGS = ["EU", "Reuters"]


def _sentence(rng: random.Random) -> list[tuple[str, str]]:
    """One IOB1-tagged sentence from a template."""
    def entity(name: str, kind: str) -> list[tuple[str, str]]:
        return [(w, f"I-{kind}") for w in name.split()]

    choice = rng.randrange(3)
    if choice == 0:
        return entity(rng.choice(PEOPLE), "PER") + [("visited", "O")] + entity(rng.choice(PLACES), "LOC") + [(".", "O")]
    if choice == 1:
        return [("the", "O")] + entity(rng.choice(ORGS), "ORG") + [("said", "O"), ("on", "O"), ("Monday", "O")]
    return entity(rng.choice(PEOPLE), "PER") + [("left", "O"), (".", "O")]


def _write_conll(path: Path, n: int, seed: int) -> None:
    rng = random.Random(seed)
    lines = ["-DOCSTART- -X- -X- O", ""]
    for _ in range(n):
        lines += [f"{w} NN O {t}" for w, t in _sentence(rng)] + [""]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def _tiny_config(data_dir: Path, model: dict | None = None, **train) -> Config:
    raw = {
        "task": "tagging",
        "data": {"format": "conll", "dir": str(data_dir), "scheme": "iob1", "train": "train", "dev": "valid", "test": "test"},
        "model": {"emb_dim": 8, "hidden_size": 8, "char_emb_dim": 4, "char_filters": 4, "case_dim": 2, "dropout": 0.0, **(model or {})},
        "train": {"epochs": 60, "max_tokens": 60, "lr": 0.02, "log_every": 1000, "threads": 1, "early_stopping": 0, **train},
    }
    return config_lib.from_dict(raw)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    """A tiny tagging model trained on template sentences (a few seconds)."""
    from s2s.train import train

    root = tmp_path_factory.mktemp("ner")
    for split, n, seed in (("train", 40, 0), ("valid", 10, 1), ("test", 12, 2)):
        _write_conll(root / f"{split}.txt", n, seed)
    out = root / "run"
    progress = train(_tiny_config(root), out)
    assert progress["best"] == 100, progress
    return out


def test_tokenize_keeps_offsets():
    text = "Mr. Smith of the U.S. paid $3,000.50 to Hewlett-Packard's O'Neill (Paris)."
    tokens, offsets = tokenize(text)
    assert [text[s:e] for s, e in offsets] == tokens
    assert {"U.S.", "3,000.50", "Hewlett-Packard's", "O'Neill", "("} <= set(tokens)
    assert tokenize("") == ([], []) and tokenize("   ") == ([], [])


def _tiny_tagger(crf: bool, **model) -> tuple[torch.nn.Module, Vocab]:
    tags = ["O", "B-PER", "I-PER", "E-PER", "S-PER", "B-LOC", "I-LOC", "E-LOC", "S-LOC"]
    vocab = Vocab(["<pad>", "<unk>", "alan", "shearer", "visited", "paris", "."], ["<pad>", "<unk>", *"AlanShrvitdP."], tags)
    config = config_lib.from_dict({"task": "tagging", "model": {"emb_dim": 8, "hidden_size": 8, "char_emb_dim": 4, "char_filters": 4, "case_dim": 2, "dropout": 0.0, "crf": crf, **model}})
    torch.manual_seed(0)
    return build_model(config, len(vocab.words), len(tags), len(vocab.chars), tags), vocab


@pytest.mark.parametrize("crf", [True, False])
def test_decoding_yields_valid_spans(crf):
    model, vocab = _tiny_tagger(crf)
    with torch.no_grad():
        model.proj.bias.normal_(0, 5)  # make invalid per-token choices likely
    sentences = [["Alan", "Shearer", "visited", "Paris", "."], ["Paris"], ["unseen", "Ω", "words", "here"]]
    b = make_batch(vocab, sentences)
    paths, probs = model.decode(b)
    for path, p, sent in zip(paths, probs, sentences):
        assert len(path) == len(p) == len(sent)
        assert check_tags([vocab.tags[i] for i in path], "bioes") is None
        assert all(0.0 <= x <= 1.0 for x in p)


@pytest.mark.parametrize("crf", [True, False])
def test_tagger_overfits_one_batch(crf):
    model, vocab = _tiny_tagger(crf)
    sentences = [["Alan", "Shearer", "visited", "Paris", "."], ["Paris", "visited", "Alan"]]
    gold = [["B-PER", "E-PER", "O", "S-LOC", "O"], ["S-LOC", "O", "S-PER"]]
    b = make_batch(vocab, sentences, tags=[[vocab.tag_ids[t] for t in g] for g in gold])
    optimizer = torch.optim.Adam(model.parameters(), lr=0.05)
    first = None
    for _ in range(80):
        loss = model(b).loss
        first = first if first is not None else loss.item()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert loss.item() < first / 20
    model.eval()
    paths, _ = model.decode(b)
    assert [[vocab.tags[i] for i in p] for p in paths] == gold


def _seqeval(gold: list[list[str]], pred: list[list[str]]) -> dict:
    from seqeval.metrics import classification_report
    from seqeval.scheme import IOB2

    return classification_report(gold, pred, mode="strict", scheme=IOB2, output_dict=True, zero_division=0)


def _check_against_seqeval(gold_tags: list[list[str]], pred_tags: list[list[str]], ours: dict) -> None:
    ref = _seqeval(gold_tags, pred_tags)
    assert ours["micro"]["f1"] == pytest.approx(100 * ref["micro avg"]["f1-score"], abs=1e-6)
    assert ours["micro"]["precision"] == pytest.approx(100 * ref["micro avg"]["precision"], abs=1e-6)
    assert ours["micro"]["recall"] == pytest.approx(100 * ref["micro avg"]["recall"], abs=1e-6)
    for kind, v in ours["types"].items():
        if v["gold"]:
            assert v["f1"] == pytest.approx(100 * ref[kind]["f1-score"], abs=1e-6)


def test_span_f1_equals_seqeval_on_random_tags():
    rng = random.Random(0)
    kinds = ["PER", "LOC", "ORG"]

    def random_spans(n: int) -> list:
        out, i = [], 0
        while i < n:
            if rng.random() < 0.4:
                end = min(n, i + rng.randint(1, 3))
                out.append((i, end, rng.choice(kinds)))
                i = end
            else:
                i += 1
        return out

    gold, pred = [], []
    for _ in range(200):
        n = rng.randint(1, 9)
        g = random_spans(n)
        p = [s for s in g if rng.random() < 0.7] + [s for s in random_spans(n) if rng.random() < 0.3]
        p = sorted({s[0]: s for s in sorted(p)}.values())
        p = [s for j, s in enumerate(p) if j == 0 or s[0] >= p[j - 1][1]]  # no overlaps
        gold.append((g, n))
        pred.append(p)
    ours = span_scores([g for g, _ in gold], pred)
    _check_against_seqeval([to_tags(g, n, "iob2") for g, n in gold], [to_tags(p, n, "iob2") for p, (_, n) in zip(pred, gold)], ours)


def test_tagger_api_and_hard_inputs(run_dir):
    tagger = Tagger.load(run_dir)
    records = tagger.tag(["Alan Shearer visited Paris .", "", "   ", "Zygmunt visited Ωmega-城市 ."])
    assert [len(r.tokens) for r in records] == [5, 0, 0, 4]
    assert [(e.text, e.type, e.start, e.end, e.char_start, e.char_end) for e in records[0].entities] == [
        ("Alan Shearer", "PER", 0, 2, 0, 12), ("Paris", "LOC", 3, 4, 21, 26)]
    assert all(0 < e.score <= 1 for e in records[0].entities)
    long = tagger.tag([" ".join(["Peter left ."] * 700)])[0]  # 2,100 tokens
    assert len(long.tokens) == 2100 and len(long.entities) == 700
    assert tagger.tag([]) == []


def _run(capsys, *argv) -> tuple[int, str, str]:
    code = main(["-q", *map(str, argv)])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("fmt", ["conll", "json", "inline"])
def test_tag_cli_keeps_order_and_empty_lines(run_dir, tmp_path, capsys, fmt):
    lines = ["Peter left .", "", "the EU said on Monday", "Ann Lee visited New York ."]
    src = tmp_path / "in.txt"
    src.write_text("\n".join(lines) + "\n", encoding="utf-8")
    code, out, err = _run(capsys, "tag", "--model", run_dir, "--input", src, "--format", fmt)
    assert code == 0, err
    if fmt == "conll":
        blocks, block = [], []
        for line in out.splitlines():
            if line:
                block.append(line.split())
            else:
                blocks.append(block)
                block = []
        assert len(blocks) == len(lines) and blocks[1] == []
        assert [[t for t, _ in b] for b in blocks] == [tokenize(x)[0] for x in lines]
        assert [t for _, t in blocks[3]] == ["B-PER", "I-PER", "O", "B-LOC", "I-LOC", "O"]
    elif fmt == "json":
        objs = [json.loads(x) for x in out.splitlines()]
        assert [o["text"] for o in objs] == lines and objs[1] == {"text": "", "tokens": [], "entities": []}
        assert [(e["text"], e["type"]) for e in objs[2]["entities"]] == [("EU", "ORG")]
        e = objs[3]["entities"][1]
        assert lines[3][e["char_start"] : e["char_end"]] == "New York" and (e["start"], e["end"]) == (3, 5)
    else:
        assert out.splitlines() == ["[PER Peter] left .", "", "the [ORG EU] said on Monday", "[PER Ann Lee] visited [LOC New York] ."]
    # An empty file gives empty output.
    (tmp_path / "empty.txt").write_text("", encoding="utf-8")
    code, out, err = _run(capsys, "tag", "--model", run_dir, "--input", tmp_path / "empty.txt", "--format", fmt)
    assert code == 0 and out == ""


def test_tag_cli_reads_conll_input(run_dir, tmp_path, capsys):
    src = tmp_path / "in.conll"
    src.write_text("-DOCSTART-\n\nAnn\nLee\nleft\n\n\nParis\n", encoding="utf-8")
    code, out, err = _run(capsys, "tag", "--model", run_dir, "--input", src, "--input-format", "conll", "--format", "json", "--batch-size", "1")
    assert code == 0, err
    assert [json.loads(x)["text"] for x in out.splitlines()] == ["Ann Lee left", "Paris"]


def test_evaluate_conll_matches_seqeval(run_dir, capsys):
    test = run_dir.parent / "test.txt"
    code, out, err = _run(capsys, "evaluate", "--model", run_dir, "--conll", test, "--json")
    assert code == 0, err
    scores = json.loads(out)
    gold, pred = [], []
    for block in Path(scores["predictions"]).read_text(encoding="utf-8").strip().split("\n\n"):
        cols = [line.split() for line in block.splitlines()]
        gold.append([c[1] for c in cols])
        pred.append([c[2] for c in cols])
    assert gold == [to_tags(spans(s.tags, "iob1"), len(s.tokens), "iob2") for s in read_conll(test, "iob1")]
    _check_against_seqeval(gold, pred, scores)
    assert scores["micro"]["gold"] == sum(len(spans(g, "iob2")) for g in gold)
    code, out, err = _run(capsys, "evaluate", "--model", run_dir, "--conll", test)
    assert code == 0 and out.splitlines()[-1].startswith("F1 ") and "PER" in out


def test_task_mismatch_errors(run_dir, tmp_path, capsys):
    fake = tmp_path / "translation-run"
    fake.mkdir()
    checkpoint.save({"config": config_lib.to_dict(Config()), "model": {}, "task": "translation"}, fake / checkpoint.BEST)
    (tmp_path / "in.txt").write_text("Peter left .\n", encoding="utf-8")
    for argv, message in [
        (["tag", "--model", fake, "--input", tmp_path / "in.txt"], "trained for translation, not tagging"),
        (["evaluate", "--model", fake, "--conll", run_dir.parent / "test.txt"], "trained for translation, not tagging"),
        (["translate", "--model", run_dir, "--input", tmp_path / "in.txt"], "trained for tagging, not translation"),
        (["evaluate", "--model", run_dir, "--src", tmp_path / "in.txt", "--ref", tmp_path / "in.txt"], "trained for tagging, not translation"),
        (["tag", "--model", tmp_path / "nowhere"], "no such run directory"),
    ]:
        code, out, err = _run(capsys, *argv)
        assert code == 2 and out == ""
        assert err.count("\n") == 1 and err.startswith("error: ") and message in err and "Traceback" not in err


def test_resume_reloads_the_vocabulary(run_dir, tmp_path):
    from s2s.train import train

    config = _tiny_config(run_dir.parent, epochs=2)
    out = tmp_path / "run"
    train(config, out)
    saved = (out / "tagging_vocab.json").read_text()
    config = _tiny_config(run_dir.parent, epochs=3)
    progress = train(config, out, resume=True)
    assert progress["epoch"] == 3 and (out / "tagging_vocab.json").read_text() == saved


@pytest.mark.skipif(not (CONLL / "train.txt").is_file(), reason=f"CoNLL-2003 not found at {CONLL} (the shared data folder)")
def test_ner_smoke_recipe_end_to_end(tmp_path):
    out = tmp_path / "run"
    result = subprocess.run(
        ["bash", str(ROOT / "recipes" / "ner.sh"), "--smoke", "--data", str(CONLL), "--out", str(out)],
        capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    last = result.stdout.strip().splitlines()[-1]
    assert last.startswith("F1 ") and "micro" in last
    assert float(last.split()[1]) > 20
    assert "ensemble of 2" in result.stdout
    for name in ("vectors.vec", "test.conll", "member1.log", "member2.log"):
        assert (out / name).is_file(), name
    for member in ("member1", "member2"):  # two seeds, trained side by side
        for name in ("config.yaml", "best.pt", "last.pt", "tagging_vocab.json", "metrics.jsonl"):
            assert (out / member / name).is_file(), (member, name)
        events = [json.loads(line) for line in (out / member / "metrics.jsonl").read_text().splitlines()]
        assert any("dev_f1" in e for e in events) and any("train_loss" in e for e in events)


def test_ner_recipe_rejects_unknown_option():
    result = subprocess.run(["bash", str(ROOT / "recipes" / "ner.sh"), "--nope"], capture_output=True, text=True)
    assert result.returncode == 2 and "unknown option '--nope'" in result.stderr


def test_training_batches_replace_words_by_unk(run_dir, tmp_path):
    from s2s.tagging import TaggingTask

    unk = 1
    task = TaggingTask(_tiny_config(run_dir.parent, unk_replace=1.0), tmp_path, resume=False)
    assert (tmp_path / "tagging_vocab.json").is_file()
    rows = list(range(len(task.tokens)))
    words = task.batch(rows).words
    for i in rows:
        n = len(task.words[i])
        expected = [unk if w in task.singletons else w for w in task.words[i]]
        assert words[i, :n].tolist() == expected
    task = TaggingTask(_tiny_config(run_dir.parent, word_dropout=1.0), tmp_path, resume=True)
    b = task.batch(rows)
    assert (b.words[b.words != 0] == unk).all() and b.chars.any()


def test_language_model_objective_sees_only_its_side():
    """The next-word scores at a token come from the forward states, which have not seen the words after it;
    the previous-word scores from the backward states, which have not seen the words before it."""
    model, vocab = _tiny_tagger(crf=True, lm_vocab=5)
    model.eval()
    words = ["Alan", "Shearer", "visited", "Paris", "."]
    with torch.no_grad():
        base = model.lm.logits(model.encode(make_batch(vocab, [words])))
        later = model.lm.logits(model.encode(make_batch(vocab, [words[:2] + ["Italy", "now", "!"]])))
        earlier = model.lm.logits(model.encode(make_batch(vocab, [["Ann", "Lee", "left"] + words[3:]])))
    assert torch.allclose(later[0][0, :2], base[0][0, :2]) and not torch.allclose(later[0][0, 2:], base[0][0, 2:])
    assert torch.allclose(earlier[1][0, 3:], base[1][0, 3:]) and not torch.allclose(earlier[1][0, :3], base[1][0, :3])


def test_language_model_objective_ignores_padding():
    model, vocab = _tiny_tagger(crf=True, lm_vocab=5)
    model.eval()
    short, long = [["Paris", "."]], [["Alan", "Shearer", "visited", "Paris", "."]]
    targets = {2: [1, 2], 5: [3, 4, 0, 1, 2]}

    def lm_loss(sentences, rows):
        with torch.no_grad():
            b = make_batch(vocab, sentences)
            return model.lm(model.encode(b), torch.tensor(rows)).item()

    alone = lm_loss(short, [targets[2]]) + lm_loss(long, [targets[5]])
    together = lm_loss(short + long, [targets[2] + [-100] * 3, targets[5]])
    assert together == pytest.approx(alone, rel=1e-5)


def test_language_model_objective_targets_and_config(run_dir, tmp_path):
    from s2s.tagging import TaggingTask

    task = TaggingTask(_tiny_config(run_dir.parent, {"lm_vocab": 4}, unk_replace=1.0), tmp_path, resume=False)
    b = task.batch([0, 1])
    assert b.lm_words is not None and b.lm_words.shape == b.words.shape
    for r, run in enumerate(task.runs[:2]):
        original = [w for i in run for w in task.words[i]]
        # The words as written (before UNK replacement): the 3 most frequent get classes 1-3, the rest 0.
        assert b.lm_words[r, : len(original)].tolist() == [task.lm_class.get(w, 0) for w in original]
        assert (b.lm_words[r, len(original):] == -100).all()
    assert sorted(task.lm_class.values()) == [1, 2, 3]
    assert task.model(b).loss > task.model(b._replace(lm_words=None)).loss  # the side loss is added
    with pytest.raises(S2SError, match="model.lm_vocab needs a one-layer bidirectional encoder"):
        TaggingTask(_tiny_config(run_dir.parent, {"lm_vocab": 4, "num_layers": 2}), tmp_path / "two", resume=False)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_stops_training_like_ctrl_c(run_dir, tmp_path, sig):
    """`kill` (TERM), or INT to a background job (started with INT ignored, as `cmd &` does), stops
    `s2s train` as Ctrl-C does: one error line saying how to resume, exit 2, last.pt saved where it stopped."""
    config = tmp_path / "ner.yaml"
    config.write_text(yaml.safe_dump(config_lib.to_dict(_tiny_config(run_dir.parent, epochs=100000, scheduler="none"))), encoding="utf-8")
    out = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "s2s", "-q", "train", str(config), "--out", str(out)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
    try:
        deadline = time.time() + 120
        while not (out / "last.pt").exists():  # written at the first validation: training is under way
            assert proc.poll() is None and time.time() < deadline, proc.stderr.read() if proc.poll() is not None else "timed out"
            time.sleep(0.1)
        first = checkpoint.load(out / "last.pt")["progress"]["step"]
        time.sleep(1.0)
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()  # a run the signal did not stop would otherwise train on after the test
    assert proc.returncode == 2, err
    errors = [line for line in err.splitlines() if line.startswith("error:")]  # the rest is the progress bar
    assert "Traceback" not in err and len(errors) == 1, err
    assert errors[0].startswith("error: interrupted at step") and "--resume" in errors[0], err
    # last.pt holds the step it stopped at (not only the last validation's). Not "> first": on a busy machine
    # the signal may come before any step after that validation.
    stopped = int(errors[0].split("interrupted at step ")[1].split(";")[0])
    assert checkpoint.load(out / "last.pt")["progress"]["step"] == stopped >= first, err


def test_conll_reader_numbers_documents(tmp_path):
    path = tmp_path / "docs.txt"
    docstart = "-DOCSTART- -X- O\n\n"
    path.write_text(docstart + "A NN I-PER\n\nB NN O\n\n" + docstart + docstart + "C NN O\n\nD NN O\n", encoding="utf-8")
    assert [s.doc for s in read_conll(path)] == [0, 0, 1, 1]
    path.write_text("A NN I-PER\n\n" + docstart + "B NN O\n", encoding="utf-8")
    assert [s.doc for s in read_conll(path)] == [0, 1]


def test_runs_of_groups_consecutive_sentences_of_a_document():
    assert runs_of([3, 4, 0, 5, 2], [0, 0, 0, 0, 1], 10) == [[0, 1], [3], [4]]  # empty skipped, new document, budget
    assert runs_of([12, 3, 3], [0, 0, 0], 10) == [[0], [1, 2]]  # a sentence over the budget is a run of its own
    assert runs_of([3, 4], [0, 0], 0) == [[0], [1]]


def test_sentences_read_in_one_run_take_their_states_from_it():
    model, vocab = _tiny_tagger(crf=True)
    model.eval()
    a, b, c = ["Alan", "Shearer", "visited", "Paris", "."], ["Paris", "visited", "Alan"], ["Peter"]
    with torch.no_grad():
        whole, _ = model.emissions(make_batch(vocab, [a + b]))
        alone, _ = model.emissions(make_batch(vocab, [c]))
        runs, mask = model.emissions(make_batch(vocab, [a, b, c], [2, 1]))
    assert mask.tolist() == [[True] * 5, [True] * 3 + [False] * 2, [True] + [False] * 4]
    assert torch.allclose(runs[0, :5], whole[0, :5], atol=1e-6)
    assert torch.allclose(runs[1, :3], whole[0, 5:], atol=1e-6)
    assert torch.allclose(runs[2, :1], alone[0], atol=1e-6)
    assert not torch.allclose(runs[1, :3], model.emissions(make_batch(vocab, [b]))[0][0], atol=1e-4)  # the context matters


def test_same_word_pooling_averages_the_other_occurrences():
    from s2s.models import SequenceTagger

    states = torch.randn(2, 4, 3)
    keys = torch.tensor([[1, 2, 1, 1], [3, 4, 0, 0]])
    pooled = SequenceTagger.pool_same_words(states, keys)
    assert torch.allclose(pooled[0, 0], (states[0, 2] + states[0, 3]) / 2)
    assert torch.allclose(pooled[0, 2], (states[0, 0] + states[0, 3]) / 2)
    assert (pooled[0, 1] == 0).all() and (pooled[1] == 0).all()  # no other occurrence, other runs, padding
    _, vocab = _tiny_tagger(crf=True)
    b = make_batch(vocab, [["Paris", "visited", "paris"], ["Paris"]], [1, 1])
    assert b.word_keys.tolist() == [[1, 2, 1], [1, 0, 0]]


def test_ensemble_averages_its_members(run_dir, tmp_path, capsys):
    from s2s.models import TaggerEnsemble
    from s2s.train import train

    other = tmp_path / "other"
    assert train(_tiny_config(run_dir.parent, seed=8), other)["best"] == 100
    one, two = Tagger.load(run_dir), Tagger.load(other)
    both = Tagger.load([run_dir, other])
    assert isinstance(both.model, TaggerEnsemble)
    b = make_batch(one.vocab, [["Alan", "Shearer", "visited", "Paris", "."], ["Peter"]])
    with torch.no_grad():
        mean = (one.model.emissions(b)[0] + two.model.emissions(b)[0]) / 2
        assert torch.allclose(both.model.emissions(b)[0], mean, atol=1e-6)
        assert torch.allclose(both.model.crf.trans, (one.model.crf.trans + two.model.crf.trans) / 2)
    code, out, _ = _run(capsys, "evaluate", "--model", run_dir, other, "--conll", run_dir.parent / "valid.txt", "--json")
    assert code == 0 and json.loads(out)["micro"]["f1"] == 100
    assert json.loads(out)["predictions"].endswith("valid-ensemble.conll")


def test_ensemble_members_must_match(run_dir, tmp_path, capsys):
    from s2s.train import train

    other = tmp_path / "context"
    train(_tiny_config(run_dir.parent, model={"context_tokens": 20}, epochs=1), other)
    code, out, err = _run(capsys, "tag", "--model", run_dir, other, "--input", run_dir.parent / "test.txt")
    assert code == 2 and out == "" and err.count("\n") == 1 and "cannot join an ensemble" in err and str(other) in err
    code, _, err = _run(capsys, "evaluate", "--model", run_dir, run_dir, "--src", "a.txt", "--ref", "b.txt")
    assert code == 2 and "only for tagging models" in err


def test_tagger_with_document_context(tmp_path):
    from s2s.train import train

    for split, n, seed in (("train", 40, 0), ("valid", 10, 1), ("test", 12, 2)):
        _write_conll(tmp_path / f"{split}.txt", n, seed)
    progress = train(_tiny_config(tmp_path, model={"context_tokens": 20, "same_word_pooling": True}, max_tokens=20), tmp_path / "run")
    assert progress["best"] == 100, progress
    tagger = Tagger.load(tmp_path / "run")
    assert tagger.context_tokens == 20
    texts = ["Alan Shearer visited Paris .", "the EU said on Monday", "", "Peter left .", " ".join(["Peter left ."] * 700)]
    records = tagger.tag(texts, batch_size=64)
    assert [[(e.text, e.type) for e in r.entities] for r in records[:4]] == [
        [("Alan Shearer", "PER"), ("Paris", "LOC")], [("EU", "ORG")], [], [("Peter", "PER")]]
    assert len(records[4].entities) == 700
    for one, many in zip(tagger.tag(texts, batch_size=1), records):  # batching never cuts a run apart
        assert [(e.start, e.end, e.type) for e in one.entities] == [(e.start, e.end, e.type) for e in many.entities]
        assert all(abs(x.score - y.score) < 1e-3 for x, y in zip(one.entities, many.entities))
    scores, _ = tagger.evaluate(read_conll(tmp_path / "test.txt"), "iob1")
    assert scores["micro"]["f1"] == 100
