"""The model tests (parity with the torch twins) compile quickly (``tests/helpers/quick.py``:
XLA:CPU's simpler code generator, most of XLA's optimisations off): compilation is most of
their run time, and the code's results differ from XLA's default code's in the last bits
only, far below the parity tolerances (float64: 1e-10 relative, float32: 1e-5).
``test_batchnorm.py``'s and ``test_layers.py``'s ``..._with_xlas_default_compilation`` tests
check the parity with XLA's default settings too, the code users run. The fast kernels'
self-check never sees the quick settings."""

from tests.helpers.quick import package_fixture

quick_compilation = package_fixture(optimizations=False)
