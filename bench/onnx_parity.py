"""Parity and speed of the ONNX runtime path (s2s.onnx_runtime) against the torch path of the same run.

    python bench/onnx_parity.py --translation runs/m30k --classification runs/imdb --threads 1

Translation: Multi30k test2016 (--src/--ref), greedy (the number of identical translations) and beam (sacreBLEU of
both paths); classification: the IMDB test set (--imdb; identical labels, the largest probability difference); tagging: CoNLL-2003
test (--conll; sentences with identical entities, entity F1 of both paths).
Each run is exported to ONNX under --work first.
(Not named bench/onnx.py: a script's folder comes first on sys.path, and that name would hide the onnx package.) Times are decoding only (models loaded and warmed up), on
--threads threads for torch and onnxruntime alike. Prints one JSON object per measurement.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"


CPU = {}  # the CPU seconds of the last call of each function timed


def timed(fn, *args, **kwargs):
    """fn's result and wall seconds; its CPU seconds (this process, all threads) go to CPU[fn.__qualname__]. On a
    shared machine CPU time is the fairer comparison: wall time also counts the other processes' turns."""
    start, cpu = time.perf_counter(), time.process_time()
    out = fn(*args, **kwargs)
    CPU[fn.__qualname__] = time.process_time() - cpu
    return out, time.perf_counter() - start


def cpu_of(fn) -> float:
    return round(CPU[fn.__qualname__], 2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--translation", help="a translation run")
    parser.add_argument("--classification", help="a classification run")
    parser.add_argument("--tagging", help="a tagging run")
    parser.add_argument("--conll", default=str(DATA / "conll2003/test.txt"))
    parser.add_argument("--src", default=str(DATA / "multi30k/test2016.de"))
    parser.add_argument("--ref", default=str(DATA / "multi30k/test2016.en"))
    parser.add_argument("--imdb", default=str(DATA / "imdb/test.jsonl"))
    parser.add_argument("--limit", type=int, default=0, help="use the first N examples of each test set (default: all)")
    parser.add_argument("--beam-size", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--work", default="/tmp/s2s-bench-onnx", help="where the exports go")
    args = parser.parse_args()

    import torch

    from s2s.export import export
    from s2s.metrics import bleu_chrf
    from s2s.onnx_runtime import load

    torch.set_num_threads(args.threads)
    head = {"machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs", "threads": args.threads,
            "time_utc": time.strftime("%Y-%m-%d %H:%M", time.gmtime())}
    if args.translation:
        from s2s.tasks.translation import Translator

        out = Path(args.work) / "translation"
        export(args.translation, "onnx", out)
        translator, runtime = Translator.load(args.translation, device="cpu"), load(out, threads=args.threads)
        sources = Path(args.src).read_text(encoding="utf-8").splitlines()
        refs = Path(args.ref).read_text(encoding="utf-8").splitlines()
        if args.limit:
            sources, refs = sources[: args.limit], refs[: args.limit]
        translator.translate(sources[:32], beam_size=args.beam_size)
        runtime.translate(sources[:32], beam_size=args.beam_size)
        for beam in (1, args.beam_size):
            want, torch_s = timed(translator.translate, sources, beam_size=beam)
            got, onnx_s = timed(runtime.translate, sources, beam_size=beam)
            row = head | {"task": "translation", "run": args.translation, "sentences": len(sources), "beam_size": beam,
                          "identical": sum(a == b for a, b in zip(want, got)), "bleu_torch": bleu_chrf(want, refs)["bleu"],
                          "bleu_onnx": bleu_chrf(got, refs)["bleu"], "torch_s": round(torch_s, 2), "onnx_s": round(onnx_s, 2),
                          "torch_cpu_s": cpu_of(translator.translate), "onnx_cpu_s": cpu_of(runtime.translate),
                          "torch_sentences_per_s": round(len(sources) / torch_s, 1), "onnx_sentences_per_s": round(len(sources) / onnx_s, 1)}
            print(json.dumps(row), flush=True)
    if args.classification:
        from s2s.data.labelled import read_labelled
        from s2s.tasks.classification import Classifier

        out = Path(args.work) / "classification"
        export(args.classification, "onnx", out)
        classifier, runtime = Classifier.load(args.classification, device="cpu"), load(out, threads=args.threads)
        texts = [e.text for e in read_labelled(args.imdb, "jsonl", classifier.text_field, classifier.label_field)]
        if args.limit:
            texts = texts[: args.limit]
        classifier.predict(texts[:64])
        runtime.predict(texts[:64])
        want, torch_s = timed(classifier.predict, texts)
        got, onnx_s = timed(runtime.predict, texts)
        diff = max((abs(g["prob"] - w.prob) for g, w in zip(got, want) if w is not None), default=0.0)
        row = head | {"task": "classification", "run": args.classification, "texts": len(texts),
                      "identical_labels": sum((g and g["label"]) == (w and w.label) for g, w in zip(got, want)),
                      "max_prob_diff": diff, "torch_s": round(torch_s, 2), "onnx_s": round(onnx_s, 2),
                      "torch_cpu_s": cpu_of(classifier.predict), "onnx_cpu_s": cpu_of(runtime.predict),
                      "torch_texts_per_s": round(len(texts) / torch_s, 1), "onnx_texts_per_s": round(len(texts) / onnx_s, 1)}
        print(json.dumps(row), flush=True)
    if args.tagging:
        from s2s.data.conll import read_conll
        from s2s.data.schemes import spans
        from s2s.metrics import span_scores
        from s2s.tasks.tagging import Tagger

        out = Path(args.work) / "tagging"
        export(args.tagging, "onnx", out)
        tagger, runtime = Tagger.load(args.tagging, device="cpu"), load(out, threads=args.threads)
        gold = read_conll(args.conll, tagger.file_scheme)
        if args.limit:
            gold = gold[: args.limit]
        tokens, docs = [g.tokens for g in gold], [g.doc for g in gold]
        tagger.tag_tokens(tokens[:64], docs=docs[:64])
        runtime.tag_tokens(tokens[:64], docs[:64])
        want, torch_s = timed(tagger.tag_tokens, tokens, docs=docs)
        got, onnx_s = timed(runtime.tag_tokens, tokens, docs)
        want_spans, got_spans = [[s for s, _ in w] for w in want], [[s for s, _ in g] for g in got]
        gold_spans = [spans(g.tags, tagger.file_scheme) for g in gold]
        row = head | {"task": "tagging", "run": args.tagging, "sentences": len(gold),
                      "identical_entities": sum(a == b for a, b in zip(want_spans, got_spans)),
                      "f1_torch": round(span_scores(gold_spans, want_spans)["micro"]["f1"], 2),
                      "f1_onnx": round(span_scores(gold_spans, got_spans)["micro"]["f1"], 2),
                      "torch_s": round(torch_s, 2), "onnx_s": round(onnx_s, 2),
                      "torch_cpu_s": cpu_of(tagger.tag_tokens), "onnx_cpu_s": cpu_of(runtime.tag_tokens),
                      "torch_sentences_per_s": round(len(gold) / torch_s, 1), "onnx_sentences_per_s": round(len(gold) / onnx_s, 1)}
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
