"""CAME step time against optax.adafactor and optax.adam (JAX only, one process).

Times one jitted ``update + apply_updates`` step (params and state donated, gradients
reused) of ``jaxopt_adv.came.came.came`` against ``optax.adafactor`` (factored second
moment, no momentum) and ``optax.adam`` on float32 2-D leaves: one square-ish leaf or 200
smaller ones holding 10M / 50M elements in all. The three implementations alternate step
by step so all see the same machine state; the reported time is the median over the
timed steps. Target: came <= 1.3x adafactor.

Usage:
  python benchmarks/came_step_time.py                       # 10M and 50M, 1 and 200 leaves
  python benchmarks/came_step_time.py --sizes 1e6 --steps 20 --hlo
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

from jaxopt_adv.came.came import came

LR = 1e-3


def leaf_shapes(total: int, leaves: int) -> list[tuple[int, int]]:
    """``leaves`` square-ish 2-D shapes with about ``total`` elements in all."""
    side = round(math.sqrt(total / leaves))
    return [(side, side)] * leaves


def optimizers() -> dict[str, optax.GradientTransformation]:
    return {
        "came": came(LR),
        "adafactor": optax.adafactor(LR),
        "adam": optax.adam(LR),
    }


def make_step(tx):
    def step(params, state, grads):
        updates, state = tx.update(grads, state, params)
        return optax.apply_updates(params, updates), state

    return step


def tree(shapes, seed: int) -> list[jax.Array]:
    keys = jax.random.split(jax.random.key(seed), len(shapes))
    return [jax.random.normal(k, s, jnp.float32) for k, s in zip(keys, shapes, strict=True)]


def time_layout(shapes, steps: int, warmup: int = 3) -> dict[str, float]:
    """Median seconds per step for every optimizer, alternating step by step."""
    grads = tree(shapes, 1)
    runners = {}
    for name, tx in optimizers().items():
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


def fusions(shapes) -> dict[str, list[str]]:
    """The fusions of each optimizer's optimized HLO that write a full-size array."""
    full = "f32[" + ",".join(map(str, shapes[0])) + "]"
    out = {}
    for name, tx in optimizers().items():
        params = tree(shapes, 2)
        text = (
            jax.jit(make_step(tx), donate_argnums=(0, 1))
            .lower(params, tx.init(params), params)
            .compile()
            .as_text()
        )
        entry = text[text.index("ENTRY") :]
        out[name] = [
            line.strip().split(" = ")[0] + " <- " + line.split("fusion(")[1].split(")")[0]
            for line in entry.splitlines()
            if "fusion(" in line and full in line
        ]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1e7,5e7")
    parser.add_argument("--layouts", default="1,200", help="leaf counts")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--hlo", action="store_true", help="print the full-size fusions")
    args = parser.parse_args()

    print(
        f"jax {jax.__version__}, optax {optax.__version__}, {jax.devices()[0].device_kind}, "
        f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}"
    )
    lines = [
        "| elements | leaves | leaf shape | came ms | adafactor ms | adam ms "
        "| came/adafactor | came/adam |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for total in (int(float(s)) for s in args.sizes.split(",")):
        for leaves in (int(n) for n in args.layouts.split(",")):
            shapes = leaf_shapes(total, leaves)
            if args.hlo:
                for name, ops in fusions(shapes).items():
                    print(f"{name}: {len(ops)} full-size outputs", *ops, sep="\n  ")
            ms = {k: 1e3 * v for k, v in time_layout(shapes, args.steps).items()}
            elements = sum(math.prod(s) for s in shapes)
            lines.append(
                f"| {elements:,} | {leaves} | {shapes[0][0]}x{shapes[0][1]} "
                f"| {ms['came']:.2f} | {ms['adafactor']:.2f} | {ms['adam']:.2f} "
                f"| {ms['came'] / ms['adafactor']:.3f} | {ms['came'] / ms['adam']:.3f} |"
            )
            print(f"done {elements:,} elements x {leaves} leaves", file=sys.stderr)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
