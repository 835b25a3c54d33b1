"""The RNN-cell study on IMDB: SimpleRNN, GRU, LSTM, Bi-LSTM and a CNN + Bi-LSTM hybrid, each trained
from configs/imdb.yaml under the same budget (same data, vocabulary, truncation, sizes, optimiser and
number of epochs; only the encoder changes), then scored on test.jsonl.

    taskset -c 1 python bench/cell_study.py [--data ../shared/data/imdb] [--out runs/cell-study] [--epochs 2]
                                            [--only NAME ...] [--set KEY=VALUE ...]

Each variant trains in OUT/NAME (`s2s train ... --set train.epochs=E`, no early stop before E), is scored
with `s2s evaluate --data test.jsonl --json`, and leaves OUT/NAME/study.json; a variant that already has
one is not run again, so the study can be run piecewise (--only) or resumed. Prints a Markdown table:
test accuracy, best dev accuracy, parameters, seconds per epoch (training plus dev scoring, from
metrics.jsonl), and the hardware.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]

VARIANTS = {
    "SimpleRNN": ["encoder.cell=rnn", "encoder.bidirectional=false"],
    "GRU": ["encoder.cell=gru", "encoder.bidirectional=false"],
    "LSTM": ["encoder.cell=lstm", "encoder.bidirectional=false"],
    "Bi-LSTM": ["encoder.cell=lstm", "encoder.bidirectional=true"],  # the default config
    "CNN+Bi-LSTM": ["encoder.cell=lstm", "encoder.bidirectional=true", "encoder.conv_filters=128", "encoder.conv_kernel=5", "encoder.conv_pool=2"],
}


def s2s(*argv: str) -> str:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    result = subprocess.run([sys.executable, "-m", "s2s", "-q", *argv], env=env, capture_output=True, text=True)
    if result.returncode != 0:
        sys.exit(f"s2s {' '.join(argv)} failed:\n{result.stderr[-2000:]}")
    return result.stdout


def run_variant(name: str, overrides: list[str], args: argparse.Namespace) -> dict:
    out = Path(args.out) / name
    done = out / "study.json"
    if done.is_file():
        return json.loads(done.read_text())
    sets = [f"data.dir={args.data}", f"train.epochs={args.epochs}", "train.early_stopping=0", *overrides, *args.set]
    resume = ["--resume"] if (out / "last.pt").is_file() else []
    s2s("train", str(ROOT / "configs" / "imdb.yaml"), *(x for s in sets for x in ("--set", s)), "--out", str(out), *resume)
    test = json.loads(s2s("evaluate", "--model", str(out), "--data", str(Path(args.data) / "test.jsonl"), "--json"))
    events = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    epochs = [e for e in events if "dev_accuracy" in e]
    weights = torch.load(out / "best.pt", map_location="cpu", weights_only=True)["model"]
    row = {
        "name": name,
        "overrides": overrides,
        "test_accuracy": round(test["accuracy"], 2),
        "test_macro_f1": round(test["macro_f1"], 2),
        "dev_accuracy_per_epoch": [round(e["dev_accuracy"], 2) for e in epochs],
        "parameters": sum(w.numel() for w in weights.values()),
        "seconds_per_epoch": round(epochs[-1]["seconds"] / len(epochs), 1),
        "epochs": len(epochs),
    }
    done.write_text(json.dumps(row, indent=1))
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "imdb"), help="folder with train.jsonl and test.jsonl")
    parser.add_argument("--out", default="runs/cell-study", help="one run directory per variant below this folder")
    parser.add_argument("--epochs", type=int, default=2, help="the budget: epochs per variant")
    parser.add_argument("--only", nargs="+", choices=list(VARIANTS), help="run only these variants")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="extra override for every variant")
    args = parser.parse_args()
    rows = [run_variant(name, VARIANTS[name], args) for name in (args.only or VARIANTS)]
    print(f"IMDB, {args.epochs} epochs each, configs/imdb.yaml + the variant's overrides; "
          f"{os.cpu_count()}-core CPU ({platform.processor() or platform.machine()}), torch {torch.__version__}, "
          f"train.threads=1, pinned to CPU core(s) {sorted(os.sched_getaffinity(0))}")
    print("| encoder | test accuracy | best dev accuracy | dev accuracy per epoch | parameters | s / epoch |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        per_epoch = " / ".join(f"{a:.2f}" for a in r["dev_accuracy_per_epoch"])
        print(f"| {r['name']} | {r['test_accuracy']:.2f} | {max(r['dev_accuracy_per_epoch']):.2f} | {per_epoch} | "
              f"{r['parameters']:,} | {r['seconds_per_epoch']:.0f} |")


if __name__ == "__main__":
    main()
