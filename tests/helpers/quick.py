"""Quick compilation: XLA:CPU settings for tests whose run time is mostly compilation and
whose checks do not depend on how XLA optimises or generates code (structure, dtypes,
shardings, a jitted run against an eager one, a resumed run against the original: both
sides compiled with the same settings).

Two parts: ``OPTIMIZATIONS_OFF``, what JAX's ``jax_disable_most_optimizations`` sets (LLVM
at -O0, no expensive passes), and ``QUICK_CODEGEN``, XLA:CPU's elemental code generator
instead of its fusion emitters with each program in one LLVM module (about 5x less compile
time for the optimizer steps of ``tests/cases.py``: 4.4 -> 0.9 CPU s for eight of them; 6.3
-> 2.5 with optimisations on). Results agree with the default settings to an ulp of some
transcendental functions (tanh, rsqrt, float64 exp), far below every tolerance that compares
a quick run with something else, and quick runs are only ever compared with quick runs bit
for bit. The parity tests compile this way too (each of them meets its tolerance with both
parts as with the code generator alone, at about half the CPU time:
``benchmarks/RESULTS.md``), and each parity package runs a few of its cases inside
:func:`default_compilation` (XLA's defaults), the code users run.
``quick_compilation(optimizations=True)`` (the ``quick_code_generation`` fixture) changes
only the code generator: for the training loops that run long enough for LLVM's
optimisations to pay, and for the non-finite checks, where an infinite loss must round to
``tanh``'s saturated value bit for bit as it does with the defaults.

The fast kernels' self-check (:mod:`jaxopt_adv.fast.selfcheck`) compares the kernels with
XLA's default code bit for bit: it must never see the quick settings. It runs on a thread of
its own, and :func:`quick_compilation` sets the compile options of the thread that enters it
only (JAX's global ``jax_disable_most_optimizations`` would reach the check's thread: its
kernels would then differ from XLA's code, and the fast path would be off for the rest of
the process); a subprocess run with :func:`quick_xla_flags` has several devices, where the
kernels are never used, and :func:`quick_environment` (the examples and the command line
in subprocesses) turns the kernels off.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator

import jax
import pytest
from jax._src import compiler

QUICK_CODEGEN = {"xla_cpu_use_fusion_emitters": False, "xla_cpu_parallel_codegen_split_count": 1}
# what ``jax_disable_most_optimizations`` sets, for the entering thread alone
OPTIMIZATIONS_OFF = {"xla_backend_optimization_level": 0, "xla_llvm_disable_expensive_passes": True}
DEFAULT_COMPILE_OPTIONS = compiler.get_compile_options  # JAX's own, before any block


def quick_xla_flags(*flags: str) -> str:
    """``XLA_FLAGS`` for a subprocess that compiles quickly: ``flags`` (empty ones left out),
    then ``QUICK_CODEGEN`` and ``OPTIMIZATIONS_OFF``, the settings of
    :func:`quick_compilation` for the whole process."""
    quick = {**QUICK_CODEGEN, **OPTIMIZATIONS_OFF}.items()
    return " ".join(
        [*(flag for flag in flags if flag), *(f"--{k}={str(v).lower()}" for k, v in quick)]
    )


def quick_environment(kernels: bool = False, **variables: str) -> dict[str, str]:
    """This process's environment with ``variables`` (``PYTHONPATH=...``), for a
    subprocess (an example, the command line) that compiles quickly: ``XLA_FLAGS`` with
    the quick code generator and the optimisations off, for runs whose checks hold far
    above the last bits these settings change. Unless ``kernels``, the fast kernels are
    off there (``JAXOPT_ADV_FAST_DISABLE``): their self-check compares them with XLA's
    default code, which this process does not generate, so it would run, fail and send
    every step to the XLA path anyway. ``kernels=True`` for a run whose devices never take
    the kernels (several of them), where the setting would only change what it reports."""
    env = {**os.environ, **variables}
    env["XLA_FLAGS"] = quick_xla_flags(env.get("XLA_FLAGS", ""))
    if not kernels:
        env["JAXOPT_ADV_FAST_DISABLE"] = "1"
    return env


@contextlib.contextmanager
def quick_compilation(optimizations: bool = False) -> Iterator[None]:
    """Compile with ``QUICK_CODEGEN`` and, unless ``optimizations``, ``OPTIMIZATIONS_OFF``
    inside the block, on this thread only; with ``optimizations`` (for programs that run
    long enough for LLVM's optimisations to pay: training loops) only the code generator
    changes. On leaving the block, JAX's in-memory caches are cleared: the executables
    compiled inside (eager operations' too) are not reused by code that runs with the
    default settings afterwards."""
    original = compiler.get_compile_options
    thread = threading.get_ident()
    overrides = QUICK_CODEGEN if optimizations else {**QUICK_CODEGEN, **OPTIMIZATIONS_OFF}

    def get_compile_options(*args, env_options_overrides=None, **kwargs):
        if threading.get_ident() == thread:
            env_options_overrides = {**overrides, **(env_options_overrides or {})}
        return original(*args, env_options_overrides=env_options_overrides, **kwargs)

    compiler.get_compile_options = get_compile_options
    try:
        yield
    finally:
        compiler.get_compile_options = original
        jax.clear_caches()


@contextlib.contextmanager
def default_compilation() -> Iterator[None]:
    """XLA's default settings inside the block, also within :func:`quick_compilation`:
    for the tests of a quickly compiled package that check the code users run. JAX's
    in-memory caches are cleared on entering and on leaving, so no executable crosses
    from one kind of settings to the other."""
    around = compiler.get_compile_options
    jax.clear_caches()
    compiler.get_compile_options = DEFAULT_COMPILE_OPTIONS
    try:
        yield
    finally:
        compiler.get_compile_options = around
        jax.clear_caches()


def package_fixture(optimizations: bool):
    """An autouse fixture for a test package's ``conftest.py``: every test of the package
    runs inside :func:`quick_compilation` (``optimizations`` as given)."""

    @pytest.fixture(autouse=True, scope="package")
    def quick_package():
        with quick_compilation(optimizations=optimizations):
            yield

    return quick_package
