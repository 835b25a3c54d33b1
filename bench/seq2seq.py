"""The fixed seq2seq speed benchmark of ../shared/bench/README.md, run on s2s.

    python bench/seq2seq.py [--runs 2] [--amp] [--workers 0] [--no-in-flight] [--data bench-data] [--steps 300] [--no-heads] [--json-only]
    python bench/seq2seq.py --fixed-length 14 --runs 1 --no-heads   # also length-fair decoding: exactly 14 tokens a sentence
    python bench/seq2seq.py --device cuda --batch-size 1024 --decode-batch-size 500 [--amp] --runs 1 --no-heads   # on a GPU

Synthetic Multi30k-shaped corpus (../shared/bench/make_synthetic.py, generated if missing), whitespace
tokens with the full vocabulary, emb 256, 1-layer Bi-LSTM encoder 2x256, 1-layer LSTM decoder 512,
Bahdanau attention with input feeding, dropout 0.2, untied embeddings; batches of 64 sentences
(length-bucketed), Adam 1e-3, clip 5, 2 threads. Prints training target tokens/s over steps 51-300,
peak RSS, and greedy / beam-5 decoding speed on the 1,000 test sentences (batch 64, max length 100;
beam search keeps 64 sentences in flight, starting the next as others finish, unless --no-in-flight).
Each run trains in a fresh process (so peak RSS is its own) and decodes the trained weights in another
(as `s2s translate` does), with --workers batches at once (default: one per thread); with --runs N the
table shows the median of N.
--amp trains and decodes in bf16 mixed precision (needs a CPU with native bf16, e.g. AMX; fp32 otherwise).
--device cuda runs both on the GPU (bf16 with --amp; "fp32" is torch's default there, which runs cuDNN's
RNNs in TF32), timing between CUDA synchronisations and after one untimed decoding batch; --batch-size
and --decode-batch-size set the sentences per training and decoding batch (64 each: the CPU workload),
--warmup the untimed training steps, --decode-sentences decodes only the shortest N test sentences.
The results then also give the device, the amp dtype, the batch sizes and, on a GPU, its name and peak memory.
--fixed-length L also decodes the same weights, in a third fresh process, with exactly L tokens per sentence
(EOS counted: EOS masked until step L and forced there, i.e. L decoder steps, as OpenNMT-py's
`-min_length L -max_length L`), and reports those as fixed_*, with every free-running figure's average
output length (*_tok_per_sent) next to it: a model that runs on keeps batches full, which tokens/s rewards.
Every table starts with a line naming the CPU, the vector ISA torch's kernels run (emulated under
ATEN_CPU_CAPABILITY=avx2), oneDNN's and MKL's limits (ONEDNN_MAX_CPU_ISA, MKL_ENABLE_INSTRUCTIONS: all three
variables emulate an AVX2 CPU) and the ISA each reports, and AMX / AVX-512 bf16; the JSON carries it as "cpu".
Unless --no-heads, it also times the other three heads at the same thread count with untrained models of
the default configs: tagging (bench/tagging.py, CoNLL-2003 test sentences/s), classification
(bench/classify.py, IMDB reviews/s) and forecasting (bench/forecast.py, ETTh1 test windows/s at batch 256).
"""
from __future__ import annotations

import argparse
import json
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from s2s.config import Config, EncoderConfig, TrainConfig, TranslationConfig
from s2s.data.batching import pad
from s2s.data.sentencepiece import BOS, EOS
from s2s.device import amp_dtype, autocast, cpu_description, cpu_workers, parallel_map, probe_isas, resolve_device
from s2s.search import beam_search, greedy_search, in_flight_groups
from s2s.tasks.translation import build_model, make_batch
from s2s.train import build_optimizer

ROOT = Path(__file__).resolve().parents[1]
SPECIALS = 4  # pad, unk, bos, eos come first, as in s2s.data.sentencepiece


def vocabulary(lines: list[str]) -> dict[str, int]:
    words = sorted({w for line in lines for w in line.split()})
    return {w: i + SPECIALS for i, w in enumerate(words)}


def encode(lines: list[str], vocab: dict[str, int]) -> list[list[int]]:
    return [[vocab.get(w, 1) for w in line.split()] for line in lines]


def peak_rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # Linux reports KiB


