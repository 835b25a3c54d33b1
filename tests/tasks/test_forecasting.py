"""Forecasting: the head, its Task, the Forecaster API and the CLI on a noisy sine series written here."""
from __future__ import annotations

import json
import math
import random
import sys
from datetime import datetime, timedelta
from pathlib import Path

import pytest
import torch
from conftest import train_losses

from s2s import config as config_lib
from s2s.cli import main
from s2s.data.series import read_series
from s2s.tasks.forecasting import (
    Forecaster,
    Task,
    WindowBatch,
    linear_baseline,
)

ROWS, TRAIN, DEV, TEST = 480, 300, 90, 90
SEQ, HORIZON = 24, 12


def write_sine(path, rows: int = ROWS, seed: int = 0):
    """The RNN tutorials' noisy sine wave, three variables: a daily sine, a half-daily cosine, a slow trend (OT)."""
    rng = random.Random(seed)
    start = datetime(2020, 1, 1)
    lines = ["date,sin,cos,OT"]
    for i in range(rows):
        t = (start + timedelta(hours=i)).isoformat(sep=" ")
        lines.append(f"{t},{math.sin(2 * math.pi * i / 24) + rng.gauss(0, 0.1):.4f},"
                     f"{2 * math.cos(2 * math.pi * i / 12) + 5 + rng.gauss(0, 0.1):.4f},{0.01 * i + rng.gauss(0, 0.1):.4f}")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def tiny_config(data_dir, encoder: dict | None = None, **forecasting):
    return config_lib.from_dict({
        "task": "forecasting",
        "data": {"dir": str(data_dir), "file": "sine.csv", "train_rows": TRAIN, "dev_rows": DEV, "test_rows": TEST},
        "encoder": {"emb_dim": 16, "hidden_size": 16, "dropout": 0.0, **(encoder or {})},
        "forecasting": {"seq_len": SEQ, "horizon": HORIZON, "segment": 6, **forecasting},
        "train": {"epochs": 6, "max_tokens": 32, "lr": 0.01, "threads": 1, "log_every": 50, "early_stopping": 0},
        "decode": {"batch_size": 64},
    })


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("sine")
    write_sine(folder / "sine.csv")
    return folder


@pytest.fixture(scope="module")
def run_dir(data_dir, tmp_path_factory):
    config = tiny_config(data_dir)
    path = tmp_path_factory.mktemp("runs") / "fc"
    config_path = path.parent / "fc.yaml"
    config_lib.save(config, config_path)
    assert main(["-q", "train", str(config_path), "--out", str(path)]) == 0
    return path


@pytest.mark.parametrize("model", ["segrnn", "lstm", "pmf", "attention"])
def test_each_model_overfits_one_batch(data_dir, tmp_path, model):
    torch.manual_seed(0)
    keys = {"model": "segrnn", "decoder": model} if model in ("pmf", "attention") else {"model": model}
    task = Task(tiny_config(data_dir, **keys), tmp_path)
    batch = task.batch(list(range(16)))
    optimizer = torch.optim.Adam(task.model.parameters(), lr=0.01)
    first = None
    for _ in range(60):
        loss = task.model(batch).loss
        first = first if first is not None else loss.item()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert loss.item() < 0.2 * first


def test_forecast_moves_with_the_level_of_its_window(data_dir, tmp_path):
    # Instance normalisation: a window shifted by a constant gets the same forecast shifted by it.
    model = Task(tiny_config(data_dir), tmp_path).model.eval()
    src = torch.randn(3, SEQ, 3)
    with torch.no_grad():
        assert torch.allclose(model.predict(src + 2.5), model.predict(src) + 2.5, atol=1e-5)
        assert model.predict(src).shape == (3, HORIZON, 3)


