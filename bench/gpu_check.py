"""The stages of the GPU check and its report; run it through bench/gpu.sh (whose header says how and how long).

Each stage runs as a child process (its own session, so that a timeout ends all it started) with
its output in WORK/<stage>.log, under a time limit cut from one budget for the whole check; at its
limit the training gets SIGINT (s2s saves where it was, and best.pt is scored), any other stage is
killed. Whatever happened, one table is printed and written to --out, and the exit status is 1 when
any stage failed or could not run. This file uses only the standard library: it still reports when
torch itself is broken.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import shlex
import signal
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable

# The nn, search and device tests take the `device` fixture (tests/conftest.py: S2S_TEST_DEVICE); the
# distributed ones start two gloo processes on the CPU, the multi-process path a one-GPU machine can run.
GPU_TESTS = ["tests/nn", "tests/test_search.py", "tests/test_device.py", "tests/test_distributed.py"]
SMOKE_TESTS = ["tests/nn/test_attention.py", "tests/nn/test_decoder.py::test_seq2seq_forward_backward_on_the_device",
               "tests/test_search.py::test_beam_size_1_equals_greedy"]
# Multi30k on a GPU: batches of ~4,000 tokens (~250 pairs; the CPU config's 1,500 would leave the GPU
# waiting on kernel launches), bf16 autocast, validation and test decoding 500 sentences at a time.
GPU_TRAIN = ["train.max_tokens=4000", "train.amp=true", "decode.batch_size=500", "train.log_every=50"]
SMOKE_TRAIN = ["train.max_steps=8", "train.threads=1", "decode.batch_size=200", "translation.beam_size=2"]
# (limit, least) per stage, in seconds; the budget for the whole check is 460 s (smoke: 150 s).
GPU_LIMITS = {"preflight": (60, 5), "tests": (150, 20), "train": (270, 40), "evaluate": (60, 30), "bench": (90, 30), "ddp": (90, 15)}
SMOKE_LIMITS = {"preflight": (30, 3), "tests": (40, 3), "train": (60, 3), "evaluate": (40, 3), "bench": (40, 3), "ddp": (30, 3)}
MIN_DEV_BLEU = 30.0  # the CPU run reached 37.66 (docs/results.md); far below is a broken path, not noise


@dataclass
class Stage:
    name: str
    command: list[str]
    limit: float  # seconds, at most
    least: float  # seconds it needs to be worth starting
    env: dict = field(default_factory=dict)
    soft_limit: bool = False  # at the limit: SIGINT, and the stage's results still count (training)


@dataclass
class Outcome:
    status: str  # ok | limit | FAILED | TIMEOUT | NOT RUN
    seconds: float
    result: str
    details: list[str] = field(default_factory=list)  # lines under the table (what failed)

    @property
    def failed(self) -> bool:
        return self.status not in ("ok", "limit")


def log_tail(path: Path, lines: int = 8) -> list[str]:
    try:
        text = path.read_text(encoding="utf-8", errors="replace").rstrip().splitlines()
    except OSError:
        return []
    return [f"    {line[:200]}" for line in text[-lines:]]


def last_json(path: Path) -> dict | None:
    """The last line of a log that is a JSON object."""
    try:
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return None
    for line in reversed(lines):
        line = line.strip()
        if line.startswith("{"):
            try:
                value = json.loads(line)
            except ValueError:
                continue
            if isinstance(value, dict):
                return value
    return None


class Running:
    """A stage's child process (in a session of its own, so that stopping it stops all it started), output to WORK/<stage>.log."""

    def __init__(self, stage: Stage, work: Path):
        self.stage, self.log = stage, work / f"{stage.name}.log"
        self.out = open(self.log, "w", encoding="utf-8")
        shown = [arg if "\n" not in arg else "<script: bench/gpu_check.py>" for arg in stage.command]
        self.out.write("$ " + shlex.join(shown) + "\n")
        self.out.flush()
        self.start = time.monotonic()
        env = os.environ | {"PYTHONUNBUFFERED": "1"} | stage.env
        self.proc = subprocess.Popen(stage.command, cwd=ROOT, stdout=self.out, stderr=subprocess.STDOUT, env=env, start_new_session=True)

    def stop(self) -> None:
        """SIGINT first (s2s train saves last.pt and exits; pytest prints what it has), 30 s to end, then SIGKILL
        for whatever is left in the session (background children ignore SIGINT)."""
        try:
            os.killpg(self.proc.pid, signal.SIGINT)
            self.proc.wait(timeout=30)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            pass
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait()


