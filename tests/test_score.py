"""The translation outputs through the CLI: `s2s translate --format json` (n-best, attention, alignment) keeps one
object per input line and its first hypothesis is the plain output; `s2s score` gives the log-probabilities beam
search reported; bad combinations are one `error:` line and exit 2."""
from __future__ import annotations

import json

import pytest

from s2s.cli import main

LINES = ["der hund sieht ein haus", "", "die katze mag der hund", "die frau"]


@pytest.fixture
def src(tmp_path):
    path = tmp_path / "in.de"
    path.write_text("\n".join(LINES) + "\n", encoding="utf-8")
    return path


def _one_line_error(capsys, *needles: str) -> None:
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err, err
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])


def test_translate_json_nbest_with_attention(tmp_path, capsys, trained_run, src):
    plain, out = tmp_path / "plain.en", tmp_path / "out.jsonl"
    base = ["-q", "translate", "--model", str(trained_run), "--input", str(src), "--beam-size", "3", "--batch-size", "2"]
    assert main([*base, "--output", str(plain)]) == 0
    assert main([*base, "--output", str(out), "--format", "json", "--n-best", "3", "--attention"]) == 0
    records = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert len(records) == len(LINES) and records[1] == {"source_pieces": [], "hypotheses": []}
    texts = plain.read_text(encoding="utf-8").splitlines()
    for record, text in zip(records, texts):
        hyps = record["hypotheses"]
        if not hyps:
            continue
        assert hyps[0]["text"] == text and 1 <= len(hyps) <= 3
        assert [h["score"] for h in hyps] == sorted((h["score"] for h in hyps), reverse=True)
        for h in hyps:
            assert len(h["attention"]) == len(h["pieces"])
            assert all(abs(sum(row) - 1) < 1e-4 and len(row) == len(record["source_pieces"]) for row in h["attention"])
            pairs = [tuple(map(int, p.split("-"))) for p in h["alignment"].split()]
            assert [j for _, j in pairs] == list(range(len(h["pieces"])))
            assert all(0 <= i < len(record["source_pieces"]) for i, _ in pairs)


def test_score_agrees_with_beam_search(tmp_path, capsys, trained_run, src):
    out, raw = tmp_path / "out.jsonl", tmp_path / "out.raw"
    argv = ["-q", "translate", "--model", str(trained_run), "--input", str(src), "--output", str(out), "--raw-output", str(raw),
            "--format", "json", "--beam-size", "2"]
    assert main(argv) == 0
    records = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    scored = tmp_path / "scores.jsonl"
    assert main(["-q", "score", "--model", str(trained_run), "--src", str(src), "--tgt", str(raw), "--pieces",
                 "--output", str(scored), "--batch-size", "2"]) == 0
    scores = [json.loads(line) for line in scored.read_text(encoding="utf-8").splitlines()]
    assert len(scores) == len(LINES) and scores[1]["logprob"] is None
    for record, score in zip(records, scores):
        if record["hypotheses"]:
            best = record["hypotheses"][0]
            assert score["pieces"] == best["pieces"] and score["logprob"] == pytest.approx(best["logprob"], abs=1e-4)
            assert score["tokens"] == len(best["pieces"]) + 1
    assert main(["-q", "score", "--model", str(trained_run), "--src", str(src), "--tgt", str(raw), "--pieces",
                 "--format", "tsv"]) == 0
    rows = capsys.readouterr().out.splitlines()
    assert len(rows) == len(LINES) and float(rows[0].split("\t")[0]) == pytest.approx(scores[0]["logprob"], abs=1e-5)


@pytest.mark.parametrize("flags, needles", [
    (["--n-best", "4", "--format", "json", "--beam-size", "3"], ["--n-best 4", "use --beam-size >= 4"]),
    (["--n-best", "2"], ["--n-best", "--format json"]),
    (["--attention"], ["--attention", "--format json"]),
    (["--n-best", "0", "--format", "json"], ["--n-best must be at least 1"]),
])
def test_translate_json_flag_errors(capsys, trained_run, src, flags, needles):
    assert main(["-q", "translate", "--model", str(trained_run), "--input", str(src), *flags]) == 2
    _one_line_error(capsys, *needles)


def test_score_refuses_misaligned_files(tmp_path, capsys, trained_run, src):
    tgt = tmp_path / "tgt.en"
    tgt.write_text("the dog\n", encoding="utf-8")
    assert main(["-q", "score", "--model", str(trained_run), "--src", str(src), "--tgt", str(tgt)]) == 2
    _one_line_error(capsys, "misaligned", "4 lines", "1")
