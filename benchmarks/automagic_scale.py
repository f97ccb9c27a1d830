"""Automagic-CameAMP at fine-tuning scale: trace + compile time and step time against
``jaxopt_adv.torch.adam`` (and ``optax.adamw``'s compile time) on three layouts (JAX only, CPU).

``--layout lora``: ``--layers`` x (q, k, v, o) x (down ``r x d``, up ``d x r``) float32
leaves (default 25 x 4 x 2 = 200 leaves of 8x512 / 512x8), the LoRA preset.
``--layout lora_wide``: 12 x 4 x 2 = 96 leaves of 16x4096 / 4096x16 (6.3M elements).
``--layout full``: a full fine-tune, 50 weights of 512x512 and 50 bias vectors of 512,
the full fine-tune preset. Each optimizer's step
(``update + apply_updates``, params and state donated) is jitted; "compile s" is the
wall time of ``lower(...).compile()``, the step time the mean of ``--steps`` steps after
``--warmup`` steps, optimizers alternating step by step so all see the same machine
state. The composite runs in variants that switch its blocks off one group at a time,
for a per-block breakdown: ``gated`` (the preset: penalties every 10th step),
``every_step`` (``frequency_every = rank_every = 1``), ``no_penalties`` (no frequency or
rank penalty), ``no_edge`` (additionally no edge suppression), ``no_spatial`` (also
no spatial awareness: no spatial lr bump), ``kernel`` (the preset with ``kernel=True``:
the scaling and direction stepped by ``jaxopt_adv.fast.automagic_body.scale_and_direct``,
the lr mask by ``jaxopt_adv.fast.automagic_lr_mask``, SPD by
``jaxopt_adv.fast.automagic.selective_projection_decay``), ``kernel_no_penalties`` /
``kernel_no_spatial`` (``kernel=True`` with the blocks of ``no_penalties`` /
``no_spatial`` off), ``kernel_two_calls`` (``kernel=True`` with the scaling and
direction as two kernel calls, ``jaxopt_adv.fast.scale_by_automagic_came`` and
``jaxopt_adv.fast.automagic.automagic_direction``: the step before the one-call kernel),
and ``kernel_later`` / ``kernel_two_calls_later`` (the same two with ``warmup_steps=2``:
every timed step in the later phase, Cautious instead of Grams and OrthoGrad; the other
variants' timed steps are all early-phase ones).

``--blocks`` times each block of the composite alone instead (jitted, its state
donated, interleaved with Adam step by step): AGR, the frequency penalty (as on a step
where it runs), the scaling (XLA and kernel), the direction control (XLA and kernel),
the two in one block (XLA, their two kernels chained, and
``jaxopt_adv.fast.automagic_body.scale_and_direct``'s one kernel call), the lr mask
(XLA and kernel), SPD (XLA and kernel), the grouping itself (the params and gradients
stacked per group and the updates read back, around an identity), and the composite
(gated, ``kernel=False`` and ``kernel=True``) for reference. The blocks run on the
params and gradients grouped as the composite groups them
(``jaxopt_adv.grouping.group_leaves``: like leaves stacked, the state kept stacked), so
each runs as inside the composite.

Usage:
  python benchmarks/automagic_scale.py                  # 200 leaves of 8x512 / 512x8
  python benchmarks/automagic_scale.py --layout lora_wide --variants gated
  python benchmarks/automagic_scale.py --layout full --variants gated
"""

from __future__ import annotations

import argparse
import contextlib
import os
import time

import jax
import jax.numpy as jnp
import optax

import jaxopt_adv
from jaxopt_adv import fast
from jaxopt_adv.automagic import (
    create_full_finetune_optimizer,
    create_lora_optimizer,
    full_finetune_config,
    lora_config,
)
from jaxopt_adv.automagic.agr import agr
from jaxopt_adv.automagic.body import automagic_direction, scale_by_automagic_came
from jaxopt_adv.automagic.lr_mask import automagic_lr_mask
from jaxopt_adv.automagic.penalties import frequency_penalty
from jaxopt_adv.automagic.spd import selective_projection_decay
from jaxopt_adv.fast import automagic as fast_automagic
from jaxopt_adv.fast import automagic_body, selfcheck
from jaxopt_adv.fast.automagic_body import scale_and_direct
from jaxopt_adv.grouping import group_leaves, with_grouped_leaves

LR = 1e-4
# layout: (layers, LoRA rank or None, width)
LAYOUTS = {"lora": (25, 8, 512), "lora_wide": (12, 16, 4096), "full": (50, None, 512)}
VARIANTS = {
    "gated": {},
    "every_step": {"frequency_every": 1, "rank_every": 1},
    "no_penalties": {"frequency_penalty": 0.0, "lora_rank_penalty": False},
    "no_edge": {"frequency_penalty": 0.0, "lora_rank_penalty": False, "edge_suppression": False},
    "no_spatial": {"spatial_awareness": False, "lora_rank_penalty": False},
    "kernel": {"kernel": True},
    "kernel_no_penalties": {"frequency_penalty": 0.0, "lora_rank_penalty": False, "kernel": True},
    "kernel_no_spatial": {"spatial_awareness": False, "lora_rank_penalty": False, "kernel": True},
    "kernel_two_calls": {"kernel": True},
    "kernel_later": {"kernel": True, "warmup_steps": 2},
    "kernel_two_calls_later": {"kernel": True, "warmup_steps": 2},
}
# the variants whose scaling and direction run as two kernel calls
TWO_CALLS = ("kernel_two_calls", "kernel_two_calls_later")