@pytest.mark.parametrize("cell", ["gru", "lstm"])
def test_pmf_forecasts_each_window_alone_whatever_the_horizon(data_dir, tmp_path, cell):
    # 12 rows of horizon in segments of 5: three decoding steps, the last one's rows past 12 dropped.
    model = Task(tiny_config(data_dir, {"cell": cell}, decoder="pmf", segment=5), tmp_path).model.eval()
    src = torch.randn(4, SEQ, 3)
    with torch.no_grad():
        out = model.predict(src)
        assert out.shape == (4, HORIZON, 3)
        assert torch.allclose(model.predict(src[2:3]), out[2:3], atol=1e-5)  # no window reads another's
        assert torch.allclose(model.predict(src + 1.5), out + 1.5, atol=1e-5)
    # the channel embedding tells the variables apart: the same series in two columns gets two forecasts
    same = torch.randn(1, SEQ, 1).expand(1, SEQ, 3)
    with torch.no_grad():
        pred = model.predict(same)
    assert not torch.allclose(pred[..., 0], pred[..., 1])


def test_attention_decoder_forecasts_each_window_alone_whatever_the_horizon(data_dir, tmp_path):
    # 12 rows of horizon in segments of 5: three decoder steps over the encoder's segment states.
    model = Task(tiny_config(data_dir, {"bidirectional": True}, decoder="attention", segment=5), tmp_path).model.eval()
    src = torch.randn(4, SEQ, 3)
    with torch.no_grad():
        out = model.predict(src)
        assert out.shape == (4, HORIZON, 3)
        assert torch.allclose(model.predict(src[2:3]), out[2:3], atol=1e-5)
        assert torch.allclose(model.predict(src + 1.5), out + 1.5, atol=1e-5)
    with pytest.raises(config_lib.S2SError, match="forecasting.decoder"):
        tiny_config(data_dir, model="lstm", decoder="attention")


def test_pmf_needs_a_forward_segrnn(data_dir):
    with pytest.raises(config_lib.S2SError, match="forecasting.decoder"):
        tiny_config(data_dir, {"bidirectional": True}, decoder="pmf")
    with pytest.raises(config_lib.S2SError, match="forecasting.decoder"):
        tiny_config(data_dir, model="lstm", decoder="pmf")


def test_a_look_back_of_part_segments_is_padded_at_the_front(data_dir, tmp_path):
    model = Task(tiny_config(data_dir, segment=5), tmp_path).model.eval()  # 24 rows: 5 segments, the first padded
    src = torch.randn(2, SEQ, 3)
    with torch.no_grad():
        assert model.predict(src).shape == (2, HORIZON, 3)
        # padding repeats the first row: a window that starts with that row already gives the same forecast
        assert torch.allclose(model.predict(src), model.predict(torch.cat([src[:, :1], src], dim=1)), atol=1e-6)


def test_linear_baseline_recovers_a_linear_series():
    # Each variable continues a straight line: after subtracting the last value the map is exact.
    t = torch.arange(60.0)[:, None]
    values = torch.cat([0.5 * t, -t + 3], dim=1)  # (60, 2)
    wins = values.unfold(0, 8 + 4, 1).transpose(1, 2)  # (49, 12, 2)
    pred = linear_baseline(wins, wins, 8, ridge=1e-9)
    assert torch.allclose(pred, wins[:, 8:], atol=1e-3)


def test_training_beats_repeat_last_and_scores_every_test_window(run_dir, data_dir, capsys):
    assert {p.name for p in run_dir.iterdir()} >= {"best.pt", "last.pt", "config.yaml", "forecasting_scaler.json"}
    assert main(["evaluate", "--model", str(run_dir), "--split", "test", "--json"]) == 0
    scores = json.loads(capsys.readouterr().out)
    assert scores["windows"] == TEST - HORIZON + 1  # every test window, none dropped
    assert scores["mse"] < 0.5 * scores["repeat_last"]["mse"] and scores["mae"] < scores["repeat_last"]["mae"]
    assert scores["mse"] < 0.5 and "linear" in scores and "mae_OT" in scores
    per_window = (run_dir / "eval" / "test.tsv").read_text(encoding="utf-8").splitlines()
    assert len(per_window) == 1 + scores["windows"]
    times = read_series(data_dir / "sine.csv", "date").times
    assert per_window[1].split("\t")[0] == times[TRAIN + DEV]  # the first forecast starts at the test border
    assert per_window[-1].split("\t")[0] == times[TRAIN + DEV + TEST - HORIZON]  # the last ends at the split's end
    assert main(["evaluate", "--model", str(run_dir), "--split", "dev"]) == 0
    out = capsys.readouterr().out
    assert f"{DEV - HORIZON + 1} windows (every one)" in out and "repeat last value" in out and "MAE of OT" in out


