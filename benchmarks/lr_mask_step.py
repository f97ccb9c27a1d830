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

import time
from functools import partial

import jax
from layouts import alternating_medians_ms, layouts, loop_fusions, print_row, start, tree

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


def measure(layout: list, leaves: int, spatial: bool, steps: int) -> tuple[dict, dict]:
    """The kernel's and the JAX path's median milliseconds and loop fusions per leaf."""
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

    def run(k: str) -> float:
        fresh = jax.block_until_ready([x.copy() for x in u])
        start_time = time.perf_counter()
        out, states[k] = variants[k][0](fresh, states[k], r)
        jax.block_until_ready((out, states[k]))
        return time.perf_counter() - start_time

    return alternating_medians_ms(steps, {k: partial(run, k) for k in variants}), fusions


def main() -> None:
    args = start(__doc__, "elements | leaves | spatial")
    for leaves, layout, elements, bandwidth in layouts(args):
        for spatial in (False, True):
            ms, fusions = measure(layout, leaves, spatial, args.steps)
            floor_ms = 1e3 * BYTES_PER_ELEMENT * elements / bandwidth
            print_row([f"{elements:,}", leaves, spatial], ms, fusions, floor_ms)


if __name__ == "__main__":
    main()
