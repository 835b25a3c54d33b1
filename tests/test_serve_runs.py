"""Tiny trained runs of each served task, built once per session for the serve, export and ONNX tests
(tests/test_serve*.py, test_export.py, test_onnx.py import these fixtures). Each trains in a second or two."""
from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import pytest
import torch
from conftest import template_sentence

from s2s import checkpoint
from s2s import config as config_lib

WORDS = {"pos": ["great", "superb", "loved"], "neg": ["awful", "boring", "hated"]}
FILLER = ["the", "movie", "plot", "actor", "was", "and", "a", "film", "it", "."]


def _train(raw: dict, out: Path) -> Path:
    from s2s.train import train

    train(config_lib.from_dict(raw), out)
    return out


@pytest.fixture(scope="session")
def tagging_run(tmp_path_factory) -> Path:
    """A tiny tagger (IOB1 CoNLL of template sentences, CRF, char CNN, same-word pooling over runs of sentences);
    tests must not modify it."""
    root = tmp_path_factory.mktemp("serve-ner")
    for split, n, seed in (("train", 40, 0), ("valid", 10, 1), ("test", 10, 2)):
        rng = random.Random(seed)
        lines = ["-DOCSTART- -X- -X- O", ""]
        for _ in range(n):
            lines += [f"{w} NN O {t}" for w, t in template_sentence(rng)] + [""]
        (root / f"{split}.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return _train({
        "task": "tagging",
        "data": {"format": "conll", "dir": str(root), "scheme": "iob1", "train": "train", "dev": "valid", "test": "test"},
        "encoder": {"emb_dim": 8, "hidden_size": 8, "dropout": 0.0},
        "tagging": {"char_emb_dim": 4, "char_filters": 4, "case_dim": 2, "same_word_pooling": True, "context_tokens": 12},
        "train": {"epochs": 40, "max_tokens": 60, "lr": 0.02, "log_every": 1000, "threads": 1, "early_stopping": 0, "device": "cpu"},
    }, root / "run")


@pytest.fixture(scope="session")
def classification_run(tmp_path_factory) -> Path:
    """A tiny sentiment classifier (pos/neg made-up reviews); tests must not modify it."""
    root = tmp_path_factory.mktemp("serve-reviews")
    for split, n, seed in (("train", 40, 0), ("dev", 10, 1)):
        rng = random.Random(seed)
        rows = []
        for i in range(n):
            label = ["pos", "neg"][i % 2]
            words = [rng.choice(FILLER) for _ in range(rng.randint(2, 6))]
            words.insert(rng.randrange(len(words) + 1), rng.choice(WORDS[label]))
            rows.append({"text": " ".join(words), "label": label})
        (root / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return _train({
        "task": "classification",
        "data": {"format": "jsonl", "dir": str(root), "train": "train", "dev": "dev", "max_text_tokens": 12},
        "vocab": {"min_freq": 1},
        "encoder": {"emb_dim": 8, "hidden_size": 8, "dropout": 0.0},
        "classification": {"pooling": "max+mean", "attn_size": 8},
        "train": {"epochs": 20, "max_tokens": 60, "lr": 0.03, "log_every": 1000, "threads": 1, "early_stopping": 0,
                  "label_smoothing": 0.0, "device": "cpu", "seed": 3},
        "decode": {"batch_size": 8},
    }, root / "run")


@pytest.fixture(scope="session")
def spread_run(trained_run, tmp_path_factory) -> Path:
    """The tiny translation run with its weights redrawn from N(0, 0.5): outputs of many lengths, EOS at many
    steps, close beam scores (the trained run's 12 updates mostly repeat one piece)."""
    run = tmp_path_factory.mktemp("onnx") / "run"
    shutil.copytree(trained_run, run)
    payload = checkpoint.load(run / "best.pt")
    g = torch.Generator().manual_seed(0)
    payload["model"] = {k: torch.randn(v.shape, generator=g) * 0.5 if v.is_floating_point() else v for k, v in payload["model"].items()}
    checkpoint.save(payload, run / "best.pt")
    return run


@pytest.fixture(scope="session")
def forecasting_run(tmp_path_factory) -> Path:
    """A tiny forecaster of a noisy sine (2 variables, look-back 12, horizon 4); tests must not modify it."""
    import math

    root = tmp_path_factory.mktemp("serve-sine")
    rows = ["date,sin,OT"] + [f"2020-01-{1 + i // 24:02d} {i % 24:02d}:00:00,{math.sin(2 * math.pi * i / 24):.4f},{0.01 * i:.4f}"
                              for i in range(200)]
    (root / "sine.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    return _train({
        "task": "forecasting",
        "data": {"dir": str(root), "file": "sine.csv", "train_rows": 140, "dev_rows": 30, "test_rows": 30},
        "encoder": {"emb_dim": 8, "hidden_size": 8, "dropout": 0.0},
        "forecasting": {"seq_len": 12, "horizon": 4, "segment": 4},
        "train": {"epochs": 1, "max_tokens": 32, "lr": 0.01, "threads": 1, "log_every": 50, "early_stopping": 0, "device": "cpu"},
    }, root / "run")


def test_the_tiny_runs_have_their_best_checkpoints(tagging_run, classification_run, trained_run):
    for run in (tagging_run, classification_run, trained_run):
        assert (run / "best.pt").is_file()
