"""One-step-ahead forecast of yearly sunspot numbers (1700-2008, shipped with statsmodels).

A GRU reads the last ``--window`` years (standardized) and predicts the change
to next year's value. The first 80% of the years train it; the last 20% are
the test period, forecast one step ahead from the true history. The test MSE
is compared with the naive last-value forecast and a linear autoregression
(least squares on the same windows), and a PNG shows the forecasts against
the truth::

    pip install -e ".[examples]"                    # statsmodels ships the data
    python examples/forecast.py                     # artifacts/forecast.png
    python examples/forecast.py --cell lstm --epochs 50 --out /tmp/forecast.png
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import jax
import numpy as np

import jnn


def load_sunspots() -> tuple[np.ndarray, np.ndarray]:
    """Years and yearly mean sunspot numbers (statsmodels.datasets.sunspots)."""
    from statsmodels.datasets import sunspots

    data = sunspots.load_pandas().data
    return data["YEAR"].to_numpy(np.int64), data["SUNACTIVITY"].to_numpy(np.float64)


def windows(z: np.ndarray, window: int) -> tuple[np.ndarray, np.ndarray]:
    """Inputs ``(N, window, 1)`` (the previous years) and targets ``(N, 1)`` (the next year)."""
    idx = np.arange(window, len(z))
    x = np.stack([z[i - window : i] for i in idx])[..., None].astype(np.float32)
    return x, z[idx, None].astype(np.float32)


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=100)
    parser.add_argument("--window", type=int, default=12, help="years of history per forecast")
    parser.add_argument("--hidden", type=int, default=32)
    parser.add_argument("--cell", choices=("gru", "lstm"), default="gru")
    parser.add_argument("--learning-rate", type=float, default=3e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="artifacts/forecast.png", help="PNG ('' = none)")
    parser.add_argument("--verbose", type=int, default=0)
    args = parser.parse_args(argv)

    years, series = load_sunspots()
    split = len(series) - len(series) // 5  # the last 20% of the years are the test period
    mean, std = series[:split].mean(), series[:split].std()  # training statistics only
    x, y = windows((series - mean) / std, args.window)
    target_years = years[args.window :]
    train = target_years < years[split]
    last = x[:, -1]  # the naive forecast: this year's value

    recurrent = {"gru": jnn.GRU, "lstm": jnn.LSTM}[args.cell](args.hidden)
    model = jnn.serial(recurrent, jnn.Dense(1))  # predicts next year minus this year
    init_key, fit_key = jax.random.split(jax.random.key(args.seed))
    _, params = model.init(init_key, (-1, args.window, 1))
    start = time.perf_counter()
    result = jnn.fit(
        model,
        params,
        (x[train], (y - last)[train]),
        loss="mse",
        optimizer="adam",
        learning_rate=args.learning_rate,
        epochs=args.epochs,
        batch_size=32,
        key=fit_key,
        verbose=args.verbose,
    )
    seconds = time.perf_counter() - start
    forecasts = {
        args.cell.upper(): jnn.predict(model, result.params, x[~train]) + last[~train],
        f"linear AR({args.window})": _autoregression(x, y, train),
        "naive (last value)": last[~train],
    }
    truth = y[~train]
    mse = {name: float(np.mean(((f - truth) * std) ** 2)) for name, f in forecasts.items()}
    print(
        f"test MSE, {int(target_years[~train][0])}-{int(target_years[-1])} "
        f"({int((~train).sum())} years; trained {args.epochs} epochs in {seconds:.1f}s):"
    )
    for name, value in mse.items():
        print(f"  {name:20s} {value:8.1f}")
    if args.out:
        plot(target_years[~train], truth * std + mean,
             {k: f * std + mean for k, f in forecasts.items()}, mse, Path(args.out))  # fmt: skip
        print(f"figure saved to {args.out}")
    names = list(mse)
    return {"mse": mse[names[0]], "ar_mse": mse[names[1]], "naive_mse": mse[names[2]]}


def _autoregression(x: np.ndarray, y: np.ndarray, train: np.ndarray) -> np.ndarray:
    """Least-squares linear AR on the same windows (with an intercept), test forecasts."""
    design = np.c_[x[..., 0], np.ones(len(x))]
    coef, *_ = np.linalg.lstsq(design[train], y[train], rcond=None)
    return (design[~train] @ coef).astype(np.float32)


def plot(years, truth, forecasts: dict, mse: dict, path: Path) -> None:
    """The test period: truth and each one-step-ahead forecast (legend: test MSE)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path.parent.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(9, 3.8))
    ax.plot(years, truth, color="k", lw=2, label="observed")
    for (name, f), style in zip(forecasts.items(), ("-", "--", ":"), strict=True):
        ax.plot(years, f[:, 0], style, label=f"{name}: MSE {mse[name]:.0f}")
    ax.set_xlabel("year")
    ax.set_ylabel("sunspot number")
    ax.set_title("jnn: one-step-ahead forecasts of yearly sunspots (test period)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    jnn.compile_cache()  # reuse compilations across runs (JNN_COMPILE_CACHE=off: don't)
    main()
