"""Classification throughput: reviews per second at batch 64 on reviews of median length.

    python bench/classify.py [--model RUN_DIR] [--data ../shared/data/imdb/test.jsonl] [--batches 20] [--threads 1]

With --model, a trained run classifies real reviews; without it, the default config
(configs/imdb.yaml) is built with random weights and a vocabulary of its size (what matters for
speed is the shape, not the weights). With --data, the reviews are those of the file whose length
(after tokenising and truncating, as `s2s classify` does) is within 5% of the file's median;
without it, made-up reviews of --length tokens. The clock covers Classifier.predict on raw text:
tokenising, batching, the forward pass and the softmax.
"""
from __future__ import annotations

import argparse
import random
import statistics
import time
from pathlib import Path

import torch
from report import report

from s2s import config as config_lib
from s2s.data.labelled import format_of, read_labelled
from s2s.data.vocab import PAD, UNK
from s2s.tasks.classification import Classifier, LabelVocab, build_model

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", metavar="RUN_DIR", help="a trained classification run (default: random weights)")
    parser.add_argument("--config", default=str(ROOT / "configs" / "imdb.yaml"), help="config of the random-weight model")
    parser.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "imdb" / "test.jsonl"),
                        help="labelled reviews to draw median-length ones from (skipped when missing)")
    parser.add_argument("--length", type=int, default=201, help="tokens per made-up review when --data is missing")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--batches", type=int, default=20, help="timed batches")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json-only", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(1234)
    rng = random.Random(1234)

    if args.model:
        classifier = Classifier.load(args.model, device="cpu")
    else:
        config = config_lib.load(args.config)
        words = [PAD, UNK] + [f"w{i}" for i in range(config.vocab.max_words or 30_000)]
        vocab = LabelVocab(words, ["0", "1"])
        classifier = Classifier(build_model(config, len(words), 2).eval(), vocab, config, torch.device("cpu"))

    wanted = args.batches * args.batch_size
    if args.data and Path(args.data).is_file():
        texts = [e.text for e in read_labelled(args.data, format_of(args.data), classifier.text_field, classifier.label_field)]
        lengths = [len(classifier.encode(t)) for t in texts]
        median = int(statistics.median(lengths))
        texts = [t for t, n in zip(texts, lengths) if abs(n - median) <= 0.05 * median]
        texts = (texts * (wanted // max(len(texts), 1) + 1))[:wanted]
        source = args.data
    else:
        median = args.length
        words = classifier.vocab.words[2:]
        texts = [" ".join(rng.choice(words) for _ in range(median)) for _ in range(wanted)]
        source = f"made-up reviews of {median} tokens"

    classifier.predict(texts[: args.batch_size], batch_size=args.batch_size)  # warm-up
    start = time.perf_counter()
    classifier.predict(texts, batch_size=args.batch_size)
    seconds = time.perf_counter() - start
    results = {
        "reviews_per_s": round(len(texts) / seconds, 1),
        "tokens_per_review": median,
        "batch_size": args.batch_size,
        "reviews": len(texts),
        "model": args.model or f"{args.config} (random weights)",
        "data": source,
        "threads": args.threads,
        "torch": torch.__version__,
    }
    report(results, args.json_only)


if __name__ == "__main__":
    main()
