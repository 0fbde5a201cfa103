"""The peers, each written the way its own documentation teaches.

Every peer trains the same dense network as :mod:`benchmarks._handwritten`
(relu hidden layers; sigmoid + BCE, or logits + softmax cross-entropy), with
Adam, reshuffling every epoch and computing loss and accuracy every step. A
peer that is not installed raises ``ImportError`` (reported as skipped).
"""

from __future__ import annotations

import itertools
import os

import jax
import numpy as np
import optax

from benchmarks._cases import MLPCase, mlp_data
from benchmarks._handwritten import _bench, host_batches, loss_and_accuracy
from benchmarks._harness import Skip, block


def flax_nnx(case: MLPCase):
    """Flax NNX: an ``nnx.Module``, ``nnx.Optimizer`` and an ``@nnx.jit`` train step."""
    from flax import nnx

    x, y = mlp_data(case)
    rngs = nnx.Rngs(0)
    layers = []
    for a, b in itertools.pairwise(case.sizes):
        layers += [nnx.Linear(a, b, rngs=rngs), nnx.relu]
    layers[-1] = nnx.sigmoid if case.task == "binary" else (lambda v: v)
    model = nnx.Sequential(*layers)
    optimizer = nnx.Optimizer(model, optax.adam(case.learning_rate), wrt=nnx.Param)

    @nnx.jit
    def train_step(model, optimizer, xb, yb):
        def loss_fn(model):
            return loss_and_accuracy(model(xb), yb, case.task)

        (loss, acc), grads = nnx.value_and_grad(loss_fn, has_aux=True)(model)
        optimizer.update(model, grads)
        return loss, acc

    rng = np.random.default_rng(0)

    def call():
        logs = [train_step(model, optimizer, x[i], y[i]) for i in host_batches(case, rng)]
        block((logs, nnx.state(model)))

    return _bench(case, call, steps=case.loop_steps)


def flax_linen(case: MLPCase):
    """Flax Linen + optax: ``nn.Module``, ``flax.training.train_state``, a ``jax.jit`` step."""
    import flax.linen as nn
    from flax.training import train_state

    class MLP(nn.Module):
        @nn.compact
        def __call__(self, v):
            for n in case.sizes[1:-1]:
                v = nn.relu(nn.Dense(n)(v))
            v = nn.Dense(case.sizes[-1])(v)
            return nn.sigmoid(v) if case.task == "binary" else v

    x, y = mlp_data(case)
    model = MLP()
    params = model.init(jax.random.key(0), x[: case.batch])["params"]
    state = train_state.TrainState.create(
        apply_fn=model.apply, params=params, tx=optax.adam(case.learning_rate)
    )

    @jax.jit
    def train_step(state, xb, yb):
        def loss_fn(params):
            return loss_and_accuracy(state.apply_fn({"params": params}, xb), yb, case.task)

        (loss, acc), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
        return state.apply_gradients(grads=grads), loss, acc

    holder = {"state": state}
    rng = np.random.default_rng(0)

    def call():
        logs = []
        for i in host_batches(case, rng):
            holder["state"], loss, acc = train_step(holder["state"], x[i], y[i])
            logs.append((loss, acc))
        block((holder["state"], logs))

    return _bench(case, call, steps=case.loop_steps)


