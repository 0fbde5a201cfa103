"""jnn's side of every case, written as its README teaches."""

from __future__ import annotations

import inspect

import jax

import jnn
from benchmarks._cases import MLPCase, digits_data, mlp_data
from benchmarks._handwritten import CNN_BATCH, _bench, cnn_rows
from benchmarks._harness import Bench, Skip, block


def mlp_model(case: MLPCase):
    hidden = [jnn.Dense(n, activation="relu") for n in case.sizes[1:-1]]
    last = jnn.Dense(case.sizes[-1], activation="sigmoid" if case.task == "binary" else None)
    return jnn.serial(*hidden, last)


def _loss(case: MLPCase) -> str:
    return "bce" if case.task == "binary" else "cross_entropy"


def fit(case: MLPCase) -> Bench:
    """``jnn.fit`` with shuffling and the accuracy metric on, ``verbose=0``; numpy data in."""
    x, y = mlp_data(case)
    model = mlp_model(case)
    _, params = model.init(jax.random.key(0), (-1, case.sizes[0]))
    state = {"params": params, "key": jax.random.key(1)}

    def call():
        state["key"], key = jax.random.split(state["key"])
        res = jnn.fit(
            model,
            state["params"],
            (x, y),
            loss=_loss(case),
            optimizer="adam",
            learning_rate=case.learning_rate,
            epochs=case.epochs,
            batch_size=case.batch,
            key=key,
            metrics=["accuracy"],
            shuffle=True,
            verbose=0,
        )
        block(res.params)

    return _bench(case, call)


def fit_sequential(case: MLPCase) -> Bench:
    """``case.runs`` separate ``jnn.fit`` calls, one after the other (what a sweep replaces)."""
    one = fit(MLPCase(**{**case.__dict__, "runs": 1}))

    def call():
        for _ in range(case.runs):
            one.call()

    return _bench(case, call)


def sweep(case: MLPCase) -> Bench:
    """``jnn.experiments.sweep`` over ``case.runs`` seeds, when jnn has it."""
    experiments = getattr(jnn, "experiments", None)
    if experiments is None:
        try:
            from jnn import experiments
        except ImportError:
            experiments = None
    if experiments is None or not hasattr(experiments, "sweep"):
        raise Skip("skipped: jnn has no experiments.sweep yet")
    x, y = mlp_data(case)
    model = mlp_model(case)
    accepted = inspect.signature(experiments.sweep).parameters
    kwargs = {
        "loss": "bce",
        "optimizer": "adam",
        "learning_rate": case.learning_rate,
        "seeds": case.runs,
        "epochs": case.epochs,
        "batch_size": case.batch,
        "metrics": ["accuracy"],
        "verbose": 0,
    }
    kwargs = {k: v for k, v in kwargs.items() if k in accepted}

    def call():
        block(experiments.sweep(model, (x, y), **kwargs))

    return _bench(case, call)


def cnn(epochs: int = 1) -> Bench:
    """The digits CNN (Conv-BatchNorm-relu-MaxPool x2, Dropout, Dense) trained by ``jnn.fit``."""
    if not hasattr(jnn, "Conv"):
        raise Skip("skipped: jnn has no Conv yet")
    x, y = digits_data()
    n = cnn_rows()
    x, y = x[:n], y[:n]
    model = jnn.serial(
        jnn.Conv(32, (3, 3), padding="SAME"),
        jnn.BatchNorm(),
        jnn.Relu(),
        jnn.MaxPool((2, 2)),
        jnn.Conv(64, (3, 3), padding="SAME"),
        jnn.BatchNorm(),
        jnn.Relu(),
        jnn.MaxPool((2, 2)),
        jnn.Flatten(),
        jnn.Dropout(0.25),
        jnn.Dense(10),
    )
    out = model.init(jax.random.key(0), (-1, 8, 8, 1))
    params, model_state = out[1], (out[2] if len(out) == 3 else None)
    state = {"params": params, "key": jax.random.key(1)}

    def call():
        state["key"], key = jax.random.split(state["key"])
        res = jnn.fit(
            model,
            state["params"],
            (x, y),
            loss="cross_entropy",
            optimizer="adam",
            epochs=epochs,
            batch_size=CNN_BATCH,
            key=key,
            metrics=["accuracy"],
            model_state=model_state,
            verbose=0,
        )
        block(res.params)

    return Bench(call, steps=n // CNN_BATCH * epochs, examples=n * epochs)
