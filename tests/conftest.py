"""Test configuration: make implicit rank promotion an error, so any
accidental broadcasting in jnn surfaces here rather than in users' results."""

import os

import jax
import pytest

jax.config.update("jax_numpy_rank_promotion", "raise")
# The CLI and the examples turn on jnn.compile_cache(); tests (and the processes they
# start) keep JAX's global settings and the user's cache folder as they are.
os.environ.setdefault("JNN_COMPILE_CACHE", "off")


@pytest.fixture
def key():
    return jax.random.key(0)


_COMPILES: list[str] = []


def _on_event(event: str, duration: float, **kwargs) -> None:
    if event == "/jax/core/compile/backend_compile_duration":
        _COMPILES.append(kwargs.get("fun_name", "?"))  # e.g. "jit(epoch)"


jax.monitoring.register_event_duration_secs_listener(_on_event)


@pytest.fixture
def compiles():
    """A list that grows by one per XLA compilation from now on (jax.monitoring events)."""
    start = len(_COMPILES)

    class Counter:
        @property
        def count(self) -> int:
            return len(_COMPILES) - start

        @property
        def names(self) -> list[str]:
            """The compiled programs' names, in order (``jit(<function name>)``)."""
            return _COMPILES[start:]

    return Counter()
