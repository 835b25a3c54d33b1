"""The smoke recipes end to end on slices of ../shared/data (what catches a broken pipeline)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import run_recipe

ROOT = Path(__file__).resolve().parents[1]
MULTI30K = ROOT.parent / "shared" / "data" / "multi30k"

needs_multi30k = pytest.mark.skipif(
    not (MULTI30K / "train.de").is_file(), reason=f"Multi30k not found at {MULTI30K} (the shared data folder)"
)


@needs_multi30k
def test_translate_smoke_recipe_end_to_end(tmp_path):
    out = tmp_path / "run"
    result = run_recipe("translate.sh", "--smoke", "--data", str(MULTI30K), "--out", str(out), timeout=300)
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
    result = run_recipe("translate.sh", "--nope")
    assert result.returncode == 2
    assert "unknown option '--nope'" in result.stderr


def test_recipe_without_data_fails_clearly_when_the_hub_is_unreachable(tmp_path, monkeypatch):
    from s2s.data import parallel as data

    if data._hub_reachable(timeout=2):
        pytest.skip("the Hugging Face hub is reachable here; this checks the offline message")
    result = run_recipe("translate.sh", "--smoke", "--out", str(tmp_path / "run"), timeout=120)
    assert result.returncode == 2
    assert "cannot reach the Hugging Face hub" in result.stderr
    assert "Traceback" not in result.stderr


ETT = ROOT.parent / "shared" / "data" / "ett"


@pytest.mark.skipif(not (ETT / "ETTh1.csv").is_file(), reason=f"ETTh1 not found at {ETT} (the shared data folder)")
def test_forecast_smoke_recipe_prints_one_table(tmp_path):
    out = tmp_path / "runs"
    result = run_recipe("forecast.sh", "--smoke", "--horizon", "24", "--data", str(ETT), "--out", str(out), timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    lines = result.stdout.splitlines()
    header = next(i for i, line in enumerate(lines) if line.split() == ["horizon", "MSE", "MAE", "repeat-last", "MSE", "linear", "MSE"])
    assert len(lines) == header + 2  # the table ends the output: one row per horizon
    horizon, mse, mae, repeat_last, linear = lines[header + 1].split()
    scores = json.loads((out / "h24" / "test-scores.json").read_text(encoding="utf-8"))
    assert int(horizon) == 24 == scores["horizon"] and scores["windows"] == 200 - 24 + 1
    assert float(mse) == pytest.approx(scores["mse"], abs=1e-4) and float(linear) == pytest.approx(scores["linear"]["mse"], abs=1e-4)
    assert float(mse) < float(repeat_last) and (out / "h24" / "last.pt").is_file()


@pytest.mark.parametrize("args, message", [
    (["--horizon", "ninety"], "error: --horizon must be a positive whole number, got 'ninety'"),
    (["--nope"], "error: unknown option '--nope' (try --help)"),
])
def test_forecast_recipe_rejects_bad_options(args, message):
    result = run_recipe("forecast.sh", *args)
    assert result.returncode == 2 and result.stderr == message + "\n" and result.stdout == ""


def test_forecast_recipe_help_prints_its_header():
    result = run_recipe("forecast.sh", "--help")
    assert result.returncode == 0 and result.stdout.startswith("ETTh1 forecasting end to end")
    assert "--univariate" in result.stdout and "set -euo" not in result.stdout
