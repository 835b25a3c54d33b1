"""Time series: a CSV of one timestamp column and numeric columns, the row split, z-scoring and windows.

Every problem with a file is one line with the file and line: a missing or non-numeric cell, a timestamp
out of order or repeated, an unknown column, too few rows for one window.
"""
from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import torch

from s2s.data.io import read_text, refuse_carriage_returns, split_lines
from s2s.errors import S2SError


@dataclass
class Series:
    where: str  # the file, for messages
    columns: list[str]  # the numeric columns read, in file order
    times: list[str]  # each row's timestamp as written
    values: torch.Tensor  # (N, C) float64, original units
    lines: list[int]  # each row's line in the file

    def next_times(self, count: int) -> list[str]:
        """The `count` timestamps after the last row, one step (the last two rows' distance) apart."""
        if len(self.times) < 2:
            raise S2SError(f"{self.where}: two rows are needed to tell the step between timestamps")
        last, before = parse_time(self.times[-1]), parse_time(self.times[-2])
        step = last - before
        if isinstance(last, datetime):
            return [(last + step * k).isoformat(sep=" ") for k in range(1, count + 1)]
        return [f"{last + step * k:g}" for k in range(1, count + 1)]


def parse_time(text: str) -> datetime | float:
    """An ISO date-time ('2016-07-01 00:00:00') or a number; ValueError otherwise."""
    try:
        return float(text)
    except ValueError:
        return datetime.fromisoformat(text.strip())


def read_series(path: str | Path, time_column: str, columns: list[str] | None = None) -> Series:
    """The timestamp column and the numeric columns of a CSV file (`columns`, or every column but the
    timestamps), in file order. Timestamps must increase strictly; every cell must be a finite number."""
    where = str(path)
    lines = refuse_carriage_returns(split_lines(read_text(path)), where)
    rows = list(csv.reader(lines))
    if not rows or not any(cell.strip() for cell in rows[0]):
        raise S2SError(f"{where}:1: no header line (expected a timestamp column {time_column!r} and numeric columns)")
    header = [cell.strip() for cell in rows[0]]
    if time_column not in header:
        raise S2SError(f"{where}:1: no timestamp column {time_column!r} (columns: {', '.join(header)}); set data.time_column")
    wanted = columns if columns is not None else [c for c in header if c != time_column]
    for name in wanted:
        if name not in header or name == time_column:
            raise S2SError(f"{where}:1: unknown column {name!r} (numeric columns: {', '.join(c for c in header if c != time_column)})")
    if not wanted:
        raise S2SError(f"{where}:1: no numeric column besides {time_column!r}")
    t_at, at = header.index(time_column), [header.index(name) for name in wanted]
    times, values, numbers = [], [], []
    previous = None
    for line, row in enumerate(rows[1:], start=2):
        if not row:
            continue  # a blank line (csv reads it as no cells)
        if len(row) != len(header):
            raise S2SError(f"{where}:{line}: {len(row)} cells, the header has {len(header)}")
        stamp = row[t_at].strip()
        try:
            time = parse_time(stamp)
        except ValueError:
            raise S2SError(f"{where}:{line}: timestamp {stamp!r} is neither an ISO date-time nor a number") from None
        if previous is not None:
            try:
                if time <= previous:
                    order = "repeated" if time == previous else "out of order"
                    raise S2SError(f"{where}:{line}: timestamp {stamp!r} {order} (the row before is {times[-1]!r}); rows must go forward in time")
            except TypeError:  # a number after a date or the other way round
                raise S2SError(f"{where}:{line}: timestamp {stamp!r} is not of the same kind as {times[-1]!r}") from None
        previous = time
        row_values = []
        for name, i in zip(wanted, at):
            cell = row[i].strip()
            if not cell:
                raise S2SError(f"{where}:{line}: column {name!r} is empty")
            try:
                value = float(cell)
            except ValueError:
                raise S2SError(f"{where}:{line}: column {name!r} holds {cell[:40]!r}, not a number") from None
            if not math.isfinite(value):
                raise S2SError(f"{where}:{line}: column {name!r} holds {cell!r}, not a finite number")
            row_values.append(value)
        times.append(stamp)
        values.append(row_values)
        numbers.append(line)
    if not values:
        raise S2SError(f"{where}: no data rows after the header")
    return Series(where, list(wanted), times, torch.tensor(values, dtype=torch.float64), numbers)


def split_rows(series: Series, train_rows: int, dev_rows: int, test_rows: int, seq_len: int) -> dict[str, slice]:
    """The standard split by row borders (Informer's `Dataset_ETT_hour`): train, then dev, then test rows;
    dev and test start `seq_len` rows early, so that their first forecast starts exactly at the border."""
    need = train_rows + dev_rows + test_rows
    if len(series.values) < need:
        raise S2SError(f"{series.where}:{series.lines[-1]}: {len(series.values)} data rows, fewer than the split's "
                       f"{train_rows} + {dev_rows} + {test_rows} (data.train_rows, data.dev_rows, data.test_rows)")
    if seq_len > train_rows:
        raise S2SError(f"{series.where}: the look-back ({seq_len} rows) is longer than the training rows ({train_rows})")
    dev_end = train_rows + dev_rows
    return {"train": slice(0, train_rows), "dev": slice(train_rows - seq_len, dev_end), "test": slice(dev_end - seq_len, need)}


class Scaler:
    """Per-column z-scoring with the training rows' mean and population std (sklearn's StandardScaler)."""

    def __init__(self, columns: list[str], mean: list[float], std: list[float]):
        self.columns, self.mean, self.std = list(columns), torch.tensor(mean, dtype=torch.float64), torch.tensor(std, dtype=torch.float64)

    @classmethod
    def fit(cls, series: Series, rows: slice) -> Scaler:
        train = series.values[rows]  # (N, C)
        std = train.std(dim=0, unbiased=False)
        std = torch.where(std > 0, std, torch.ones_like(std))  # a constant column stays as it is, shifted to 0
        return cls(series.columns, train.mean(dim=0).tolist(), std.tolist())

    def transform(self, values: torch.Tensor) -> torch.Tensor:
        return ((values - self.mean) / self.std).float()

    def inverse(self, values: torch.Tensor) -> torch.Tensor:
        return values.double() * self.std + self.mean

    def save(self, path: Path) -> None:
        try:
            Path(path).write_text(json.dumps({"columns": self.columns, "mean": self.mean.tolist(), "std": self.std.tolist()}) + "\n",
                                  encoding="utf-8")
        except OSError as e:
            raise S2SError(f"{path}: cannot write ({e.strerror or e})") from None

    @classmethod
    def load(cls, path: Path) -> Scaler:
        try:
            data = json.loads(read_text(path))
            return cls(data["columns"], data["mean"], data["std"])
        except (ValueError, KeyError, TypeError) as e:
            raise S2SError(f"{path}: not a scaler file ({type(e).__name__})") from None


def windows(values: torch.Tensor, seq_len: int, horizon: int, where: str = "") -> torch.Tensor:
    """Every window of a (N, C) series with stride 1: (N - seq_len - horizon + 1, seq_len + horizon, C), a view."""
    count = len(values) - seq_len - horizon + 1
    if count < 1:
        raise S2SError(f"{where}: {len(values)} rows, fewer than look-back {seq_len} + horizon {horizon}")
    return values.unfold(0, seq_len + horizon, 1).transpose(1, 2)
