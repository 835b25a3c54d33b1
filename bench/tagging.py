"""Tagging speed: sentences/s of the NER tagger on the CoNLL-2003 test set.

    python bench/tagging.py [--model RUN_DIR [RUN_DIR ...]] [--data ../shared/data/conll2003] [--batch-size 64] [--threads 2] [--workers 0]

With --model, times that trained tagger; without it, an untrained tagger of configs/conll2003.yaml's
size with the vocabulary of train.txt (speed does not depend on the weights). Times
`Tagger.tag_tokens` (batching, char-CNN, Bi-LSTM, CRF Viterbi and per-entity marginal scores, span
extraction) over the whole test file, after one warm-up pass; prints the median of --repeats passes
as a line and as JSON.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import time
from pathlib import Path

import torch

from s2s import config as config_lib
from s2s.data.conll import read_conll
from s2s.device import cpu_workers
from s2s.tasks.tagging import Tagger, TagVocab, build_model

ROOT = Path(__file__).resolve().parents[1]


def untrained_tagger(data: Path) -> Tagger:
    config = config_lib.load(ROOT / "configs" / "conll2003.yaml", [])
    train = read_conll(data / "train.txt", config.data.scheme)
    vocab = TagVocab.build(train, config.data.scheme, config.tagging.tag_scheme, config.vocab.lowercase, config.vocab.min_freq)
    model = build_model(config, len(vocab.words), len(vocab.tags), len(vocab.chars), vocab.tags)
    return Tagger(model.eval(), vocab, config.decode, torch.device("cpu"), config.data.scheme, config.tagging.context_tokens)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", nargs="+", metavar="RUN_DIR",
                        help="a trained tagging run, or several for an ensemble (default: an untrained model of the default size)")
    parser.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "conll2003"), help="folder with train.txt and test.txt")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workers", type=int, default=0, help="batches tagged at once, each on threads/workers threads "
                        "(default 0: one per thread, as `s2s tag` does on a CPU)")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    data = Path(args.data)
    tagger = Tagger.load(args.model, device="cpu") if args.model else untrained_tagger(data)
    tagger.decode = dataclasses.replace(tagger.decode, workers=args.workers)
    test = read_conll(data / "test.txt", tagger.file_scheme)
    sentences, docs = [s.tokens for s in test], [s.doc for s in test]
    tokens = sum(len(s) for s in sentences)
    tagger.tag_tokens(sentences, args.batch_size, docs=docs)  # warm-up
    times = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        tagger.tag_tokens(sentences, args.batch_size, docs=docs)
        times.append(time.perf_counter() - start)
    seconds = statistics.median(times)
    result = {
        "model": " ".join(args.model) if args.model else "untrained (configs/conll2003.yaml)",
        "sentences": len(sentences),
        "tokens": tokens,
        "batch_size": args.batch_size,
        "threads": args.threads,
        "workers": cpu_workers(torch.device("cpu"), args.workers),
        "seconds": round(seconds, 3),
        "sentences_per_s": round(len(sentences) / seconds),
        "tokens_per_s": round(tokens / seconds),
    }
    print(f"tagging {len(sentences)} sentences ({tokens} tokens), batch {args.batch_size}, {args.threads} threads: "
          f"{result['sentences_per_s']:,} sentences/s, {result['tokens_per_s']:,} tokens/s (median of {args.repeats})")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
