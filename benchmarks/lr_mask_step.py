"""Automagic's learning-rate mask: the kernel (``jaxopt_adv.fast.automagic_lr_mask``)
against the JAX path (``jaxopt_adv.automagic.lr_mask.automagic_lr_mask``).

One donated jitted ``update`` of the mask block (warmup steps, sign source ``ref``, with
and without the spatial bump) over float32 trees of 10M and 50M elements in one matrix
and in 200, the two variants alternating step by step; medians. The floor is the bytes
the step must move (read u, source, mask, polarity; write the output, mask, polarity:
4 + 4 + 4 + 1 + 4 + 4 + 1 = 22 B per element) at the copy bandwidth measured in the
same run (a donated XLA ``x * c`` over one array). Also printed: the loop fusions over
the leaves per leaf in each variant's optimized HLO.

  python benchmarks/lr_mask_step.py
  python benchmarks/lr_mask_step.py --sizes 1e6 --leaves 1 --steps 5   # smoke
"""

from __future__ import annotations

import argparse
import math
import statistics
import time

import jax
from layouts import copy_seconds, loop_fusions, shapes, tree

from jaxopt_adv import fast
from jaxopt_adv.automagic.lr_mask import automagic_lr_mask

BYTES_PER_ELEMENT = 22


def runner(tx, layout):
    """The jitted update, the updates and the state donated (each buffer then goes to its
    own result: donate only the state and the mask's buffer would go to the updates)."""
    params = tree(layout, 0)
    step = jax.jit(
        lambda u, s, r: tx.update(u, s, ref_grads=r), donate_argnums=(0, 1), keep_unused=True
    )
    return step, tx.init(params)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1e7,5e7")
    parser.add_argument("--leaves", default="1,200")
    parser.add_argument("--steps", type=int, default=10)
    args = parser.parse_args()
    fast.tune_malloc()  # XLA's large temporaries stay on the heap (see fast.tune_malloc)
    print(f"kernels: {fast.unavailable_reason() or 'used'}")
    print(
        "| elements | leaves | spatial | kernel ms | jax ms | jax/kernel | floor/kernel "
        "| loop fusions per leaf (kernel / jax) |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for total in (int(float(s)) for s in args.sizes.split(",")):
        bandwidth = 8 * total / copy_seconds(total, args.steps)  # read + write, bytes/s
        for leaves in (int(n) for n in args.leaves.split(",")):
            layout = shapes(total, leaves)
            elements = sum(math.prod(s) for s in layout)
            for spatial in (False, True):
                kw = {"lr": 1e-6, "warmup_steps": 10**6, "spatial": spatial}
                variants = {
                    "kernel": runner(fast.automagic_lr_mask(**kw), layout),
                    "jax": runner(automagic_lr_mask(**kw), layout),
                }
                u, r = tree(layout, 1), tree(layout, 2)
                fusions = {  # lowering donates nothing
                    k: loop_fusions(step.lower(u, state, u).compile().as_text(), leaves, layout)
                    for k, (step, state) in variants.items()
                }
                states = {k: state for k, (_, state) in variants.items()}
                times: dict[str, list[float]] = {k: [] for k in variants}
                for t in range(args.steps + 2):
                    for k, (step, _) in variants.items():
                        fresh = jax.block_until_ready([x.copy() for x in u])
                        start = time.perf_counter()
                        out, states[k] = step(fresh, states[k], r)
                        jax.block_until_ready((out, states[k]))
                        if t >= 2:  # compile and warm up
                            times[k].append(time.perf_counter() - start)
                ms = {k: 1e3 * statistics.median(v) for k, v in times.items()}
                floor_ms = 1e3 * BYTES_PER_ELEMENT * elements / bandwidth
                print(
                    f"| {elements:,} | {leaves} | {spatial} | {ms['kernel']:.2f} | "
                    f"{ms['jax']:.2f} | {ms['jax'] / ms['kernel']:.2f} | "
                    f"{floor_ms / ms['kernel']:.2f} | "
                    f"{fusions['kernel']:.0f} / {fusions['jax']:.0f} |"
                )
                del variants, states


if __name__ == "__main__":
    main()
