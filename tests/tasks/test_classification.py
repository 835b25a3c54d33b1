"""The classification task: its head model (every encoder option), Task (dev hold-out, batches, resume), the
Classifier API, `s2s classify` / `s2s evaluate --data`, bad input, and the smoke recipe. Reading labelled files:
tests/data/test_labelled.py; pooling: tests/nn/test_pooling.py; the scores: tests/test_metrics_accuracy.py."""
from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch
import yaml
from conftest import run_recipe, train_losses

from s2s import config as config_lib
from s2s.cli import main
from s2s.config import Config
from s2s.data.tokenize import truncate
from s2s.errors import S2SError
from s2s.tasks.classification import Classifier, Task, build_model, make_batch

ROOT = Path(__file__).resolve().parents[2]
IMDB = ROOT.parent / "shared" / "data" / "imdb"

# A made-up review language: the label is carried by a few words anywhere in a text of fillers.
WORDS = {"pos": ["great", "superb", "loved"], "neg": ["awful", "boring", "hated"], "meh": ["okay", "average"]}
FILLER = ["the", "movie", "plot", "actor", "was", "and", "a", "film", "it", "."]


def make_reviews(n: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        label = ["pos", "neg", "meh"][i % 3]
        words = [rng.choice(FILLER) for _ in range(rng.randint(2, 6))]
        words.insert(rng.randrange(len(words) + 1), rng.choice(WORDS[label]))
        rows.append({"text": " ".join(words).capitalize(), "label": label})
    return rows


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def tiny_dict(data_dir: Path, **sections: dict) -> dict:
    raw = {
        "task": "classification",
        "data": {"format": "jsonl", "dir": str(data_dir), "train": "train", "dev": "dev", "max_text_tokens": 12},
        "vocab": {"min_freq": 1},
        "encoder": {"emb_dim": 8, "hidden_size": 8, "dropout": 0.0},
        "classification": {"pooling": "max+mean", "attn_size": 8},
        "train": {"epochs": 30, "max_tokens": 60, "lr": 0.03, "log_every": 1000, "threads": 1, "early_stopping": 0,
                  "label_smoothing": 0.0, "device": "cpu", "seed": 3},
        "decode": {"batch_size": 8},
    }
    for name, values in sections.items():
        raw.setdefault(name, {}).update(values)
    return raw


def tiny(data_dir: Path, **sections: dict) -> Config:
    return config_lib.from_dict(tiny_dict(data_dir, **sections))


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("reviews")
    write_jsonl(root / "train.jsonl", make_reviews(60, 0))
    write_jsonl(root / "dev.jsonl", make_reviews(15, 1))
    write_jsonl(root / "test.jsonl", make_reviews(12, 2))
    return root


@pytest.fixture(scope="module")
def run_dir(data_dir) -> Path:
    """A tiny 3-class model trained through the shared loop (a couple of seconds); tests must not modify it."""
    from s2s.train import train

    out = data_dir / "run"
    progress = train(tiny(data_dir), out)
    assert progress["best"] == 100, progress
    return out


def _run(capsys, *argv) -> tuple[int, str, str]:
    code = main(["-q", *map(str, argv)])
    out, err = capsys.readouterr()
    return code, out, err


# --- the model ------------------------------------------------------------------------------------------------


def _model(cell="lstm", pooling="max+mean", bidirectional=True, conv=0, layers=1, classes=3, dropout=0.0, seed=0):
    encoder = {"cell": cell, "emb_dim": 8, "hidden_size": 6, "num_layers": layers, "bidirectional": bidirectional,
               "dropout": dropout, "conv_filters": conv, "conv_kernel": 3, "conv_pool": 2}
    config = config_lib.from_dict({"task": "classification", "encoder": encoder, "classification": {"pooling": pooling, "attn_size": 5},
                                   "train": {"label_smoothing": 0.0}})
    torch.manual_seed(seed)
    return build_model(config, 20, classes)


@pytest.mark.parametrize(
    "options",
    [dict(cell="rnn"), dict(cell="gru"), dict(cell="lstm"), dict(cell="lstm", bidirectional=False),
     dict(cell="gru", layers=2, dropout=0.3), dict(cell="lstm", conv=6), dict(pooling="attention"), dict(pooling="last")],
    ids=lambda o: "-".join(f"{k}={v}" for k, v in o.items()),
)
def test_every_encoder_option_overfits_one_batch(options):
    model = _model(**options)
    batch = make_batch([[2, 3, 4], [5, 6, 7, 8, 9], [10, 11], [12, 13, 14, 15]], [0, 1, 2, 1])
    optimizer = torch.optim.Adam(model.parameters(), lr=0.05)
    first = model(batch).loss.item()
    for _ in range(60):
        loss = model(batch).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    assert model(batch).loss.item() < first / 5
    assert model.logits(batch.tokens, batch.lengths).argmax(-1).tolist() == [0, 1, 2, 1]


def test_a_unidirectional_encoder_also_serves_translation():
    from s2s.tasks.translation import build_model as build_translation_model
    from s2s.tasks.translation import make_batch as make_pair_batch

    config = config_lib.from_dict({"encoder": {"emb_dim": 8, "hidden_size": 8, "bidirectional": False},
                                   "translation": {"dec_hidden_size": 8, "attn_size": 8}})
    model = build_translation_model(config, 20, 20)
    out = model(make_pair_batch([[4, 5, 6], [7, 8]], [[4, 5], [6, 7, 8]]))
    assert model.encoder.output_size == 8 and torch.isfinite(out.loss)


# --- training, the API and the CLI ----------------------------------------------------------------------------


def test_training_leaves_a_run_directory(run_dir):
    for name in ("config.yaml", "best.pt", "last.pt", "classification_vocab.json", "metrics.jsonl"):
        assert (run_dir / name).is_file(), name
    events = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert any("dev_accuracy" in e and "dev_macro_f1" in e for e in events)
    assert json.loads((run_dir / "classification_vocab.json").read_text())["labels"] == ["meh", "neg", "pos"]


def test_classifier_api_keeps_order_and_does_not_depend_on_batching(run_dir):
    import s2s

    classifier = s2s.Classifier.load(run_dir, device="cpu")
    texts = ["The movie was great", "", "It was awful and boring .", "   ", "An okay film", "<br />"]
    found = classifier.predict(texts)
    assert found[1] is None and found[3] is None
    assert [p.label for p in found if p is not None][:3] == ["pos", "neg", "meh"]
    for p in filter(None, found):
        assert sum(p.probs.values()) == pytest.approx(1.0, abs=1e-5) and p.prob == max(p.probs.values())
    one_by_one = classifier.predict(texts, batch_size=1)
    assert [p and (p.label, round(p.prob, 5)) for p in one_by_one] == [p and (p.label, round(p.prob, 5)) for p in found]


@pytest.mark.parametrize("fmt", ["tsv", "json"])
def test_classify_cli_keeps_order_and_empty_lines(run_dir, tmp_path, capsys, fmt):
    src = tmp_path / "in.txt"
    src.write_text("The movie was great\n\nIt was awful\nan okay film . \x85 really\n", encoding="utf-8")
    code, out, err = _run(capsys, "classify", "--model", run_dir, "--input", src, "--format", fmt)
    assert code == 0, err
    lines = out.split("\n")[:-1]
    assert len(lines) == 4 and lines[1] == ""
    if fmt == "tsv":
        labels = [line.split("\t")[0] for line in lines if line]
        assert all(0 < float(line.split("\t")[1]) <= 1 for line in lines if line)
    else:
        labels = [json.loads(line)["label"] for line in lines if line]
    assert labels == ["pos", "neg", "meh"]


def test_classify_cli_reads_stdin(run_dir, capsys, monkeypatch):
    import io

    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO("great film\x85 really\n\nso boring\n".encode())))
    code, out, err = _run(capsys, "classify", "--model", run_dir)
    assert code == 0, err
    assert [line.split("\t")[0] for line in out.split("\n")[:-1]] == ["pos", "", "neg"]
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(b"great\n\xff\n")))
    code, out, err = _run(capsys, "classify", "--model", run_dir)
    assert code == 2 and "<stdin>:2: not valid UTF-8" in err


