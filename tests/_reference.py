"""An independent reference for jnn's training engine: a plain JAX + optax minibatch loop.

Tests that compare two jnn paths sharing one core (stream vs arrays, mesh vs single
device, sweep vs fit, resume vs uninterrupted) also compare one of them with this, so a
bug in the shared core cannot cancel out. It shares nothing with jnn.train: the batch
order is given explicitly (``fit(..., shuffle=False)`` walks rows in order), the loss is
a handwritten function, the last partial batch is just a smaller batch, and the epoch's
loss is the mean over every example (each batch counts by its size).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax

EPS = 1e-7  # jnn's probability clipping for BCE (documented in jnn.losses.bce)


def mse(pred, y):
    return jnp.mean((pred - y) ** 2)


def bce(probs, y):
    p = jnp.clip(probs, EPS, 1.0 - EPS)
    return -jnp.mean(y * jnp.log(p) + (1.0 - y) * jnp.log1p(-p))


def fit(apply, params, x, y, *, loss, tx, epochs, batch_size, order=None):
    """``(params, opt_state, losses)`` of plain minibatch training, one loss per epoch.

    ``apply(params, x)`` is the model's forward pass in training mode (no dropout),
    ``order`` the row order of every epoch (default: ``0 .. n-1``).
    """
    n = x.shape[0]
    order = np.arange(n) if order is None else np.asarray(order)
    opt_state = tx.init(params)

    @jax.jit
    def step(params, opt_state, xb, yb):
        value, grads = jax.value_and_grad(lambda p: loss(apply(p, xb), yb))(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, value

    losses = []
    for _ in range(epochs):
        total = 0.0
        for start in range(0, n, batch_size):
            rows = order[start : start + batch_size]
            params, opt_state, value = step(params, opt_state, x[rows], y[rows])
            total += float(value) * len(rows)
        losses.append(total / n)
    return params, opt_state, losses


def assert_trees_close(a, b, tol=1e-5):
    for u, v in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_allclose(np.asarray(u), np.asarray(v), rtol=tol, atol=tol)


def trained(model, params, x, y, *, epochs=3, learning_rate=0.05):
    """Params moved well away from their initialisation by a short, plain training run.

    Export/serve/CLI tests use these: a file that silently held freshly initialised
    params would then disagree with ``jnn.predict`` on the original model.
    """
    new, _, _ = fit(
        lambda p, xb: model.apply(p, xb),
        params,
        jnp.asarray(x),
        jnp.asarray(y),
        loss=mse,
        tx=optax.adam(learning_rate),
        epochs=epochs,
        batch_size=16,
    )
    moved = max(
        float(jnp.max(jnp.abs(u - v)))
        for u, v in zip(jax.tree.leaves(new), jax.tree.leaves(params), strict=True)
    )
    assert moved > 1e-2, moved  # training really changed them
    return new
