"""OpenNMT-py 3.5.1 and s2s side by side on the fixed seq2seq benchmark of ../shared/bench/README.md (issue 23).

    python bench/opennmt.py --smoke                 # the harness end to end in ~2 minutes: 60 steps, 64 sentences
    python bench/opennmt.py --rounds 1 --quiet-wait 600   # the benchmark: each round trains and decodes both systems
    python bench/opennmt.py --rounds 1 --avx2       # both under ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2
                                                    #   MKL_ENABLE_INSTRUCTIONS=AVX2 (MKL's SGEMM ignores the other two)

Each round runs OpenNMT-py and `bench/seq2seq.py --runs 1 --no-heads --json-only --fixed-length L`, one
after the other (the order alternates between rounds), and the table gives each metric's median over the
rounds with the ratio s2s / OpenNMT-py (and each round's, with --rounds > 1), the CPU line first, the load
average before each run and the share of the cores that other processes (and the hypervisor's steal) took
during it. --quiet-wait S waits up to S seconds before each run for the machine to be under 15% busy.

OpenNMT-py gets the benchmark's workload: the synthetic corpus, whitespace tokens, vocabularies of all the
training types (written here with their counts, no onmt_build_vocab), emb 256, a 1-layer bidirectional LSTM
encoder (brnn, 512 = 2 x 256), a 1-layer LSTM decoder of 512, `global_attention mlp` with input feeding,
dropout 0.2, untied embeddings, 64 sentences a batch (batch_type sents), Adam 1e-3, max_grad_norm 5, 300 steps,
2 threads, num_workers 0 (--onmt-workers; its default is 2 worker processes), its defaults elsewhere.
Training target tokens/s (its n_words: target tokens with EOS, as s2s counts) are timed over steps 51-300 by a
hook on its trainer; peak RSS is the child's, from os.wait4. Then `onmt_translate` decodes the test
sentences with batch 64 (sents), greedy and beam 5, up to 100 tokens (-max_length 100 -max_length_ratio 0:
its default ratio 1.25 would cap each batch at 1.25 x its longest source + 5), free-running and with
-min_length L -max_length L, each in a fresh process, timed around its file inference (model loading excluded,
as in s2s). Tokens are decoder steps, counted alike for both: s2s counts each hypothesis plus its EOS;
OpenNMT-py writes no EOS, so each output counts its words plus one, unless it stopped at the limit without
one. Length-fair, both make L steps a sentence: s2s L - 1 words and EOS, OpenNMT-py L words.

OpenNMT-py lives in a virtual environment of its own (--venv, default ../onmt-venv beside the checkout) that
sees this environment's torch: it is installed there with pip --no-deps when missing. The transforms that
OpenNMT-py imports whether used or not (spacy, fasttext, ahocorasick, rapidfuzz) are stubbed when absent:
the benchmark uses no transform.
"""
from __future__ import annotations