def test_classify_cli_reads_jsonl_input(run_dir, tmp_path, capsys):
    src = write_jsonl(tmp_path / "in.jsonl", [{"text": "great film", "id": 1}, {"text": "boring"}])
    out = tmp_path / "out.tsv"
    code, _, err = _run(capsys, "classify", "--model", run_dir, "--input", src, "--output", out)
    assert code == 0, err
    assert [line.split("\t")[0] for line in out.read_text().splitlines()] == ["pos", "neg"]
    src.write_text('{"text": "great film"}\nnot json\n', encoding="utf-8")
    code, _, err = _run(capsys, "classify", "--model", run_dir, "--input", src)
    assert code == 2 and "in.jsonl:2: not valid JSON" in err and "Traceback" not in err


def test_evaluate_cli_numbers_match_the_predictions(run_dir, data_dir, tmp_path, capsys):
    rows = make_reviews(12, 2) + [{"text": "great great", "label": "neg"}, {"text": "awful", "label": "meh"}]
    test = write_jsonl(tmp_path / "test.jsonl", rows)
    code, out, err = _run(capsys, "evaluate", "--model", run_dir, "--data", test, "--json")
    assert code == 0, err
    found = json.loads(out)
    pred = Path(found["predictions"]).read_text().splitlines()
    gold = [r["label"] for r in rows]
    assert pred == [p.label for p in Classifier.load(run_dir).predict([r["text"] for r in rows])]
    assert found["accuracy"] == pytest.approx(100 * sum(g == p for g, p in zip(gold, pred)) / len(rows))
    assert found["accuracy"] < 100 and found["examples"] == 14
    labels = ["meh", "neg", "pos"]
    assert found["confusion"] == [[sum(g == a and p == b for g, p in zip(gold, pred)) for b in labels] for a in labels]
    code, out, err = _run(capsys, "evaluate", "--model", run_dir, "--data", test)
    assert code == 0 and out.strip().splitlines()[-1].startswith(f"accuracy {found['accuracy']:.2f}  macro-F1 ")
    assert "confusion matrix (rows gold, columns predicted):" in out


