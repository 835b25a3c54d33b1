"""Forecasting (N-vs-M on real values): the next `horizon` rows of a multivariate series from the last
`seq_len` rows, on the shared encoder fed through its input projection; scored by MSE and MAE on the
z-scored values, next to the repeat-last-value and a linear baseline on the same windows.

Two models (forecasting.model):
- segrnn (Lin et al. 2023, "SegRNN"): channel independence (each variable is a series of its own, one
  shared model), each window cut into segments of `segment` rows, each segment projected and fed to the
  RNN, and the last state mapped to all `horizon` steps at once (parallel multi-step decoding): by one linear
  layer (forecasting.decoder linear) or, as SegRNN's PMF, by one more RNN step per output segment (pmf);
  or the translation head's Bahdanau attention decoder generates the horizon segment by segment (attention).
- lstm: the RNN tutorials' recipe: every variable at each step, last state -> all steps.
Both subtract each window's last value (or mean; forecasting.norm) and add it back: the instance
normalisation of RevIN/NLinear, which removes the level shift between training and test months.
"""
from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from s2s import checkpoint
from s2s.config import Config
from s2s.data.series import Scaler, Series, read_series, split_rows, windows
from s2s.device import resolve_device
from s2s.errors import S2SError
from s2s.nn import Output
from s2s.nn.decoder import AttentionDecoder
from s2s.nn.encoder import Encoder
from s2s.plot import plot_forecasts, require_matplotlib

log = logging.getLogger(__name__)

SCALER_FILE = "forecasting_scaler.json"


