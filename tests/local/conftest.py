"""The local-rule tests (SigProp and localized learning, parity with the torch references)
compile quickly (``tests/helpers/quick.py``: XLA:CPU's simpler code generator, most of XLA's
optimisations off): they run tiny models for a few steps, so compilation is most of their
run time, and the code's results differ from XLA's default code's in the last bits only, far
below the parity tolerances. ``test_sigprop.py``'s and ``test_localized.py``'s
``..._with_xlas_default_compilation`` tests check the parity with XLA's default settings
too, the code users run. The fast kernels' self-check never sees the quick settings."""

from tests.helpers.quick import package_fixture

quick_compilation = package_fixture(optimizations=False)
