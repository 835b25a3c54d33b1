"""The tagging task: model, Task (batches, word vectors, the LM side objective), Tagger API, ensembles,
`s2s tag` / `s2s evaluate --conll` against seqeval, training on CoNLL-2003 with tag slips, the recipe."""
from __future__ import annotations

import dataclasses
import json
import logging
import random
import shutil
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from conftest import check_against_seqeval, run_recipe, template_sentence

from s2s import checkpoint
from s2s import config as config_lib
from s2s.cli import main
from s2s.config import Config, EncoderConfig
from s2s.data.conll import read_conll
from s2s.data.schemes import check_tags, convert, spans, to_tags
from s2s.data.tokenize import tokenize
from s2s.errors import S2SError
from s2s.tasks.tagging import SequenceTagger, Tagger, TaggerEnsemble, TagVocab, Task, build_model, make_batch, runs_of

ROOT = Path(__file__).resolve().parents[2]
CONLL = ROOT.parent / "shared" / "data" / "conll2003"
ENCODER_KEYS = {f.name for f in dataclasses.fields(EncoderConfig)}



def _write_conll(path: Path, n: int, seed: int) -> None:
    rng = random.Random(seed)
    lines = ["-DOCSTART- -X- -X- O", ""]
    for _ in range(n):
        lines += [f"{w} NN O {t}" for w, t in template_sentence(rng)] + [""]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def _model_sections(model: dict) -> dict:
    """The tiny model's encoder and tagging sections; `model` overrides keys of either (as 0.1's model section did)."""
    merged = {"emb_dim": 8, "hidden_size": 8, "char_emb_dim": 4, "char_filters": 4, "case_dim": 2, "dropout": 0.0, **model}
    return {"encoder": {k: v for k, v in merged.items() if k in ENCODER_KEYS},
            "tagging": {k: v for k, v in merged.items() if k not in ENCODER_KEYS}}


