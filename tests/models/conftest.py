"""The model tests (parity with the torch twins) compile quickly (``tests/helpers/quick.py``:
XLA:CPU's simpler code generator, most of XLA's optimisations off): compilation is most of
their run time, and the code differs from XLA's default by at most an ulp of some functions,
far below the parity tolerances (float64: 1e-10 relative, float32: 1e-5). The fast kernels'
self-check never sees the quick settings."""

from tests.helpers.quick import package_fixture

quick_compilation = package_fixture(optimizations=False)
