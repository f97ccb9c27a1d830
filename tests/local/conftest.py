"""XLA compiles the local-rule tests quickly (``tests/helpers/quick.py``).

The tests run tiny models for a few steps, so compilation (seconds per train step on
XLA:CPU) is most of their run time; ``jax_disable_most_optimizations`` is JAX's switch for
programs whose optimisation costs more than it saves, and XLA:CPU's elemental code
generator compiles faster than its fusion emitters. Both leave the HLO-level passes on:
results agree with optimised builds to round-off, far below the parity tolerances.
"""

from tests.helpers.quick import package_fixture

quick_compilation = package_fixture(optimizations=False)
