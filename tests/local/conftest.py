"""XLA compiles the local-rule tests with its optimisations mostly off.

The tests run tiny models for a few steps, so compilation (seconds per train step on
XLA:CPU) is most of their run time; ``jax_disable_most_optimizations`` is JAX's switch for
programs whose optimisation costs more than it saves. It leaves the HLO-level passes on:
results agree with optimised builds to round-off, far below the parity tolerances.
"""

from __future__ import annotations

import jax
import pytest

FLAG = "jax_disable_most_optimizations"


@pytest.fixture(autouse=True, scope="package")
def quick_compilation():
    before = jax.config.read(FLAG)
    jax.config.update(FLAG, True)
    yield
    jax.config.update(FLAG, before)