import argparse
import collections
import importlib.util
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import types
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ONMT_VERSION = "3.5.1"
# torch's own kernels, oneDNN's and MKL's; each library obeys only its own variable (see s2s/device.py).
AVX2_ENV = {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2", "MKL_ENABLE_INSTRUCTIONS": "AVX2"}
OPTIONAL_MODULES = ("spacy", "fasttext", "ahocorasick", "rapidfuzz")  # imported by transforms the benchmark does not use


# --- inside the OpenNMT-py process -------------------------------------------------------------------------------

def stub_optional_modules() -> None:
    for name in OPTIONAL_MODULES:
        if importlib.util.find_spec(name) is None:
            module = types.ModuleType(name)
            module.fuzz = module.process = None  # `from rapidfuzz import fuzz, process`
            sys.modules[name] = module


def child(mode: str, result_path: str, warmup: int, onmt_args: list[str]) -> None:
    """Run onmt_train or onmt_translate in this process with a clock around the part that is measured."""
    os.environ.setdefault("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")  # its checkpoints hold vocabularies and options
    stub_optional_modules()
    import torch

    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
    result = {"isa": torch.backends.cpu.get_cpu_capability(), "threads": torch.get_num_threads()}
    sys.argv = [f"onmt_{mode}", *onmt_args]
    if mode == "train":
        import onmt.trainer
        from onmt.bin.train import main

        steps = []  # (clock at the end of each optimizer step, its target tokens with EOS)
        step_once = onmt.trainer.Trainer._gradient_accumulation

        def timed_step(self, batches, normalization, total_stats, report_stats):
            before = report_stats.n_words
            step_once(self, batches, normalization, total_stats, report_stats)
            steps.append((time.perf_counter(), report_stats.n_words - before))

        onmt.trainer.Trainer._gradient_accumulation = timed_step
        main()
        tokens = sum(n for _, n in steps[warmup:])
        result |= {"steps": len(steps), "timed_tokens": tokens,
                   "train_tgt_tok_s": tokens / (steps[-1][0] - steps[warmup - 1][0])}
    else:
        import onmt.inference_engine
        from onmt.bin.translate import main

        infer_file = onmt.inference_engine.InferenceEnginePY.infer_file

        def timed_infer_file(self):
            start = time.perf_counter()
            out = infer_file(self)
            result["seconds"] = time.perf_counter() - start
            return out

        onmt.inference_engine.InferenceEnginePY.infer_file = timed_infer_file
        main()
    Path(result_path).write_text(json.dumps(result))


# --- the driver -------------------------------------------------------------------------------------------------

def ensure_opennmt(venv: Path) -> Path:
    """The venv's python, with OpenNMT-py ONMT_VERSION installed beside this environment's torch."""
    python = venv / "bin" / "python"
    probe = "import importlib.metadata as m, torch; print(m.version('OpenNMT-py'), torch.__version__)"
    import torch

    def found() -> str:
        if not python.exists():
            return ""
        done = subprocess.run([str(python), "-c", probe], capture_output=True, text=True)
        return done.stdout.strip() if done.returncode == 0 else ""

    want = f"{ONMT_VERSION} {torch.__version__}"
    if found() == want:
        return python
    print(f"OpenNMT-py {ONMT_VERSION} is not in {venv}: installing it there with pip --no-deps, so that it runs on this "
          f"environment's torch {torch.__version__} (an ordinary install would pull a torch of its own)", file=sys.stderr)
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)], check=True)
    subprocess.run([str(python), "-m", "pip", "install", "--quiet", "--no-deps", f"OpenNMT-py=={ONMT_VERSION}",
                    "configargparse", "pyonmttok>=1.37,<2"], check=True)
    if found() != want:
        sys.exit(f"error: {venv} does not run OpenNMT-py {ONMT_VERSION} on torch {torch.__version__} "
                 f"(it reports {found() or 'nothing'}); make the venv from the Python that has this torch")
    return python


def load_average() -> float:
    return float(Path("/proc/loadavg").read_text().split()[0])


def cpu_seconds() -> tuple[float, float, float]:
    """(busy CPU seconds of the whole machine, its steal, CPU seconds of this process and its reaped children), so far."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields
    tick = os.sysconf("SC_CLK_TCK")
    ours = [resource.getrusage(who) for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)]
    return (user + nice + system + irq + softirq + steal) / tick, steal / tick, sum(r.ru_utime + r.ru_stime for r in ours)


def others_share(before: tuple[float, float, float], seconds: float) -> dict:
    """What the rest of the machine took of its cores while a run ran: the busy time that was not this run's
    (its processes are all reaped by then), and the hypervisor's steal, as shares of all cores."""
    after = cpu_seconds()
    cores = os.cpu_count() or 1
    others = (after[0] - before[0]) - (after[2] - before[2])
    return {"others": max(0.0, others) / (seconds * cores), "steal": (after[1] - before[1]) / (seconds * cores)}


def wait_for_quiet(limit_s: float, share: float = 0.15, sample_s: float = 5.0) -> None:
    """Wait (at most limit_s) until the machine's busy share over sample_s seconds is below share: on a shared
    machine another job's threads against ours slow both several times over (OpenMP threads spin-wait)."""
    deadline = time.monotonic() + limit_s
    while True:
        before = cpu_seconds()
        time.sleep(sample_s)
        busy = (cpu_seconds()[0] - before[0]) / (sample_s * (os.cpu_count() or 1))
        if busy < share:
            return
        if time.monotonic() > deadline:
            print(f"warning: the machine is still {busy:.0%} busy after {limit_s:.0f} s; measuring anyway", file=sys.stderr)
            return