def sync(device: torch.device) -> None:
    """Wait for the GPU's queued work, so that a clock reading covers it (nothing to wait for on a CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def setup(args: argparse.Namespace):
    """The corpus (as ids), the test sources and a fresh model of the benchmark's sizes."""
    torch.set_num_threads(args.threads)
    torch.manual_seed(1234)
    random.seed(1234)
    data = Path(args.data)
    read = lambda name: (data / name).read_text(encoding="utf-8").splitlines()  # noqa: E731
    train_de, train_en, test_de = read("train.de"), read("train.en"), read("test.de")
    src_vocab, tgt_vocab = vocabulary(train_de), vocabulary(train_en)
    config = Config(
        encoder=EncoderConfig(emb_dim=256, hidden_size=256, dropout=0.2),
        translation=TranslationConfig(dec_hidden_size=512, attn_size=512, tie_embeddings=False),
        train=TrainConfig(lr=1e-3, clip=5.0, label_smoothing=0.0),
    )
    model = build_model(config, len(src_vocab) + SPECIALS, len(tgt_vocab) + SPECIALS)
    return encode(train_de, src_vocab), encode(train_en, tgt_vocab), encode(test_de, src_vocab), model


def train_run(args: argparse.Namespace) -> dict:
    """Train in this process; saves the weights to args.weights for decode_run."""
    src, tgt, _, model = setup(args)
    device = resolve_device(args.device)
    model.to(device)
    optimizer = build_optimizer(model, 1e-3)

    # Length-bucketed batches of 64 sentences (--batch-size), in shuffled order.
    size = args.batch_size
    order = sorted(range(len(src)), key=lambda i: (len(tgt[i]), len(src[i])))
    batches = [order[i : i + size] for i in range(0, len(order), size)]
    random.shuffle(batches)

    model.train()
    timed_tokens, t0 = 0, 0.0
    for step in range(1, args.steps + 1):
        idx = batches[(step - 1) % len(batches)]
        batch = make_batch([src[i] for i in idx], [tgt[i] for i in idx]).to(device)
        if step == args.warmup + 1:
            sync(device)
            t0 = time.perf_counter()
        with autocast(device, args.amp):
            out = model(batch)
        optimizer.zero_grad(set_to_none=True)
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
        optimizer.step()
        if step > args.warmup:
            timed_tokens += out.num_tokens
    sync(device)
    train_tok_s = timed_tokens / (time.perf_counter() - t0)
    torch.save(model.state_dict(), args.weights)
    results = {"train_tgt_tok_s": round(train_tok_s), "train_peak_rss_gib": round(peak_rss_gib(), 2)}
    if device.type == "cuda":
        results["train_peak_gpu_gib"] = round(torch.cuda.max_memory_allocated(device) / 2**30, 2)
        results["train_final_loss"] = round(out.loss.item(), 3)  # a NaN here is a broken mixed-precision path
    return results


def decode_timed(model, test: list[list[int]], order: list[int], beam: int, args: argparse.Namespace,
                 workers: int, fixed: int = 0) -> tuple[list[list[int]], float]:
    """Decode the sentences `order` of `test` as `s2s translate` would (greedy: batches; beam search: groups of
    them with a batch of sentences in flight), exactly `fixed` steps each or free-running to 100; returns the
    hypotheses in `order`'s order and the seconds it took."""
    device = next(model.parameters()).device
    size = args.decode_batch_size
    in_flight = 0 if args.no_in_flight else size
    batches = [order[start : start + size] for start in range(0, len(order), size)]
    units = batches if beam == 1 or not in_flight else in_flight_groups(order, size, workers)

    def decode(rows: list[int]) -> list[list[int]]:
        tokens, lengths = pad([test[i] for i in rows])
        limits = torch.full_like(lengths, fixed or 100)
        tokens, lengths = tokens.to(device), lengths.to(device)  # as Translator does (the limits stay on the CPU)
        with autocast(device, args.amp):
            if beam == 1:
                return greedy_search(model, tokens, lengths, limits, BOS, EOS, min_len=fixed)
            return beam_search(model, tokens, lengths, limits, BOS, EOS, beam, alpha=1.0, in_flight=in_flight, min_len=fixed)

    if device.type == "cuda":  # the first kernels of a fresh process load and tune: not decoding's speed
        decode(units[0][:8])
    sync(device)
    t0 = time.perf_counter()
    hyps = [h for unit in parallel_map(decode, units, workers) for h in unit]
    sync(device)
    seconds = time.perf_counter() - t0
    by_row = dict(zip([i for unit in units for i in unit], hyps))
    return [by_row[i] for i in order], seconds


