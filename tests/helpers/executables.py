"""Executables kept in memory by their compilation-cache key, for the test processes.

Many tests build a fresh optimizer and jit programs another test of the same process has
compiled already: a new function object misses JAX's in-memory caches, and the
persistent compilation cache (``tests/conftest.py``) holds only what took a second or
more to compile, since writing every small program costs more than it saves. Here JAX's
two persistent-cache steps gain an in-memory layer: a program whose cache key was
compiled before in this process gets that executable back instead of being compiled
again. The key is JAX's own (the module, the compile options, which include
``tests/helpers/quick.py``'s settings, the backend, the JAX and XLA versions), so a
program is only ever handed an executable JAX's persistent cache would hand it too.
Programs with host callbacks are not kept (their callbacks live in the executable).
"""

from __future__ import annotations

import collections
import time
from typing import Any

from jax._src import compiler

# The executables kept (least recently used dropped first): enough for the programs of a
# test module and the ones it shares with its neighbours, few enough that a worker's
# memory stays bounded.
CAPACITY = 4096


def install(capacity: int = CAPACITY) -> None:
    """Wrap JAX's persistent-cache read and compile-and-write steps in this process."""
    read, compile_and_write = compiler._cache_read, compiler._compile_and_write_cache
    kept: collections.OrderedDict[tuple, tuple[Any, float]] = collections.OrderedDict()

    def key_of(cache_key: str, executable_devices: Any) -> tuple:
        return (cache_key, tuple(device.id for device in executable_devices))

    def keep(key: tuple, executable: Any, compile_time: float) -> None:
        kept[key] = (executable, compile_time)
        if len(kept) > capacity:
            kept.popitem(last=False)

    def cache_read(module_name, cache_key, compile_options, backend, executable_devices):
        key = key_of(cache_key, executable_devices)
        if key in kept:
            kept.move_to_end(key)
            return kept[key]
        executable, compile_time = read(
            module_name, cache_key, compile_options, backend, executable_devices
        )
        if executable is not None:
            keep(key, executable, compile_time)
        return executable, compile_time

    def compile_and_write_cache(
        backend, computation, executable_devices, compile_options, host_callbacks,
        module_name, cache_key,
    ):  # fmt: skip
        start = time.monotonic()
        executable = compile_and_write(
            backend, computation, executable_devices, compile_options, host_callbacks,
            module_name, cache_key,
        )  # fmt: skip
        if not host_callbacks:
            keep(key_of(cache_key, executable_devices), executable, time.monotonic() - start)
        return executable

    compiler._cache_read = cache_read
    compiler._compile_and_write_cache = compile_and_write_cache