def run_child(python: Path, mode: str, warmup: int, onmt_args: list[str], work: Path, env: dict) -> dict:
    """One OpenNMT-py process; its result with its peak RSS (os.wait4 of the child) and wall seconds."""
    result_path, log = work / f"{mode}-result.json", work / f"{mode}.log"
    start = time.perf_counter()
    with log.open("a") as out:
        out.write(f"\n$ onmt_{mode} {' '.join(onmt_args)}\n")
        out.flush()
        proc = subprocess.Popen([str(python), __file__, "--child", mode, str(result_path), str(warmup), *onmt_args],
                                env=env, stdout=out, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        tail = "".join(log.read_text().splitlines(keepends=True)[-30:])
        sys.exit(f"error: onmt_{mode} failed (exit {proc.returncode}); the end of {log}:\n{tail}")
    return json.loads(result_path.read_text()) | {"peak_rss_gib": usage.ru_maxrss / 2**20,
                                                  "wall_s": time.perf_counter() - start}


def write_vocab(lines: list[str], path: Path) -> None:
    """Every type of the training side with its count, most frequent first (OpenNMT-py's vocabulary format)."""
    counts = collections.Counter(w for line in lines for w in line.split())
    path.write_text("".join(f"{w}\t{n}\n" for w, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))))


def onmt_round(python: Path, data: Path, work: Path, args: argparse.Namespace, env: dict) -> dict:
    """Train OpenNMT-py for args.steps, then decode greedy and beam 5, free and length-fair."""
    read = lambda name: (data / name).read_text(encoding="utf-8").splitlines()  # noqa: E731
    write_vocab(read("train.de"), work / "vocab.de")
    write_vocab(read("train.en"), work / "vocab.en")
    test = read("test.de")
    order = sorted(range(len(test)), key=lambda i: len(test[i].split()))  # as bench/seq2seq.py --decode-sentences
    test = [test[i] for i in order[: args.decode_sentences]] if args.decode_sentences else test
    (work / "test.de").write_text("".join(line + "\n" for line in test))
    config = {
        "data": {"corpus_1": {"path_src": str(data / "train.de"), "path_tgt": str(data / "train.en")}},
        "src_vocab": str(work / "vocab.de"), "tgt_vocab": str(work / "vocab.en"), "share_vocab": False,
        "src_vocab_size": 100000, "tgt_vocab_size": 100000,
        "save_model": str(work / "model"), "save_checkpoint_steps": args.steps, "train_steps": args.steps,
        "valid_steps": 10**9, "report_every": args.warmup, "seed": 1234, "model_dtype": "fp32",
        "batch_type": "sents", "batch_size": 64, "num_workers": args.onmt_workers,
        "encoder_type": "brnn", "decoder_type": "rnn", "rnn_type": "LSTM", "layers": 1,
        "enc_hid_size": 512, "dec_hid_size": 512, "word_vec_size": 256, "global_attention": "mlp", "input_feed": 1,
        "dropout": [0.2], "share_embeddings": False, "share_decoder_embeddings": False,
        "optim": "adam", "learning_rate": 1e-3, "max_grad_norm": 5, "label_smoothing": 0.0,
    }
    (work / "train.yaml").write_text(json.dumps(config, indent=1))  # JSON is YAML
    train = run_child(python, "train", args.warmup, ["-config", str(work / "train.yaml")], work, env)
    assert train["steps"] == args.steps, f"OpenNMT-py made {train['steps']} steps, not {args.steps}"
    results = {"train_tgt_tok_s": round(train["train_tgt_tok_s"]), "train_peak_rss_gib": round(train["peak_rss_gib"], 2),
               "isa": train["isa"], "threads": train["threads"]}
    decode_rss = []
    for fixed in (0, args.fixed_length):
        prefix, limit = ("fixed_", fixed) if fixed else ("", 100)
        for name, beam in (("greedy", 1), ("beam5", 5)):
            output = work / f"out.{prefix}{name}"
            onmt_args = ["-model", str(work / f"model_step_{args.steps}.pt"), "-src", str(work / "test.de"), "-output", str(output),
                         "-batch_size", "64", "-batch_type", "sents", "-beam_size", str(beam), "-gpu", "-1", "-seed", "1234",
                         "-min_length", str(fixed), "-max_length", str(limit), "-max_length_ratio", "0"]
            decoded = run_child(python, "translate", 0, onmt_args, work, env)
            words = [len(line.split()) for line in output.read_text(encoding="utf-8").splitlines()]
            assert len(words) == len(test), f"{output}: {len(words)} lines for {len(test)} sentences"
            if fixed:
                assert set(words) == {fixed}, f"{output}: outputs of {sorted(set(words))} words, not {fixed}"
            steps = sum(n if n >= limit else n + 1 for n in words)  # + EOS, unless the limit came first
            results[f"{prefix}{name}_tok_s"] = round(steps / decoded["seconds"])
            results[f"{prefix}{name}_sent_s"] = round(len(test) / decoded["seconds"], 1)
            results[f"{prefix}{name}_tok_per_sent"] = round(steps / len(test), 2)
            decode_rss.append(decoded["peak_rss_gib"])
    results["decode_peak_rss_gib"] = round(max(decode_rss), 2)
    return results