@contextlib.contextmanager
def two_calls():
    """While a step compiles: the scaling and direction kernels as two calls (the
    one-call kernel's self-check outcome overridden)."""
    automagic_body._unavailable_reason()  # the self-check's own outcome first
    results = selfcheck._RESULT[bool(jax.config.jax_enable_x64)]
    saved = results[selfcheck.AUTOMAGIC_BODY]
    results[selfcheck.AUTOMAGIC_BODY] = "off for the comparison"
    try:
        yield
    finally:
        results[selfcheck.AUTOMAGIC_BODY] = saved


def lora_tree(layers: int, rank: int, dim: int) -> dict[str, jax.Array]:
    """``layers`` x (q, k, v, o) x (down, up) adapters, seeded normal values."""
    shapes = {
        f"{layer}.{proj}.{part}": (rank, dim) if part == "down" else (dim, rank)
        for layer in range(layers)
        for proj in "qkvo"
        for part in ("down", "up")
    }
    return _normal_tree(shapes)


def full_tree(layers: int, dim: int) -> dict[str, jax.Array]:
    """``layers`` x (weight ``dim x dim``, bias ``dim``), seeded normal values."""
    shapes = {
        f"{layer}.{part}": shape
        for layer in range(layers)
        for part, shape in (("w", (dim, dim)), ("b", (dim,)))
    }
    return _normal_tree(shapes)


def _normal_tree(shapes: dict[str, tuple[int, ...]]) -> dict[str, jax.Array]:
    keys = jax.random.split(jax.random.key(0), len(shapes))
    return {
        name: 0.02 * jax.random.normal(k, s, jnp.float32)
        for (name, s), k in zip(shapes.items(), keys, strict=True)
    }


def compiled_step(tx: optax.GradientTransformation, params, grads):
    """(compiled step, compile seconds, fresh state)."""

    def step(params, state, grads):
        updates, state = tx.update(grads, state, params)
        return optax.apply_updates(params, updates), state

    state = tx.init(params)
    start = time.perf_counter()
    compiled = jax.jit(step, donate_argnums=(0, 1)).lower(params, state, grads).compile()
    return compiled, time.perf_counter() - start, state


def block_steps(config, params, grads) -> dict[str, tuple]:
    """Each block of the composite alone, on the grouped ``params`` and ``grads``:
    ``name -> (tx, extra update arguments)``."""
    mask_args = (LR, config.min_lr, config.max_lr, config.lr_bump)
    mask_kwargs = {
        "warmup_steps": config.warmup_steps,
        "spatial": config.spatial_awareness,
        "detail_preservation": config.detail_preservation,
    }
    refs = {"ref_grads": grads, "raw_grads": grads}
    spd_args = (config.weight_decay, config.anchor)
    spd_kwargs = {"rank_aware": config.lora_rank_penalty, "active_steps": config.warmup_steps}
    return {
        "agr (tree, edge)": (
            agr(scope="tree", edge=config.edge_suppression, eps=1e-10, cap_alpha=True),
            {},
        ),
        "frequency penalty": (frequency_penalty(config.frequency_penalty), {}),
        "scaling, XLA": (scale_by_automagic_came(**config.came_options), {}),
        "scaling, kernel": (fast.scale_by_automagic_came(**config.came_options), {}),
        "direction, XLA": (automagic_direction(**config.direction_options), refs),
        "direction, kernel": (fast_automagic.automagic_direction(**config.direction_options), refs),
        "scaling + direction, XLA": (
            scale_and_direct(config.came_options, config.direction_options, kernel=False),
            refs,
        ),
        "scaling + direction, two kernel calls": (
            optax.chain(
                fast.scale_by_automagic_came(**config.came_options),
                fast_automagic.automagic_direction(**config.direction_options),
            ),
            refs,
        ),
        "scaling + direction, one kernel call": (
            scale_and_direct(config.came_options, config.direction_options),
            refs,
        ),
        "lr mask, XLA": (automagic_lr_mask(*mask_args, **mask_kwargs), refs),
        "lr mask, kernel": (fast.automagic_lr_mask(*mask_args, **mask_kwargs), refs),
        "spd, XLA": (selective_projection_decay(*spd_args, **spd_kwargs), {"raw_grads": grads}),
        "spd, kernel": (
            fast_automagic.selective_projection_decay(*spd_args, **spd_kwargs),
            {"raw_grads": grads},
        ),
    }