def wait_all(children: list[tuple[Running, float]]) -> tuple[list[tuple[int | None, float]], bool]:
    """Wait for each child until its limit (seconds from its start). Per child: its exit status (None when it
    was stopped at the limit) and its seconds; and whether Ctrl-C stopped the wait (and the children)."""
    results: list[tuple[int | None, float] | None] = [None] * len(children)
    try:
        while any(r is None for r in results):
            for k, (child, limit) in enumerate(children):
                if results[k] is not None:
                    continue
                code = child.proc.poll()
                elapsed = time.monotonic() - child.start
                if code is None and elapsed > limit:
                    child.stop()
                    child.out.write(f"\n[gpu-check] stopped at its time limit ({limit:.0f} s)\n")
                elif code is None:
                    continue
                child.out.close()
                results[k] = (code, elapsed)
            time.sleep(0.1)
    except KeyboardInterrupt:  # the children run in sessions of their own: the terminal's Ctrl-C did not reach them
        for k, (child, _) in enumerate(children):
            if results[k] is None:
                child.stop()
                child.out.close()
                results[k] = (130, time.monotonic() - child.start)
        return results, True  # type: ignore[return-value]
    return results, False  # type: ignore[return-value]


# -- what each stage's output says ------------------------------------------------------------------------


def preflight_result(work: Path, device: str) -> tuple[bool, str, dict]:
    info = last_json(work / "preflight.log") or {}
    if not info:
        return False, "torch did not start (see the log)", info
    if device == "cuda" and not info.get("cuda_available"):
        return False, f"torch {info.get('torch')} sees no CUDA GPU", info
    return True, "", info


def tests_result(work: Path) -> tuple[bool, str, list[str]]:
    try:
        suites = ET.parse(work / "tests.xml").getroot()
    except (OSError, ET.ParseError):
        return False, "no test report (pytest did not finish)", []
    counts = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}
    failed = []
    for suite in suites.iter("testsuite"):
        for key in counts:
            counts[key] += int(suite.get(key, 0))
        for case in suite.iter("testcase"):
            if case.find("failure") is not None or case.find("error") is not None:
                failed.append(f"    {case.get('classname')}::{case.get('name')}")
    passed = counts["tests"] - counts["failures"] - counts["errors"] - counts["skipped"]
    text = f"{passed} passed, {counts['failures']} failed, {counts['errors']} errors, {counts['skipped']} skipped"
    ok = counts["tests"] > 0 and not counts["failures"] and not counts["errors"]
    return ok, text, failed[:15]


def bench_result(work: Path, name: str) -> tuple[bool, str, dict]:
    r = last_json(work / f"{name}.log")
    if not r or "train_tgt_tok_s" not in r:
        return False, "no benchmark results", {}
    loss = r.get("train_final_loss", 0.0)
    text = (f"{r.get('amp_dtype', '?')}: train {r['train_tgt_tok_s']:,} tgt tok/s (batch {r.get('batch_size')}); "
            f"decode batch {r.get('decode_batch_size')}: greedy {r['greedy_tok_s']:,} tok/s, beam 5 {r['beam5_tok_s']:,} tok/s")
    if "train_peak_gpu_gib" in r:
        text += f"; peak GPU memory {max(r['train_peak_gpu_gib'], r.get('decode_peak_gpu_gib', 0)):.1f} GiB"
    finite = isinstance(loss, (int, float)) and math.isfinite(loss)
    if not finite:
        text += f"; training loss {loss} (not finite)"
    return finite, text, r


