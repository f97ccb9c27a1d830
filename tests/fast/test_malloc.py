"""``fast.tune_malloc``: large allocations come from the reusable heap afterwards."""

import subprocess
import sys
import textwrap

import pytest

from jaxopt_adv import fast

# In a fresh process (the setting is process-wide): glibc's mallinfo2 counts mmap'd bytes
# (hblkhd) separately from the heaps (arena); a freed block served from a heap is reused
# by the next allocation of that size instead of being mapped again. A 64 MiB block on
# the main thread, and a 128 MiB one on another thread (whose secondary arena would map
# anything above 64 MiB).
PROBE = textwrap.dedent(
    """
    import ctypes, sys, threading
    import numpy as np
    from jaxopt_adv import fast

    class MallInfo2(ctypes.Structure):
        _fields_ = [(name, ctypes.c_size_t) for name in (
            "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks",
            "uordblks", "fordblks", "keepcost")]

    libc = ctypes.CDLL("libc.so.6")
    libc.mallinfo2.restype = MallInfo2
    if sys.argv[1] == "tuned":
        assert fast.tune_malloc() is True
    size = (64 if sys.argv[2] == "main" else 128) << 20
    seen = []

    def allocate():
        block = np.ones(size // 8)
        seen.append((libc.mallinfo2().hblkhd, libc.mallinfo2().arena))
        del block

    if sys.argv[2] == "main":
        allocate()
    else:
        thread = threading.Thread(target=allocate)
        thread.start()
        thread.join()
    mapped, heap = seen[0]
    print(int(mapped >= size), int(heap >= size))
    """
)


def probe(mode: str, where: str) -> str:
    out = subprocess.run(
        [sys.executable, "-c", PROBE, mode, where], capture_output=True, text=True, check=True
    )
    return out.stdout.strip()


@pytest.mark.parametrize("where", ["main", "thread"])
def test_large_blocks_move_from_mmap_to_the_heap(where):
    if not sys.platform.startswith("linux"):
        pytest.fail("this check needs glibc (Linux)")
    assert probe("default", where) == "1 0"  # glibc maps the block by default
    assert probe("tuned", where) == "0 1"  # after tune_malloc it sits in a heap


@pytest.mark.parametrize("bad", [0, 1000, 2**31, -5])
def test_bad_threshold_is_rejected(bad):
    with pytest.raises(ValueError, match="mmap_threshold"):
        fast.tune_malloc(bad)


def test_threshold_must_be_an_int():
    with pytest.raises(TypeError, match="mmap_threshold"):
        fast.tune_malloc(1e9)
