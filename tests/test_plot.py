"""`s2s plot`: what a figure draws is what the run logged or the model computed; PNG and SVG; clear errors."""
from __future__ import annotations

import builtins
import json
import random
from pathlib import Path

import pytest
from conftest import metrics_events

from s2s import config as config_lib
from s2s import plot
from s2s.cli import main
from s2s.errors import S2SError

pytest.importorskip("matplotlib", reason='s2s plot needs matplotlib: pip install -e ".[plot]"')


def _run(capsys, *argv) -> tuple[int, str, str]:
    code = main(["-q", *map(str, argv)])
    out, err = capsys.readouterr()
    return code, out, err


def _is_image(path: Path) -> bool:
    data = path.read_bytes()
    return data.startswith(b"\x89PNG\r\n") if path.suffix == ".png" else b"<svg" in data[:2000]


def test_curves_are_the_values_of_metrics_jsonl(trained_run):
    curves = plot.training_curves(trained_run)
    events = metrics_events(trained_run)
    assert curves.dev_metric == "dev_bleu"
    assert curves.series["train_loss"] == [(e["step"], e["seconds"], e["train_loss"]) for e in events if "train_loss" in e]
    assert curves.series["dev_bleu"] == [(e["step"], e["seconds"], e["dev_bleu"]) for e in events if "dev_bleu" in e]
    assert curves.series["lr"] == [(e["step"], e["seconds"], e["lr"]) for e in events if "train_loss" in e]
    assert len(curves.series["train_loss"]) >= 10 and curves.series["dev_bleu"]
    # The figure draws exactly these values: against steps on the left, minutes on the right.
    fig = plot.draw_curves([curves])
    axes = fig.axes
    for row, name in enumerate(["train_loss", "dev_bleu", "lr"]):
        points = curves.series[name]
        left, right = axes[2 * row].lines[0], axes[2 * row + 1].lines[0]
        assert list(left.get_xdata()) == [s for s, _, _ in points] and list(left.get_ydata()) == [v for _, _, v in points]
        assert list(right.get_xdata()) == [t / 60 for _, t, _ in points] and list(right.get_ydata()) == [v for _, _, v in points]
    plt = plot._pyplot()
    plt.close(fig)


@pytest.mark.parametrize("suffix", [".png", ".svg"])
def test_plot_curves_cli_writes_png_and_svg(trained_run, tmp_path, capsys, suffix):
    out = tmp_path / f"curves{suffix}"
    code, stdout, err = _run(capsys, "plot", "curves", trained_run, trained_run, "--out", out)  # several runs, one figure
    assert code == 0, err
    assert _is_image(out) and json.loads(stdout)["runs"] == 2


