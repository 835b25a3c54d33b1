"""Forecasting throughput: test windows per second at batch 256.

    python bench/forecast.py [--model RUN_DIR] [--config configs/etth1.yaml] [--horizon 96] [--data DIR] [--threads 1]

With --model, a trained run forecasts; without it, the config's model is built with random weights (what
matters for speed is the shape, not the weights). The windows are ETTh1's test windows (every one, as
`s2s evaluate` scores them) when the data is there, else made-up ones of the same shape. The clock
covers predict_windows: batching, the forward pass and adding each window's level back.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
from report import report

from s2s import config as config_lib
from s2s.data.series import windows
from s2s.errors import S2SError
from s2s.tasks.forecasting import Forecaster, build_model, predict_windows, read_data, scaled_splits

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", metavar="RUN_DIR", help="a trained forecasting run (default: random weights)")
    parser.add_argument("--config", default=str(ROOT / "configs" / "etth1.yaml"), help="config of the random-weight model")
    parser.add_argument("--horizon", type=int, default=96, help="forecast horizon of the random-weight model")
    parser.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "ett"), help="folder with ETTh1.csv")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json-only", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(1234)

    if args.model:
        forecaster = Forecaster.load(args.model, device="cpu")
        config, model = forecaster.config, forecaster.model
    else:
        config = config_lib.load(args.config, [f"forecasting.horizon={args.horizon}", f"data.dir={args.data}"])
        model = None
    f = config.forecasting
    try:
        splits, _ = scaled_splits(config, read_data(config))
        wins, source = windows(splits["test"], f.seq_len, f.horizon, "test"), f"{config.data.dir}/{config.data.file} (test split)"
    except S2SError:
        channels = 1 if f.features == "univariate" else 7
        wins, source = torch.randn(2_785, f.seq_len + f.horizon, channels), "made-up windows"
    model = model or build_model(config, wins.size(2)).eval()
    device = torch.device("cpu")

    predict_windows(model, wins[: args.batch_size], args.batch_size, device)  # warm-up
    start = time.perf_counter()
    predict_windows(model, wins, args.batch_size, device)
    seconds = time.perf_counter() - start
    results = {
        "windows_per_s": round(len(wins) / seconds, 1),
        "windows": len(wins),
        "seq_len": f.seq_len,
        "horizon": f.horizon,
        "variables": wins.size(2),
        "batch_size": args.batch_size,
        "model": args.model or f"{args.config} (random weights)",
        "data": source,
        "threads": args.threads,
        "torch": torch.__version__,
    }
    report(results, args.json_only)


if __name__ == "__main__":
    main()
