"""Keep large temporaries on the heap: glibc's mmap threshold for XLA:CPU's step buffers.

XLA:CPU allocates the temporaries of a compiled step (a squared gradient, a clipped
update, a residual: whole-leaf arrays that CAME, Adafactor and the Automagic-CameAMP
blocks materialise between their reductions) on every run and frees them when the step
ends. glibc serves an allocation above its mmap threshold (128 KiB, adjusted up to at
most 32 MiB by default) with fresh pages from the kernel and unmaps them on free, so
each step faults in and zeroes those pages again, 4 KiB at a time: on the 2-core
machines this project targets, a 40 MB temporary costs about 20 ms that way against 2-3
ms to read it once. Raising the threshold lets freed blocks be reused from the heap.

XLA runs a step on its worker threads, whose allocations glibc serves from secondary
arenas made of heaps of at most 64 MiB: a larger block is mapped whatever the threshold,
so the setting also keeps every thread on the main arena.
The setting is process-wide and opt-in: freed memory below the threshold stays in the
process (its resident size does not shrink after a large array is freed).
"""

from __future__ import annotations

import ctypes
import ctypes.util

__all__ = ["tune_malloc"]

# mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_M_ARENA_MAX = -8


def tune_malloc(mmap_threshold: int = 1 << 30) -> bool:
    """Serve allocations up to ``mmap_threshold`` bytes from the reusable heap (glibc).

    Calls ``mallopt(M_MMAP_THRESHOLD, mmap_threshold)``, raises ``M_TRIM_THRESHOLD`` to
    match and sets ``M_ARENA_MAX`` to 1 (threads' secondary arenas map every block above
    64 MiB), so that the large temporaries of a jitted step are reused from one step to
    the next instead of being mapped, faulted in and unmapped each time. Call it before
    the first computation (threads keep the arena they started with). The same effect is
    had without code by starting Python with the environment variable::

      GLIBC_TUNABLES=glibc.malloc.mmap_threshold=1073741824:glibc.malloc.trim_threshold=2147483647:glibc.malloc.arena_max=1

    Args:
      mmap_threshold: allocations larger than this many bytes still get their own
        mapping (released to the system when freed). At least 128 KiB (glibc's default).

    Returns:
      ``True`` when glibc accepted the three settings; ``False`` where the C library is not
      glibc (macOS, musl, Windows; nothing is changed then) or refused a setting (the
      ones before it stay).

    Example:
      >>> from jaxopt_adv import fast
      >>> fast.tune_malloc() in (True, False)
      True

    Note:
      Measured in ``benchmarks/RESULTS.md`` (``benchmarks/came_step_time.py
      --tune-malloc``, quiet 2-core machine): a donated CAME step over one 10M-element
      leaf goes from 47.4 to 27.2 ms and ``optax.adafactor``'s from 47.0 to 24.5 ms; over
      one 50M-element leaf from 268 to 126 ms and from 333 to 107 ms. Adam's step, which
      has no whole-leaf temporaries, went from 17.4 to 11.9 ms and 75.2 to 52.8 ms in
      the same interleaved runs.
    """
    if not isinstance(mmap_threshold, int) or isinstance(mmap_threshold, bool):
        raise TypeError(f"mmap_threshold must be an int, got {type(mmap_threshold).__name__}")
    if not 128 * 1024 <= mmap_threshold <= 2**31 - 1:
        raise ValueError(
            f"mmap_threshold must be in [131072, 2**31 - 1] bytes, got {mmap_threshold}"
        )
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    if not mallopt(_M_MMAP_THRESHOLD, mmap_threshold):
        return False
    return bool(mallopt(_M_TRIM_THRESHOLD, 2**31 - 1)) and bool(mallopt(_M_ARENA_MAX, 1))