def compiled_block(tx, params, grads, extra):
    """(compiled ``update(grads, state, params, extra)`` with the state donated, compile
    seconds, fresh state)."""
    state = tx.init(params)
    start = time.perf_counter()
    update = jax.jit(lambda g, s, p, e: tx.update(g, s, p, **e), donate_argnums=(1,))
    compiled = update.lower(grads, state, params, extra).compile()
    return compiled, time.perf_counter() - start, state


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layout", choices=LAYOUTS, default="lora")
    parser.add_argument("--layers", type=int, help="default: 25 (lora), 12 (lora_wide), 50 (full)")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=12)
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--blocks", action="store_true", help="time each block alone")
    args = parser.parse_args()
    if args.blocks:
        run_blocks(args)
        return
    layers, rank, dim = LAYOUTS[args.layout]
    layers = args.layers or layers
    if args.layout == "full":
        params, factory = full_tree(layers, dim), create_full_finetune_optimizer
    else:
        params, factory = lora_tree(layers, rank, dim), create_lora_optimizer
    grads = jax.tree.map(lambda p: 0.1 * jnp.sin(p * 1e3), params)
    txs = {"adam": jaxopt_adv.torch.adam(LR), "optax.adamw": optax.adamw(LR)}
    for name in args.variants.split(","):
        txs[name] = factory(LR, **VARIANTS[name])
    runners, compile_s = {}, {}
    for name, tx in txs.items():
        fresh = jax.tree.map(jnp.copy, params)
        with two_calls() if name in TWO_CALLS else contextlib.nullcontext():
            compiled, compile_s[name], state = compiled_step(tx, fresh, grads)
        runners[name] = [compiled, fresh, state]
    total = {name: 0.0 for name in runners}
    for i in range(args.warmup + args.steps):
        for name, r in runners.items():
            start = time.perf_counter()
            r[1], r[2] = r[0](r[1], r[2], grads)
            jax.block_until_ready(r[1])
            if i >= args.warmup:
                total[name] += time.perf_counter() - start
    ms = {name: 1e3 * t / args.steps for name, t in total.items()}
    size = sum(p.size for p in jax.tree.leaves(params))
    print(
        f"jax {jax.__version__}, {os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}; "
        f"layout {args.layout}: {len(params)} leaves, {size:,} elements; "
        f"mean of {args.steps} steps after {args.warmup}"
    )
    print("| optimizer | compile s | compile / adamw | step ms | step / adam |")
    print("|---|---|---|---|---|")
    for name in runners:
        print(
            f"| {name} | {compile_s[name]:.1f} | {compile_s[name] / compile_s['optax.adamw']:.1f} "
            f"| {ms[name]:.2f} | {ms[name] / ms['adam']:.2f} |"
        )


def run_blocks(args) -> None:
    """``--blocks``: each block alone against Adam's step, interleaved."""
    layers, rank, dim = LAYOUTS[args.layout]
    layers = args.layers or layers
    if args.layout == "full":
        params, config = full_tree(layers, dim), full_finetune_config()
        factory = create_full_finetune_optimizer
    else:
        params, config = lora_tree(layers, rank, dim), lora_config()
        factory = create_lora_optimizer
    grads = jax.tree.map(lambda p: 0.1 * jnp.sin(p * 1e3), params)
    runners, compile_s = {}, {}
    whole = {
        "adam": jaxopt_adv.torch.adam(LR),
        "composite, kernel=False": factory(LR),
        "composite, kernel=True": factory(LR, kernel=True),
    }
    for name, tx in whole.items():
        fresh = jax.tree.map(jnp.copy, params)
        compiled, compile_s[name], state = compiled_step(tx, fresh, grads)
        runners[name] = (compiled, [fresh, state])
    name = "grouping (stack, read back)"
    compiled, compile_s[name], state = compiled_block(
        with_grouped_leaves(optax.identity()), params, grads, {}
    )
    runners[name] = (compiled, [state, {}], params, grads)
    grouped = group_leaves(params)
    grouped_grads = group_leaves(grads, like=grouped)
    for name, (tx, extra) in block_steps(config, grouped, grouped_grads).items():
        compiled, compile_s[name], state = compiled_block(tx, grouped, grouped_grads, extra)
        runners[name] = (compiled, [state, extra], grouped, grouped_grads)
    total = dict.fromkeys(runners, 0.0)
    for i in range(args.warmup + args.steps):
        for name, (compiled, live, *inputs) in runners.items():
            start = time.perf_counter()
            if name in whole:
                live[0], live[1] = compiled(live[0], live[1], grads)
            else:
                block_params, block_grads = inputs
                out, live[0] = compiled(block_grads, live[0], block_params, live[1])
                jax.block_until_ready(out)
            jax.block_until_ready(live)
            if i >= args.warmup:
                total[name] += time.perf_counter() - start
    ms = {name: 1e3 * t / args.steps for name, t in total.items()}
    print(
        f"jax {jax.__version__}, {os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}; "
        f"layout {args.layout}: {len(params)} leaves; blocks alone, mean of {args.steps} "
        f"steps after {args.warmup}"
    )
    print("| block | compile s | step ms | step / adam |")
    print("|---|---|---|---|")
    for name in runners:
        print(f"| {name} | {compile_s[name]:.1f} | {ms[name]:.2f} | {ms[name] / ms['adam']:.2f} |")


if __name__ == "__main__":
    main()
