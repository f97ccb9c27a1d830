"""JAX's persistent compilation cache, one per test run, shared by every process of it.

Many tests build a fresh optimizer and jit the same programs again (a new function object
misses JAX's in-memory cache, but the compiled program is the same). With the persistent
cache each distinct program is compiled once per run: by the first pytest-xdist worker or
subprocess (the sharding, MultiSteps and CLI checks inherit the environment) that needs
it; the others load it. The pytest workers write only programs that took at least
``MIN_COMPILE_SECONDS`` to compile, the subprocesses every program. Measured (CPU s,
2 workers): torch_exact and the contract tests 448 writing every program, 397 without
the cache, 394 with the 1 s threshold; the sharding and MultiSteps checks, whose
subprocesses compile the same small programs, 110 writing every program, 163 with the
threshold. The cache lives in a temporary directory that the run creates and removes, so
nothing carries over from one run to the next. Within a pytest process the programs of
both kinds are also kept in memory by their cache key (``tests/helpers/executables.py``):
a program another test of the process compiled is not compiled again.

The tests marked ``slow`` run first. The README's ``pytest -n 2 --dist worksteal`` hands
each worker half of the collection and lets a worker that has run out take the untouched
end of the other's share; with the long tests at the front, no worker is left alone with
a minutes-long test at the end of the run.
"""

from __future__ import annotations

import os
import shutil
import tempfile

import jax
import pytest

from tests.helpers import executables, quick

CACHE_VARIABLE = "JAX_COMPILATION_CACHE_DIR"  # read by jax in every (sub)process
OWNER_VARIABLE = "JAXOPT_ADV_TEST_JAX_CACHE_OWNER"  # the process that removes it
MIN_COMPILE_SECONDS = 1.0  # the pytest workers do not write programs compiled faster


def pytest_configure(config: pytest.Config) -> None:
    if OWNER_VARIABLE not in os.environ:  # the controller (or a run without xdist)
        os.environ[CACHE_VARIABLE] = tempfile.mkdtemp(prefix="jaxopt-adv-jax-cache-")
        os.environ[OWNER_VARIABLE] = str(os.getpid())
        os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"  # subprocesses
    jax.config.update("jax_compilation_cache_dir", os.environ[CACHE_VARIABLE])
    jax.config.update("jax_persistent_cache_min_compile_time_secs", MIN_COMPILE_SECONDS)
    executables.install()


@pytest.fixture(scope="module")
def quick_compilation():
    """XLA compiles quickly (``tests/helpers/quick.py``: its optimisations mostly off, its
    simpler code generator) during the module's tests: for tests whose run time is mostly
    compilation and that check dtypes, shapes, structure or traces, which neither changes,
    or numbers within tolerances far above the last bits that they do change."""
    with quick.quick_compilation():
        yield


@pytest.fixture(scope="module")
def quick_code_generation():
    """XLA:CPU's simpler code generator (``tests/helpers/quick.py``) with its optimisations
    on during the module's tests: for training loops long enough for the optimisations to
    pay, and checks that need an infinite loss to round as XLA's default code rounds it."""
    with quick.quick_compilation(optimizations=True):
        yield


@pytest.fixture
def default_compilation():
    """XLA's default settings for this test, inside a module or package that compiles
    quickly: for the few parity tests there that check the code users run."""
    with quick.default_compilation():
        yield


def slow_first(items: list[pytest.Item]) -> list[pytest.Item]:
    """``items`` with the ones marked ``slow`` first, each group in its own order."""
    slow = [item for item in items if item.get_closest_marker("slow") is not None]
    return slow + [item for item in items if item.get_closest_marker("slow") is None]


@pytest.hookimpl(trylast=True)  # after pytest has grouped the items by fixture
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    items[:] = slow_first(items)


def pytest_unconfigure(config: pytest.Config) -> None:
    if os.environ.get(OWNER_VARIABLE) == str(os.getpid()):
        shutil.rmtree(os.environ.pop(CACHE_VARIABLE), ignore_errors=True)
        del os.environ[OWNER_VARIABLE]