def s2s_round(data: Path, args: argparse.Namespace, env: dict) -> dict:
    cmd = [sys.executable, str(ROOT / "bench" / "seq2seq.py"), "--runs", "1", "--no-heads", "--json-only",
           "--fixed-length", str(args.fixed_length), "--data", str(data), "--threads", str(args.threads)]
    if args.smoke:
        cmd += ["--steps", str(args.steps), "--warmup", str(args.warmup), "--decode-sentences", str(args.decode_sentences)]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"error: {' '.join(cmd)} failed (exit {done.returncode}):\n{done.stderr[-3000:]}")
    results = json.loads(done.stdout.strip().splitlines()[-1])
    sentences = args.decode_sentences or len((data / "test.de").read_text(encoding="utf-8").splitlines())
    for name in ("greedy", "beam5"):
        results[f"fixed_{name}_tok_per_sent"] = round(results[f"fixed_{name}_tokens"] / sentences, 2)
    return results


ROWS = [  # (key, label, digits)
    ("train_tgt_tok_s", "training, target tokens/s", 0),
    ("train_peak_rss_gib", "peak RSS training, GiB", 2),
    ("greedy_tok_s", "greedy, free-running: tokens/s", 0),
    ("greedy_sent_s", "greedy, free-running: sentences/s", 1),
    ("greedy_tok_per_sent", "greedy, free-running: tokens/sentence", 2),
    ("beam5_tok_s", "beam 5, free-running: tokens/s", 0),
    ("beam5_sent_s", "beam 5, free-running: sentences/s", 1),
    ("beam5_tok_per_sent", "beam 5, free-running: tokens/sentence", 2),
    ("fixed_greedy_tok_s", "greedy, L tokens: tokens/s", 0),
    ("fixed_greedy_sent_s", "greedy, L tokens: sentences/s", 1),
    ("fixed_beam5_tok_s", "beam 5, L tokens: tokens/s", 0),
    ("fixed_beam5_sent_s", "beam 5, L tokens: sentences/s", 1),
    ("decode_peak_rss_gib", "peak RSS decoding, GiB", 2),
]


def table(rounds: list[dict], cpu: str, args: argparse.Namespace) -> str:
    medians = {system: {key: statistics.median(r[system][key] for r in rounds) for key, _, _ in ROWS}
               for system in ("onmt", "s2s")}
    fmt = lambda value, digits: f"{value:,.{digits}f}"  # noqa: E731
    lines = [cpu, f"medians of {len(rounds)} round(s); L = {args.fixed_length}; {args.threads} threads, fp32, batch 64;"
             f" {args.steps} training steps, timed from step {args.warmup + 1}; OpenNMT-py num_workers {args.onmt_workers}"
             + ("; SMOKE (not a measurement)" if args.smoke else ""),
             "load average (1 min) before each run; other processes' and the hypervisor's (steal) share of the cores during it: "
             + "; ".join(f"round {i + 1}: " + ", ".join(f"{name} {r['load'][name]:.2f}, {r['busy'][name]['others']:.0%}, "
                                                          f"{r['busy'][name]['steal']:.0%}" for name in r["order"])
                         for i, r in enumerate(rounds)),
             "", f"| | OpenNMT-py {ONMT_VERSION} | s2s | s2s / OpenNMT-py |" + (" each round's ratio |" if len(rounds) > 1 else ""),
             "|---|---|---|---|" + ("---|" if len(rounds) > 1 else "")]
    for key, label, digits in ROWS:
        onmt, s2s = medians["onmt"][key], medians["s2s"][key]
        each = " " + " / ".join(f"{r['s2s'][key] / r['onmt'][key]:.2f}" for r in rounds) + " |" if len(rounds) > 1 else ""
        lines.append(f"| {label.replace('L tokens', f'{args.fixed_length} tokens')} | {fmt(onmt, digits)} | {fmt(s2s, digits)} |"
                     f" {s2s / onmt:.2f}× |" + each)
    return "\n".join(lines)


