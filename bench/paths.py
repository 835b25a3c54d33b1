"""The per-CPU decoding choices, each timed on this CPU and checked to give the same translations (issue 23).

    python bench/paths.py [--weights W.pt] [--threads 2] [--rounds 2] [--sentences 0] [--fixed-length 14]

Decodes the benchmark's test sentences (../shared/bench, as bench/seq2seq.py) with the weights of a
300-step training run (made first with `bench/seq2seq.py --train-run` unless --weights is given), greedy and
beam 5, once for each path:

    default     what s2s picks on this CPU
    mkl         fp32 products on MKL's sgemm (nn.Linear, torch.lstm_cell) and torch.tanh
    onednn      fp32 products on oneDNN packed weights (s2s.nn.fast: inference_linear, inference_lstm_cell)
                and tanh as 2σ(2x) − 1 (inference_tanh_)
    chunk32/128 beam search's top-k over vocabulary chunks of 32 / 128 tokens (default 64)
    workers1    one batch at a time on all threads (default: one batch per thread)

and prints, per path, sentences/s against the default (medians of --rounds, the paths alternating) and how
many sentences' translations differ from the mkl path's free-running ones. Every path must give the same
translations: outputs count, speed decides the default. Under
`ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 MKL_ENABLE_INSTRUCTIONS=AVX2` it emulates an AVX2 CPU.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

import s2s.search
from s2s.device import cpu_description, cpu_workers, probe_isas
from s2s.nn import fast
from seq2seq import ROOT, decode_timed, ensure_data, setup

PATHS = ("default", "mkl", "onednn", "chunk32", "chunk128", "workers1")


@contextlib.contextmanager
def path_settings(path: str):
    """The module settings of one path, restored afterwards."""
    saved = fast.PACKED_FP32, s2s.search.VOCAB_CHUNK
    fast.PACKED_FP32 = {"mkl": False, "onednn": True}.get(path)
    s2s.search.VOCAB_CHUNK = {"chunk32": 32, "chunk128": 128}.get(path, 64)
    try:
        yield
    finally:
        fast.PACKED_FP32, s2s.search.VOCAB_CHUNK = saved


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weights", help="a state dict of the benchmark's model (default: train one, 300 steps)")
    parser.add_argument("--data", default=str(ROOT / "bench-data"))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=2, help="timed rounds over all paths; the table shows medians (0: compare outputs only)")
    parser.add_argument("--sentences", type=int, default=0, help="decode only the N shortest test sentences (0 = all)")
    parser.add_argument("--fixed-length", type=int, default=14, help="timed decoding runs exactly L steps a sentence")
    parser.add_argument("--paths", default=",".join(PATHS), help=f"comma-separated subset of {', '.join(PATHS)}")
    args = parser.parse_args()
    paths = args.paths.split(",")
    if unknown := [p for p in paths if p not in PATHS]:
        parser.error(f"unknown path {unknown[0]!r}; valid: {', '.join(PATHS)}")
    isas = probe_isas()
    cpu = cpu_description(isas["oneDNN"], isas["MKL"])

    with tempfile.TemporaryDirectory() as tmp:
        weights = args.weights
        if not weights:
            weights = str(Path(tmp) / "model.pt")
            ensure_data(args.data)
            subprocess.run([sys.executable, str(ROOT / "bench" / "seq2seq.py"), "--train-run", "--data", args.data,
                            "--threads", str(args.threads), "--weights", weights], check=True, stdout=subprocess.DEVNULL)
        opts = argparse.Namespace(threads=args.threads, data=args.data, device="cpu", decode_batch_size=64,
                                  no_in_flight=False, amp=False)
        _, _, test, model = setup(opts)
        model.load_state_dict(torch.load(weights, weights_only=True))
        model.eval()
    order = sorted(range(len(test)), key=lambda i: len(test[i]))[: args.sentences or None]
    threads = torch.get_num_threads()

    def run(path: str, beam: int, fixed: int) -> tuple[list[list[int]], float]:
        workers = 1 if path == "workers1" else cpu_workers(torch.device("cpu"), 0)
        with path_settings(path):
            return decode_timed(model, test, order, beam, opts, workers, fixed)

    # Outputs: every path's free-running translations against the mkl path's.
    differ = {}
    for beam in (1, 5):
        reference = run("mkl", beam, 0)[0]
        for path in paths:
            hyps = reference if path == "mkl" else run(path, beam, 0)[0]
            differ[(path, beam)] = sum(a != b for a, b in zip(hyps, reference))
    # Speed: exactly --fixed-length steps a sentence, the paths alternating within each round.
    seconds: dict[tuple[str, int], list[float]] = {(p, b): [] for p in paths for b in (1, 5)}
    for r in range(args.rounds):
        for path in paths if r % 2 == 0 else paths[::-1]:
            for beam in (1, 5):
                seconds[(path, beam)].append(run(path, beam, args.fixed_length)[1])
    rows = []
    for path in paths:
        row = {"path": path}
        for beam, name in ((1, "greedy"), (5, "beam5")):
            timed = seconds[(path, beam)]
            row[f"{name}_sent_s"] = round(len(order) / statistics.median(timed), 1) if timed else 0.0
            row[f"{name}_differ"] = differ[(path, beam)]
        rows.append(row)
    base = rows[0] if paths[0] == "default" else None  # the row the others are compared with

    print(cpu)
    print(f"threads {threads}, {len(order)} sentences, timed at exactly {args.fixed_length} steps, medians of {args.rounds} rounds;"
          f" fp32 default path here: {'onednn' if fast.packed_fp32_default() else 'mkl'}")
    print(f"{'path':<10}{'greedy sent/s':>14}{'vs default':>11}{'differ':>8}{'beam5 sent/s':>14}{'vs default':>11}{'differ':>8}")
    for row in rows:
        rel = lambda k: f"{row[k] / base[k]:.3f}" if base and base[k] else "-"  # noqa: E731
        print(f"{row['path']:<10}{row['greedy_sent_s']:>14}{rel('greedy_sent_s'):>11}{row['greedy_differ']:>8}"
              f"{row['beam5_sent_s']:>14}{rel('beam5_sent_s'):>11}{row['beam5_differ']:>8}")
    print(json.dumps({"cpu": cpu, "threads": threads, "sentences": len(order), "fixed_length": args.fixed_length, "rows": rows}))


if __name__ == "__main__":
    main()
