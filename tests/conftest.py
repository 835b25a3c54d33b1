"""Shared fixtures: a tiny made-up parallel corpus, a tiny translation config, a tiny random
Seq2Seq, and one tiny run directory trained once per session through the CLI."""
from __future__ import annotations

import io
import json
import os
import random
import subprocess
import zipfile
from pathlib import Path

import pytest
import torch

from s2s import config as config_lib
from s2s.tasks.translation import Seq2Seq, build_model


def pytest_configure(config):
    # Tensors here are tiny: a second intra-op thread only adds synchronisation, and on a busy
    # 2-core machine that costs 100x (measured: one beam search 4 ms with 1 thread, 0.8 s with 2).
    torch.set_num_threads(1)
    if device_under_test().type == "cuda":
        if not torch.cuda.is_available():
            raise pytest.UsageError("S2S_TEST_DEVICE=cuda, but torch sees no CUDA GPU (unset it to test on the CPU)")
        # The invariants here compare fp32 results to 1e-5; torch's default runs cuDNN's RNNs (and convs)
        # in TF32, which rounds to ~1e-3. Full fp32 everywhere, so a difference is a bug, not rounding.
        if hasattr(torch.backends, "fp32_precision"):
            torch.backends.fp32_precision = "ieee"
        else:
            torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False


def device_under_test() -> torch.device:
    """The device that tests which take the `device` fixture run on: S2S_TEST_DEVICE (cpu or cuda), cpu when unset."""
    name = os.environ.get("S2S_TEST_DEVICE", "cpu") or "cpu"
    if name not in ("cpu", "cuda"):
        raise pytest.UsageError(f"S2S_TEST_DEVICE={name!r}: valid values are cpu and cuda")
    return torch.device(name)


def pytest_report_header(config):
    return f"s2s test device: {device_under_test()} (S2S_TEST_DEVICE)"


@pytest.fixture(scope="session")
def device() -> torch.device:
    """Where the nn and search tests put their modules and tensors: cpu, or cuda with S2S_TEST_DEVICE=cuda
    (`S2S_TEST_DEVICE=cuda pytest tests/nn tests/test_search.py`, as bench/gpu.sh does). No test needs a GPU."""
    return device_under_test()

# A made-up language pair with a word-for-word mapping, so that even a few updates learn something.
LEXICON = {
    "der": "the", "hund": "dog", "katze": "cat", "sieht": "sees", "mag": "likes", "ein": "a",
    "rote": "red", "kleine": "small", "ball": "ball", "haus": "house", "mann": "man", "frau": "woman", "die": "the",
}
SUBJECTS = ["der hund", "die katze", "der mann", "die frau"]


def make_pairs(n: int, seed: int) -> list[tuple[str, str]]:
    """n (source, target) sentences of 5 or 6 words, the same n and seed giving the same pairs."""
    rng = random.Random(seed)
    verbs, objects = ["sieht", "mag"], ["ein ball", "ein haus", "ein rote ball", "ein kleine haus", "der hund"]
    pairs = []
    for _ in range(n):
        src = f"{rng.choice(SUBJECTS)} {rng.choice(verbs)} {rng.choice(objects)}"
        pairs.append((src, " ".join(LEXICON[w] for w in src.split())))
    return pairs


def write_corpus(folder: Path, sizes: dict[str, int] | None = None, src_lang: str = "de", tgt_lang: str = "en") -> Path:
    """Write {folder}/{split}.{lang} text files (format: text) and return the folder."""
    sizes = sizes or {"train": 40, "val": 6, "test": 6}
    folder.mkdir(parents=True, exist_ok=True)
    for i, (split, n) in enumerate(sizes.items()):
        pairs = make_pairs(n, seed=i)
        (folder / f"{split}.{src_lang}").write_text("".join(s + "\n" for s, _ in pairs), encoding="utf-8")
        (folder / f"{split}.{tgt_lang}").write_text("".join(t + "\n" for _, t in pairs), encoding="utf-8")
    return folder


def tiny_config_dict(data_dir: Path, **sections: dict) -> dict:
    """The tiny translation config as nested dicts (s2s 0.2 sections); `sections` update single keys, e.g. train={"max_steps": 4}."""
    raw = {
        "task": "translation",
        "data": {"format": "text", "dir": str(data_dir), "src_lang": "de", "tgt_lang": "en",
                 "train": "train", "dev": "val", "test": "test"},
        "vocab": {"src_size": 40, "tgt_size": 40},
        "encoder": {"emb_dim": 8, "hidden_size": 8, "dropout": 0.1},
        "translation": {"dec_hidden_size": 16, "attn_size": 8, "beam_size": 3, "max_len_a": 1.5, "max_len_b": 5},
        "train": {"epochs": 2, "max_tokens": 80, "lr": 0.01, "threads": 1, "log_every": 1, "device": "cpu", "seed": 7},
        "decode": {"batch_size": 4},
    }
    for name, values in sections.items():
        raw.setdefault(name, {}).update(values)
    return raw


@pytest.fixture(scope="session")
def pairs():
    """pairs(n, seed) -> n (source, target) sentences of the made-up language pair."""
    return make_pairs


@pytest.fixture(scope="session")
def corpus_writer():
    """corpus_writer(folder, sizes=None, src_lang="de", tgt_lang="en") -> folder of {split}.{lang} files."""
    return write_corpus


@pytest.fixture(scope="session")
def tiny_config():
    """tiny_config(data_dir, **sections) -> Config."""
    return lambda data_dir, **sections: config_lib.from_dict(tiny_config_dict(data_dir, **sections))