def main() -> None:
    if sys.argv[1:2] == ["--child"]:
        child(sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5:])
        return
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=1, help="rounds of both systems; the table gives medians")
    parser.add_argument("--avx2", action="store_true", help="emulate an AVX2 CPU: run both under " + " ".join(f"{k}={v}" for k, v in AVX2_ENV.items()))
    parser.add_argument("--smoke", action="store_true", help="a tiny check of the harness: 60 steps, the 64 shortest test sentences")
    parser.add_argument("--fixed-length", type=int, default=14, metavar="L", help="length-fair decoding: exactly L steps a sentence")
    parser.add_argument("--onmt-workers", type=int, default=0, help="OpenNMT-py's data-loading worker processes (its default: 2)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--data", default=str(ROOT / "bench-data"), help="synthetic corpus folder (made if missing)")
    parser.add_argument("--venv", default=str(ROOT.parent / "onmt-venv"), help="OpenNMT-py's virtual environment (made if missing)")
    parser.add_argument("--quiet-wait", type=float, default=0, metavar="S", help="before each run, wait up to S seconds "
                        "for the machine to be under 15%% busy (default 0: don't wait)")
    parser.add_argument("--keep", help="keep OpenNMT-py's models, outputs and logs in this folder")
    parser.add_argument("--json", help="also write every round's figures to this file")
    args = parser.parse_args()
    if args.fixed_length < 1:
        parser.error("--fixed-length must be 1 or more")
    args.steps, args.warmup, args.decode_sentences = (60, 10, 64) if args.smoke else (300, 50, 0)

    if args.avx2 and any(os.environ.get(k) != v for k, v in AVX2_ENV.items()):
        os.execve(sys.executable, [sys.executable, *sys.argv], os.environ | AVX2_ENV)  # from the start, torch included
    import torch

    from s2s.device import cpu_description, probe_isas

    want_isa = "AVX2" if args.avx2 else torch.backends.cpu.get_cpu_capability()
    if torch.backends.cpu.get_cpu_capability() != want_isa:
        sys.exit(f"error: torch runs {torch.backends.cpu.get_cpu_capability()} under ATEN_CPU_CAPABILITY=avx2, not AVX2")
    isas = probe_isas()
    cpu = cpu_description(isas["oneDNN"], isas["MKL"])
    # On a CPU not made by Intel MKL's banner names no ISA, so only what it does name is checked.
    if args.avx2 and not all("AVX2" in isa and "512" not in isa for library, isa in isas.items() if isa or library != "MKL"):
        sys.exit(f"error: under {AVX2_ENV} a library still reports another ISA than AVX2: {isas}")
    python = ensure_opennmt(Path(args.venv))
    data = Path(args.data)
    if not (data / "train.de").is_file():
        subprocess.run([sys.executable, str(ROOT.parent / "shared" / "bench" / "make_synthetic.py"), str(data)], check=True)
    env = os.environ | {"OMP_NUM_THREADS": str(args.threads)}

    rounds = []
    for i in range(args.rounds):
        order = ("onmt", "s2s") if i % 2 == 0 else ("s2s", "onmt")
        record = {"order": order, "load": {}}
        for system in order:
            if args.quiet_wait:
                wait_for_quiet(args.quiet_wait)
            record["load"][system] = load_average()
            start, used = time.perf_counter(), cpu_seconds()
            if system == "s2s":
                record["s2s"] = s2s_round(data, args, env)
            else:
                with tempfile.TemporaryDirectory() as tmp:
                    work = Path(args.keep or tmp) / f"round{i + 1}"
                    work.mkdir(parents=True, exist_ok=True)
                    record["onmt"] = onmt_round(python, data, work, args, env)
            isa = record[system]["isa"] if system == "onmt" else record[system]["cpu"].split(" | runs as ")[1].split()[0]
            if isa != want_isa:
                sys.exit(f"error: {system} ran torch's {isa} kernels, not {want_isa}")
            record.setdefault("busy", {})[system] = others_share(used, time.perf_counter() - start)
            print(f"round {i + 1} {system} ({time.perf_counter() - start:.0f} s, load before {record['load'][system]:.2f}, "
                  f"others {record['busy'][system]['others']:.0%} of the cores): "
                  f"{json.dumps(record[system])}", file=sys.stderr, flush=True)
        rounds.append(record)
    if args.json:
        Path(args.json).write_text(json.dumps({"cpu": cpu, "rounds": rounds}, indent=1))
    print(table(rounds, cpu, args))


if __name__ == "__main__":
    main()
