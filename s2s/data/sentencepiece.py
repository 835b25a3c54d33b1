"""SentencePiece subword models, trained by the pipeline on the training text.

SentencePiece disables padding by default (pad_id = -1); we set every special id
explicitly so that PAD is 0 everywhere in s2s.
"""
from __future__ import annotations

import io
import logging
import random
from pathlib import Path

import sentencepiece as spm

from s2s.errors import S2SError

log = logging.getLogger(__name__)

PAD, UNK, BOS, EOS = 0, 1, 2, 3


def train_sentencepiece(
    lines: list[str], path: Path, vocab_size: int, model_type: str = "unigram", character_coverage: float = 1.0
) -> spm.SentencePieceProcessor:
    """Train a model on `lines`, write it to `path` (a .model file) and return it."""
    lines = [line for line in lines if line.strip()]
    if not lines:
        raise S2SError(f"{path}: no text to train a SentencePiece model on")
    model = io.BytesIO()
    try:
        spm.SentencePieceTrainer.train(
            sentence_iterator=iter(lines),
            model_writer=model,
            vocab_size=vocab_size,
            model_type=model_type,
            character_coverage=character_coverage,
            pad_id=PAD,
            unk_id=UNK,
            bos_id=BOS,
            eos_id=EOS,
            hard_vocab_limit=False,  # tiny corpora get a smaller vocabulary instead of an error
            input_sentence_size=0,  # all: the lines are a bounded sample already (Sample)
            num_threads=2,
            minloglevel=2,
        )
    except RuntimeError as e:
        raise S2SError(f"{path}: SentencePiece training failed ({e})") from None
    path.write_bytes(model.getvalue())
    processor = spm.SentencePieceProcessor(model_proto=model.getvalue())
    log.info("trained %s: %d pieces", path.name, processor.get_piece_size())
    return processor


class Sample:
    """A uniform random sample of at most `size` lines of a stream (reservoir sampling, Vitter's algorithm R):
    SentencePiece then trains on a bounded sample of a corpus of any size. While the stream is no longer
    than `size`, the sample is all of it, in its order."""

    def __init__(self, size: int, seed: int):
        self.size, self.rng, self.seen, self.lines = size, random.Random(seed), 0, []

    def add(self, lines: list[str]) -> None:
        room = max(self.size - len(self.lines), 0)
        self.lines += lines[:room]
        self.seen += min(room, len(lines))
        for line in lines[room:]:
            self.seen += 1
            j = self.rng.randrange(self.seen)
            if j < self.size:
                self.lines[j] = line


def load_sentencepiece(path: Path) -> spm.SentencePieceProcessor:
    if not path.is_file():
        raise S2SError(f"{path}: no such SentencePiece model")
    try:
        return spm.SentencePieceProcessor(model_file=str(path))
    except (RuntimeError, OSError) as e:
        raise S2SError(f"{path}: not a valid SentencePiece model ({e})") from None


def model_paths(run_dir: Path, joint: bool) -> tuple[Path, Path]:
    """Where a run keeps its (source, target) SentencePiece models."""
    if joint:
        return run_dir / "spm.joint.model", run_dir / "spm.joint.model"
    return run_dir / "spm.src.model", run_dir / "spm.tgt.model"
