"""Doctests of jnn/ run under the same rank-promotion guard as tests/."""

import jax

jax.config.update("jax_numpy_rank_promotion", "raise")
