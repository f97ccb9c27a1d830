"""What the kernel benchmarks (``lr_mask_step.py``, ``tam_step.py``) share: their command
line and table header, float32 trees of square-ish matrices for each size and leaf count,
the loop fusions per leaf in an optimized HLO, the copy time that sets the memory floor,
the kernel and JAX variants timed alternately, and the table row's measured columns."""

from __future__ import annotations

import argparse
import math
import re
import statistics
import time
from collections.abc import Callable, Iterator

import jax
import jax.numpy as jnp
import numpy as np

from jaxopt_adv import fast

MEASURED_COLUMNS = (
    "kernel ms | jax ms | jax/kernel | floor/kernel | loop fusions per leaf (kernel / jax)"
)


def start(doc: str, columns: str) -> argparse.Namespace:
    """Parses ``--sizes``, ``--leaves`` and ``--steps``, keeps XLA's large temporaries on
    the heap (:func:`jaxopt_adv.fast.tune_malloc`) and prints whether the kernels are used
    and the table's header: ``columns``, then :data:`MEASURED_COLUMNS`."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--sizes", default="1e7,5e7")
    parser.add_argument("--leaves", default="1,200")
    parser.add_argument("--steps", type=int, default=10)
    args = parser.parse_args()
    fast.tune_malloc()
    print(f"kernels: {fast.unavailable_reason() or 'used'}")
    header = f"{columns} | {MEASURED_COLUMNS}"
    print(f"| {header} |")
    print("|---" * (header.count("|") + 1) + "|")
    return args


def layouts(args: argparse.Namespace) -> Iterator[tuple[int, list[tuple[int, int]], int, float]]:
    """``(leaves, layout, elements, bandwidth)`` for each size and leaf count of ``args``;
    the bandwidth (read + write, bytes/s) of a copy of that size, measured once per size."""
    for total in (int(float(s)) for s in args.sizes.split(",")):
        bandwidth = 8 * total / copy_seconds(total, args.steps)
        for leaves in (int(n) for n in args.leaves.split(",")):
            layout = shapes(total, leaves)
            yield leaves, layout, sum(math.prod(s) for s in layout), bandwidth


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


def alternating_medians_ms(steps: int, runs: dict[str, Callable[[], float]]) -> dict[str, float]:
    """Each variant's median milliseconds over ``steps`` rounds after two warm-up rounds
    (compile and warm up), the variants alternating; ``runs[k]()`` takes one step and
    returns the seconds it took."""
    times: dict[str, list[float]] = {k: [] for k in runs}
    for t in range(steps + 2):
        for k, run in runs.items():
            seconds = run()
            if t >= 2:
                times[k].append(seconds)
    return {k: 1e3 * statistics.median(v) for k, v in times.items()}


def print_row(cells: list, ms: dict[str, float], fusions: dict[str, float], floor_ms: float):
    """Prints a table row: ``cells``, then the :data:`MEASURED_COLUMNS` from the medians,
    the memory floor and the fusions."""
    measured = [
        f"{ms['kernel']:.2f}",
        f"{ms['jax']:.2f}",
        f"{ms['jax'] / ms['kernel']:.2f}",
        f"{floor_ms / ms['kernel']:.2f}",
        f"{fusions['kernel']:.0f} / {fusions['jax']:.0f}",
    ]
    print("| " + " | ".join(str(cell) for cell in [*cells, *measured]) + " |")
