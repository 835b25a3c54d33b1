"""`s2s export --format onnx` and s2s.onnx_runtime: the numpy greedy and beam search over the exported graphs give
s2s.search's outputs (tokens and scores) on a tiny model, texts translate and classify as the torch path does, and
the runtime runs where importing torch fails."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")
import numpy as np  # noqa: E402
import torch  # noqa: E402
from test_serve_runs import classification_run, spread_run, tagging_run  # noqa: E402,F401  (fixtures)

from s2s.cli import main  # noqa: E402
from s2s.data.batching import pad  # noqa: E402
from s2s.data.sentencepiece import BOS, EOS  # noqa: E402
from s2s.onnx_runtime import OnnxClassifier, OnnxTranslator, beam_hypotheses, greedy_search, load  # noqa: E402
from s2s.search import beam_hypotheses as torch_beam_hypotheses  # noqa: E402
from s2s.search import greedy_search as torch_greedy_search  # noqa: E402
from s2s.search import max_lengths  # noqa: E402
from s2s.tasks.classification import Classifier  # noqa: E402
from s2s.tasks.translation import Translator  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SOURCES = ["der hund sieht ein ball", "die katze mag ein haus", "", "der mann sieht der hund", "ein rote ball", "die frau"]


@pytest.fixture(scope="module")
def exported(spread_run) -> Path:  # noqa: F811
    out = spread_run.parent / "onnx"
    assert main(["-q", "export", "--model", str(spread_run), "--format", "onnx", "--out", str(out)]) == 0
    return out


def test_numpy_search_equals_torch_search(spread_run, exported):  # noqa: F811
    translator, runtime = Translator.load(spread_run, device="cpu"), OnnxTranslator(exported)
    g = torch.Generator().manual_seed(1)
    vocab = translator.sp_src.get_piece_size()
    src = [torch.randint(4, vocab, (n,), generator=g).tolist() for n in (5, 1, 7, 3, 4, 2)]
    tokens, lengths = pad(src)
    limits = max_lengths(lengths, 1.5, 5)
    expected = torch_greedy_search(translator.model, tokens, lengths, limits, BOS, EOS)
    assert greedy_search(runtime, tokens.numpy(), lengths.numpy(), limits.numpy()) == expected
    for beam, in_flight in ((1, 0), (2, 0), (4, 0), (3, 2), (4, 3)):  # in_flight: sentences join as others end
        want = torch_beam_hypotheses(translator.model, tokens, lengths, limits, BOS, EOS, beam, 1.0, in_flight=in_flight)
        got = beam_hypotheses(runtime, tokens.numpy(), lengths.numpy(), limits.numpy(), beam, 1.0, in_flight=in_flight)
        for w, h in zip(want, got):
            assert [x.tokens for x in h] == [x.tokens for x in w]
            assert [x.score for x in h] == pytest.approx([x.score for x in w], abs=1e-4)
        if beam == 1:  # beam search of width 1 is greedy search
            assert [max(h, key=lambda x: x.score).tokens for h in got] == expected


def test_onnx_translations_equal_the_torch_path(spread_run, exported):  # noqa: F811
    translator, runtime = Translator.load(spread_run, device="cpu"), load(exported)
    meta = json.loads((exported / "onnx.json").read_text())
    assert meta["opset"] == 17 and meta["task"] == "translation"
    for beam in (1, 3):
        assert runtime.translate(SOURCES, beam_size=beam, batch_size=2) == translator.translate(SOURCES, beam_size=beam)


def test_onnx_classifier_equals_the_torch_path(classification_run, tmp_path):  # noqa: F811
    assert main(["-q", "export", "--model", str(classification_run), "--format", "onnx", "--out", str(tmp_path / "cls")]) == 0
    runtime, classifier = OnnxClassifier(tmp_path / "cls"), Classifier.load(classification_run, device="cpu")
    texts = ["the movie was great", "awful plot and a boring actor", "", "it was the film"]
    want, got = classifier.predict(texts), runtime.predict(texts)
    assert got[2] is None and want[2] is None
    assert [g["label"] for g in got if g] == [w.label for w in want if w]
    for g, w in zip(got, want):
        if w is not None:
            assert np.allclose([g["probs"][k] for k in w.probs], list(w.probs.values()), atol=1e-5)


BLOCK_TORCH = """
import json, sys
sys.modules["torch"] = None  # `import torch` now raises ImportError
from s2s.onnx_runtime import load
model, texts = load(sys.argv[1]), json.loads(sys.argv[2])
found = model.translate(texts, beam_size=3) if hasattr(model, "translate") else model.tag(texts) if hasattr(model, "tag") else model.predict(texts)
print(json.dumps(found))
assert "torch" not in [m.split(".")[0] for m in sys.modules if sys.modules[m] is not None]
"""


def without_torch(folder: Path, texts: list[str]):
    result = subprocess.run([sys.executable, "-c", BLOCK_TORCH, str(folder), json.dumps(texts)], capture_output=True, text=True,
                            cwd=ROOT, timeout=120)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_the_runtime_needs_no_torch(spread_run, exported, classification_run, tagging_run, tmp_path):  # noqa: F811
    assert without_torch(exported, SOURCES) == Translator.load(spread_run, device="cpu").translate(SOURCES, beam_size=3)
    for run, texts in ((classification_run, ["the movie was great", "awful plot"]), (tagging_run, ["Alan Shearer visited Paris ."])):
        out = tmp_path / run.parent.name
        assert main(["-q", "export", "--model", str(run), "--format", "onnx", "--out", str(out)]) == 0
        model = load(out)  # the same runtime with torch importable: the subprocess must give what it gives
        assert without_torch(out, texts) == json.loads(json.dumps(model.tag(texts) if hasattr(model, "tag") else model.predict(texts)))


def test_onnx_tagger_finds_the_torch_paths_entities(tagging_run, tmp_path):  # noqa: F811
    from s2s.tasks.tagging import Tagger

    assert main(["-q", "export", "--model", str(tagging_run), "--format", "onnx", "--out", str(tmp_path / "tag")]) == 0
    runtime, tagger = load(tmp_path / "tag"), Tagger.load(tagging_run, device="cpu")
    texts = ["Alan Shearer visited Paris .", "the EU said on Monday", "", "Ann Lee left .", "Peter visited New York ."]
    want = [json.loads(r.to_json()) for r in tagger.tag(texts)]
    got = runtime.tag(texts)
    assert [[(e["text"], e["type"], e["start"], e["end"], e["char_start"]) for e in r["entities"]] for r in got] == \
        [[(e["text"], e["type"], e["start"], e["end"], e["char_start"]) for e in r["entities"]] for r in want]
    assert any(r["entities"] for r in want)
    assert [e["score"] for r in got for e in r["entities"]] == pytest.approx([e["score"] for r in want for e in r["entities"]], abs=2e-4)