def test_evaluate_reads_csv_by_its_extension(run_dir, tmp_path, capsys):
    test = tmp_path / "t.csv"
    test.write_text("label,text\npos,great film\nneg,so boring\n", encoding="utf-8")
    code, out, err = _run(capsys, "evaluate", "--model", run_dir, "--data", test, "--json")
    assert code == 0, err
    assert json.loads(out)["accuracy"] == 100


@pytest.mark.parametrize(
    "content, message",
    [
        ('{"text": "great", "label": "pos"}\n{"text": "fine", "label": "neutral"}\n',
         "t.jsonl:2: label 'neutral' is not one the model knows (meh, neg, pos)"),
        ('{"text": "great", "label": "pos"}\n{"text": "fine"}\n', "t.jsonl:2: no label in 'label'"),
        ('{"text": "great", "label": "pos"}\n{"text": \n', "t.jsonl:2: not valid JSON"),
    ],
)
def test_evaluate_bad_input_is_one_line_with_file_and_line(run_dir, tmp_path, capsys, content, message):
    test = tmp_path / "t.jsonl"
    test.write_text(content, encoding="utf-8")
    code, out, err = _run(capsys, "evaluate", "--model", run_dir, "--data", test)
    assert code == 2 and message in err and "Traceback" not in err and err.count("\n") == 1


def test_training_data_problems_stop_training(data_dir, tmp_path, capsys):
    bad = tmp_path / "bad"
    bad.mkdir()
    write_jsonl(bad / "train.jsonl", make_reviews(6, 0))
    with open(bad / "train.jsonl", "ab") as f:
        f.write(b'{"text": "\xff", "label": "pos"}\n')
    write_jsonl(bad / "dev.jsonl", make_reviews(3, 1))
    config_lib.save(tiny(bad), tmp_path / "c.yaml")
    code, _, err = _run(capsys, "train", tmp_path / "c.yaml", "--out", tmp_path / "run")
    assert code == 2 and "train.jsonl:7: not valid UTF-8" in err
    write_jsonl(bad / "train.jsonl", make_reviews(6, 0))
    write_jsonl(bad / "dev.jsonl", [{"text": "fine", "label": "unheard"}])
    code, _, err = _run(capsys, "train", tmp_path / "c.yaml", "--out", tmp_path / "run")
    assert code == 2 and "dev.jsonl:1: label 'unheard' is not one the model knows" in err
    # A format classification does not read: refused when the config is read, before any training.
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(tiny_dict(bad, data={"format": "text"})), encoding="utf-8")
    code, _, err = _run(capsys, "train", tmp_path / "c.yaml", "--out", tmp_path / "run2")
    assert code == 2 and "task classification reads data.format jsonl | tsv | csv, got 'text'" in err
    assert not (tmp_path / "run2").exists()


