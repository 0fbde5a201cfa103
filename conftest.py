"""Doctests of jnn/ run under the same rank-promotion guard as tests/, and (like tests/)
with JNN_COMPILE_CACHE=off: nothing changes JAX's settings or the user's cache folder."""

import os

import jax

jax.config.update("jax_numpy_rank_promotion", "raise")
os.environ.setdefault("JNN_COMPILE_CACHE", "off")