class SeriesForecaster(nn.Module):
    """The next `horizon` rows from the last `seq_len`, all at once, from the shared encoder's last state.
    segrnn: every variable of every window is a sequence of its own (channel independence) read as
    segments of `segment` rows, each projected by the encoder's input projection (Lin et al. 2023,
    sec. 3.2), decoded by a linear layer or by PMF's parallel RNN steps; lstm: the window's rows
    are the steps and the last state gives every variable's forecast."""

    def __init__(self, encoder: Encoder, channels: int, seq_len: int, horizon: int, model: str, segment: int,
                 norm: str, dropout: float, loss: str, decoder: str = "linear"):
        super().__init__()
        self.encoder, self.channels, self.seq_len, self.horizon = encoder, channels, seq_len, horizon
        self.model, self.segment, self.norm, self.loss, self.decoder = model, segment, norm, loss, decoder
        self.dropout = nn.Dropout(dropout)
        if decoder == "pmf":
            # One decoding step per output segment, all in parallel: the step's input says which segment
            # (position) of which variable (channel) it forecasts; half the width each, as SegRNN.
            self.out_segments = -(-horizon // segment)
            width = encoder.rnn.input_size
            self.position = nn.Parameter(torch.randn(self.out_segments, width - width // 2))
            self.channel = nn.Parameter(torch.randn(channels, width // 2))
            self.out = nn.Linear(encoder.output_size, segment)
        elif decoder == "attention":
            # N-vs-M: the translation head's decoder, one step per output segment, attending over the
            # encoder's segment states; its "tokens" are the segments' positions, its output a segment's rows.
            self.out_segments = -(-horizon // segment)
            size = encoder.output_size
            self.attend = AttentionDecoder(self.out_segments, encoder.rnn.input_size, size, size, size, dropout=dropout)
            self.attend.output = nn.Linear(self.attend.out_size, segment)
        else:  # segrnn: one variable's forecast per state; lstm: every variable's.
            self.out = nn.Linear(encoder.output_size, horizon * (1 if model == "segrnn" else channels))

    def predict(self, src: torch.Tensor) -> torch.Tensor:
        """src (B, L, C) z-scored -> forecast (B, H, C) z-scored."""
        B, L, C = src.shape
        levels = {"last": src[:, -1:, :], "mean": src.mean(1, keepdim=True), "none": src.new_zeros(B, 1, C)}
        level = levels[self.norm]  # (B, 1, C), subtracted and added back
        x = src - level  # (B, L, C)
        if self.model == "segrnn":
            short = -L % self.segment
            if short:  # the front padded with the first row, to whole segments
                x = torch.cat([x[:, :1].expand(B, short, C), x], dim=1)  # (B, L', C), L' a multiple of w
            x = x.transpose(1, 2).reshape(B * C, -1, self.segment)  # (B*C, L'/w, w): segments of each variable
        if self.decoder == "pmf":
            y = self._decode_segments(x, B, C)  # (B*C, H)
        else:
            enc = self.encoder(x, torch.full((x.size(0),), x.size(1), dtype=torch.long))  # states (B*C or B, N, D)
            if self.decoder == "attention":
                positions = torch.arange(self.out_segments, device=x.device).expand(x.size(0), -1)  # (B*C, M)
                y = self.attend(positions, enc).reshape(x.size(0), -1)[:, : self.horizon]  # (B*C, H)
            else:
                y = self.out(self.dropout(enc.final))  # (B*C, H) or (B, H*C)
        y = y.view(B, C, self.horizon).transpose(1, 2) if self.model == "segrnn" else y.view(B, self.horizon, C)
        return y + level  # (B, H, C)

    def _decode_segments(self, x: torch.Tensor, B: int, C: int) -> torch.Tensor:
        """x (B*C, N, w) segments -> (B*C, H): the encoder's RNN reads the segments, then takes one more step
        per output segment from its final state (all M of them at once, none reading another's output)."""
        enc, M = self.encoder, self.out_segments
        # Every window has all its segments, so the RNN runs unpacked (packing would only add work).
        _, hidden = enc.rnn(enc.dropout(enc.project(x)))  # (layers, B*C, D), or (h, c) for an LSTM
        spread = lambda h: h.repeat_interleave(M, dim=1)  # noqa: E731  (layers, B*C*M, D): row bc*M + m
        hidden = tuple(spread(h) for h in hidden) if isinstance(hidden, tuple) else spread(hidden)
        query = torch.cat([self.position[None, :, :].expand(C, -1, -1),
                           self.channel[:, None, :].expand(-1, M, -1)], dim=-1)  # (C, M, E)
        query = query[None].expand(B, -1, -1, -1).reshape(B * C * M, 1, -1)  # row (b*C + c)*M + m
        out, _ = enc.rnn(query, hidden)  # (B*C*M, 1, D)
        y = self.out(self.dropout(out[:, 0]))  # (B*C*M, w)
        return y.view(B * C, M * self.segment)[:, : self.horizon]

    def forward(self, batch) -> Output:
        pred = self.predict(batch.src)
        loss = F.mse_loss(pred, batch.tgt) if self.loss == "mse" else F.l1_loss(pred, batch.tgt)
        return Output(loss, pred, int(batch.tgt.numel()))


def build_model(config: Config, channels: int) -> SeriesForecaster:
    e, f = config.encoder, config.forecasting
    input_size = f.segment if f.model == "segrnn" else channels
    encoder = Encoder(0, e.emb_dim, e.hidden_size, e.num_layers, e.cell, e.dropout, e.bidirectional, input_size=input_size)
    return SeriesForecaster(encoder, channels, f.seq_len, f.horizon, f.model, f.segment, f.norm, e.dropout, f.loss, f.decoder)


class WindowBatch(NamedTuple):
    src: torch.Tensor  # (B, L, C) the look-back, z-scored
    tgt: torch.Tensor  # (B, H, C) the rows to forecast, z-scored

    def to(self, device: torch.device) -> WindowBatch:
        return WindowBatch(*(x.to(device, non_blocking=True) for x in self))


def read_data(config: Config) -> Series:
    d, f = config.data, config.forecasting
    columns = [f.target] if f.features == "univariate" else None
    return read_series(Path(d.dir) / d.file, d.time_column, columns)


def scaled_splits(config: Config, series: Series, scaler: Scaler | None = None) -> tuple[dict[str, torch.Tensor], Scaler]:
    """The train/dev/test rows, z-scored with the training rows' statistics (or `scaler`'s)."""
    d = config.data
    rows = split_rows(series, d.train_rows, d.dev_rows, d.test_rows, config.forecasting.seq_len)
    scaler = scaler or Scaler.fit(series, rows["train"])
    return {name: scaler.transform(series.values[part]) for name, part in rows.items()}, scaler


class Task:
    """Training data, model and dev scoring for `s2s train` with task: forecasting."""

    metric = "mse"
    higher_is_better = False

    def __init__(self, config: Config, run_dir: Path, resume: bool = False):
        f = config.forecasting
        series = read_data(config)
        scaler = Scaler.load(run_dir / SCALER_FILE) if resume else None
        splits, scaler = scaled_splits(config, series, scaler)
        if not resume:
            scaler.save(run_dir / SCALER_FILE)
        where = f"{series.where}:{series.lines[-1]}"
        self.train = windows(splits["train"], f.seq_len, f.horizon, where)  # (N, L + H, C)
        if config.data.max_train:
            self.train = self.train[: config.data.max_train]
        self.dev = windows(splits["dev"], f.seq_len, f.horizon, where)
        log.info("%s: %d rows, columns %s; %d training windows, %d dev windows", series.where, len(series.values),
                 ", ".join(series.columns), len(self.train), len(self.dev))
        self.seq_len, self.batch_size = f.seq_len, config.decode.batch_size
        self.lengths = [1] * len(self.train)  # each window costs the same: train.max_tokens windows per batch
        self.model = build_model(config, len(series.columns))

    def batch(self, indices: list[int]) -> WindowBatch:
        w = self.train[indices]  # (B, L + H, C)
        return WindowBatch(w[:, : self.seq_len], w[:, self.seq_len :])

    def validate(self, model: SeriesForecaster, device: torch.device) -> dict:
        pred = predict_windows(model, self.dev, self.batch_size, device)
        return error_scores(pred, self.dev[:, self.seq_len :])


@torch.inference_mode()
def predict_windows(model: SeriesForecaster, wins: torch.Tensor, batch_size: int, device: torch.device) -> torch.Tensor:
    """Forecasts (N, H, C) of every window (N, L + H, C) (or look-back (N, L, C)), z-scored; none is dropped."""
    was_training = model.training
    model.eval()
    out = []
    try:
        for start in range(0, len(wins), batch_size):
            src = wins[start : start + batch_size, : model.seq_len].to(device)
            out.append(model.predict(src).float().cpu())
    finally:
        model.train(was_training)
    return torch.cat(out)


def error_scores(pred: torch.Tensor, gold: torch.Tensor) -> dict:
    """MSE and MAE averaged over every window, step and variable."""
    diff = (pred.double() - gold.double())
    return {"mse": float(diff.pow(2).mean()), "mae": float(diff.abs().mean())}


def linear_baseline(train: torch.Tensor, wins: torch.Tensor, seq_len: int, ridge: float = 1e-3) -> torch.Tensor:
    """A DLinear-style reference: one linear map from the look-back to the horizon, shared by every variable,
    on windows with their last value subtracted (NLinear, Zeng et al. 2023), fitted by ridge regression on the
    training windows in closed form. Returns the forecasts (N, H, C) of `wins`."""
    def flat(w: torch.Tensor) -> torch.Tensor:  # (N, L + H, C) -> (N * C, L + H), minus each look-back's last value
        x = w.transpose(1, 2).reshape(-1, w.size(1)).double()
        return x - x[:, seq_len - 1 : seq_len]
    x = flat(train)
    a, b = x[:, :seq_len], x[:, seq_len:]
    weight = torch.linalg.solve(a.T @ a + ridge * len(a) * torch.eye(seq_len, dtype=a.dtype), a.T @ b)  # (L, H)
    y = flat(wins)
    pred = y[:, :seq_len] @ weight + (wins.transpose(1, 2).reshape(-1, wins.size(1))[:, seq_len - 1 : seq_len]).double()
    return pred.view(wins.size(0), wins.size(2), -1).transpose(1, 2).float()


class Forecaster:
    """Forecast with a trained model: `Forecaster.load(run_dir).predict(history)`, history in original units."""

    def __init__(self, model: SeriesForecaster, scaler: Scaler, config: Config, device: torch.device):
        self.model, self.scaler, self.config, self.device = model, scaler, config, device
        self.columns, self.time_column = scaler.columns, config.data.time_column
        self.seq_len, self.horizon = config.forecasting.seq_len, config.forecasting.horizon

    @classmethod
    def load(cls, run_dir: str | Path, device: str = "auto") -> Forecaster:
        config, payload, path = checkpoint.load_trained(run_dir, "forecasting")
        scaler = Scaler.load(path.parent / SCALER_FILE)
        model = build_model(config, len(scaler.columns))
        checkpoint.load_weights(model, payload, path)
        target = resolve_device(device)
        return cls(model.to(target).eval(), scaler, config, target)

    def read(self, path: str | Path) -> Series:
        """A history CSV with the model's timestamp column and variables."""
        return read_series(path, self.time_column, self.columns)

    def predict(self, history: Series | torch.Tensor) -> torch.Tensor:
        """The next `horizon` rows (H, C) in original units after the last `seq_len` rows of `history` (a Series,
        or a tensor (T, C) in the order of the model's columns)."""
        values = history.values if isinstance(history, Series) else torch.as_tensor(history, dtype=torch.float64)
        where = f"{history.where}:{history.lines[-1]}" if isinstance(history, Series) else "history"
        if values.dim() != 2 or values.size(1) != len(self.columns):
            raise S2SError(f"{where}: expected rows of {len(self.columns)} values ({', '.join(self.columns)}), got shape {tuple(values.shape)}")
        if len(values) < self.seq_len:
            raise S2SError(f"{where}: {len(values)} rows of history, the model looks back {self.seq_len}")
        src = self.scaler.transform(values[-self.seq_len :])[None]  # (1, L, C)
        return self.scaler.inverse(predict_windows(self.model, src, 1, self.device)[0])

    def evaluate(self, values: torch.Tensor, where: str, train: torch.Tensor | None = None,
                 batch_size: int | None = None) -> tuple[dict, torch.Tensor]:
        """Scores of every window of z-scored rows `values` (N, C), with the repeat-last-value baseline (and the
        linear one, fitted on the z-scored `train` rows, when given); and the forecasts (windows, H, C)."""
        wins = windows(values, self.seq_len, self.horizon, where)
        gold = wins[:, self.seq_len :]
        pred = predict_windows(self.model, wins, batch_size or self.config.decode.batch_size, self.device)
        scores = {"file": where, "windows": len(wins), "seq_len": self.seq_len, "horizon": self.horizon, **error_scores(pred, gold),
                  "repeat_last": error_scores(wins[:, self.seq_len - 1 : self.seq_len].expand_as(gold), gold)}
        if train is not None:
            scores["linear"] = error_scores(linear_baseline(windows(train, self.seq_len, self.horizon), wins, self.seq_len), gold)
        target = self.config.forecasting.target
        if target in self.columns:  # MAE in the target's own units
            c = self.columns.index(target)
            scores[f"mae_{target}"] = float((pred[..., c] - gold[..., c]).abs().double().mean() * self.scaler.std[c])
        return scores, pred


EVALUATE_FLAGS = ("data", "plot", "plot_windows")


def evaluate(args: argparse.Namespace) -> tuple[dict, list[str], dict[str, list[str]]]:
    """`s2s evaluate` on a forecasting run: --split dev|test (the run's row split) or --data FILE (every window
    of a CSV), by MSE and MAE on z-scored values next to the repeat-last and linear baselines. Returns the
    scores, the report's lines and the per-window errors to write under args.hyp_prefix."""
    run = args.model[0]
    if bool(args.data) == bool(args.split):
        raise S2SError(f"evaluate: {run} is a forecasting run: give --data FILE or --split dev|test")
    if len(args.model) > 1:
        raise S2SError("evaluate: several --model runs (an ensemble) work only for tagging runs")
    if args.plot_windows is not None and (not args.plot or args.plot_windows < 1):
        raise S2SError(f"evaluate: --plot-windows {args.plot_windows}: give --plot FILE.png and at least 1 window")
    if args.plot:
        require_matplotlib()  # before the work, not after it
    forecaster = Forecaster.load(run, device=args.device)
    config, seq_len = forecaster.config, forecaster.seq_len
    if args.data:
        series = forecaster.read(args.data)
        values, first, train, where = forecaster.scaler.transform(series.values), 0, None, str(args.data)
    else:
        series = forecaster.read(Path(config.data.dir) / config.data.file)
        splits, _ = scaled_splits(config, series, forecaster.scaler)
        d = config.data
        first = split_rows(series, d.train_rows, d.dev_rows, d.test_rows, seq_len)[args.split].start
        values, train, where = splits[args.split], splits["train"], f"{series.where} ({args.split} rows)"
    scores, pred = forecaster.evaluate(values, where, train, args.batch_size)
    diff = pred.double() - windows(values, seq_len, forecaster.horizon)[:, seq_len:].double()  # (N, H, C)
    starts = series.times[first + seq_len : first + seq_len + len(pred)]  # each forecast's first timestamp
    lines = ["start\tmse\tmae"] + [f"{t}\t{d.pow(2).mean():.6f}\t{d.abs().mean():.6f}" for t, d in zip(starts, diff)]
    prefix = args.hyp_prefix
    scores["per_window"] = f"{prefix}.tsv"
    report = [(f"{scores['file']}: {scores['windows']} windows (every one), look-back {scores['seq_len']}, "
               f"horizon {scores['horizon']}, {len(forecaster.columns)} variables")]
    for name, s in (("model", scores), ("repeat last value", scores["repeat_last"]), ("linear (NLinear-style)", scores.get("linear"))):
        if s is not None:
            report.append(f"{name:<24} MSE {s['mse']:.4f}  MAE {s['mae']:.4f}")
    target = config.forecasting.target
    if f"mae_{target}" in scores:
        report.append(f"MAE of {target} in its own units: {scores[f'mae_{target}']:.4f}")
    report.append(f"per-window errors: {prefix}.tsv")
    if args.plot:
        plot_windows(args.plot, args.plot_windows or 4, forecaster, values, pred, starts)
        scores["plot"] = args.plot
        report.append(f"plot: {args.plot}")
    return scores, report, {f"{prefix}.tsv": lines}


def plot_windows(path: str, count: int, forecaster: Forecaster, values: torch.Tensor, pred: torch.Tensor,
                 starts: list[str]) -> None:
    """Forecast against truth of `count` evenly spaced windows of the z-scored rows `values` (forecasts `pred`
    (N, H, C), first forecast timestamps `starts`), for the target column (or the first) in original units."""
    seq_len, target = forecaster.seq_len, forecaster.config.forecasting.target
    c = forecaster.columns.index(target) if target in forecaster.columns else 0
    picks = torch.linspace(0, len(pred) - 1, min(count, len(pred))).round().long().unique()  # (n,)
    wins = windows(values, seq_len, forecaster.horizon)[picks]  # (n, L + H, C) z-scored
    mse = (pred[picks] - wins[:, seq_len:]).double().pow(2).mean(dim=(1, 2))  # (n,) over steps and variables
    wins, forecast = forecaster.scaler.inverse(wins)[..., c], forecaster.scaler.inverse(pred[picks])[..., c]  # (n, L + H), (n, H)
    titles = [f"forecast from {starts[i]}: MSE {m:.4f} (z-scored, all variables)" for i, m in zip(picks.tolist(), mse.tolist())]
    plot_forecasts(path, wins[:, :seq_len], wins[:, seq_len:], forecast, titles, forecaster.columns[c])


def forecast_lines(forecaster: Forecaster, history: Series) -> list[str]:
    """`s2s forecast`'s CSV: the header, then the next `horizon` rows with their timestamps, in original units."""
    values = forecaster.predict(history)
    lines = [",".join([forecaster.time_column, *forecaster.columns])]
    for time, row in zip(history.next_times(forecaster.horizon), values.tolist()):
        lines.append(",".join([time, *(f"{v:.6g}" for v in row)]))
    return lines
