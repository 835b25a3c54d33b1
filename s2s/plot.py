"""Plots: training curves of runs and a classifier's confusion matrix (`s2s plot`), forecast against truth
(`s2s evaluate --plot`). Plain values in, a PNG or SVG out (by the file's extension); the values a figure
draws come from a function of their own (`training_curves`), so they can be checked against their source.
matplotlib is an optional extra, imported only here and only when a plot is asked for."""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import torch

from s2s.errors import S2SError

NEEDS_MATPLOTLIB = '--plot needs matplotlib: pip install -e ".[plot]"'
FORMATS = (".png", ".svg")


def require_matplotlib(what: str = "--plot") -> None:
    """Fail with one line before any work when matplotlib is missing."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise S2SError(NEEDS_MATPLOTLIB.replace("--plot", what)) from None


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # no display: a file is all we write
    import matplotlib.pyplot as plt

    return plt


def check_output(path: str | Path) -> None:
    if Path(path).suffix.lower() not in FORMATS:
        raise S2SError(f"{path}: plots are written as PNG or SVG: name the file .png or .svg")


def save(fig, path: str | Path) -> None:
    """PNG or SVG by the file's extension; the figure is closed either way."""
    plt = _pyplot()
    try:
        fig.savefig(path, format=Path(path).suffix.lower()[1:], dpi=100)
    except OSError as e:
        raise S2SError(f"{path}: cannot write ({e.strerror or e})") from None
    finally:
        plt.close(fig)


# A series: (step, seconds since the run started or None, value) per metrics.jsonl line that has the value.
Series = list[tuple[int, float | None, float]]


@dataclass
class Curves:
    """What `s2s plot curves` draws of one run, read from its metrics.jsonl."""

    run: str
    dev_metric: str  # e.g. dev_f1: the score that selects best.pt
    series: dict[str, Series] = field(default_factory=dict)  # train_loss, the dev metric, lr


def training_curves(run_dir: str | Path) -> Curves:
    """The training loss, the dev metric and the learning rate of a run, from its metrics.jsonl. Lines before
    s2s logged "seconds" on every line have no wall time (None): they are drawn against steps only."""
    run_dir = Path(run_dir)
    path = run_dir / "metrics.jsonl"
    if not path.is_file():
        what = "no such directory" if not run_dir.is_dir() else "no metrics.jsonl: not a run directory of `s2s train`, or it has not logged yet"
        raise S2SError(f"{run_dir}: {what}")
    events = []
    for n, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
        try:
            event = json.loads(line)
        except ValueError:
            continue  # a torn last line of a run killed in a write
        if isinstance(event, dict) and isinstance(event.get("step"), int):
            events.append(event)
    dev_metric = _dev_metric(run_dir, events)
    curves = Curves(str(run_dir), dev_metric)
    for name in ("train_loss", dev_metric, "lr"):
        curves.series[name] = [(e["step"], e.get("seconds"), float(e[name])) for e in events
                               if isinstance(e.get(name), (int, float)) and math.isfinite(e[name])
                               and (name != "lr" or "train_loss" in e)]  # lr once per log line, not again at validations
    if not any(curves.series.values()):
        raise S2SError(f"{path}: no training loss, dev score or learning rate logged yet")
    return curves


def _dev_metric(run_dir: Path, events: list[dict]) -> str:
    """dev_ and the metric of the run's task (the one that selects best.pt), else the first dev score logged."""
    from s2s import tasks
    from s2s.checkpoint import run_task

    try:
        return f"dev_{tasks.get(run_task(run_dir)).Task.metric}"
    except (S2SError, OSError, AttributeError):
        return next((k for e in events for k in e if k.startswith("dev_")), "dev")


def draw_curves(runs: list[Curves]):
    """One figure: a row each for the training loss, the dev metric and the lr; against steps (left) and
    wall time (right); one line per run. Returns the figure (see `save`)."""
    plt = _pyplot()
    metrics = sorted({c.dev_metric for c in runs})
    rows = [("train_loss", "training loss"), (None, " / ".join(metrics)), ("lr", "learning rate")]
    fig, axes = plt.subplots(3, 2, figsize=(11, 8), squeeze=False, sharex="col")
    for r, (name, label) in enumerate(rows):
        for c in runs:
            points = c.series[name or c.dev_metric]
            style = {"label": c.run, "marker": "o" if name is None else None, "markersize": 3}
            axes[r, 0].plot([s for s, _, _ in points], [v for _, _, v in points], **style)
            timed = [(t / 60, v) for _, t, v in points if t is not None]
            axes[r, 1].plot([t for t, _ in timed], [v for _, v in timed], **style)
        axes[r, 0].set_ylabel(label)
        if name == "lr" and all(v > 0 for c in runs for _, _, v in c.series["lr"]):
            for ax in axes[r]:
                ax.set_yscale("log")  # decays by factors
    axes[2, 0].set_xlabel("step")
    axes[2, 1].set_xlabel("wall time (minutes)")
    axes[0, 0].legend(fontsize=8)
    fig.tight_layout()
    return fig


def plot_curves(path: str | Path, run_dirs: list[str | Path]) -> list[Curves]:
    """Training curves of one or several runs into a PNG or SVG; returns what was drawn."""
    check_output(path)
    require_matplotlib("s2s plot")
    runs = [training_curves(r) for r in run_dirs]
    save(draw_curves(runs), path)
    return runs


def draw_confusion(confusion: list[list[int]], labels: list[str], title: str = ""):
    """A confusion matrix (rows gold, columns predicted) with each cell's count; returns the figure."""
    plt = _pyplot()
    size = 2.5 + 0.5 * len(labels)
    fig, ax = plt.subplots(figsize=(size + 1, size))
    image = ax.imshow(confusion, cmap="Blues")
    fig.colorbar(image, ax=ax)
    ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right")
    ax.set_yticks(range(len(labels)), labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("gold")
    top = max((v for row in confusion for v in row), default=0)
    for i, row in enumerate(confusion):
        for j, v in enumerate(row):
            ax.text(j, i, str(v), ha="center", va="center", color="white" if v > top / 2 else "black", fontsize=8)
    if title:
        ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return fig


def plot_forecasts(path: str | Path, look_back: torch.Tensor, truth: torch.Tensor, forecast: torch.Tensor,
                   titles: list[str], column: str) -> None:
    """One subplot per window: look_back (N, L) in grey, then truth and forecast (N, H) over the horizon."""
    require_matplotlib()
    plt = _pyplot()

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


def plot_confusion(path: str | Path, confusion: list[list[int]], labels: list[str], title: str = "") -> None:
    save(draw_confusion(confusion, labels, title), path)


def draw_attention(attention: list[list[float]], source: list[str], target: list[str]):
    """Attention weights (target pieces x source pieces) as a heatmap, the pieces as tick labels; returns the figure."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(2 + 0.4 * max(len(source), 1), 1.5 + 0.4 * max(len(target), 1)))
    image = ax.imshow(attention, cmap="Greys", vmin=0, vmax=1, aspect="auto")
    fig.colorbar(image, ax=ax)
    ax.set_xticks(range(len(source)), source, rotation=60, ha="right")
    ax.set_yticks(range(len(target)), target)
    ax.set_xlabel("source pieces")
    ax.set_ylabel("target pieces")
    fig.tight_layout()
    return fig


def plot_attention(path: str | Path, attention: list[list[float]], source: list[str], target: list[str]) -> None:
    save(draw_attention(attention, source, target), path)
