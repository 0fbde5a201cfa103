"""Searching hyperparameters: random search vs successive halving vs PBT, one space.

The breast-cancer MLP (30 standardized features, 32-32-1, ReLU, sigmoid output),
trained with Adam; the space is the learning rate (log-uniform) and Adam's
``b1``. Three searches, each one ``jnn.experiments.sweep`` call:

- random search: 64 Sobol-sampled settings, every one trained to the last epoch;
- successive halving: the same 64 settings, the best third kept at rungs of
  2, 6, 18, 27 epochs;
- PBT: 20 settings from the same space, the worst quarter copying the best
  quarter (weights, Adam state, hyperparameters) every 3 epochs and perturbing.

Settings are ranked by validation loss. The table reports the held-out (test)
accuracy of each search's best run, the best validation accuracy among runs
trained to the end, and the compute each search spent, in run-epochs. Saves
PBT's learning-rate trajectories to ``artifacts/search_pbt_lr.png``.

Run: ``python examples/search.py``
"""

import os
import time

import jax
import numpy as np
import optax
from sklearn.datasets import load_breast_cancer
from sklearn.model_selection import train_test_split

import jnn
from jnn import experiments as ex


def load():
    """Train / validation / test splits (60/20/20), standardized on the train split."""
    data = load_breast_cancer()
    x = data.data.astype(np.float32)
    y = data.target.astype(np.float32).reshape(-1, 1)
    x_tr, x_rest, y_tr, y_rest = train_test_split(x, y, test_size=0.4, random_state=0, stratify=y)
    x_val, x_te, y_val, y_te = train_test_split(
        x_rest, y_rest, test_size=0.5, random_state=0, stratify=y_rest
    )
    mean, std = x_tr.mean(0), x_tr.std(0)
    return [((a - mean) / std, b) for a, b in ((x_tr, y_tr), (x_val, y_val), (x_te, y_te))]


def main(epochs: int = 27, samples: int = 64, population: int = 20, interval: int = 3,
         out: str = "artifacts/search_pbt_lr.png", verbose: bool = True):  # fmt: skip
    """Run the three searches, print the table, save PBT's plot; return the results."""
    train, val, test = load()
    model = jnn.serial(
        jnn.Dense(32, activation="relu"),
        jnn.Dense(32, activation="relu"),
        jnn.Dense(1, activation="sigmoid"),
    )
    space = {"learning_rate": ex.LogUniform(1e-4, 0.3), "b1": ex.Uniform(0.5, 0.99)}
    common = dict(
        loss="bce", optimizer=lambda learning_rate, b1: optax.adam(learning_rate, b1=b1),
        hparams=space, epochs=epochs, batch_size=32, metrics=["accuracy"],
        validation_data=val, key=jax.random.key(0),
    )  # fmt: skip
    searches = {
        "random search": dict(num_samples=samples),
        "successive halving": dict(num_samples=samples, schedule=ex.SuccessiveHalving(3, 2)),
        "PBT": dict(num_samples=population, schedule=ex.PBT(interval=interval)),
    }
    results, rows = {}, []
    x_te, y_te = test
    for name, kwargs in searches.items():
        start = time.perf_counter()
        res = ex.sweep(model, train, **common, **kwargs)
        seconds = time.perf_counter() - start
        finished = ~res.diverged & np.isfinite(res.history["val_accuracy"][:, -1])
        best_val = float(res.history["val_accuracy"][finished, -1].max())
        best = res.best_index
        prob = jnn.predict(model, res.run_params(best), x_te)
        test_acc = float(((np.asarray(prob) > 0.5) == (y_te > 0.5)).mean())
        results[name] = res
        rows.append({
            "search": name, "settings": len(res.runs), "run_epochs": res.run_epochs,
            "test_accuracy_of_best": round(100 * test_acc, 2),
            "best_val_accuracy": round(100 * best_val, 2), "seconds": round(seconds, 1),
        })  # fmt: skip
    table = ex.Table(rows)
    if verbose:
        print(table)
        base = rows[0]
        for row in rows[1:]:
            print(
                f"{row['search']}: {row['run_epochs'] / base['run_epochs']:.0%} of random "
                f"search's run-epochs, test accuracy of its best run "
                f"{row['test_accuracy_of_best'] - base['test_accuracy_of_best']:+.2f} points"
            )
    os.makedirs(os.path.dirname(out) or ".", exist_ok=True)
    path = results["PBT"].plot(out, trajectory="learning_rate", metric="val_accuracy")
    if verbose:
        print("plot:", path)
    return table, results


if __name__ == "__main__":
    jnn.compile_cache()  # reuse compilations across runs (JNN_COMPILE_CACHE=off: don't)
    main()