def decode_run(args: argparse.Namespace) -> dict:
    """Decode the test set with the weights train_run saved, in a fresh process as `s2s translate`
    would (in the training process decoding ran ~10% slower: oneDNN's kernel cache and the heap
    are full of training's shapes)."""
    _, _, test, model = setup(args)
    device = resolve_device(args.device)
    model.load_state_dict(torch.load(args.weights, weights_only=True))
    model.to(device).eval()
    order = sorted(range(len(test)), key=lambda i: len(test[i]))
    if args.decode_sentences:
        order = order[: args.decode_sentences]
    workers = cpu_workers(device, args.workers)
    fixed = args.fixed_length  # 0: free-running, to the limit of 100
    prefix = "fixed_" if fixed else ""
    results = {}
    for name, beam in (("greedy", 1), ("beam5", 5)):
        hyps, seconds = decode_timed(model, test, order, beam, args, workers, fixed)
        generated = sum(len(h) + 1 for h in hyps)  # + EOS
        if fixed:
            assert generated == fixed * len(order), f"{name}: {generated} tokens, not {fixed} a sentence"
        results[f"{prefix}{name}_tok_s"] = round(generated / seconds)
        results[f"{prefix}{name}_sent_s"] = round(len(order) / seconds, 1)
        results[f"{prefix}{name}_tokens"] = generated
    if fixed:
        results["fixed_decode_peak_rss_gib"] = round(peak_rss_gib(), 2)
        return results
    results["decode_workers"] = workers
    results["decode_peak_rss_gib"] = round(peak_rss_gib(), 2)
    if device.type == "cuda":
        results["decode_peak_gpu_gib"] = round(torch.cuda.max_memory_allocated(device) / 2**30, 2)
    return results


# Options added for GPUs; when all keep their defaults the output is the CPU benchmark's, key for key.
NEW_OPTIONS = ("device", "batch_size", "decode_batch_size", "warmup", "decode_sentences")