def equinox(case: MLPCase):
    """Equinox: ``eqx.nn.MLP``, ``eqx.filter_value_and_grad`` and an ``@eqx.filter_jit`` step."""
    import equinox as eqx

    widths = set(case.sizes[1:-1])
    if len(widths) != 1:
        raise Skip("skipped: eqx.nn.MLP needs equal hidden widths")
    x, y = mlp_data(case)
    model = eqx.nn.MLP(
        case.sizes[0],
        case.sizes[-1],
        width_size=widths.pop(),
        depth=len(case.sizes) - 2,
        activation=jax.nn.relu,
        final_activation=jax.nn.sigmoid if case.task == "binary" else (lambda v: v),
        key=jax.random.key(0),
    )
    optim = optax.adam(case.learning_rate)
    opt_state = optim.init(eqx.filter(model, eqx.is_array))

    def loss_fn(model, xb, yb):
        return loss_and_accuracy(jax.vmap(model)(xb), yb, case.task)

    @eqx.filter_jit
    def make_step(model, opt_state, xb, yb):
        (loss, acc), grads = eqx.filter_value_and_grad(loss_fn, has_aux=True)(model, xb, yb)
        updates, opt_state = optim.update(grads, opt_state, eqx.filter(model, eqx.is_array))
        return eqx.apply_updates(model, updates), opt_state, loss, acc

    holder = [model, opt_state]
    rng = np.random.default_rng(0)

    def call():
        logs = []
        for i in host_batches(case, rng):
            holder[0], holder[1], loss, acc = make_step(*holder, x[i], y[i])
            logs.append((loss, acc))
        block((holder, logs))

    return _bench(case, call, steps=case.loop_steps)


def keras(case: MLPCase, steps_per_execution: int = 1):
    """Keras 3 on the JAX backend: ``Sequential``, ``compile``, ``fit`` (numpy data, shuffle)."""
    os.environ.setdefault("KERAS_BACKEND", "jax")
    import keras

    if keras.backend.backend() != "jax":
        raise Skip(f"skipped: keras was imported with the {keras.backend.backend()} backend")
    x, y = mlp_data(case)
    keras.utils.set_random_seed(0)
    layers = [keras.Input((case.sizes[0],))]
    layers += [keras.layers.Dense(n, activation="relu") for n in case.sizes[1:-1]]
    binary = case.task == "binary"
    layers.append(keras.layers.Dense(case.sizes[-1], activation="sigmoid" if binary else None))
    model = keras.Sequential(layers)
    loss = (
        "binary_crossentropy"
        if binary
        else keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    )
    model.compile(
        optimizer=keras.optimizers.Adam(case.learning_rate),
        loss=loss,
        metrics=["accuracy"],
        steps_per_execution=steps_per_execution,
    )

    def call():
        model.fit(x, y, batch_size=case.batch, epochs=case.epochs, shuffle=True, verbose=0)

    return _bench(case, call)


def torch_eager(case: MLPCase, num_threads: int | None = None):
    """PyTorch eager on CPU: ``nn.Sequential``, ``DataLoader(shuffle=True)``, ``optim.Adam``.

    ``num_threads`` None keeps torch's default intra-op threads (one per core).
    """
    import torch
    from torch import nn

    if jax.default_backend() != "cpu":
        raise Skip("skipped: the bench extra's torch is the CPU build (not comparable on GPU)")
    torch.manual_seed(0)
    x, y = mlp_data(case)
    binary = case.task == "binary"
    layers: list = []
    for a, b in itertools.pairwise(case.sizes):
        layers += [nn.Linear(a, b), nn.ReLU()]
    layers[-1] = nn.Sigmoid() if binary else nn.Identity()
    model = nn.Sequential(*layers)
    optimizer = torch.optim.Adam(model.parameters(), lr=case.learning_rate)
    loss_fn = nn.BCELoss() if binary else nn.CrossEntropyLoss()
    dataset = torch.utils.data.TensorDataset(
        torch.from_numpy(x), torch.from_numpy(y if binary else y.astype(np.int64))
    )
    loader = torch.utils.data.DataLoader(dataset, batch_size=case.batch, shuffle=True)

    def call():
        default_threads = torch.get_num_threads()
        torch.set_num_threads(num_threads or default_threads)
        try:
            train(model)
        finally:
            torch.set_num_threads(default_threads)

    def train(model):
        model.train()
        steps, running_loss, correct = 0, 0.0, 0
        while steps < case.loop_steps:  # epochs; the last one may stop early
            for xb, yb in loader:
                optimizer.zero_grad()
                out = model(xb)
                loss = loss_fn(out, yb)
                loss.backward()
                optimizer.step()
                running_loss += loss.item()
                pred = (out > 0.5).float() if binary else out.argmax(1)
                correct += (pred == yb).sum().item()
                steps += 1
                if steps == case.loop_steps:
                    break

    return _bench(case, call, steps=case.loop_steps)
