"""Test configuration: make implicit rank promotion an error, so any
accidental broadcasting in jnn surfaces here rather than in users' results."""

import jax
import pytest

jax.config.update("jax_numpy_rank_promotion", "raise")


@pytest.fixture
def key():
    return jax.random.key(0)