def ddp_result(work: Path) -> tuple[bool, str]:
    r = last_json(work / "ddp.log")
    if not r:
        return False, "no result"
    what = (f"DDP in a 1-process {r['backend']} group on {r['device']}: {r['steps']} steps, losses "
            f"{'equal to' if r['max_rel_loss_diff'] <= 1e-3 else 'DIFFERENT from'} a plain run's "
            f"(max rel. diff {r['max_rel_loss_diff']:.1e}), s2s.distributed helpers {'ok' if r['helpers_ok'] else 'FAILED'}")
    if r["backend"] == "nccl":
        what += "; one GPU: no all-reduce between GPUs was exercised"
    return bool(r["ok"]), what


def train_result(run_dir: Path) -> tuple[bool, str, dict]:
    try:
        records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text(encoding="utf-8").splitlines() if line.strip()]
    except (OSError, ValueError):
        return False, "no metrics.jsonl", {}
    dev = [r for r in records if r.get("dev_bleu") is not None]
    speed = sorted(r["tokens_per_s"] for r in records if r.get("tokens_per_s"))
    if not dev:
        return False, "no validation", {}
    best = max(dev, key=lambda r: r["dev_bleu"])
    summary = {"best_dev_bleu": best["dev_bleu"], "best_epoch": best["epoch"], "best_step": best["step"], "best_seconds": best.get("seconds"),
               "epochs": dev[-1]["epoch"], "steps": max(r["step"] for r in records),
               "median_tok_s": speed[len(speed) // 2] if speed else None}
    text = (f"best dev BLEU {best['dev_bleu']:.2f} (greedy) at epoch {best['epoch']}, step {best['step']}, {best.get('seconds', 0):.0f} s; "
            f"{summary['epochs']} epochs, {summary['steps']:,} steps")
    if summary["median_tok_s"]:
        text += f", median {summary['median_tok_s']:,} tgt tok/s"
    return (run_dir / "best.pt").is_file(), text, summary


def evaluate_result(work: Path) -> tuple[bool, str]:
    r = last_json(work / "evaluate.log")
    if not r or "bleu" not in r:
        return False, "no scores"
    return True, f"test BLEU {r['bleu']:.2f}, chrF2 {r['chrf']:.2f} ({r.get('bleu_signature', '')})"


# -- the check ---------------------------------------------------------------------------------------------


PREFLIGHT = r"""
import json, os, platform, torch
info = {"torch": torch.__version__, "python": platform.python_version(), "cpus": os.cpu_count(),
        "cuda_available": torch.cuda.is_available(), "cuda": torch.version.cuda}
if torch.cuda.is_available():
    p = torch.cuda.get_device_properties(0)
    info |= {"gpu": torch.cuda.get_device_name(0), "gpus": torch.cuda.device_count(), "gpu_memory_gib": round(p.total_memory / 2**30, 1),
             "capability": f"{p.major}.{p.minor}", "cudnn": torch.backends.cudnn.version(), "bf16": torch.cuda.is_bf16_supported()}
    x = torch.randn(256, 256, device="cuda")
    info["matmul_ok"] = bool(torch.allclose((x @ x).cpu(), x.cpu() @ x.cpu(), rtol=1e-2, atol=1e-2))
try:
    info["cpu"] = next(l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name"))
except (OSError, StopIteration):
    info["cpu"] = platform.processor()
print(json.dumps(info))
"""


def stages(args: argparse.Namespace, work: Path) -> list[Stage]:
    dev, smoke = args.device, args.smoke
    tests = SMOKE_TESTS if smoke else GPU_TESTS
    bench = [PY, "bench/seq2seq.py", "--device", dev, "--runs", "1", "--no-heads", "--json-only", "--data", str(args.bench_data)]
    if smoke:
        bench += ["--steps", "2", "--warmup", "1", "--batch-size", "8", "--decode-batch-size", "8", "--decode-sentences", "8", "--threads", "1"]
    else:
        bench += ["--steps", "300", "--batch-size", "1024", "--decode-batch-size", "500"]
    config = "configs/smoke.yaml" if smoke else "configs/multi30k.yaml"
    sets = [f"data.dir={args.data}", f"train.device={dev}", *(SMOKE_TRAIN if smoke else GPU_TRAIN), *args.set]
    train = [PY, "-m", "s2s", "train", config, "--out", str(work / "multi30k")] + [x for s in sets for x in ("--set", s)]
    evaluate = [PY, "-m", "s2s", "evaluate", "--model", str(work / "multi30k"), "--split", "test", "--device", dev, "--json",
                "--hyp-prefix", str(work / "test")]
    # Limits and the least time worth starting with, in seconds: for an H100/H200 (bench/gpu.sh's header), or the smoke's.
    limit = SMOKE_LIMITS if smoke else GPU_LIMITS
    return [
        Stage("preflight", [PY, "-c", PREFLIGHT], *limit["preflight"]),
        Stage("tests", [PY, "-m", "pytest", "-q", "-rfE", "-p", "no:cacheprovider", f"--junitxml={work / 'tests.xml'}", *tests],
              *limit["tests"], {"S2S_TEST_DEVICE": dev}),
        Stage("train", train, *limit["train"], soft_limit=True),
        Stage("evaluate", evaluate, *limit["evaluate"]),
        Stage("bench_fp32", bench, *limit["bench"]),
        Stage("bench_bf16", [*bench, "--amp"], *limit["bench"]),
        Stage("ddp", [PY, "bench/gpu_ddp.py", "--device", dev, "--work", str(work / "ddp")], *limit["ddp"]),
    ]


SIDE_BY_SIDE = ("bench_fp32", "bench_bf16", "ddp")  # stages the smoke runs at once
TITLES = {"preflight": "device", "tests": "tests on {dev}", "train": "Multi30k training", "evaluate": "test2016 (s2s evaluate)",
          "bench_fp32": "speed benchmark, fp32", "bench_bf16": "speed benchmark, bf16", "ddp": "DDP (one process)"}


def check(args: argparse.Namespace, work: Path) -> tuple[dict, dict[str, Outcome]]:
    """Run the stages in order (in the smoke, the benchmarks and DDP side by side: on a CPU their time is
    mostly starting processes); skip what cannot run or has no time left."""
    plan = stages(args, work)
    deadline = time.monotonic() + args.budget
    outcomes: dict[str, Outcome] = {}
    info: dict = {}
    missing_data = ""
    i = 0
    while i < len(plan):
        group = [plan[i]]
        while args.smoke and group[-1].name in SIDE_BY_SIDE and i + len(group) < len(plan) and plan[i + len(group)].name in SIDE_BY_SIDE:
            group.append(plan[i + len(group)])
        later = sum(s.least for s in plan[i + len(group) :])
        i += len(group)
        running = []
        if group[0].name.startswith("bench") and not outcomes["preflight"].failed:
            missing_data = prepare_bench_data(Path(args.bench_data), work)
        for stage in group:
            title = TITLES[stage.name].format(dev=args.device)
            limit = min(stage.limit, deadline - time.monotonic() - later)
            if stage.name != "preflight" and outcomes["preflight"].failed:
                outcomes[stage.name] = Outcome("NOT RUN", 0.0, "no usable device")
            elif stage.name.startswith("bench") and missing_data:
                outcomes[stage.name] = Outcome("NOT RUN", 0.0, missing_data)
            elif stage.name == "evaluate" and not (work / "multi30k" / "best.pt").is_file():
                outcomes[stage.name] = Outcome("NOT RUN", 0.0, "training left no best.pt")
            elif limit < stage.least:
                outcomes[stage.name] = Outcome("NOT RUN", 0.0, f"no time left in the {args.budget:.0f} s budget")
            else:
                print(f"[gpu-check] {title}: running (limit {limit:.0f} s, log {work / (stage.name + '.log')})", file=sys.stderr, flush=True)
                try:
                    running.append((stage, limit, Running(stage, work)))
                except OSError as e:
                    outcomes[stage.name] = Outcome("FAILED", 0.0, f"cannot start {stage.command[0]}: {e}")
        finished, interrupted = wait_all([(child, limit) for _, limit, child in running])
        for (stage, limit, _), (code, seconds) in zip(running, finished):
            outcome = judge(stage, code, seconds, limit, work, args, info)
            outcomes[stage.name] = outcome
            title = TITLES[stage.name].format(dev=args.device)
            print(f"[gpu-check] {title}: {outcome.status} in {seconds:.0f} s: {outcome.result}", file=sys.stderr, flush=True)
        if interrupted:
            for stage in plan[i:]:
                outcomes[stage.name] = Outcome("NOT RUN", 0.0, "interrupted (Ctrl-C)")
            break
    return info, {stage.name: outcomes[stage.name] for stage in plan}


def prepare_bench_data(folder: Path, work: Path) -> str:
    """Make the benchmark's synthetic corpus if it is missing (before benchmarks run side by side, which would
    each write it); what is wrong, or "" when it is there."""
    if (folder / "train.de").is_file():
        return ""
    maker = ROOT.parent / "shared" / "bench" / "make_synthetic.py"
    if not maker.is_file():
        return f"no benchmark corpus at {folder}, and no {maker} to make it (--bench-data DIR)"
    with open(work / "bench_data.log", "w", encoding="utf-8") as log:
        try:
            code = subprocess.run([PY, str(maker), str(folder)], stdout=log, stderr=subprocess.STDOUT, timeout=120).returncode
        except subprocess.TimeoutExpired:
            code = -1
    return "" if code == 0 and (folder / "train.de").is_file() else f"making the benchmark corpus failed (see {work / 'bench_data.log'})"


def judge(stage: Stage, code: int | None, seconds: float, limit: float, work: Path, args: argparse.Namespace, info: dict) -> Outcome:
    """The stage's row: status, result text and, when it failed, the lines that say why."""
    log = work / f"{stage.name}.log"
    name = stage.name
    extra: list[str] = []
    if name == "preflight":
        ok, text, found = preflight_result(work, args.device)
        info.update(found)
        if ok:
            text = found.get("gpu") or found.get("cpu") or "?"
            if args.device == "cuda" and not found.get("matmul_ok", True):
                ok, text = False, text + ": a matrix product on the GPU differs from the CPU's"
    elif name == "tests":
        ok, text, extra = tests_result(work)
    elif name.startswith("bench"):
        ok, text, _ = bench_result(work, name)
    elif name == "ddp":
        ok, text = ddp_result(work)
    elif name == "train":
        ok, text, summary = train_result(work / "multi30k")
        text = f"{stage.command[4]}: {text}"  # s2s train CONFIG
        if ok and not args.smoke and summary["best_dev_bleu"] < MIN_DEV_BLEU:
            ok, text = False, text + f" (below {MIN_DEV_BLEU:.0f}: a broken path, not noise)"
    else:
        ok, text = evaluate_result(work)
    if code is None:  # stopped at the limit
        if stage.soft_limit and ok:
            return Outcome("limit", seconds, text + f"; stopped at the stage's {limit:.0f} s limit (its best.pt is scored next)")
        return Outcome("TIMEOUT", seconds, f"stopped at {limit:.0f} s; " + text, log_tail(log))
    if code != 0 or not ok:
        status = "FAILED" if code == 0 else f"FAILED (exit {code})"
        return Outcome(status, seconds, text, extra + log_tail(log))
    return Outcome("ok", seconds, text)


def report(args: argparse.Namespace, info: dict, outcomes: dict[str, Outcome], work: Path, started: str, total: float) -> str:
    commit = git_commit()
    if args.device == "cuda" and info.get("gpu"):
        machine = (f"{info['gpu']} ({info.get('gpu_memory_gib')} GiB, compute {info.get('capability')}, "
                   f"{info.get('gpus')} GPU(s)), CUDA {info.get('cuda')}, cuDNN {info.get('cudnn')}")
    else:
        machine = f"{info.get('cpu', '?')}, no GPU used"
    lines = [
        f"# s2s GPU check{' (smoke)' if args.smoke else ''}, {started}",
        "",
        f"- machine: {machine}; {info.get('cpus', '?')} CPUs",
        f"- torch {info.get('torch', '?')}, Python {info.get('python', '?')}, s2s at {commit}",
        f"- command: bash bench/gpu.sh {shlex.join(sys.argv[1:])}",
        "",
        "| stage | status | seconds | result |",
        "|---|---|---|---|",
    ]
    for name, outcome in outcomes.items():
        title = TITLES[name].format(dev=args.device)
        lines.append(f"| {title} | {outcome.status} | {outcome.seconds:.0f} | {outcome.result.replace('|', chr(92) + '|')} |")
    failed = [TITLES[n].format(dev=args.device) for n, o in outcomes.items() if o.failed]
    lines += ["", f"{len(outcomes) - len(failed)} of {len(outcomes)} stages passed in {total:.0f} s"
              + (f"; failed or not run: {', '.join(failed)}" if failed else "") + f". Logs: {work}"]
    for name, outcome in outcomes.items():
        if outcome.details:
            lines += ["", f"{TITLES[name].format(dev=args.device)}: {outcome.status}", *outcome.details]
    return "\n".join(lines) + "\n"


def git_commit() -> str:
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, timeout=10)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return "? (no git)"
    if head.returncode:
        return "? (not a git checkout)"
    return head.stdout.strip() + (" with uncommitted changes" if dirty.stdout.strip() else "")


def main() -> int:
    parser = argparse.ArgumentParser(description="The GPU check (see bench/gpu.sh).")
    parser.add_argument("--device", default="cuda", choices=("cuda", "cpu"))
    parser.add_argument("--smoke", action="store_true", help="tiny versions of every stage (CI: `--device cpu --smoke`, under a minute)")
    parser.add_argument("--work", help="a new folder for logs and runs (default runs/gpu-check-DATE-TIME)")
    parser.add_argument("--out", help="where the report goes too (default WORK/gpu-report.txt)")
    parser.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "multi30k"), help="Multi30k: train/val/test2016.{de,en}")
    parser.add_argument("--bench-data", default=str(ROOT / "bench-data"), help="the benchmark's synthetic corpus (made if missing)")
    parser.add_argument("--budget", type=float, help="seconds for the whole check (default 460; smoke 150)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="more overrides for the training run")
    args = parser.parse_args()
    args.budget = args.budget or (150.0 if args.smoke else 460.0)
    args.data = str(Path(args.data).resolve())
    args.bench_data = str(Path(args.bench_data).resolve())
    work = Path(args.work or ROOT / "runs" / time.strftime("gpu-check-%Y%m%d-%H%M%S")).resolve()
    if work.exists() and any(work.iterdir()):
        parser.error(f"--work {work}: not empty (each check starts in a new folder)")
    work.mkdir(parents=True, exist_ok=True)
    out = Path(args.out).resolve() if args.out else work / "gpu-report.txt"

    started, t0 = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), time.monotonic()
    info, outcomes = check(args, work)
    text = report(args, info, outcomes, work, started, time.monotonic() - t0)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text, encoding="utf-8")
    print(text, end="")
    print(f"(report written to {out})", file=sys.stderr)
    return 1 if any(o.failed for o in outcomes.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
