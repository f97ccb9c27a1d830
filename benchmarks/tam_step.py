"""TAM and AdaTAM: the kernel (``jaxopt_adv.fast.tam`` / ``fast.adatam``) against the JAX
path (``jaxopt_adv.tam.tam`` / ``adatam``).

One donated jitted step (``update`` + ``optax.apply_updates``) over float32 trees of 10M
and 50M elements in one matrix and in 200, for the ``"dim0"`` (pytorch_optimizer's) and
``"row_cosine"`` correlations, the two variants alternating step by step; medians. The
floor is the bytes the kernel step must move at the copy bandwidth measured in the same
run (a donated XLA ``x * c`` over one array): TAM ``"dim0"`` reads m, g for the column
sums, then g, m, s and writes m, s, then the apply loop reads p, m and writes p (10 x 4 B
per element); ``"row_cosine"`` reads each row of m, g twice while it is in cache (8 x 4 B);
AdaTAM adds v read and written in the kernel and read in the apply loop (+12 B). Also
printed: the loop fusions over the leaves per leaf in each variant's optimized HLO.

  python benchmarks/tam_step.py
  python benchmarks/tam_step.py --sizes 1e6 --leaves 1 --steps 5   # smoke
"""

from __future__ import annotations

import time
from functools import partial

import jax
import optax
from layouts import alternating_medians_ms, layouts, loop_fusions, print_row, start, tree

from jaxopt_adv import fast
from jaxopt_adv.tam import adatam, tam

# bytes per element the kernel step must move: (optimizer, correlation) -> bytes
BYTES_PER_ELEMENT = {
    ("tam", "dim0"): 40,
    ("tam", "row_cosine"): 32,
    ("adatam", "dim0"): 52,
    ("adatam", "row_cosine"): 44,
}
FACTORIES = {"tam": (fast.tam, tam), "adatam": (fast.adatam, adatam)}


def runner(tx, layout):
    """The jitted step with params and state donated, and its starting params and state."""

    def step(params, state, grads):
        updates, state = tx.update(grads, state, params)
        return optax.apply_updates(params, updates), state

    params = tree(layout, 0)
    return jax.jit(step, donate_argnums=(0, 1)), params, tx.init(params)


def measure(
    name: str, correlation: str, layout: list, leaves: int, steps: int
) -> tuple[dict, dict]:
    """The kernel's and the JAX path's median milliseconds and loop fusions per leaf."""
    grads = tree(layout, 1)
    ours, theirs = FACTORIES[name]
    variants = {
        "kernel": runner(ours(1e-4, correlation=correlation), layout),
        "jax": runner(theirs(1e-4, correlation=correlation), layout),
    }
    fusions = {  # lowering donates nothing
        k: loop_fusions(step.lower(p, s, grads).compile().as_text(), leaves, layout)
        for k, (step, p, s) in variants.items()
    }
    carry = {k: (p, s) for k, (_, p, s) in variants.items()}

    def run(k: str) -> float:
        start_time = time.perf_counter()
        carry[k] = jax.block_until_ready(variants[k][0](*carry[k], grads))
        return time.perf_counter() - start_time

    return alternating_medians_ms(steps, {k: partial(run, k) for k in variants}), fusions


def main() -> None:
    args = start(__doc__, "optimizer | correlation | elements | leaves")
    for leaves, layout, elements, bandwidth in layouts(args):
        for (name, correlation), nbytes in BYTES_PER_ELEMENT.items():
            ms, fusions = measure(name, correlation, layout, leaves, args.steps)
            floor_ms = 1e3 * nbytes * elements / bandwidth
            print_row([name, correlation, f"{elements:,}", leaves], ms, fusions, floor_ms)


if __name__ == "__main__":
    main()