def _tiny_config(data_dir: Path, model: dict | None = None, **train) -> Config:
    raw = {
        "task": "tagging",
        "data": {"format": "conll", "dir": str(data_dir), "scheme": "iob1", "train": "train", "dev": "valid", "test": "test"},
        **_model_sections(model or {}),
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


def _tiny_tagger(crf: bool, **model) -> tuple[torch.nn.Module, TagVocab]:
    tags = ["O", "B-PER", "I-PER", "E-PER", "S-PER", "B-LOC", "I-LOC", "E-LOC", "S-LOC"]
    vocab = TagVocab(["<pad>", "<unk>", "alan", "shearer", "visited", "paris", "."], ["<pad>", "<unk>", *"AlanShrvitdP."], tags)
    config = config_lib.from_dict({"task": "tagging", **_model_sections({"crf": crf, **model})})
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
    b = make_batch(vocab, sentences, tags=[[vocab.tags.ids[t] for t in g] for g in gold])
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
    check_against_seqeval(gold, pred, scores)
    assert scores["micro"]["gold"] == sum(len(spans(g, "iob2")) for g in gold)
    code, out, err = _run(capsys, "evaluate", "--model", run_dir, "--conll", test)
    assert code == 0 and out.splitlines()[-1].startswith("F1 ") and "PER" in out


def test_task_mismatch_errors(run_dir, tmp_path, capsys):
    fake = tmp_path / "translation-run"
    fake.mkdir()
    checkpoint.save({"config": config_lib.task_dict(Config()), "model": {}, "task": "translation"}, fake / checkpoint.BEST)
    (tmp_path / "in.txt").write_text("Peter left .\n", encoding="utf-8")
    for argv, message in [
        (["tag", "--model", fake, "--input", tmp_path / "in.txt"], "trained for translation, not tagging"),
        # `s2s evaluate` follows the run's task: a tagging flag on a translation run, and the other way round, is refused.
        (["evaluate", "--model", fake, "--conll", run_dir.parent / "test.txt"], f"--conll does not apply to {fake}, a translation run"),
        (["translate", "--model", run_dir, "--input", tmp_path / "in.txt"], "trained for tagging, not translation"),
        (["evaluate", "--model", run_dir, "--src", tmp_path / "in.txt", "--ref", tmp_path / "in.txt"], f"--src does not apply to {run_dir}, a tagging run"),
        (["evaluate", "--model", run_dir, fake, "--conll", run_dir.parent / "test.txt"], f"{fake} is a translation run, {run_dir} a tagging run"),
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
    result = run_recipe("ner.sh", "--smoke", "--data", str(CONLL), "--out", str(out), timeout=300)
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
    result = run_recipe("ner.sh", "--nope")
    assert result.returncode == 2 and "unknown option '--nope'" in result.stderr


def test_training_batches_replace_words_by_unk(run_dir, tmp_path):
    unk = 1
    task = Task(_tiny_config(run_dir.parent, unk_replace=1.0), tmp_path, resume=False)
    assert (tmp_path / "tagging_vocab.json").is_file()
    rows = list(range(len(task.store)))
    words, stored = task.batch(rows).words, task.store.get("words", rows)
    for i in rows:
        n = len(stored[i])
        expected = [unk if w in task.singletons else w for w in stored[i]]
        assert words[i, :n].tolist() == expected
    # word_dropout 1 (every word UNK) is refused in a config (train.word_dropout must be below 1); set directly here
    config = _tiny_config(run_dir.parent)
    task = Task(replace(config, train=replace(config.train, word_dropout=1.0)), tmp_path, resume=True)
    b = task.batch(rows)
    assert (b.words[b.words != 0] == unk).all() and b.chars.any()


def test_language_model_objective_targets_and_config(run_dir, tmp_path):
    task = Task(_tiny_config(run_dir.parent, {"lm_vocab": 4}, unk_replace=1.0), tmp_path, resume=False)
    b = task.batch([0, 1])
    assert b.lm_words is not None and b.lm_words.shape == b.words.shape
    for r, run in enumerate(task.runs[:2]):
        original = [w for s in task.store.get("words", run) for w in s]
        # The words as written (before UNK replacement): the 3 most frequent get classes 1-3, the rest 0.
        assert b.lm_words[r, : len(original)].tolist() == [task.lm_class.get(w, 0) for w in original]
        assert (b.lm_words[r, len(original):] == -100).all()
    assert sorted(task.lm_class.values()) == [1, 2, 3]
    assert task.model(b).loss > task.model(b._replace(lm_words=None)).loss  # the side loss is added
    with pytest.raises(S2SError, match="'tagging.lm_vocab' needs a one-layer bidirectional encoder"):
        Task(_tiny_config(run_dir.parent, {"lm_vocab": 4, "num_layers": 2}), tmp_path / "two", resume=False)


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
    name = Path(json.loads(out)["predictions"]).name  # the file's name, a hash of its path, the ensemble
    assert name.startswith("valid.txt-") and name.endswith("-ensemble.conll")


def test_ensemble_members_must_match(run_dir, tmp_path, capsys):
    from s2s.train import train

    other = tmp_path / "context"
    train(_tiny_config(run_dir.parent, model={"context_tokens": 20}, epochs=1), other)
    code, out, err = _run(capsys, "tag", "--model", run_dir, other, "--input", run_dir.parent / "test.txt")
    assert code == 2 and out == "" and err.count("\n") == 1 and "cannot join an ensemble" in err and str(other) in err
    fake = tmp_path / "translation-run"  # an ensemble of translation runs: only tagging runs join one
    fake.mkdir()
    checkpoint.save({"config": config_lib.task_dict(Config()), "model": {}, "task": "translation"}, fake / checkpoint.BEST)
    code, _, err = _run(capsys, "evaluate", "--model", fake, fake, "--src", "a.txt", "--ref", "b.txt")
    assert code == 2 and "only for tagging runs" in err


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


def test_tagging_run_starts_from_the_vectors(tmp_path):
    for split, n, seed in (("train", 20, 0), ("valid", 5, 1), ("test", 5, 2)):
        _write_conll(tmp_path / f"{split}.txt", n, seed)
    # "rome" is not in the training data: it joins the vocabulary with its vector.
    vec = tmp_path / "v.vec"
    vec.write_text("2 8\nparis " + " ".join(["0.5"] * 8) + "\nRome " + " ".join(["-0.25"] * 8) + "\n", encoding="utf-8")
    config = _tiny_config(tmp_path)
    config = replace(config, vocab=replace(config.vocab, word_vectors=str(vec)))
    (tmp_path / "run").mkdir()
    task = Task(config, tmp_path / "run", resume=False)
    ids = task.vocab.words.ids
    emb = task.model.encoder.embed.weight
    assert "rome" in ids and torch.equal(emb[ids["rome"]], torch.full((8,), -0.25))
    assert torch.equal(emb[ids["paris"]], torch.full((8,), 0.5))
    # The run's own vocabulary file keeps the words: tagging needs no vectors file afterwards.
    assert "rome" in json.loads((tmp_path / "run" / "tagging_vocab.json").read_text())["words"]

    # Resuming needs the run's own files only: the vectors may have moved.
    from s2s.train import train

    train(replace(config, train=replace(config.train, epochs=1)), tmp_path / "run3")
    moved = vec.rename(tmp_path / "moved.vec")
    resumed = replace(config, vocab=replace(config.vocab, word_vectors=str(moved)), train=replace(config.train, epochs=2))
    assert train(resumed, tmp_path / "run3", resume=True)["epoch"] == 2
    vec = moved.rename(vec)

    wrong = replace(config, encoder=replace(config.encoder, emb_dim=4))
    with pytest.raises(S2SError, match="8 dimensions but encoder.emb_dim is 4"):
        Task(wrong, tmp_path / "run2", resume=False)


def _conll2003_iob2(folder: Path, sizes: dict[str, int], slips: dict[str, int]) -> None:
    """{split}.txt for each split of `sizes`: consecutive slices of CoNLL-2003's train.txt in IOB2, two
    TAB-separated columns, as files from other tools come: a BOM at the start, a line holding only U+FEFF
    in place of a blank line (files pasted together), and `slips[split]` tag slips (a B-X after O written I-X)."""
    items: list = []  # "doc" for each -DOCSTART- line, else a sentence [(token, tag), ...]
    sentence: list[tuple[str, str]] = []
    wanted = sum(sizes.values())
    with open(CONLL / "train.txt", encoding="utf-8") as f:
        for line in f:
            cols = line.split()
            if cols and cols[0] != "-DOCSTART-":
                sentence.append((cols[0], cols[-1]))
                continue
            if sentence:
                items.append(sentence)
                sentence = []
                if sum(item != "doc" for item in items) == wanted:
                    break
            if cols:
                items.append("doc")
    for split, n in sizes.items():
        lines, made = ["\ufeff-DOCSTART-\tO", ""], 0
        while n:
            item = items.pop(0)
            if item == "doc":
                lines += ["-DOCSTART-\tO", ""]
                continue
            tokens, tags = [t for t, _ in item], convert([t for _, t in item], "iob1", "iob2")
            starts = [i for i in range(1, len(tags)) if tags[i].startswith("B-") and tags[i - 1] == "O"]
            if starts and made < slips.get(split, 0):
                tags[starts[0]] = "I-" + tags[starts[0]][2:]
                made += 1
            lines += [f"{t}\t{g}" for t, g in zip(tokens, tags)] + [""]
            n -= 1
        assert made == slips.get(split, 0)
        lines[lines.index("", len(lines) // 2)] = "\ufeff"  # a blank line between two sentences
        (folder / f"{split}.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")


@pytest.mark.skipif(not (CONLL / "train.txt").is_file(), reason=f"CoNLL-2003 not found at {CONLL} (the shared data folder)")
def test_ner_smoke_config_trains_on_iob2_files_with_slips(tmp_path, capsys, caplog):
    """configs/ner-smoke.yaml, changed only in where the files are and their scheme, trains on IOB2 files with
    tag slips, a BOM and a U+FEFF line: the slips are read as conlleval reads them (one warning per file)."""
    data = tmp_path / "conll2003-iob2"
    data.mkdir()
    _conll2003_iob2(data, {"train": 300, "valid": 100, "test": 50}, {"train": 3, "valid": 2})
    with caplog.at_level(logging.WARNING, logger="s2s.data.conll"):
        code = main(["-q", "train", str(ROOT / "configs" / "ner-smoke.yaml"), "--out", str(tmp_path / "run"),
                     "--set", f"data.dir={data}", "--set", "data.scheme=iob2"])
    out, err = capsys.readouterr()
    assert code == 0, err
    summary = json.loads(out.strip().splitlines()[-1])
    assert summary["best"] > 0, summary
    warnings = [r.getMessage() for r in caplog.records if r.name == "s2s.data.conll"]
    assert len(warnings) == 2, warnings
    assert sum(f"{data / 'train.txt'}: 3 tag slips" in w for w in warnings) == 1, warnings  # the train file is read twice, warned once
    assert sum(f"{data / 'valid.txt'}: 2 tag slips" in w for w in warnings) == 1, warnings


# --- issue 22: lists only, BOMs, gold files the model cannot score, very long lines, CoNLL in and out -----------


def test_tagger_refuses_a_bare_string(run_dir):
    """A string is a sequence of characters: each would have been tagged as a sentence of its own."""
    tagger = Tagger.load(run_dir, device="cpu")
    gold = read_conll(run_dir.parent / "valid.txt", "iob1")
    for call in (lambda: tagger.tag("Peter left ."), lambda: tagger.tag_tokens("Peter left ."),
                 lambda: tagger.tag_conll("Peter left ."), lambda: tagger.evaluate("Peter left .", "iob1")):
        with pytest.raises(TypeError, match="takes a list of .*, got a string: pass \\[sentence\\] for one"):
            call()
    with pytest.raises(TypeError, match="each a list of tokens"):
        tagger.tag_tokens(["Peter left ."])  # sentences must be token lists, not raw text
    with pytest.raises(TypeError, match="CoNLL sentences"):
        tagger.evaluate([["Peter", "left"]], "iob1")
    assert tagger.tag(("Peter left .",))[0].entities == tagger.tag(["Peter left ."])[0].entities  # a tuple is fine
    assert tagger.evaluate(tuple(gold), "iob1")[0] == tagger.evaluate(gold, "iob1")[0]


def test_tag_cli_drops_byte_order_marks(run_dir, tmp_path, capsys, monkeypatch):
    """A BOM (an editor's, or files pasted together) is no invisible first token: indices do not shift."""
    import io

    plain = "Peter left .\nAnn Lee visited New York .\n"
    outputs = []
    for name, text in (("plain.txt", plain), ("bom.txt", "\ufeffPeter left .\n\ufeffAnn Lee visited New York .\n")):
        (tmp_path / name).write_text(text, encoding="utf-8")
        code, out, err = _run(capsys, "tag", "--model", run_dir, "--input", tmp_path / name, "--format", "json")
        assert code == 0, err
        outputs.append(out)
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(("\ufeff" + plain).encode())))
    code, out, err = _run(capsys, "tag", "--model", run_dir, "--format", "json")
    assert code == 0, err
    outputs.append(out)
    assert outputs[1] == outputs[0] == outputs[2]
    first = json.loads(outputs[0].splitlines()[0])
    assert first["tokens"] == ["Peter", "left", "."] and (first["entities"][0]["start"], first["entities"][0]["char_start"]) == (0, 0)


def test_tag_with_stdin_closed_is_one_line(run_dir, capsys, monkeypatch):
    monkeypatch.setattr(sys, "stdin", None)  # what Python makes of `<&-`
    code, out, err = _run(capsys, "tag", "--model", run_dir)
    assert code == 2 and out == "" and err == "error: cannot read stdin (it is closed); give --input FILE\n"


def test_evaluate_a_gold_type_the_model_does_not_know_is_one_line(run_dir, tmp_path, capsys):
    """It used to be scored as a type of its own, every entity of it missed: F1 lower for no reason shown."""
    gold = tmp_path / "gold.txt"
    text = (run_dir.parent / "test.txt").read_text(encoding="utf-8")
    gold.write_text(text.replace("I-LOC", "I-LOCATION"), encoding="utf-8")
    line = next(n for n, raw in enumerate(gold.read_text(encoding="utf-8").splitlines(), 1) if raw.endswith("I-LOCATION"))
    code, out, err = _run(capsys, "evaluate", "--model", run_dir, "--conll", gold, "--hyp-prefix", tmp_path / "h")
    assert code == 2 and out == "" and err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith(f"error: {gold}:{line}: entity type 'LOCATION' (tag I-LOCATION) is not one the model knows (LOC, ORG, PER)")
    assert "would count as missed" in err


@pytest.mark.parametrize("content", ["", "\n\n", "-DOCSTART- -X- -X- O\n\n"])
def test_evaluate_a_gold_file_without_sentences_is_one_line(run_dir, tmp_path, capsys, content):
    """It used to give F1 0.00 and exit 0."""
    gold = tmp_path / "gold.txt"
    gold.write_text(content, encoding="utf-8")
    code, out, err = _run(capsys, "evaluate", "--model", run_dir, "--conll", gold, "--hyp-prefix", tmp_path / "h")
    assert code == 2 and out == "" and err == f"error: {gold}: no sentences to score\n"


def test_training_warns_of_dev_types_it_has_not_seen_and_refuses_an_empty_dev_set(run_dir, tmp_path, caplog):
    data = tmp_path / "data"
    data.mkdir()
    shutil.copy(run_dir.parent / "train.txt", data / "train.txt")
    (data / "valid.txt").write_text("Rome I-CITY\nis O\n\nPeter I-PER\n", encoding="utf-8")
    (tmp_path / "run").mkdir()
    with caplog.at_level(logging.WARNING, logger="s2s"):
        Task(_tiny_config(data), tmp_path / "run")  # dev F1 can still be computed: a warning, not an error
    assert [r.getMessage() for r in caplog.records if "types the training data does not have" in r.getMessage()] == [
        f"{data / 'valid.txt'}: 1 entity of types the training data does not have (first at line 1: 'CITY', tag I-CITY); "
        "dev F1 counts them as missed"]
    (data / "valid.txt").write_text("-DOCSTART- -X- -X- O\n", encoding="utf-8")
    with pytest.raises(S2SError, match="valid.txt: no dev sentences to validate on"):
        Task(_tiny_config(data), tmp_path / "run2")


def test_a_very_long_line_is_tagged_in_pieces_of_bounded_size(run_dir, tmp_path, capsys, caplog, monkeypatch):
    """A 1 MB line (some 200,000 tokens) used to be one T x T matrix (same-word pooling): 28 GB. Now every
    batch the model sees is at most MAX_TOKENS wide and BATCH_TOKENS in all, and the pieces overlap so
    that no entity is lost at their edges."""
    import s2s.tasks.tagging as tagging

    shapes = []
    original = tagging.make_batch

    def recording(*args, **kwargs):
        batch = original(*args, **kwargs)
        shapes.append(tuple(batch.words.shape))
        return batch

    monkeypatch.setattr(tagging, "make_batch", recording)
    src = tmp_path / "in.txt"
    long_line = " ".join(["Peter left ."] * 2000)  # 6,000 tokens; kept small for speed, the bound is the same for 1 MB
    src.write_text(f"Ann Lee left .\n{long_line}\nthe EU said on Monday\n", encoding="utf-8")
    with caplog.at_level(logging.WARNING, logger="s2s"):
        code, out, err = _run(capsys, "tag", "--model", run_dir, "--input", src, "--format", "json")
    assert code == 0, err
    records = [json.loads(line) for line in out.splitlines()]
    assert len(records) == 3 and len(records[1]["tokens"]) == 6000
    assert [e["start"] for e in records[1]["entities"]] == list(range(0, 6000, 3))  # every Peter, once
    assert all(e["text"] == "Peter" and e["type"] == "PER" for e in records[1]["entities"])
    assert [e["text"] for e in records[2]["entities"]] == ["EU"]
    assert max(width for _, width in shapes) <= tagging.MAX_TOKENS
    assert max(rows * width for rows, width in shapes) <= tagging.BATCH_TOKENS
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "first: line 2, 6000 tokens" in warnings[0]


def test_tag_conll_to_conll_keeps_docstart_lines_and_middle_columns(run_dir, tmp_path, capsys):
    """Output line n is input line n: -DOCSTART- and blank lines where they were, then token [POS [chunk]]
    and the predicted tag last (a 4th input column, the gold tag, replaced): CoNLL that reads back."""
    test = run_dir.parent / "test.txt"  # 4 columns: token POS chunk gold, -DOCSTART- first
    lines = test.read_text(encoding="utf-8").splitlines()
    code, out, err = _run(capsys, "tag", "--model", run_dir, "--input", test, "--input-format", "conll", "--format", "conll")
    assert code == 0, err
    got = out.splitlines()
    assert len(got) == len(lines) and got[0] == lines[0] == "-DOCSTART- -X- -X- O"
    for raw, line in zip(lines, got):
        assert (line == "") == (raw.strip() == "")
        assert line.split()[:3] == raw.split()[:3]  # token, POS and chunk kept
    predicted = Tagger.load(run_dir).tag_conll(read_conll(test, "iob1"))
    (tmp_path / "out.txt").write_text(out, encoding="utf-8")
    back = read_conll(tmp_path / "out.txt", "iob2")
    assert [s.tags for s in back] == [r.tags("iob2") for r in predicted]
    assert [s.tokens for s in back] == [s.tokens for s in read_conll(test, "iob1")]
    # Two columns in, a document break mid-file and no final blank line: the same rules.
    src = tmp_path / "two.conll"
    src.write_text("Peter NNP\nleft VBD\n\n-DOCSTART-\nthe DT\nEU NNP", encoding="utf-8")
    code, out, err = _run(capsys, "tag", "--model", run_dir, "--input", src, "--input-format", "conll", "--format", "conll")
    assert code == 0, err
    assert out.split("\n") == ["Peter NNP B-PER", "left VBD O", "", "-DOCSTART-", "the DT O", "EU NNP B-ORG", "", ""]


def test_token_store_holds_the_training_sentences_and_their_word_counts(run_dir, tmp_path):
    """Batches read the sentences back from the store exactly as read_conll gives them; the singletons and the
    side objective's frequent words are those of the training words' counts."""
    from collections import Counter

    from s2s.data.conll import read_conll
    from s2s.data.schemes import convert

    config = _tiny_config(run_dir.parent, {"lm_vocab": 4})
    task = Task(config, tmp_path, resume=False)
    data = config.data
    sentences = [s for s in read_conll(Path(data.dir) / f"{data.train}.txt", data.scheme)][: data.max_train or None]
    sentences = [s for s in sentences if len(s.tokens) <= data.max_len]
    rows = range(len(task.store))
    assert len(task.store) == len(sentences)
    assert [bytes(t).decode().split(" ") for t in task.store.get("text", rows)] == [s.tokens for s in sentences]
    words = [task.vocab.encode_words(s.tokens) for s in sentences]
    assert task.store.get("words", rows) == words
    assert task.store.get("tags", rows) == [task.vocab.tags.encode(convert(s.tags, data.scheme, config.tagging.tag_scheme)) for s in sentences]
    assert task.store.arrays["docs"].tolist() == [s.doc for s in sentences]
    counts = Counter(w for ws in words for w in ws)
    assert task.singletons == {w for w, n in counts.items() if n == 1}
    assert list(task.lm_class) == sorted(counts, key=lambda w: (-counts[w], w))[:3]


def test_n_best_readings_are_sorted_and_the_first_is_the_tagging(run_dir):
    tagger = Tagger.load(run_dir)
    texts = ["Alan Shearer visited Paris .", "", "Zygmunt visited Ωmega-城市 ."]
    plain = tagger.tag(texts)
    records = tagger.tag(texts, n_best=4, marginals=True)
    assert [r.entities for r in records] == [r.entities for r in plain]  # asking for more changes nothing
    assert plain[0].n_best is None and plain[0].marginals is None
    for r in records:
        assert r.n_best is not None and len(r.n_best) == (4 if r.tokens else 1)
        probs = [x.prob for x in r.n_best]
        assert probs == sorted(probs, reverse=True) and sum(probs) <= 1 + 1e-4
        assert r.n_best[0].tags == r.tags("iob2") and r.n_best[0].entities == r.entities
        for reading in r.n_best:
            assert check_tags(reading.tags, "iob2") is None and len(reading.tags) == len(r.tokens)
        assert len({tuple(x.tags) for x in r.n_best}) == len(r.n_best)  # no reading twice
        assert len(r.marginals) == len(r.tokens)
        for dist in r.marginals:
            assert set(dist) == set(tagger.vocab.tags) and abs(sum(dist.values()) - 1) < 1e-3
    # The best reading's probability cannot exceed any of its tags' marginals.
    best = records[0].n_best[0]
    tags = tagger.vocab.tags
    bioes = to_tags(spans(best.tags, "iob2"), len(best.tags), tagger.scheme)
    assert all(best.prob <= dist[tag] + 1e-3 for dist, tag in zip(records[0].marginals, bioes) if tag in tags.ids)


@pytest.mark.parametrize("crf", [True, False])
def test_decode_all_n_best_starts_with_the_decoded_path(crf):
    model, vocab = _tiny_tagger(crf)
    with torch.no_grad():
        model.proj.bias.normal_(0, 5)
    model.eval()
    b = make_batch(vocab, [["Alan", "Shearer", "visited", "Paris", "."], ["Paris"]])
    decoded = model.decode_all(b, n_best=3, marginals=True)
    for path, found, dists in zip(decoded.paths, decoded.n_best, decoded.marginals):
        assert found[0][0] == path and [p for _, p in found] == sorted((p for _, p in found), reverse=True)
        assert all(check_tags([vocab.tags[i] for i in p], "bioes") is None for p, _ in found)
        assert len(dists) == len(path) and all(abs(sum(row) - 1) < 1e-4 for row in dists)


def test_tag_cli_n_best_and_marginals(run_dir, tmp_path, capsys):
    src = tmp_path / "in.txt"
    src.write_text("Alan Shearer visited Paris .\n\nPeter left .\n", encoding="utf-8")
    code, out, err = _run(capsys, "tag", "--model", run_dir, "--input", src, "--format", "json", "--n-best", "2", "--marginals")
    assert code == 0, err
    rows = [json.loads(x) for x in out.splitlines()]
    assert [len(r["n_best"]) for r in rows] == [2, 1, 2] and [len(r["marginals"]) for r in rows] == [5, 0, 3]
    assert rows[0]["n_best"][0]["entities"] == rows[0]["entities"] and rows[0]["n_best"][0]["prob"] >= rows[0]["n_best"][1]["prob"]
    code, plain, err = _run(capsys, "tag", "--model", run_dir, "--input", src, "--format", "json")
    assert [json.loads(x)["entities"] for x in plain.splitlines()] == [r["entities"] for r in rows]
    for argv, message in [(["--n-best", "2"], "--n-best needs --format json"), (["--marginals", "--format", "inline"], "--marginals needs --format json"),
                          (["--n-best", "0", "--format", "json"], "--n-best must be at least 1")]:
        code, out, err = _run(capsys, "tag", "--model", run_dir, "--input", src, *argv)
        assert code == 2 and err.startswith("error: ") and message in err and err.count("\n") == 1, err


def test_tag_html_round_trips_the_text_and_colours_each_type(run_dir, tmp_path, capsys):
    import html
    import re

    lines = ["Alan Shearer visited Paris .", "", "<b>Ann</b> & Lee left \"Paris\" 's", "Peter met Ann Lee in London ."]
    src = tmp_path / "in.txt"
    src.write_text("\n".join(lines) + "\n", encoding="utf-8")
    code, out, err = _run(capsys, "tag", "--model", run_dir, "--input", src, "--format", "html")
    assert code == 0, err
    page = out.splitlines()
    assert page[0] == "<!DOCTYPE html>" and page[-1] == "</body></html>"
    paragraphs = [line for line in page if line.startswith("<p>")]
    assert [html.unescape(re.sub(r"<[^>]*>", "", p)) for p in paragraphs] == lines
    assert "<b>" not in out  # escaped, not markup
    records = Tagger.load(run_dir).tag(lines)
    marks = re.findall(r'<mark style="background:([^"]+)" data-type="([^"]+)" title="[^"]*">([^<]*)</mark>', "\n".join(paragraphs))
    assert [(kind, html.unescape(text)) for _, kind, text in marks] == [(e.type, e.text) for r in records for e in r.entities]
    colour = {}
    for c, kind, _ in marks:
        assert colour.setdefault(kind, c) == c
    assert len(set(colour.values())) == len(colour) >= 2  # one colour per type, a different one for each