def test_task_mismatch_errors(run_dir, trained_run, capsys):
    code, _, err = _run(capsys, "classify", "--model", trained_run)
    assert code == 2 and "trained for translation, not classification" in err
    code, _, err = _run(capsys, "evaluate", "--model", run_dir, "--data", "x.jsonl", "--src", "a")
    assert code == 2 and f"--src does not apply to {run_dir}, a classification run" in err


def test_dev_held_out_of_train(data_dir, tmp_path):
    config = tiny(data_dir, data={"dev_size": 9, "dev": "missing"})
    for name in "ab":
        (tmp_path / name).mkdir()
    task, again = (Task(config, tmp_path / name) for name in "ab")
    assert len(task.dev_ids) == 9 and len(task.store) == 51
    assert again.dev_ids == task.dev_ids and again.dev_labels == task.dev_labels


def test_training_batches_are_cut_to_their_shortest_text(data_dir, tmp_path):
    task = Task(tiny(data_dir), tmp_path)
    ids = task.store.get("text", range(len(task.store)))
    rows = sorted(range(len(ids)), key=lambda i: len(ids[i]))[-4:] + [0]
    b = task.batch(rows)
    shortest = min(len(ids[i]) for i in rows)
    assert b.tokens.shape == (5, shortest) and b.lengths.tolist() == [shortest] * 5 and b.tokens.ne(0).all()
    assert b.tokens[0].tolist() == truncate(ids[rows[0]], shortest, "head_tail")
    task = Task(tiny(data_dir, train={"trim_batches": False}), tmp_path, resume=True)
    assert task.batch(rows).lengths.tolist() == [len(ids[i]) for i in rows]


def test_resume_equals_uninterrupted(data_dir, tmp_path):
    from s2s.train import train

    def config(steps):
        return tiny(data_dir, train={"max_steps": steps, "epochs": 10, "max_tokens": 100, "log_every": 1, "word_dropout": 0.2},
                    encoder={"dropout": 0.2})

    train(config(6), tmp_path / "a")
    train(config(3), tmp_path / "b")
    train(config(6), tmp_path / "b", resume=True)

    assert train_losses(tmp_path / "a") == pytest.approx(train_losses(tmp_path / "b"), abs=1e-6) and len(train_losses(tmp_path / "a")) == 6


@pytest.mark.skipif(not (IMDB / "train.jsonl").is_file(), reason=f"IMDB not found at {IMDB} (the shared data folder)")
def test_sentiment_smoke_recipe_end_to_end(tmp_path):
    out = tmp_path / "run"
    result = run_recipe("sentiment.sh", "--smoke", "--data", str(IMDB), "--out", str(out), timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    last = result.stdout.strip().splitlines()[-1]
    assert last.startswith("accuracy ") and "macro-F1" in last and "(500 examples)" in last
    for name in ("config.yaml", "best.pt", "last.pt", "classification_vocab.json", "metrics.jsonl", "test.pred"):
        assert (out / name).is_file(), name
    assert len((out / "test.pred").read_text().splitlines()) == 500


def test_sentiment_recipe_rejects_bad_options():
    result = run_recipe("sentiment.sh", "--nope")
    assert result.returncode == 2 and "unknown option '--nope'" in result.stderr
    result = run_recipe("sentiment.sh", "--cell", "lstn")
    assert result.returncode == 2 and "--cell must be rnn, gru or lstm" in result.stderr


# --- issue 22: lists only, JSONL on stdin, closed stdin, nothing to score ----------------------------------------


def test_classifier_refuses_a_bare_string(run_dir):
    """A string is a sequence of characters: each would have been classified as a text of its own."""
    from s2s.data.labelled import Example

    classifier = Classifier.load(run_dir, device="cpu")
    with pytest.raises(TypeError, match="Classifier.predict takes a list of texts, got a string: pass \\[text\\] for one"):
        classifier.predict("The movie was great")
    with pytest.raises(TypeError, match="Classifier.evaluate takes a list of labelled examples"):
        classifier.evaluate("The movie was great", "<str>")
    with pytest.raises(TypeError, match="Classifier.evaluate takes a list of labelled examples"):
        classifier.evaluate(["The movie was great"], "<list>")
    assert [p.label for p in classifier.predict(("great film", "so boring"))] == ["pos", "neg"]
    assert classifier.evaluate((Example("great film", "pos", 1),), "<tuple>")[1] == ["pos"]


def test_classify_reads_jsonl_on_stdin_as_jsonl(run_dir, data_dir, capsys, caplog, monkeypatch):
    """`s2s classify < test.jsonl` used to classify each raw JSON line, its label included."""
    import io
    import logging

    rows = make_reviews(6, 4)
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(("\n" + "".join(json.dumps(r) + "\n" for r in rows)).encode())))
    with caplog.at_level(logging.INFO, logger="s2s"):
        code, out, err = _run(capsys, "classify", "--model", run_dir, "--format", "json")
    assert code == 0, err
    expected = Classifier.load(run_dir).predict([""] + [r["text"] for r in rows])
    assert out.splitlines() == [p.to_json() if p else "" for p in expected]
    assert any(r.getMessage().startswith("<stdin>: read as JSONL") for r in caplog.records)
    # Text stays text, even when a line starts like JSON; and --input-format text is obeyed.
    for text, argv in (("{great film\nso boring\n", []), (json.dumps(rows[0]) + "\n", ["--input-format", "text"])):
        monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(text.encode())))
        code, out, err = _run(capsys, "classify", "--model", run_dir, *argv)
        assert code == 0, err
        assert out.splitlines() == [p.to_tsv() for p in Classifier.load(run_dir).predict(text.splitlines())]


