"""What the kernel benchmarks (``lr_mask_step.py``, ``tam_step.py``) share: float32 trees
of square-ish matrices, the loop fusions per leaf in an optimized HLO, and the copy time
that sets the memory floor."""

from __future__ import annotations

import math
import re
import time

import jax
import jax.numpy as jnp
import numpy as np


def shapes(total: int, leaves: int) -> list[tuple[int, int]]:
    """``leaves`` square-ish matrices holding ``total`` elements together."""
    side = max(1, math.isqrt(total // leaves))
    return [(side, total // leaves // side)] * leaves


def tree(layout: list[tuple[int, int]], seed: int) -> list[jax.Array]:
    """Standard-normal float32 leaves of the given shapes."""
    rng = np.random.default_rng(seed)
    return [jnp.asarray(rng.standard_normal(s), jnp.float32) for s in layout]


def loop_fusions(hlo: str, leaves: int, layout: list[tuple[int, int]]) -> float:
    """Fusions whose result has a leaf's shape in the optimized ``hlo``, per leaf."""
    dims = ",".join(str(d) for d in layout[0])
    heads = re.findall(r"= \w+\[" + dims + r"\][^\n]*fusion\(", hlo)
    return len(heads) / leaves


def copy_seconds(total: int, steps: int) -> float:
    """The fastest of ``steps`` donated XLA ``x * c`` over ``total`` float32 elements
    (read and write once: 8 bytes per element)."""
    scale = jax.jit(lambda x: x * 1.0000001, donate_argnums=0)
    x = jax.block_until_ready(scale(jnp.ones(total, jnp.float32)))
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        x = jax.block_until_ready(scale(x))
        times.append(time.perf_counter() - start)
    return min(times)
