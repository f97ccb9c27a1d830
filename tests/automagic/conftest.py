"""The Automagic-CameAMP tests (parity of the composite and its blocks with the torch
references, the kernel paths too) compile with XLA:CPU's simpler code generator, its
optimisations on (``tests/helpers/quick.py``): compilation is most of their run time, and
the generated code differs from the default by at most an ulp of some transcendental
functions, far below the parity tolerances (float64: 1e-10 relative, float32: 1e-5). The
fast kernels' self-check never sees it."""

from tests.helpers.quick import package_fixture

quick_code_generation = package_fixture(optimizations=True)