def test_speed_benchmark_times_every_test_window_of_a_run(run_dir):
    """bench/forecast.py (the benchmark's forecasting line) on a trained run: every test window, at its shape."""
    import subprocess

    script = Path(__file__).resolve().parents[2] / "bench" / "forecast.py"
    done = subprocess.run([sys.executable, str(script), "--model", str(run_dir), "--json-only"], capture_output=True, text=True, check=True)
    result = json.loads(done.stdout.splitlines()[-1])
    assert result["windows"] == TEST - HORIZON + 1 and result["seq_len"] == SEQ and result["horizon"] == HORIZON
    assert result["variables"] == 3 and result["windows_per_s"] > 0 and "test split" in result["data"]


def test_forecaster_api_and_cli_agree(run_dir, data_dir, tmp_path, capsys):
    forecaster = Forecaster.load(run_dir, device="cpu")
    history = read_series(data_dir / "sine.csv", "date")
    pred = forecaster.predict(history)
    assert pred.shape == (HORIZON, 3)
    assert torch.allclose(forecaster.predict(history.values[-SEQ:]), pred)  # only the last seq_len rows count
    out = tmp_path / "forecast.csv"
    assert main(["forecast", "--model", str(run_dir), "--input", str(data_dir / "sine.csv"), "--output", str(out)]) == 0
    lines = out.read_text(encoding="utf-8").splitlines()
    assert lines[0] == "date,sin,cos,OT" and len(lines) == 1 + HORIZON
    last = datetime.fromisoformat(history.times[-1])
    assert lines[1].split(",")[0] == (last + timedelta(hours=1)).isoformat(sep=" ")
    written = torch.tensor([[float(v) for v in line.split(",")[1:]] for line in lines[1:]], dtype=torch.float64)
    assert torch.allclose(written, pred, rtol=1e-5, atol=1e-4)  # original units, as the API gives


