"""`s2s export --format safetensors`: weights without pickle that Translator/Tagger/Classifier.load read as a run
directory, giving what the run gives; a damaged file fails in one line. (ONNX export: tests/test_onnx.py.)"""
from __future__ import annotations

import json
import struct

import pytest

pytest.importorskip("safetensors")
from test_serve_runs import classification_run, forecasting_run, tagging_run  # noqa: E402,F401  (fixtures)

from s2s.cli import main  # noqa: E402
from s2s.errors import S2SError  # noqa: E402
from s2s.tasks.classification import Classifier  # noqa: E402
from s2s.tasks.tagging import Tagger  # noqa: E402
from s2s.tasks.translation import Translator  # noqa: E402

SOURCES = ["der hund sieht ein ball", "die katze mag ein haus", ""]


def export(run, out, fmt="safetensors") -> dict:
    assert main(["-q", "export", "--model", str(run), "--format", fmt, "--out", str(out)]) == 0
    return json.loads((out / "model.safetensors").read_bytes()[8:8 + struct.unpack("<Q", (out / "model.safetensors").read_bytes()[:8])[0]])


def test_translation_as_safetensors_translates_as_the_run(trained_run, tmp_path, capsys):
    header = export(trained_run, tmp_path / "st")
    assert header["__metadata__"]["task"] == "translation"
    assert not list((tmp_path / "st").glob("*.pt"))  # nothing pickled
    for beam in (1, 3):
        assert Translator.load(tmp_path / "st").translate(SOURCES, beam) == Translator.load(trained_run).translate(SOURCES, beam)
    assert main(["-q", "translate", "--model", str(tmp_path / "st"), "--input", "/dev/null"]) == 0


def test_tagger_and_classifier_as_safetensors(tagging_run, classification_run, tmp_path):  # noqa: F811
    export(tagging_run, tmp_path / "tag")
    texts = ["Alan Shearer visited Paris .", "the EU said on Monday"]
    assert [r.to_json() for r in Tagger.load(tmp_path / "tag").tag(texts)] == [r.to_json() for r in Tagger.load(tagging_run).tag(texts)]
    export(classification_run, tmp_path / "cls")
    reviews = ["the movie was great", "awful plot"]
    assert Classifier.load(tmp_path / "cls").predict(reviews) == Classifier.load(classification_run).predict(reviews)


def test_forecaster_as_safetensors(forecasting_run, tmp_path):  # noqa: F811
    import torch

    from s2s.tasks.forecasting import Forecaster

    export(forecasting_run, tmp_path / "fc")
    history = torch.linspace(0, 1, 40, dtype=torch.float64).view(20, 2)
    assert torch.equal(Forecaster.load(tmp_path / "fc").predict(history), Forecaster.load(forecasting_run).predict(history))


def test_a_damaged_safetensors_file_fails_in_one_line(trained_run, tmp_path):
    export(trained_run, tmp_path / "st")
    path = tmp_path / "st" / "model.safetensors"
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(S2SError, match="corrupt or truncated safetensors"):
        Translator.load(tmp_path / "st")


def test_export_refuses_to_write_into_the_run_directory(trained_run, capsys):
    assert main(["-q", "export", "--model", str(trained_run), "--format", "safetensors", "--out", str(trained_run)]) == 2
    assert "the run directory itself" in capsys.readouterr().err