def build_tiny_seq2seq(seed: int = 0, cell: str = "lstm", tie_embeddings: bool = False, dropout: float = 0.0,
                       label_smoothing: float = 0.0, vocab: int = 20) -> Seq2Seq:
    config = config_lib.from_dict(
        {
            "encoder": {"cell": cell, "emb_dim": 8, "hidden_size": 8, "dropout": dropout},
            "translation": {"dec_hidden_size": 8, "attn_size": 8, "tie_embeddings": tie_embeddings},
            "train": {"label_smoothing": label_smoothing},
        }
    )
    torch.manual_seed(seed)
    return build_model(config, vocab, vocab)


def random_id_pairs(seed: int = 0, lengths=((4, 3), (7, 6), (1, 1), (3, 5))) -> tuple[list[list[int]], list[list[int]]]:
    """Random (source, target) id sequences of the given lengths for the tiny Seq2Seq (ids >= 4: no specials inside)."""
    g = torch.Generator().manual_seed(seed)
    src = [torch.randint(4, 20, (s,), generator=g).tolist() for s, _ in lengths]
    tgt = [torch.randint(4, 20, (t,), generator=g).tolist() for _, t in lengths]
    return src, tgt


@pytest.fixture(scope="session")
def id_pairs():
    """id_pairs(seed=0, lengths=((4, 3), (7, 6), (1, 1), (3, 5))) -> (src ids, tgt ids) for tiny_seq2seq."""
    return random_id_pairs


@pytest.fixture(scope="session")
def tiny_seq2seq():
    """tiny_seq2seq(seed=0, cell="lstm", tie_embeddings=False, dropout=0.0, label_smoothing=0.0, vocab=20) -> Seq2Seq
    with random weights (vocabulary 20 on both sides, every size 8)."""
    return build_tiny_seq2seq


def replace_pickle(path: Path, pickled: bytes) -> None:
    """Rewrite the torch zip file at `path` with `pickled` as its data.pkl: a damaged checkpoint
    whose zip layer is intact."""
    original = zipfile.ZipFile(io.BytesIO(path.read_bytes()))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as z:
        for info in original.infolist():
            z.writestr(info, pickled if info.filename.endswith("/data.pkl") else original.read(info.filename))
    path.write_bytes(out.getvalue())


@pytest.fixture(scope="session")
def damage_pickle():
    """damage_pickle(path, pickled_bytes): replace the pickle inside a torch checkpoint file."""
    return replace_pickle


@pytest.fixture(scope="session")
def corpus_dir(tmp_path_factory) -> Path:
    """One tiny corpus for the session; tests must not modify it."""
    return write_corpus(tmp_path_factory.mktemp("corpus"))


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory, corpus_dir) -> Path:
    """A run directory trained once through `s2s train` (a few updates: a working model, not a good one).
    Tests must not modify it; copy it first."""
    from s2s.cli import main

    root = tmp_path_factory.mktemp("trained")
    config_path = root / "tiny.yaml"
    config_lib.save(config_lib.from_dict(tiny_config_dict(corpus_dir)), config_path)
    run = root / "run"
    code = main(["-q", "train", str(config_path), "--out", str(run), "--set", "train.max_steps=12"])
    assert code == 0
    return run


def metrics_events(run: Path) -> list[dict]:
    """The records of a run's metrics.jsonl."""
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text(encoding="utf-8").splitlines()]


def train_losses(run: Path) -> dict[int, float]:
    """{step: training loss} of a run's metrics.jsonl."""
    return {e["step"]: e["train_loss"] for e in metrics_events(run) if "train_loss" in e}


def check_against_seqeval(gold_tags: list[list[str]], pred_tags: list[list[str]], ours: dict) -> None:
    """Span scores `ours` (s2s.metrics.span_scores of IOB2 tags) equal seqeval's strict IOB2 report."""
    from seqeval.metrics import classification_report
    from seqeval.scheme import IOB2

    ref = classification_report(gold_tags, pred_tags, mode="strict", scheme=IOB2, output_dict=True, zero_division=0)
    assert ours["micro"]["f1"] == pytest.approx(100 * ref["micro avg"]["f1-score"], abs=1e-6)
    assert ours["micro"]["precision"] == pytest.approx(100 * ref["micro avg"]["precision"], abs=1e-6)
    assert ours["micro"]["recall"] == pytest.approx(100 * ref["micro avg"]["recall"], abs=1e-6)
    for kind, v in ours["types"].items():
        if v["gold"]:
            assert v["f1"] == pytest.approx(100 * ref[kind]["f1-score"], abs=1e-6)


def run_recipe(name: str, *args: str, timeout: float | None = None) -> subprocess.CompletedProcess[str]:
    """`bash recipes/NAME ARGS...` from the repository, its output captured as text."""
    script = Path(__file__).resolve().parents[1] / "recipes" / name
    return subprocess.run(["bash", str(script), *map(str, args)], capture_output=True, text=True, timeout=timeout)


PEOPLE, PLACES, ORGS = ["Alan Shearer", "Peter", "Ann Lee"], ["Paris", "New York", "Italy"], ["EU", "Reuters"]


def template_sentence(rng: random.Random) -> list[tuple[str, str]]:
    """One IOB1-tagged (word, tag) sentence from a template: the tiny tagging data of the tests."""
    def entity(name: str, kind: str) -> list[tuple[str, str]]:
        return [(w, f"I-{kind}") for w in name.split()]

    choice = rng.randrange(3)
    if choice == 0:
        return entity(rng.choice(PEOPLE), "PER") + [("visited", "O")] + entity(rng.choice(PLACES), "LOC") + [(".", "O")]
    if choice == 1:
        return [("the", "O")] + entity(rng.choice(ORGS), "ORG") + [("said", "O"), ("on", "O"), ("Monday", "O")]
    return entity(rng.choice(PEOPLE), "PER") + [("left", "O"), (".", "O")]