def test_classify_with_stdin_closed_is_one_line(run_dir, capsys, monkeypatch):
    monkeypatch.setattr("sys.stdin", None)  # what Python makes of `<&-`
    code, out, err = _run(capsys, "classify", "--model", run_dir)
    assert code == 2 and out == "" and err == "error: cannot read stdin (it is closed); give --input FILE\n"


@pytest.mark.parametrize("content", ["", "\n\n"])
def test_evaluate_a_file_without_rows_is_one_line(run_dir, tmp_path, capsys, content):
    test = tmp_path / "t.jsonl"
    test.write_text(content, encoding="utf-8")
    code, out, err = _run(capsys, "evaluate", "--model", run_dir, "--data", test, "--hyp-prefix", tmp_path / "h")
    assert code == 2 and out == "" and err == f"error: {test}: no labelled rows\n"
    with pytest.raises(S2SError, match="<none>: no labelled examples to score"):
        Classifier.load(run_dir).evaluate([], "<none>")


def test_classify_a_very_long_line_is_cut_as_in_training(run_dir, tmp_path, capsys, monkeypatch):
    """A huge line (here 60,000 words) is truncated to data.max_text_tokens before it reaches the model."""
    import s2s.tasks.classification as classification

    widths = []
    original = classification.make_batch

    def recording(ids, *args):
        widths.append(max(map(len, ids)))
        return original(ids, *args)

    monkeypatch.setattr(classification, "make_batch", recording)
    src = tmp_path / "in.txt"
    src.write_text("so boring\n" + " ".join(["the great movie ."] * 15000) + "\n", encoding="utf-8")
    code, out, err = _run(capsys, "classify", "--model", run_dir, "--input", src)
    assert code == 0, err
    assert [line.split("\t")[0] for line in out.splitlines()] == ["neg", "pos"]
    assert max(widths) == 12  # data.max_text_tokens of the tiny run


def test_token_store_holds_the_encoded_training_rows_and_follows_the_data(tmp_path, caplog):
    """A label-sorted file: max_train with dev_size still takes rows of every label (hold_out_order's
    shuffled order); the store holds those rows encoded, is reused as it is, and rebuilt when the file changes."""
    import logging

    from s2s.data.labelled import read_labelled
    from s2s.data.tokenize import text_tokens

    data = tmp_path / "data"
    data.mkdir()
    write_jsonl(data / "train.jsonl", sorted(make_reviews(60, 0), key=lambda r: r["label"]))
    config = tiny(data, data={"dev_size": 9, "dev": "missing", "max_train": 30})
    (tmp_path / "run").mkdir()
    task = Task(config, tmp_path / "run")
    labels = [label for (label,) in task.store.get("label", range(len(task.store)))]
    assert len(task.store) == 30 and len(set(labels)) == 3
    encoded = {tuple(task.vocab.encode(truncate(text_tokens(e.text), 12, "head_tail"))) for e in read_labelled(data / "train.jsonl", "jsonl")}
    assert all(tuple(t) in encoded for t in task.store.get("text", range(30)))
    with caplog.at_level(logging.INFO):
        Task(config, tmp_path / "run", resume=True)
        assert "rebuilding" not in caplog.text
        write_jsonl(data / "train.jsonl", make_reviews(61, 0))
        assert len(Task(config, tmp_path / "run", resume=True).store) == 30
    assert "store: built from other data; rebuilding it" in caplog.text
