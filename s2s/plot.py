"""Forecast against truth for a few windows, as a PNG (`s2s evaluate --plot`). Plain values in, a file out;
matplotlib is an optional extra, imported only here and only when a plot is asked for."""
from __future__ import annotations

from pathlib import Path

import torch

from s2s.errors import S2SError

NEEDS_MATPLOTLIB = '--plot needs matplotlib: pip install -e ".[plot]"'


def require_matplotlib() -> None:
    """Fail with one line before any work when matplotlib is missing."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise S2SError(NEEDS_MATPLOTLIB) from None


def plot_forecasts(path: str | Path, look_back: torch.Tensor, truth: torch.Tensor, forecast: torch.Tensor,
                   titles: list[str], column: str) -> None:
    """One subplot per window: look_back (N, L) in grey, then truth and forecast (N, H) over the horizon."""
    require_matplotlib()
    import matplotlib

    matplotlib.use("Agg")  # no display: a file is all we write
    import matplotlib.pyplot as plt

    n, seq_len, horizon = len(look_back), look_back.size(1), truth.size(1)
    fig, axes = plt.subplots(n, 1, figsize=(9, 2.4 * n), squeeze=False)
    past, future = range(-seq_len + 1, 1), range(1, horizon + 1)  # steps relative to the last observed row
    for ax, back, gold, pred, title in zip(axes[:, 0], look_back.tolist(), truth.tolist(), forecast.tolist(), titles):
        ax.plot(past, back, color="0.6", label="look-back")
        ax.plot(future, gold, color="black", label="truth")
        ax.plot(future, pred, color="tab:red", label="forecast")
        ax.axvline(0.5, color="0.8", linestyle=":")
        ax.set_title(title, fontsize=9)
        ax.set_ylabel(column)
    axes[0, 0].legend(loc="upper left", fontsize=8)
    axes[-1, 0].set_xlabel("step (0 = last observed row)")
    fig.tight_layout()
    try:
        fig.savefig(path, format="png", dpi=80)
    except OSError as e:
        raise S2SError(f"--plot {path}: cannot write ({e.strerror or e})") from None
    finally:
        plt.close(fig)
