"""``fast.tune_malloc``: large allocations come from the reusable heap afterwards."""

import subprocess
import sys
import textwrap

import pytest

from jaxopt_adv import fast

# In a fresh process (the setting is process-wide): glibc's mallinfo2 counts mmap'd bytes
# (hblkhd) separately from the heap (arena); a freed 64 MiB block served from the heap
# is reused by the next allocation of that size instead of being mapped again.
PROBE = textwrap.dedent(
    """
    import ctypes, sys
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
    size = 64 << 20
    block = np.ones(size // 8)
    mapped, heap = libc.mallinfo2().hblkhd, libc.mallinfo2().arena
    del block
    print(int(mapped >= size), int(heap >= size))
    """
)


def probe(mode: str) -> str:
    out = subprocess.run(
        [sys.executable, "-c", PROBE, mode], capture_output=True, text=True, check=True
    )
    return out.stdout.strip()


def test_large_blocks_move_from_mmap_to_the_heap():
    if not sys.platform.startswith("linux"):
        pytest.fail("this check needs glibc (Linux)")
    assert probe("default") == "1 0"  # glibc maps a 64 MiB block by default
    assert probe("tuned") == "0 1"  # after tune_malloc it sits in the heap


@pytest.mark.parametrize("bad", [0, 1000, 2**31, -5])
def test_bad_threshold_is_rejected(bad):
    with pytest.raises(ValueError, match="mmap_threshold"):
        fast.tune_malloc(bad)


def test_threshold_must_be_an_int():
    with pytest.raises(TypeError, match="mmap_threshold"):
        fast.tune_malloc(1e9)
