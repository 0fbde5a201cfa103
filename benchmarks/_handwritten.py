"""Handwritten JAX baselines: what a JAX user writes without a library.

Each is written as the JAX docs teach: pytrees of params, ``optax`` for Adam,
``jax.jit`` with donation. Every step computes the loss and the accuracy, as
``jnn.fit`` does with ``metrics=["accuracy"]``, and every epoch reshuffles with
``jax.random.permutation``, as the docs do.

The ``shuffle=False`` variants are the machine's limit for the case: the same
steps over the data in a fixed order, sliced with no gather and no permutation.
jnn is compared with them too, so a cost that jnn shares with the usual baseline
(the sort behind ``jax.random.permutation`` cost more than the epoch it shuffled,
on a CPU) shows up instead of cancelling out.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax

from benchmarks._cases import MLPCase, digits_data, mlp_data
from benchmarks._harness import Bench, block, mlp_train_flops

_glorot = jax.nn.initializers.glorot_uniform()


def mlp_init(key, sizes):
    keys = jax.random.split(key, len(sizes) - 1)
    return [
        {"w": _glorot(k, (a, b), jnp.float32), "b": jnp.zeros((b,), jnp.float32)}
        for k, a, b in zip(keys, sizes[:-1], sizes[1:], strict=True)
    ]


def mlp_apply(params, x, task):
    for layer in params[:-1]:
        x = jax.nn.relu(x @ layer["w"] + layer["b"])
    out = x @ params[-1]["w"] + params[-1]["b"]
    return jax.nn.sigmoid(out) if task == "binary" else out


def loss_and_accuracy(out, y, task):
    """BCE on probabilities (clipped, like Keras) or softmax CE on logits; and accuracy."""
    if task == "binary":
        p = jnp.clip(out, 1e-7, 1 - 1e-7)
        loss = -jnp.mean(y * jnp.log(p) + (1 - y) * jnp.log1p(-p))
        return loss, jnp.mean((out > 0.5) == (y > 0.5))
    loss = jnp.mean(optax.softmax_cross_entropy_with_integer_labels(out, y))
    return loss, jnp.mean(jnp.argmax(out, -1) == y)


def _mlp_step(case: MLPCase, tx):
    def step(params, opt_state, x, y):
        def objective(p):
            return loss_and_accuracy(mlp_apply(p, x, case.task), y, case.task)

        (loss, acc), grads = jax.value_and_grad(objective, has_aux=True)(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss, acc

    return step


def _mlp_epoch(case: MLPCase, tx, shuffle: bool = True):
    """``epoch(params, opt_state, key, x, y)``: on-device shuffle (or none: the limit),
    then ``lax.scan`` the steps."""
    step = _mlp_step(case, tx)
    nb, bs = case.steps_per_epoch, case.batch

    def epoch(params, opt_state, key, x, y):
        key, sub = jax.random.split(key)
        if shuffle:
            perm = jax.random.permutation(sub, x.shape[0])
            x, y = x[perm], y[perm]
        xs = x.reshape(nb, bs, *x.shape[1:])
        ys = y.reshape(nb, bs, *y.shape[1:])

        def body(carry, batch):
            params, opt_state = carry
            params, opt_state, loss, acc = step(params, opt_state, *batch)
            return (params, opt_state), (loss, acc)

        (params, opt_state), (loss, acc) = jax.lax.scan(body, (params, opt_state), (xs, ys))
        return params, opt_state, key, jnp.mean(loss), jnp.mean(acc)

    return epoch


def jit_step(case: MLPCase) -> Bench:
    """A Python loop over batches calling one ``jax.jit`` step (host-side shuffle)."""
    x, y = mlp_data(case)
    tx = optax.adam(case.learning_rate)
    params = mlp_init(jax.random.key(0), case.sizes)
    state = {"params": params, "opt": tx.init(params)}
    step = jax.jit(_mlp_step(case, tx), donate_argnums=(0, 1))
    rng = np.random.default_rng(0)

    def call():
        logs = []
        for idx in host_batches(case, rng):
            state["params"], state["opt"], loss, acc = step(
                state["params"], state["opt"], x[idx], y[idx]
            )
            logs.append((loss, acc))
        block((state["params"], logs))

    return _bench(case, call, steps=case.loop_steps)


def scan_epoch(case: MLPCase, shuffle: bool = True) -> Bench:
    """One ``jax.jit`` call per epoch: on-device shuffle (``shuffle=False``: none, the
    limit) + ``lax.scan`` over the batches."""
    x, y = (jnp.asarray(a) for a in mlp_data(case))
    tx = optax.adam(case.learning_rate)
    params = mlp_init(jax.random.key(0), case.sizes)
    state = [params, tx.init(params), jax.random.key(1)]
    epoch = jax.jit(_mlp_epoch(case, tx, shuffle), donate_argnums=(0, 1))

    def call():
        for _ in range(case.epochs):
            *state[:], loss, acc = epoch(*state, x, y)
            loss, acc = float(loss), float(acc)  # what a training loop logs per epoch

    return _bench(case, call)


def vmap_sweep(case: MLPCase, shuffle: bool = True) -> Bench:
    """``case.runs`` networks (different init and shuffle seeds) trained in lockstep with
    vmap (``shuffle=False``: every run in the same fixed order, the limit)."""
    x, y = (jnp.asarray(a) for a in mlp_data(case))
    tx = optax.adam(case.learning_rate)
    keys = jax.random.split(jax.random.key(0), case.runs)
    params = jax.vmap(lambda k: mlp_init(k, case.sizes))(keys)
    opt = jax.vmap(tx.init)(params)
    shuffle_keys = jax.random.split(jax.random.key(1), case.runs)
    state = [params, opt, shuffle_keys]
    epoch = jax.jit(
        jax.vmap(_mlp_epoch(case, tx, shuffle), in_axes=(0, 0, 0, None, None)),
        donate_argnums=(0, 1),
    )

    def call():
        for _ in range(case.epochs):
            *state[:], loss, acc = epoch(*state, x, y)
            np.asarray(loss), np.asarray(acc)

    return _bench(case, call)


def host_batches(case: MLPCase, rng: np.random.Generator):
    """Index arrays of ``case.loop_steps`` shuffled batches, reshuffling every epoch
    (the host-side loop of the JAX, Flax and Equinox docs)."""
    left = case.loop_steps
    while left > 0:
        perm = rng.permutation(case.rows)
        for i in range(min(case.steps_per_epoch, left)):
            yield perm[i * case.batch : (i + 1) * case.batch]
        left -= case.steps_per_epoch


def _bench(case: MLPCase, call, steps: int | None = None) -> Bench:
    """A bench doing ``steps`` steps per call (default: ``case.epochs`` epochs of every run)."""
    steps = case.steps_per_epoch * case.epochs * case.runs if steps is None else steps
    return Bench(
        call,
        steps=steps,
        examples=steps * case.batch,
        flops=mlp_train_flops(case.sizes, case.batch) * steps,
        extra={"runs": case.runs} if case.runs > 1 else {},
    )


# --------------------------------------------------------------------------- the digits CNN

CNN_BATCH = 32


def cnn_init(key):
    k1, k2, k3 = jax.random.split(key, 3)
    he = jax.nn.initializers.glorot_uniform()

    def bn(c):
        return {"scale": jnp.ones((c,)), "bias": jnp.zeros((c,))}

    params = {
        "conv1": {"w": he(k1, (3, 3, 1, 32)), "b": jnp.zeros((32,))},
        "bn1": bn(32),
        "conv2": {"w": he(k2, (3, 3, 32, 64)), "b": jnp.zeros((64,))},
        "bn2": bn(64),
        "dense": {"w": he(k3, (2 * 2 * 64, 10)), "b": jnp.zeros((10,))},
    }
    stats = {
        n: {"mean": jnp.zeros((c,)), "var": jnp.ones((c,))} for n, c in (("bn1", 32), ("bn2", 64))
    }
    return params, stats


def _conv(p, x):
    y = jax.lax.conv_general_dilated(
        x, p["w"], (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")
    )
    return y + p["b"].reshape(1, 1, 1, -1)


def _bn(p, s, x, train, momentum=0.99, eps=1e-3):
    if train:
        mean, var = jnp.mean(x, (0, 1, 2)), jnp.var(x, (0, 1, 2))
        s = {
            "mean": momentum * s["mean"] + (1 - momentum) * mean,
            "var": momentum * s["var"] + (1 - momentum) * var,
        }
    else:
        mean, var = s["mean"], s["var"]
    y = (x - mean.reshape(1, 1, 1, -1)) * jax.lax.rsqrt(var.reshape(1, 1, 1, -1) + eps)
    return y * p["scale"].reshape(1, 1, 1, -1) + p["bias"].reshape(1, 1, 1, -1), s


def _pool(x):
    return jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, (1, 2, 2, 1), (1, 2, 2, 1), "VALID")


def cnn_apply(params, stats, x, key, train):
    """Conv32-BN-relu-pool, Conv64-BN-relu-pool, flatten, dropout 0.25, Dense10 (logits)."""
    new = {}
    x, new["bn1"] = _bn(params["bn1"], stats["bn1"], _conv(params["conv1"], x), train)
    x = _pool(jax.nn.relu(x))
    x, new["bn2"] = _bn(params["bn2"], stats["bn2"], _conv(params["conv2"], x), train)
    x = _pool(jax.nn.relu(x)).reshape(x.shape[0], -1)
    if train:
        keep = jax.random.bernoulli(key, 0.75, x.shape)
        x = jnp.where(keep, x / 0.75, 0.0)
    return x @ params["dense"]["w"] + params["dense"]["b"], new


def cnn_rows() -> int:
    """Digits rows used: the largest multiple of the batch (1,792 of 1,797)."""
    return len(digits_data()[1]) // CNN_BATCH * CNN_BATCH


def cnn_scan(epochs: int = 1, shuffle: bool = True) -> Bench:
    """The digits CNN, one ``jax.jit`` call per epoch (shuffle, or none: the limit, +
    ``lax.scan``)."""
    x, y = digits_data()
    n = cnn_rows()
    x, y = jnp.asarray(x[:n]), jnp.asarray(y[:n])
    nb = n // CNN_BATCH
    tx = optax.adam(1e-3)
    params, stats = cnn_init(jax.random.key(0))

    def step(carry, batch):
        params, stats, opt_state, key = carry
        key, sub = jax.random.split(key)
        xb, yb = batch

        def objective(p):
            logits, new_stats = cnn_apply(p, stats, xb, sub, True)
            loss, acc = loss_and_accuracy(logits, yb, "multiclass")
            return loss, (acc, new_stats)

        (loss, (acc, stats)), grads = jax.value_and_grad(objective, has_aux=True)(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return (optax.apply_updates(params, updates), stats, opt_state, key), (loss, acc)

    @functools.partial(jax.jit, donate_argnums=(0,))
    def epoch(carry, x, y):
        key, sub = jax.random.split(carry[-1])
        if shuffle:
            perm = jax.random.permutation(sub, n)
            x, y = x[perm], y[perm]
        xs = x.reshape(nb, CNN_BATCH, *x.shape[1:])
        ys = y.reshape(nb, CNN_BATCH)
        carry, (loss, acc) = jax.lax.scan(step, (*carry[:-1], key), (xs, ys))
        return carry, jnp.mean(loss), jnp.mean(acc)

    state = [(params, stats, tx.init(params), jax.random.key(1))]

    def call():
        for _ in range(epochs):
            state[0], loss, acc = epoch(state[0], x, y)
            float(loss), float(acc)

    return Bench(call, steps=nb * epochs, examples=n * epochs)
