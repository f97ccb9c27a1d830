"""``tests/conftest.py``: the run order (the tests marked ``slow`` first, so that
pytest-xdist's work stealing never leaves one worker with a long test at the end), the
``quick_compilation`` fixture, and the executables kept in memory by their cache key
(``tests/helpers/executables.py``)."""

from __future__ import annotations

import subprocess
import sys
import threading

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import monitoring
from jax._src import compiler

from tests.conftest import slow_first
from tests.helpers.quick import (
    OPTIMIZATIONS_OFF,
    QUICK_CODEGEN,
    default_compilation,
    quick_compilation,
    quick_environment,
    quick_xla_flags,
)


class Item:
    """The part of a ``pytest.Item`` that ``slow_first`` reads."""

    def __init__(self, name: str, slow: bool):
        self.name = name
        self.slow = slow

    def get_closest_marker(self, name: str):
        return pytest.mark.slow.mark if name == "slow" and self.slow else None


def test_slow_items_come_first_each_group_in_its_order():
    items = [Item("a", False), Item("b", True), Item("c", False), Item("d", True)]
    assert [item.name for item in slow_first(items)] == ["b", "d", "a", "c"]


def test_this_run_starts_with_its_slow_tests(request):
    slow = [item.get_closest_marker("slow") is not None for item in request.session.items]
    assert slow == sorted(slow, reverse=True)


def test_quick_compilation_turns_most_xla_optimisations_off(request):
    assert _codegen_overrides() == {}
    request.getfixturevalue("quick_compilation")
    assert _codegen_overrides() == {**QUICK_CODEGEN, **OPTIMIZATIONS_OFF}
    assert not jax.config.read("jax_disable_most_optimizations")  # this thread's alone


def _codegen_overrides() -> dict:
    """The XLA options a compilation on this thread gets on top of the defaults."""
    options = compiler.get_compile_options(num_replicas=1, num_partitions=1)
    return dict(options.env_option_overrides)


def _compilations(fun) -> int:
    """How many programs JAX compiles (or loads from its persistent cache) for ``fun()``."""
    events = []

    def listener(event, duration, **kwargs):
        if event == "/jax/core/compile/backend_compile_duration":
            events.append(duration)

    monitoring.register_event_duration_secs_listener(listener)
    try:
        fun()
    finally:
        monitoring.unregister_event_duration_listener(listener)
    return len(events)


def test_quick_compilation_is_for_this_thread_and_this_block_only():
    """The quick settings never reach another thread (the fast kernels' self-check compares
    the kernels with XLA's default code on a thread of its own), nor code run after the
    block: an eager operation compiled inside is compiled again after it. (The module's
    ``quick_compilation`` fixture may be on around the test, in this worker: the test runs
    inside ``default_compilation``.)"""
    x = jnp.linspace(0.5, 1.5, 7)
    for optimizations, overrides in [
        (False, {**QUICK_CODEGEN, **OPTIMIZATIONS_OFF}),
        (True, QUICK_CODEGEN),
    ]:
        with default_compilation():
            with quick_compilation(optimizations=optimizations):
                assert _codegen_overrides() == overrides
                other: dict = {}
                thread = threading.Thread(target=lambda o=other: o.update(_codegen_overrides()))
                thread.start()
                thread.join()
                assert other == {}
                jnp.arcsinh(x).block_until_ready()  # an eager operation: its own program
                assert _compilations(lambda: jnp.arcsinh(x).block_until_ready()) == 0
            assert _codegen_overrides() == {}
            assert _compilations(lambda: jnp.arcsinh(x).block_until_ready()) == 1


def test_default_compilation_inside_quick_compilation_is_xlas_default():
    """Inside a quickly compiled block, ``default_compilation`` compiles with XLA's
    defaults, and its programs are not reused by the quick code around it."""
    x = jnp.linspace(0.5, 1.5, 7)
    with default_compilation(), quick_compilation():
        jnp.arcsinh(x).block_until_ready()
        with default_compilation():
            assert _codegen_overrides() == {}
            assert _compilations(lambda: jnp.arcsinh(x).block_until_ready()) == 1
        assert _codegen_overrides() == {**QUICK_CODEGEN, **OPTIMIZATIONS_OFF}
        assert _compilations(lambda: jnp.arcsinh(x).block_until_ready()) == 1


def test_quick_xla_flags_spell_the_quick_code_generator():
    assert quick_xla_flags("--xla_force_host_platform_device_count=8") == (
        "--xla_force_host_platform_device_count=8 --xla_cpu_use_fusion_emitters=false"
        " --xla_cpu_parallel_codegen_split_count=1 --xla_backend_optimization_level=0"
        " --xla_llvm_disable_expensive_passes=true"
    )
    assert quick_xla_flags("") == quick_xla_flags()


def test_a_quick_subprocess_has_the_quick_settings_and_no_kernels(monkeypatch):
    """``quick_environment``: the quick settings after the process's ``XLA_FLAGS`` (XLA
    accepts them and keeps the others), the fast kernels off unless asked for."""
    monkeypatch.setenv("XLA_FLAGS", "--xla_force_host_platform_device_count=1")
    monkeypatch.delenv("JAXOPT_ADV_FAST_DISABLE", raising=False)
    env = quick_environment(PYTHONPATH="elsewhere")
    assert env["XLA_FLAGS"] == quick_xla_flags("--xla_force_host_platform_device_count=1")
    assert env["PYTHONPATH"] == "elsewhere" and env["JAXOPT_ADV_FAST_DISABLE"] == "1"
    assert "JAXOPT_ADV_FAST_DISABLE" not in quick_environment(kernels=True)
    script = (
        "import jax, jax.numpy as jnp; from jaxopt_adv import fast;"
        "print(jax.device_count(), float(jax.jit(jnp.tanh)(0.5)), fast.unavailable_reason())"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    count, value, reason = result.stdout.split(maxsplit=2)
    assert count == "1"
    assert abs(float(value) - float(np.tanh(0.5))) < 1e-6
    assert "JAXOPT_ADV_FAST_DISABLE" in reason


def test_a_program_compiled_before_in_this_process_is_not_compiled_again(monkeypatch):
    """A new function object with the program of one compiled before gets its executable
    (JAX's own caches, keyed by the function, miss); other compile options are another
    program."""
    compiled = []
    compile_program = compiler.backend_compile_and_load

    def counted(*args, **kwargs):
        compiled.append(1)
        return compile_program(*args, **kwargs)

    x = jnp.linspace(0.25, 0.75, 11)
    monkeypatch.setattr(compiler, "backend_compile_and_load", counted)

    def program(v):
        return jnp.sinh(v) * 3.0 - 1.0

    first, second = jax.jit(lambda v: program(v)), jax.jit(lambda v: program(v))
    expected = first(x)
    assert len(compiled) == 1
    np.testing.assert_array_equal(second(x), expected)
    assert len(compiled) == 1
    other = jax.jit(lambda v: program(v), compiler_options={"xla_cpu_enable_fast_math": True})
    other(x).block_until_ready()
    assert len(compiled) == 2
