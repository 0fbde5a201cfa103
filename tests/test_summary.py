"""Tests for jnn.summary: rows, shapes and parameter counts of nested models."""

import jax
import jax.numpy as jnp
import pytest

import jnn
from jnn.summary import Summary, format_table


def _count(params):
    return sum(leaf.size for leaf in jax.tree.leaves(params))


def test_seed_network_rows_and_counts():
    model = jnn.serial(
        jnn.Dense(10, activation="relu"),
        jnn.Dense(10, activation="relu"),
        jnn.Dense(1, activation="sigmoid"),
    )
    s = jnn.summary(model, (-1, 30))
    assert isinstance(s, Summary)
    assert [r.name for r in s.rows] == ["serial", "dense_0", "dense_1", "dense_2"]
    assert [r.params for r in s.rows] == [431, 310, 110, 11]
    assert [r.output_shape for r in s.rows] == [(-1, 1), (-1, 10), (-1, 10), (-1, 1)]
    assert s.rows[1].param_shapes == {"w": (30, 10), "b": (10,)}
    _, params = model.init(jax.random.key(0), (-1, 30))
    assert s.total_params == _count(params)
    table = str(s)
    assert "dense_2" in table and "Total params: 431" in table


def test_nested_parallel_and_residual_thread_shapes():
    branch = jnn.serial(jnn.FanOut(2), jnn.parallel(jnn.Dense(3), jnn.Dense(4)), jnn.FanInConcat())
    model = jnn.serial(jnn.Dense(8), jnn.Relu(), branch, jnn.residual(jnn.Dense(7), jnn.Dense(7)))
    s = jnn.summary(model, (None, 5))
    by_name = {(r.depth, r.name): r for r in s.rows}
    assert by_name[(1, "serial_0")].output_shape == (-1, 7)
    assert by_name[(2, "parallel_0")].output_shape == ((-1, 3), (-1, 4))
    assert by_name[(3, "dense_1")].params == 8 * 4 + 4
    assert by_name[(1, "residual_0")].params == 2 * (7 * 7 + 7)
    assert by_name[(1, "relu_0")].params == 0
    _, params = model.init(jax.random.key(1), (-1, 5))
    assert s.total_params == _count(params)
    # The names of the children are the keys of the params dict.
    assert {r.name for r in s.rows if r.depth == 1} == set(params)


def test_stateful_model_counts_state_apart():
    def Center():
        def init(key, input_shape):
            return input_shape, {}, {"mean": jnp.zeros(input_shape[-1:])}

        def apply(params, state, x, *, key=None, train=False):
            return x - state["mean"], state

        return jnn.StatefulLayer(init, apply)

    s = jnn.summary(jnn.serial(Center(), jnn.Dense(2)), (-1, 3))
    assert s.total_state == 3
    assert s.total_params == 8
    assert "Non-trainable state: 3" in str(s)


def test_to_dict_round_trips_through_format_table():
    s = jnn.summary(jnn.Dense(2), (-1, 3))
    d = s.to_dict()
    assert d["rows"][0]["output_shape"] == [-1, 2]
    assert format_table(d) == str(s)


def test_bad_arguments():
    with pytest.raises(TypeError, match=r"expected a jnn\.Layer"):
        jnn.summary(jnn.Relu, (-1, 3))
    with pytest.raises(ValueError, match="feature"):
        jnn.summary(jnn.Dense(2), (-1, -1))


def test_jnn_summary_is_the_module_and_calls_the_function():
    """jnn.summary(model, shape) works (README, DESIGN) and jnn.summary.Summary is reachable."""
    import importlib

    module = importlib.import_module("jnn.summary")
    assert jnn.summary is module
    s = jnn.summary(jnn.Dense(2), (-1, 3))
    assert isinstance(s, jnn.summary.Summary) and isinstance(s.rows[0], jnn.summary.SummaryRow)
    assert s == module.summary(jnn.Dense(2), (-1, 3)) and s.total_params == 8
    assert jnn.summary.format_table(s.to_dict()) == str(s)
    with pytest.raises(TypeError, match="summary: model"):
        jnn.summary("not a model", (-1, 3))
