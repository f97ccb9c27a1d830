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

import argparse
import math
import statistics
import time

import jax
import optax
from layouts import copy_seconds, loop_fusions, shapes, tree

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1e7,5e7")
    parser.add_argument("--leaves", default="1,200")
    parser.add_argument("--steps", type=int, default=10)
    args = parser.parse_args()
    fast.tune_malloc()  # XLA's large temporaries stay on the heap (see fast.tune_malloc)
    print(f"kernels: {fast.unavailable_reason() or 'used'}")
    print(
        "| optimizer | correlation | elements | leaves | kernel ms | jax ms | jax/kernel "
        "| floor/kernel | loop fusions per leaf (kernel / jax) |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for total in (int(float(s)) for s in args.sizes.split(",")):
        bandwidth = 8 * total / copy_seconds(total, args.steps)  # read + write, bytes/s
        for leaves in (int(n) for n in args.leaves.split(",")):
            layout = shapes(total, leaves)
            elements = sum(math.prod(s) for s in layout)
            grads = tree(layout, 1)
            for (name, correlation), nbytes in BYTES_PER_ELEMENT.items():
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
                times: dict[str, list[float]] = {k: [] for k in variants}
                for t in range(args.steps + 2):
                    for k, (step, _, _) in variants.items():
                        start = time.perf_counter()
                        carry[k] = jax.block_until_ready(step(*carry[k], grads))
                        if t >= 2:  # compile and warm up
                            times[k].append(time.perf_counter() - start)
                ms = {k: 1e3 * statistics.median(v) for k, v in times.items()}
                floor_ms = 1e3 * nbytes * elements / bandwidth
                print(
                    f"| {name} | {correlation} | {elements:,} | {leaves} | "
                    f"{ms['kernel']:.2f} | {ms['jax']:.2f} | {ms['jax'] / ms['kernel']:.2f} | "
                    f"{floor_ms / ms['kernel']:.2f} | "
                    f"{fusions['kernel']:.0f} / {fusions['jax']:.0f} |"
                )
                del variants, carry


if __name__ == "__main__":
    main()
