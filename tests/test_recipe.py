"""The smoke recipe end to end on a slice of ../shared/data/multi30k (what catches a broken pipeline)."""
from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MULTI30K = ROOT.parent / "shared" / "data" / "multi30k"

needs_multi30k = pytest.mark.skipif(
    not (MULTI30K / "train.de").is_file(), reason=f"Multi30k not found at {MULTI30K} (the shared data folder)"
)


@needs_multi30k
def test_translate_smoke_recipe_end_to_end(tmp_path):
    out = tmp_path / "run"
    result = subprocess.run(
        ["bash", str(ROOT / "recipes" / "translate.sh"), "--smoke", "--data", str(MULTI30K), "--out", str(out)],
        capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    bleu_lines = [line for line in result.stdout.splitlines() if line.startswith("BLEU|")]
    assert bleu_lines and "tok:13a" in bleu_lines[0] and "case:mixed" in bleu_lines[0]
    assert any(line.startswith("chrF2|") for line in result.stdout.splitlines())
    # Hypotheses (detokenized) sit next to the raw subword output, one line per test sentence.
    test_lines = (MULTI30K / "test2016.de").read_text(encoding="utf-8").count("\n")
    assert len((out / "test.hyp").read_text(encoding="utf-8").splitlines()) == test_lines
    assert len((out / "test.raw").read_text(encoding="utf-8").splitlines()) == test_lines
    for name in ("config.yaml", "best.pt", "last.pt", "spm.src.model", "spm.tgt.model"):
        assert (out / name).is_file(), name
    events = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert any("dev_bleu" in e for e in events) and any("train_loss" in e for e in events)


def test_recipe_rejects_unknown_option():
    result = subprocess.run(["bash", str(ROOT / "recipes" / "translate.sh"), "--nope"], capture_output=True, text=True)
    assert result.returncode == 2
    assert "unknown option '--nope'" in result.stderr


def test_recipe_without_data_fails_clearly_when_the_hub_is_unreachable(tmp_path, monkeypatch):
    from s2s.data import parallel as data

    if data._hub_reachable(timeout=2):
        pytest.skip("the Hugging Face hub is reachable here; this checks the offline message")
    result = subprocess.run(
        ["bash", str(ROOT / "recipes" / "translate.sh"), "--smoke", "--out", str(tmp_path / "run")],
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 2
    assert "cannot reach the Hugging Face hub" in result.stderr
    assert "Traceback" not in result.stderr
