"""The time-series CSV reader, the row split, z-scoring and windows."""
from __future__ import annotations

import pytest
import torch

from s2s.data.series import Scaler, read_series, split_rows, windows
from s2s.errors import S2SError

GOOD = "date,x,y\n2020-01-01 00:00:00,1,10\n2020-01-01 01:00:00,2,20\n2020-01-01 02:00:00,3,30\n2020-01-01 03:00:00,4,40\n"


def _write(tmp_path, text, name="s.csv"):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_reads_the_timestamps_and_columns(tmp_path):
    s = read_series(_write(tmp_path, GOOD), "date")
    assert s.columns == ["x", "y"] and s.values.shape == (4, 2) and s.lines == [2, 3, 4, 5]
    assert read_series(_write(tmp_path, GOOD), "date", ["y"]).values[:, 0].tolist() == [10, 20, 30, 40]
    assert s.next_times(2) == ["2020-01-01 04:00:00", "2020-01-01 05:00:00"]
    numeric = read_series(_write(tmp_path, "t,v\n0,1\n5,2\n"), "t")
    assert numeric.next_times(2) == ["10", "15"]


@pytest.mark.parametrize("text, columns, message", [
    ("date,x,y\n2020-01-01 00:00:00,1,\n", None, "s.csv:2: column 'y' is empty"),
    ("date,x,y\n2020-01-01 00:00:00,1,2\n2020-01-01 01:00:00,abc,2\n", None, "s.csv:3: column 'x' holds 'abc', not a number"),
    ("date,x,y\n2020-01-01 00:00:00,nan,2\n", None, "s.csv:2: column 'x' holds 'nan', not a finite number"),
    ("date,x,y\n2020-01-01 01:00:00,1,2\n2020-01-01 00:00:00,1,2\n", None, "s.csv:3: timestamp '2020-01-01 00:00:00' out of order"),
    ("date,x,y\n2020-01-01 01:00:00,1,2\n2020-01-01 01:00:00,1,2\n", None, "s.csv:3: timestamp '2020-01-01 01:00:00' repeated"),
    ("date,x,y\nyesterday,1,2\n", None, "s.csv:2: timestamp 'yesterday' is neither"),
    ("date,x,y\n2020-01-01 00:00:00,1\n", None, "s.csv:2: 2 cells, the header has 3"),
    (GOOD, ["OT"], "s.csv:1: unknown column 'OT' \\(numeric columns: x, y\\)"),
    ("time,x\n1,2\n", None, "s.csv:1: no timestamp column 'date'"),
    ("date,x,y\n", None, "s.csv: no data rows"),
    ("date,x\r1,2\r", None, "s.csv:1: a carriage return"),
])
def test_bad_files_fail_with_file_and_line(tmp_path, text, columns, message):
    with pytest.raises(S2SError, match=message) as e:
        read_series(_write(tmp_path, text), "date", columns)
    assert "\n" not in str(e.value)


def test_split_starts_dev_and_test_a_look_back_early_and_refuses_too_few_rows(tmp_path):
    s = read_series(_write(tmp_path, GOOD), "date")
    rows = split_rows(s, 2, 1, 1, seq_len=1)
    assert rows == {"train": slice(0, 2), "dev": slice(1, 3), "test": slice(2, 4)}
    with pytest.raises(S2SError, match="s.csv:5: 4 data rows, fewer than the split's 2 \\+ 2 \\+ 1"):
        split_rows(s, 2, 2, 1, seq_len=1)


def test_etth1_split_gives_the_published_window_counts():
    # ETTh1's borders (data/ett/README.md): 2880 - H + 1 test windows, 8640 - L - H + 1 training windows.
    values = torch.zeros(14400, 1)
    for horizon, count in ((96, 2785), (192, 2689), (336, 2545), (720, 2161)):
        assert len(windows(values[11520 - 336 : 14400], 336, horizon)) == count
    assert len(windows(values[:8640], 336, 96)) == 8640 - 336 - 96 + 1


def test_windows_slide_by_one_and_refuse_a_short_series():
    values = torch.arange(10.0).view(5, 2)
    w = windows(values, 2, 1)
    assert w.shape == (3, 3, 2) and torch.equal(w[1], values[1:4])
    with pytest.raises(S2SError, match="x.csv:9: 5 rows, fewer than look-back 4 \\+ horizon 2"):
        windows(values, 4, 2, "x.csv:9")


def test_scaler_uses_the_training_rows_population_statistics(tmp_path):
    s = read_series(_write(tmp_path, GOOD), "date")
    scaler = Scaler.fit(s, slice(0, 2))
    assert scaler.mean.tolist() == [1.5, 15.0] and scaler.std.tolist() == [0.5, 5.0]
    z = scaler.transform(s.values)
    assert z[:2].mean(0).abs().max() < 1e-6 and torch.allclose(scaler.inverse(z), s.values)
    scaler.save(tmp_path / "scaler.json")
    again = Scaler.load(tmp_path / "scaler.json")
    assert again.columns == ["x", "y"] and torch.equal(again.mean, scaler.mean)