def test_plot_errors_are_one_line(trained_run, tmp_path, capsys, monkeypatch):
    (tmp_path / "empty-run").mkdir()
    cases = [(["curves", tmp_path / "empty-run", "--out", tmp_path / "c.png"], "no metrics.jsonl"),
             (["curves", tmp_path / "nowhere", "--out", tmp_path / "c.png"], "no such directory"),
             (["curves", trained_run, "--out", tmp_path / "c.pdf"], "name the file .png or .svg")]
    for argv, message in cases:
        code, out, err = _run(capsys, "plot", *argv)
        assert code == 2 and err.startswith("error: ") and message in err and err.count("\n") == 1, err
    assert not (tmp_path / "c.png").exists()
    real_import = builtins.__import__

    def no_matplotlib(name, *args, **kwargs):
        if name.split(".")[0] == "matplotlib":
            raise ImportError("No module named 'matplotlib'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_matplotlib)
    code, out, err = _run(capsys, "plot", "curves", trained_run, "--out", tmp_path / "c.png")
    assert (code, err) == (2, 'error: s2s plot needs matplotlib: pip install -e ".[plot]"\n')


def test_attention_heatmap_draws_the_translators_attention(trained_run, tmp_path, capsys):
    from s2s.tasks.translation import Translator

    text = "das haus ist klein"
    found = Translator.load(trained_run, device="cpu").translate_nbest([text], 1, attention=True)[0]
    best = found.hypotheses[0]
    fig = plot.draw_attention(best.attention, found.source_pieces, best.pieces)
    ax = fig.axes[0]
    assert ax.images[0].get_array().tolist() == best.attention
    assert [t.get_text() for t in ax.get_xticklabels()] == found.source_pieces
    assert [t.get_text() for t in ax.get_yticklabels()] == best.pieces
    out = tmp_path / "attention.svg"
    code, stdout, err = _run(capsys, "plot", "attention", "--model", trained_run, "--text", text, "--out", out, "--device", "cpu")
    assert code == 0, err
    assert _is_image(out) and json.loads(stdout)["translation"] == best.text


def test_confusion_matrix_of_a_classifier(tmp_path, capsys):
    from s2s.tasks.classification import Classifier
    from s2s.train import train

    rng = random.Random(0)
    words = {"pos": "great", "neg": "awful", "meh": "okay"}
    for split, n in (("train", 30), ("dev", 9)):
        rows = []
        for i in range(n):
            label = list(words)[i % 3]
            rows.append({"text": " ".join(rng.sample(["the", "film", "was", "a", "plot"], 3) + [words[label]]), "label": label})
        (tmp_path / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    config = config_lib.from_dict({
        "task": "classification", "data": {"format": "jsonl", "dir": str(tmp_path), "train": "train", "dev": "dev"},
        "encoder": {"emb_dim": 8, "hidden_size": 8, "dropout": 0.0},
        "train": {"epochs": 3, "max_tokens": 60, "lr": 0.03, "threads": 1, "device": "cpu", "label_smoothing": 0.0}})
    run = tmp_path / "run"
    train(config, run)
    classifier = Classifier.load(run, device="cpu")
    scores, _ = classifier.evaluate_file(tmp_path / "dev.jsonl")
    fig = plot.draw_confusion(scores["confusion"], classifier.vocab.labels.items)
    ax = fig.axes[0]
    assert ax.images[0].get_array().tolist() == scores["confusion"]
    assert sorted(int(t.get_text()) for t in ax.texts) == sorted(v for row in scores["confusion"] for v in row)
    out = tmp_path / "confusion.png"
    code, stdout, err = _run(capsys, "plot", "confusion", "--model", run, "--data", tmp_path / "dev.jsonl", "--out", out)
    assert code == 0, err
    assert _is_image(out) and json.loads(stdout)["examples"] == 9
    with pytest.raises(S2SError, match="name the file .png or .svg"):
        plot.check_output(tmp_path / "confusion.jpg")


def test_curves_of_a_run_logged_before_every_line_had_seconds(tmp_path):
    """Training lines of older runs have no "seconds": drawn against steps, left out against wall time."""
    run = tmp_path / "old-run"
    run.mkdir()
    lines = [{"step": 10, "epoch": 1, "train_loss": 2.0, "lr": 0.01}, {"step": 20, "epoch": 1, "train_loss": 1.5, "lr": 0.01},
             {"step": 20, "epoch": 1, "dev_f1": 40.0, "lr": 0.01, "best": 40.0, "seconds": 3.0}]
    (run / "metrics.jsonl").write_text("".join(json.dumps(e) + "\n" for e in lines) + '{"step": 30, "ep', encoding="utf-8")
    curves = plot.training_curves(run)
    assert curves.dev_metric == "dev_f1"  # no config.yaml: the first dev score logged
    assert curves.series == {"train_loss": [(10, None, 2.0), (20, None, 1.5)], "dev_f1": [(20, 3.0, 40.0)], "lr": [(10, None, 0.01), (20, None, 0.01)]}
    fig = plot.draw_curves([curves])
    assert list(fig.axes[1].lines[0].get_xdata()) == [] and list(fig.axes[3].lines[0].get_xdata()) == [3.0 / 60]
    plot._pyplot().close(fig)
