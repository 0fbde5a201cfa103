"""Draw a sweep to a PNG with matplotlib (private; see ``SweepResult.plot``)."""

from __future__ import annotations

from typing import Any

import numpy as np


def plot_sweep(result: Any, path: str, *, x: str | None, metric: str, log_x: bool | None) -> str:
    """Final ``metric`` vs hyperparameter ``x`` (mean, one-std band, each run a dot)."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        raise ImportError("SweepResult.plot needs matplotlib: pip install matplotlib.") from None
    if metric not in result.history:
        raise ValueError(f"plot: metric {metric!r} is not recorded; have {list(result.history)}.")
    names = list(result.runs[0].hparams)
    if x is None:
        varied = [n for n in names if len({r.hparams[n] for r in result.runs}) > 1]
        x = varied[0] if varied else None
    elif x not in names:
        raise ValueError(f"plot: x must be a swept hyperparameter, one of {names}, got {x!r}.")
    fig = Figure(figsize=(6.4, 4.2), dpi=120)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ok = ~result.diverged
    if x is None:  # no hyperparameter axis: the metric along the epochs
        h = result.history[metric][ok]
        epochs = np.arange(1, h.shape[1] + 1)
        mean, std = np.nanmean(h, axis=0), np.nanstd(h, axis=0)  # NaN: stopped early
        ax.plot(epochs, mean, label=f"mean of {h.shape[0]} runs")
        ax.fill_between(epochs, mean - std, mean + std, alpha=0.25, label="±1 std")
        ax.set_xlabel("epoch")
    else:
        final = result._last(metric)  # a run stopped early: its last epoch
        others = [n for n in names if n != x]
        lines: dict[tuple, list[int]] = {}
        for r in result.runs:
            lines.setdefault(tuple(r.hparams[n] for n in others), []).append(r.index)
        for label_values, members in lines.items():
            idx = np.asarray([i for i in members if ok[i]], dtype=int)
            xs = np.asarray([result.runs[i].hparams[x] for i in idx], dtype=float)
            grid = np.unique(xs)
            mean = np.array([final[idx][xs == g].mean() for g in grid])
            std = np.array([final[idx][xs == g].std() for g in grid])
            label = ", ".join(f"{n}={v:g}" for n, v in zip(others, label_values, strict=True))
            (line,) = ax.plot(grid, mean, marker="o", label=label or "mean")
            ax.fill_between(grid, mean - std, mean + std, color=line.get_color(), alpha=0.2)
            ax.scatter(xs, final[idx], s=8, color=line.get_color(), alpha=0.5)
        if log_x is None:
            values = np.asarray([r.hparams[x] for r in result.runs], dtype=float)
            log_x = bool(values.min() > 0 and values.max() / values.min() >= 20)
        if log_x:
            ax.set_xscale("log")
        ax.set_xlabel(x)
        ax.legend(fontsize="small")
    diverged = int(result.diverged.sum())
    ax.set_ylabel(f"final {metric}")
    ax.set_title(
        f"{len(result.runs)} runs" + (f" ({diverged} diverged, not shown)" if diverged else "")
    )
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    return path


def plot_trajectory(result: Any, path: str, *, name: str, metric: str) -> str:
    """PBT: each run's hyperparameter ``name`` along the epochs, coloured by its final
    ``metric``; the best run drawn thick, and its lineage's copy steps marked."""
    try:
        from matplotlib import colormaps
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        raise ImportError("SweepResult.plot needs matplotlib: pip install matplotlib.") from None
    if result.hparam_history is None:
        raise ValueError("plot: trajectory= needs a PBT sweep (it records hparam_history).")
    if name not in result.hparam_history:
        raise ValueError(
            f"plot: trajectory must be a swept hyperparameter, one of "
            f"{list(result.hparam_history)}, got {name!r}."
        )
    if metric not in result.history:
        raise ValueError(f"plot: metric {metric!r} is not recorded; have {list(result.history)}.")
    values = result.hparam_history[name]
    final = result.history[metric][:, -1]
    ok = np.isfinite(final)
    lo, hi = (final[ok].min(), final[ok].max()) if ok.any() else (0.0, 1.0)
    shade = (final - lo) / (hi - lo) if hi > lo else np.ones_like(final)
    if not result.maximize:
        shade = 1.0 - shade
    cmap = colormaps["viridis"]
    fig = Figure(figsize=(6.4, 4.2), dpi=120)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    epochs = np.arange(1, values.shape[1] + 1)
    for i in range(values.shape[0]):
        color = cmap(float(shade[i])) if ok[i] else "lightgray"
        ax.step(epochs, values[i], where="post", color=color, alpha=0.6, lw=1)
    best = result.best_index
    ax.step(epochs, values[best], where="post", color="crimson", lw=2.5, label=f"best run {best}")
    if result.parents is not None:
        interval = result.schedule.interval
        steps = np.arange(1, result.parents.shape[1] + 1) * interval
        copied = result.parents[best] != best
        ax.scatter(steps[copied] + 1, values[best, steps[copied]], color="crimson", zorder=3,
                   s=18, label="copied a better run")  # fmt: skip
    if values.min() > 0 and values.max() / values.min() >= 20:
        ax.set_yscale("log")
    ax.set_xlabel("epoch")
    ax.set_ylabel(name)
    ax.set_title(f"PBT: {name} of {values.shape[0]} runs (colour: final {metric}, yellow best)")
    ax.legend(fontsize="small")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    return path
