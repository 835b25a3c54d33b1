"""How s2s scales with the corpus and the input: training on 1x to 300x Multi30k, and translating a 1 M-line file.

    python bench/scale.py [--sizes 1 10 100 300] [--steps 30] [--threads 2] [--work /tmp/s2s-scale]
                          [--model RUN --decode-lines 1000000 --decode-seconds 180 --baseline-lines 3000]

Training: for each multiple M, Multi30k's training set repeated M times (29,000 x M pairs) with
configs/multi30k.yaml, trained for --steps updates from a fresh start and then resumed for --steps more.
Reports, per size: the preparation time (SentencePiece on its sample, then the token store), the time to
the first training step of the fresh start and of the restart, the peak RSS of each process (os.wait4),
and the steady training speed (median target tokens/s of metrics.jsonl past the first 10 steps). The dev
set is Multi30k val's first 100 lines, so the validation at the last step stays short.

Decoding (with --model, a trained translation run): `s2s translate --beam-size 1` on a file of
--decode-lines lines (test2016.de repeated), stopped after --decode-seconds: the time to the first output
line, lines/s, and peak RSS; next to the batch throughput of Translator.translate_ids on the file's first
--baseline-lines lines at once (what `s2s translate` did before it streamed).
Prints one JSON object per measurement and a table; the machine is printed first.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "multi30k"


def machine() -> str:
    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), platform.processor())
    return f"{model}, {os.cpu_count()} CPUs, Python {platform.python_version()}"


def make_corpus(folder: Path, multiple: int) -> Path:
    """Multi30k train repeated `multiple` times, val's first 100 lines as dev."""
    if (folder / "done").is_file():
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    for lang in ("de", "en"):
        text = (DATA / f"train.{lang}").read_bytes()
        with open(folder / f"train.{lang}", "wb") as f:
            for _ in range(multiple):
                f.write(text)
        val = (DATA / f"val.{lang}").read_text(encoding="utf-8").splitlines(keepends=True)[:100]
        (folder / f"val.{lang}").write_text("".join(val), encoding="utf-8")
        shutil.copy(DATA / f"test2016.{lang}", folder / f"test2016.{lang}")
    (folder / "done").write_text("")
    return folder


def run(command: list[str], marks: dict[str, str], env: dict, stop_after: float | None = None) -> dict:
    """Run `command`, noting when each of `marks` (name -> text) first appears on its stderr; returns
    {name: seconds since start}, "seconds", "rc" and "peak_rss_gib" (of that process alone, from wait4)."""
    start = time.monotonic()
    proc = subprocess.Popen(command, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, env=env)
    seen: dict[str, float] = {}
    tail: list[str] = []

    def read() -> None:
        for line in proc.stderr:
            tail.append(line)
            del tail[:-20]
            for name, text in marks.items():
                if name not in seen and text in line:
                    seen[name] = round(time.monotonic() - start, 2)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    if stop_after is not None:
        timer = threading.Timer(stop_after, lambda: proc.poll() is None and proc.send_signal(signal.SIGTERM))
        timer.start()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    reader.join()
    if stop_after is not None:
        timer.cancel()
    out = {**seen, "seconds": round(time.monotonic() - start, 2), "rc": proc.returncode, "peak_rss_gib": round(usage.ru_maxrss / 2**20, 3)}
    if proc.returncode not in (0, 130, -signal.SIGTERM) and stop_after is None:
        sys.stderr.write("".join(tail))
        raise SystemExit(f"failed ({proc.returncode}): {' '.join(command)}")
    return out


def steady_tokens_per_s(run_dir: Path, after: int) -> float:
    rates = [e["tokens_per_s"] for e in map(json.loads, (run_dir / "metrics.jsonl").read_text().splitlines())
             if "tokens_per_s" in e and e["step"] > after]
    return statistics.median(rates) if rates else float("nan")


def train_size(args, multiple: int, env: dict) -> dict:
    data = make_corpus(args.work / f"m30k-x{multiple}", multiple)
    run_dir = args.work / f"run-x{multiple}"
    shutil.rmtree(run_dir, ignore_errors=True)
    pairs = 29_000 * multiple
    common = ["--set", f"data.dir={data}", "--set", f"train.threads={args.threads}", "--set", "train.log_every=1",
              "--set", "train.save_every=0"]
    s2s = [sys.executable, "-m", "s2s", "train", str(ROOT / "configs" / "multi30k.yaml"), "--out", str(run_dir)]
    fresh = run(s2s + common + ["--set", f"train.max_steps={args.steps}"],
                {"vocab": "trained spm.tgt.model", "store": "token store of", "first_step": "step 1 ("}, env)
    restart = run(s2s + common + ["--resume", "--set", f"train.max_steps={2 * args.steps}"],
                  {"first_step": f"step {args.steps + 1} ("}, env)
    store_seconds = fresh["store"] - fresh["vocab"]
    result = {
        "pairs": pairs, "multiple": multiple,
        "sentencepiece_s": fresh["vocab"], "store_s": round(store_seconds, 2),
        "preparation_s": fresh["store"], "store_pairs_per_s": round(pairs / max(store_seconds, 1e-9)),
        "preparation_pairs_per_s": round(pairs / fresh["store"]),
        "fresh_first_step_s": fresh["first_step"], "restart_first_step_s": restart["first_step"],
        "fresh_peak_rss_gib": fresh["peak_rss_gib"], "restart_peak_rss_gib": restart["peak_rss_gib"],
        "tokens_per_s": steady_tokens_per_s(run_dir, 10),
        "store_mib": round(sum(p.stat().st_size for p in (run_dir / "store").iterdir()) / 2**20, 1),
    }
    print(json.dumps(result), flush=True)
    if not args.keep:
        shutil.rmtree(run_dir, ignore_errors=True)
    return result


