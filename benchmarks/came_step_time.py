"""CAME and Automagic-CameAMP step times against optax.adafactor and optax.adam (JAX only).

Times one jitted ``update + apply_updates`` step (params and state donated, gradients
reused) of ``jaxopt_adv.came.came``, of ``jaxopt_adv.fast.came`` (the same CAME with each
matrix scaled by one C++ kernel call: "came kernel") and of the composite
``jaxopt_adv.automagic.automagic_came_amp`` against ``optax.adafactor`` (factored second
moment, no momentum) and ``optax.adam`` on float32 2-D leaves holding 10M / 50M elements
in all: one square-ish leaf or 200 smaller ones (the composite in its full fine-tune
preset), or LoRA adapters, pairs of 4096x16 and 16x4096 leaves (the composite in its LoRA
preset, whose rank penalty takes an SVD of every 2-D leaf wider than rank 10 each step:
meant for adapters, not for large square weights).
The implementations alternate step by step so all see the same machine state; the
reported time is the median over the timed steps. The composite is timed in its early
phase (TAM, Grams, edge damping, OrthoGrad, lr-mask warm-up: its most expensive steps).
Targets: came <= 1.3x adafactor; the composite <= 3x adam. "fft penalty" times the
composite's frequency-penalty block alone (the torch source's every-step high-pass: an rfft2 and
its inverse per matrix, plus ``apply_updates``), a lower bound on any step of the
composite with spatial awareness on. "automagic kernel" is the composite with its
learning-rate mask stepped by ``jaxopt_adv.fast.automagic_lr_mask`` (``kernel=True``).
``--no-composite`` leaves the
composite out (it compiles for minutes on 200 leaves). ``--tune-malloc`` first calls
``jaxopt_adv.fast.tune_malloc()`` (large temporaries reused from the heap instead of
fresh pages every step); run once with and once without to see its effect.

Usage:
  python benchmarks/came_step_time.py                       # 10M and 50M, 1 and 200 leaves
  python benchmarks/came_step_time.py --sizes 1e6 --steps 20 --hlo
  python benchmarks/came_step_time.py --tune-malloc
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
import time

import jax
import jax.numpy as jnp
import optax

from jaxopt_adv import fast
from jaxopt_adv.automagic import automagic_came_amp, full_finetune_config, lora_config
from jaxopt_adv.automagic.penalties import frequency_penalty
from jaxopt_adv.came import came

LR = 1e-3


LORA_SHAPES = ((4096, 16), (16, 4096))


def leaf_shapes(total: int, layout: str) -> list[tuple[int, int]]:
    """2-D shapes with about ``total`` elements in all: ``layout`` square-ish leaves, or
    ``"lora"`` adapter pairs."""
    if layout == "lora":
        return list(LORA_SHAPES) * max(1, round(total / (2 * math.prod(LORA_SHAPES[0]))))
    leaves = int(layout)
    side = round(math.sqrt(total / leaves))
    return [(side, side)] * leaves


def optimizers(layout: str, composite: bool = True) -> dict[str, optax.GradientTransformation]:
    preset = lora_config() if layout == "lora" else full_finetune_config()
    txs = {
        "came": came(LR),
        "came_kernel": fast.came(LR),
        "adafactor": optax.adafactor(LR),
        "adam": optax.adam(LR),
        # the block as the composite builds it (spatial awareness on, as in both presets)
        "fft_penalty": frequency_penalty(preset.frequency_penalty, mode="highpass"),
    }
    if composite:
        txs["automagic"] = automagic_came_amp(LR, preset)
        # the learning-rate mask stepped by jaxopt_adv.fast.automagic_lr_mask
        txs["automagic_kernel"] = automagic_came_amp(LR, preset, kernel=True)
    return txs


def make_step(tx):
    def step(params, state, grads):
        updates, state = tx.update(grads, state, params)
        return optax.apply_updates(params, updates), state

    return step


def tree(shapes, seed: int) -> list[jax.Array]:
    keys = jax.random.split(jax.random.key(seed), len(shapes))
    return [jax.random.normal(k, s, jnp.float32) for k, s in zip(keys, shapes, strict=True)]


def time_layout(
    shapes, layout: str, steps: int, composite: bool, warmup: int = 3
) -> dict[str, float]:
    """Median seconds per step for every optimizer, alternating step by step."""
    grads = tree(shapes, 1)
    runners = {}
    for name, tx in optimizers(layout, composite).items():
        params = tree(shapes, 2)
        runners[name] = [jax.jit(make_step(tx), donate_argnums=(0, 1)), params, tx.init(params)]
    samples: dict[str, list[float]] = {name: [] for name in runners}
    for i in range(warmup + steps):
        for name, r in runners.items():
            start = time.perf_counter()
            r[1], r[2] = r[0](r[1], r[2], grads)
            jax.block_until_ready(r[1])
            if i >= warmup:
                samples[name].append(time.perf_counter() - start)
    return {name: statistics.median(v) for name, v in samples.items()}


def fusions(shapes, layout: str, composite: bool) -> dict[str, list[str]]:
    """The fusions and custom calls of each optimizer's optimized HLO that write a
    full-size array."""
    full = "f32[" + ",".join(map(str, shapes[0])) + "]"
    out = {}
    for name, tx in optimizers(layout, composite).items():
        params = tree(shapes, 2)
        text = (
            jax.jit(make_step(tx), donate_argnums=(0, 1))
            .lower(params, tx.init(params), params)
            .compile()
            .as_text()
        )
        entry = text[text.index("ENTRY") :]
        out[name] = [
            line.strip().split(" = ")[0] + " <- " + line.split(op)[1].split(")")[0]
            for line in entry.splitlines()
            for op in ("fusion(", "custom-call(")
            if op in line and full in line.split(" = ")[1].split(op)[0]
        ]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1e7,5e7")
    parser.add_argument("--layouts", default="1,200,lora", help="leaf counts, or lora")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--hlo", action="store_true", help="print the full-size fusions")
    parser.add_argument("--tune-malloc", action="store_true", help="call fast.tune_malloc()")
    parser.add_argument("--no-composite", action="store_true", help="leave the composite out")
    args = parser.parse_args()
    composite = not args.no_composite
    tuned = args.tune_malloc and fast.tune_malloc()

    print(
        f"jax {jax.__version__}, optax {optax.__version__}, {jax.devices()[0].device_kind}, "
        f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}, "
        f"tune_malloc {'on' if tuned else 'off'}"
    )
    lines = [
        "| elements | leaves | leaf shape | came ms | came kernel ms | adafactor ms | adam ms "
        "| fft penalty ms | preset | automagic ms | automagic kernel ms | came/adafactor "
        "| came kernel/adafactor | came kernel/adam | automagic/came | automagic/adam "
        "| automagic kernel/adam | fft penalty/adam |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for total in (int(float(s)) for s in args.sizes.split(",")):
        for layout in args.layouts.split(","):
            shapes = leaf_shapes(total, layout)
            if args.hlo:
                for name, ops in fusions(shapes, layout, composite).items():
                    print(f"{name}: {len(ops)} full-size outputs", *ops, sep="\n  ")
            timed = time_layout(shapes, layout, args.steps, composite)
            ms = {k: 1e3 * v for k, v in timed.items()}
            ms.setdefault("automagic", math.nan)
            ms.setdefault("automagic_kernel", math.nan)
            elements = sum(math.prod(s) for s in shapes)
            preset = "lora" if layout == "lora" else "full"
            lines.append(
                f"| {elements:,} | {len(shapes)} | {shapes[0][0]}x{shapes[0][1]} "
                f"| {ms['came']:.2f} | {ms['came_kernel']:.2f} | {ms['adafactor']:.2f} "
                f"| {ms['adam']:.2f} | {ms['fft_penalty']:.2f} | {preset} | {ms['automagic']:.2f} "
                f"| {ms['automagic_kernel']:.2f} | {ms['came'] / ms['adafactor']:.3f} "
                f"| {ms['came_kernel'] / ms['adafactor']:.3f} "
                f"| {ms['came_kernel'] / ms['adam']:.3f} | {ms['automagic'] / ms['came']:.3f} "
                f"| {ms['automagic'] / ms['adam']:.3f} "
                f"| {ms['automagic_kernel'] / ms['adam']:.3f} "
                f"| {ms['fft_penalty'] / ms['adam']:.3f} |"
            )
            print(f"done {elements:,} elements x {len(shapes)} leaves", file=sys.stderr)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