def read_lines(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").splitlines()


def run_script(script: str, args: list[str]) -> dict:
    """Run a bench script in a fresh process; returns the JSON of its last output line."""
    done = subprocess.run([sys.executable, str(ROOT / "bench" / script), *args], check=True, capture_output=True, text=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def ensure_data(folder: str) -> Path:
    """The benchmark's synthetic corpus in `folder`, generated by ../shared/bench/make_synthetic.py if missing."""
    data = Path(folder)
    if not (data / "train.de").is_file():
        maker = ROOT.parent / "shared" / "bench" / "make_synthetic.py"
        subprocess.run([sys.executable, str(maker), str(data)], check=True)
    return data


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=str(ROOT / "bench-data"), help="synthetic corpus folder (made if missing)")
    parser.add_argument("--steps", type=int, default=300, help="training steps; throughput is over steps 51..N")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--runs", type=int, default=2, help="fresh-process runs; the table shows each metric's median")
    parser.add_argument("--amp", action="store_true", help="bf16 mixed precision for training and decoding")
    parser.add_argument("--workers", type=int, default=0, help="batches decoded at once, each on threads/workers "
                        "threads (default 0: one per thread, as `s2s translate` does on a CPU)")
    parser.add_argument("--no-in-flight", action="store_true", help="beam search decodes each batch of 64 to its end "
                        "(the previous releases' way) instead of starting new sentences as others finish")
    parser.add_argument("--no-heads", action="store_true", help="skip the tagging, classification and forecasting lines")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda", "auto"), help="where to train and decode (default cpu)")
    parser.add_argument("--batch-size", type=int, default=64, help="sentences per training batch")
    parser.add_argument("--decode-batch-size", type=int, default=64, help="sentences per decoding batch (beam search: in flight)")
    parser.add_argument("--warmup", type=int, default=50, help="untimed training steps before the timed ones")
    parser.add_argument("--decode-sentences", type=int, default=0, help="decode only the N shortest test sentences (0 = all)")
    parser.add_argument("--fixed-length", type=int, default=0, metavar="L", help="also decode exactly L tokens per sentence "
                        "(EOS counted; OpenNMT-py's -min_length L -max_length L) and give every free-running figure's average length")
    parser.add_argument("--json-only", action="store_true")
    parser.add_argument("--train-run", action="store_true", help=argparse.SUPPRESS)  # what each fresh process does
    parser.add_argument("--decode-run", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--weights", help=argparse.SUPPRESS)  # where --train-run leaves the model for --decode-run
    args = parser.parse_args()
    if args.fixed_length < 0:
        parser.error(f"--fixed-length must be 0 (off) or a length of 1 or more, got {args.fixed_length}")
    if args.steps <= args.warmup:
        parser.error(f"--steps ({args.steps}) must be more than --warmup ({args.warmup}): throughput is over steps {args.warmup + 1}..N")
    if args.train_run or args.decode_run:
        print(json.dumps(train_run(args) if args.train_run else decode_run(args)))
        return

    data = ensure_data(args.data)
    common = ["--data", str(data), "--steps", str(args.steps), "--threads", str(args.threads), "--workers", str(args.workers),
              "--device", args.device, "--batch-size", str(args.batch_size), "--decode-batch-size", str(args.decode_batch_size),
              "--warmup", str(args.warmup), "--decode-sentences", str(args.decode_sentences)]
    common += ["--amp"] if args.amp else []
    common += ["--no-in-flight"] if args.no_in_flight else []
    isas = probe_isas()  # before the runs: the probe starts a process of its own
    cpu = cpu_description(isas["oneDNN"], isas["MKL"])
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        common += ["--weights", str(Path(tmp) / "model.pt")]
        for _ in range(args.runs):
            run = run_script("seq2seq.py", [*common, "--train-run"]) | run_script("seq2seq.py", [*common, "--decode-run"])
            if args.fixed_length:  # the same weights, in a fresh process of its own
                run |= run_script("seq2seq.py", [*common, "--decode-run", "--fixed-length", str(args.fixed_length)])
            runs.append(run)
    results = {key: statistics.median(run[key] for run in runs) for key in runs[0]}
    if args.fixed_length:  # each free-running figure with its average output length, then the length-fair ones
        sentences = args.decode_sentences or len(read_lines(data / "test.de"))
        free, fair = {}, {"fixed_length": args.fixed_length}
        for key, value in results.items():
            (fair if key.startswith("fixed_") else free)[key] = value
            if key in ("greedy_tokens", "beam5_tokens"):
                free[key.replace("_tokens", "_tok_per_sent")] = round(value / sentences, 2)  # EOS counted, as in tok_s
        results = free | fair
    results["runs"] = args.runs
    if not args.no_heads:
        threads = ["--threads", str(args.threads)]
        tagging = run_script("tagging.py", threads)
        results["tagging_sent_s"] = tagging["sentences_per_s"]
        results["classify_reviews_s"] = run_script("classify.py", [*threads, "--json-only"])["reviews_per_s"]
        results["forecast_windows_s"] = run_script("forecast.py", [*threads, "--json-only"])["windows_per_s"]
    results["amp"] = args.amp
    results["threads"] = args.threads
    results["torch"] = torch.__version__
    if any(getattr(args, name) != parser.get_default(name) for name in NEW_OPTIONS):
        device = resolve_device(args.device)
        dtype = amp_dtype(device, args.amp)
        results |= {"device": device.type, "amp_dtype": str(dtype).removeprefix("torch.") if dtype else "float32",
                    "batch_size": args.batch_size, "decode_batch_size": args.decode_batch_size, "steps": args.steps,
                    "warmup": args.warmup, "decode_sentences": args.decode_sentences or len(read_lines(data / "test.de"))}
        if device.type == "cuda":
            results |= {"gpu": torch.cuda.get_device_name(device), "cuda": torch.version.cuda}

    if not args.json_only:
        print(cpu)
        width = max(24, *(len(key) + 2 for key in results))
        print(f"{'metric':<{width}}{'value':>12}")
        for key, value in results.items():
            print(f"{key:<{width}}{value!s:>12}")
    print(json.dumps(results | {"cpu": cpu}))


if __name__ == "__main__":
    main()