@pytest.mark.parametrize("text, message", [
    ("date,sin,cos,OT\n2020-01-01 00:00:00,1,2,3\n", "h.csv:2: 1 rows of history, the model looks back 24"),
    ("date,sin,cos\n2020-01-01 00:00:00,1,2\n", "h.csv:1: unknown column 'OT'"),
    ("date,sin,cos,OT\n2020-01-01 00:00:00,1,2,x\n", "h.csv:2: column 'OT' holds 'x', not a number"),
])
def test_forecast_bad_history_is_one_line(run_dir, tmp_path, capsys, text, message):
    path = tmp_path / "h.csv"
    path.write_text(text, encoding="utf-8")
    assert main(["forecast", "--model", str(run_dir), "--input", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and err.count("\n") == 1


def test_evaluate_a_csv_scores_all_its_windows(run_dir, tmp_path, capsys):
    path = write_sine(tmp_path / "other.csv", rows=60, seed=3)
    assert main(["evaluate", "--model", str(run_dir), "--data", str(path), "--json"]) == 0
    scores = json.loads(capsys.readouterr().out)
    assert scores["windows"] == 60 - SEQ - HORIZON + 1 and "linear" not in scores


def test_plot_writes_a_png_of_forecast_against_truth(run_dir, tmp_path, capsys):
    pytest.importorskip("matplotlib")
    path = tmp_path / "test.png"
    assert main(["evaluate", "--model", str(run_dir), "--split", "test", "--plot", str(path), "--plot-windows", "3",
                 "--hyp-prefix", str(tmp_path / "test"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["plot"] == str(path)
    data = path.read_bytes()
    assert len(data) > 0 and data[:8] == b"\x89PNG\r\n\x1a\n"


def test_plot_without_matplotlib_or_windows_is_one_line(run_dir, tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # an import of it now fails as if not installed
    assert main(["evaluate", "--model", str(run_dir), "--split", "test", "--plot", str(tmp_path / "p.png")]) == 2
    assert capsys.readouterr().err == 'error: --plot needs matplotlib: pip install -e ".[plot]"\n'
    assert main(["evaluate", "--model", str(run_dir), "--split", "test", "--plot-windows", "2"]) == 2
    assert "--plot-windows 2: give --plot FILE.png" in capsys.readouterr().err


def test_plot_on_another_tasks_run_does_not_apply(tmp_path, capsys):
    from s2s import checkpoint

    fake = tmp_path / "translation-run"
    fake.mkdir()
    checkpoint.save({"config": config_lib.task_dict(config_lib.Config()), "model": {}, "task": "translation"}, fake / checkpoint.BEST)
    assert main(["evaluate", "--model", str(fake), "--split", "test", "--plot", str(tmp_path / "p.png")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and f"--plot does not apply to {fake}, a translation run" in err and err.count("\n") == 1


def test_training_data_problems_are_one_line(data_dir, tmp_path, capsys):
    config = tiny_config(data_dir)
    short = tmp_path / "data"
    short.mkdir()
    write_sine(short / "sine.csv", rows=400)
    path = tmp_path / "c.yaml"
    config_lib.save(config, path)
    assert main(["train", str(path), "--set", f"data.dir={short}", "--out", str(tmp_path / "run")]) == 2
    assert "sine.csv:401: 400 data rows, fewer than the split's 300 + 90 + 90" in capsys.readouterr().err
    assert main(["train", str(path), "--set", "forecasting.features=univariate", "--set", "forecasting.target=load",
                 "--out", str(tmp_path / "run2")]) == 2
    assert "sine.csv:1: unknown column 'load'" in capsys.readouterr().err


def test_resume_equals_uninterrupted(data_dir, tmp_path):
    from dataclasses import replace

    from s2s.train import train

    def config(steps):
        c = tiny_config(data_dir)
        return replace(c, train=replace(c.train, max_steps=steps, log_every=1), encoder=replace(c.encoder, dropout=0.2))

    train(config(6), tmp_path / "a")
    train(config(3), tmp_path / "b")
    train(config(6), tmp_path / "b", resume=True)

    assert train_losses(tmp_path / "a") == pytest.approx(train_losses(tmp_path / "b"), abs=1e-6) and len(train_losses(tmp_path / "a")) == 6


def test_univariate_reads_the_target_alone(data_dir, tmp_path):
    task = Task(tiny_config(data_dir, features="univariate"), tmp_path)
    assert task.train.shape[-1] == 1 and isinstance(task.batch([0, 1]), WindowBatch)


def test_printed_default_config_trains(data_dir, tmp_path, capsys):
    assert main(["config", "forecasting"]) == 0
    path = tmp_path / "fc.yaml"
    path.write_text(capsys.readouterr().out, encoding="utf-8")
    sets = [f"data.dir={data_dir}", "data.file=sine.csv", f"data.train_rows={TRAIN}", f"data.dev_rows={DEV}",
            f"data.test_rows={TEST}", f"forecasting.seq_len={SEQ}", f"forecasting.horizon={HORIZON}", "forecasting.segment=6",
            "encoder.emb_dim=8", "encoder.hidden_size=8", "train.max_steps=2", "train.threads=1"]
    assert main(["-q", "train", str(path), *[a for s in sets for a in ("--set", s)], "--out", str(tmp_path / "run")]) == 0


ROOT = Path(__file__).resolve().parents[2]
ETT = ROOT.parent / "shared" / "data" / "ett"


@pytest.mark.skipif(not (ETT / "ETTh1.csv").is_file(), reason=f"ETTh1 not found at {ETT} (the shared data folder)")
def test_etth1_smoke_config_end_to_end(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["-q", "train", str(ROOT / "configs" / "etth1-smoke.yaml"), "--set", f"data.dir={ETT}", "--out", str(out)]) == 0
    capsys.readouterr()
    assert main(["evaluate", "--model", str(out), "--split", "test", "--json"]) == 0
    scores = json.loads(capsys.readouterr().out)
    assert scores["windows"] == 200 - 24 + 1 and scores["mse"] < scores["repeat_last"]["mse"]
    config_lib.load(ROOT / "configs" / "etth1.yaml")  # the full config is valid too