def decode(args, env: dict) -> dict:
    big = args.work / f"decode-{args.decode_lines}.de"
    if not big.is_file():
        lines = (DATA / "test2016.de").read_text(encoding="utf-8").splitlines(keepends=True)
        with open(big, "w", encoding="utf-8") as f:
            for i in range(args.decode_lines):
                f.write(lines[i % len(lines)])
    out = args.work / "decode.en"
    out.unlink(missing_ok=True)
    first = {}

    def watch() -> None:  # the first output line on disk
        start = time.monotonic()
        while "line" not in first:
            if out.is_file() and out.stat().st_size:
                first["line"] = round(time.monotonic() - start, 2)
            time.sleep(0.05)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    env = {**env, "OMP_NUM_THREADS": str(args.threads)}
    streamed = run([sys.executable, "-m", "s2s", "translate", "--model", str(args.model), "--beam-size", "1",
                    "--input", str(big), "--output", str(out)], {}, env, stop_after=args.decode_seconds)
    first.setdefault("line", None)
    with open(out, "rb") as f:
        written = sum(1 for _ in f)
    # Batch throughput: the old whole-input path, on the first --baseline-lines lines, in its own process.
    code = (f"import sys, time, torch; torch.set_num_threads({args.threads}); from s2s.tasks.translation import Translator; "
            f"t = Translator.load({str(args.model)!r}, device='cpu'); lines = open({str(big)!r}, encoding='utf-8').read().splitlines()[:{args.baseline_lines}]; "
            "s = time.monotonic(); t.translate_ids(lines, 1); print(len(lines) / (time.monotonic() - s))")
    baseline = float(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True).stdout)
    result = {"decode_lines": args.decode_lines, "first_output_s": first["line"], "lines_written": written,
              "seconds": streamed["seconds"], "lines_per_s": round(written / max(streamed["seconds"] - (first["line"] or 0), 1e-9) if written else 0, 1),
              "lines_per_s_overall": round(written / streamed["seconds"], 1), "peak_rss_gib": streamed["peak_rss_gib"],
              "batch_lines_per_s": round(baseline, 1), "baseline_lines": args.baseline_lines}
    print(json.dumps(result), flush=True)
    return result


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", type=int, nargs="*", default=[1, 10, 100, 300], help="corpus multiples of Multi30k (none: skip training)")
    p.add_argument("--steps", type=int, default=30, help="updates of the fresh start and again of the restart")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--work", type=Path, default=Path("/tmp/s2s-scale"), help="corpora and run directories")
    p.add_argument("--keep", action="store_true", help="keep the run directories")
    p.add_argument("--model", type=Path, help="a trained translation run: also measure decoding")
    p.add_argument("--decode-lines", type=int, default=1_000_000)
    p.add_argument("--decode-seconds", type=float, default=180)
    p.add_argument("--baseline-lines", type=int, default=3000)
    args = p.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    print(f"# {machine()}", flush=True)
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    rows = [train_size(args, m, env) for m in args.sizes]
    if rows:
        print("| pairs | SentencePiece s | store s | store pairs/s | first step fresh s | first step restart s | peak RSS fresh GiB "
              "| peak RSS restart GiB | tokens/s | store MiB |")
        print("|---|---|---|---|---|---|---|---|---|---|")
        for r in rows:
            print(f"| {r['pairs']:,} | {r['sentencepiece_s']:.1f} | {r['store_s']:.1f} | {r['store_pairs_per_s']:,} | {r['fresh_first_step_s']:.1f} "
                  f"| {r['restart_first_step_s']:.1f} | {r['fresh_peak_rss_gib']:.2f} | {r['restart_peak_rss_gib']:.2f} | {r['tokens_per_s']:.0f} "
                  f"| {r['store_mib']:.0f} |")
    if args.model:
        d = decode(args, env)
        print(f"decoding {d['decode_lines']:,} lines greedy, stopped after {d['seconds']:.0f} s: first output line {d['first_output_s']} s, "
              f"{d['lines_written']:,} lines, {d['lines_per_s']} lines/s after it ({d['lines_per_s_overall']} overall), "
              f"peak RSS {d['peak_rss_gib']:.2f} GiB; batch path {d['batch_lines_per_s']} lines/s on {d['baseline_lines']:,} lines")


if __name__ == "__main__":
    main()
