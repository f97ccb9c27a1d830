"""Trace + compile time of every registered optimizer on a 200-leaf LoRA tree, against optax.adamw.

The tree is a LoRA adapter set: 25 layers x (q, k, v, o) x a ``down`` 8x512 and an
``up`` 512x8 float32 matrix, 200 leaves. For each name in
``jaxopt_adv.list_optimizers()`` the benchmark builds the optimizer with its example
hyperparameters from the contract tests' case table (``tests/cases.py``), wraps
``update + apply_updates`` in a fresh ``jax.jit`` with params and state donated, and
times ``lower(...).compile()`` (tracing included). ``optax.adamw`` is timed the same way
right before and right after each optimizer; the ratio divides by the mean of those two.
Both the CPU time of the process (``time.process_time``, all its threads; the primary
figure, as it is far less sensitive to other jobs on a shared machine) and the wall time
are reported.
``jax.clear_caches()`` runs before every measurement and the persistent compilation
cache is switched off, so every number is a cold trace and compile.

The extra arguments a few optimizers need are built the smallest honest way: FER gets
the case table's batch (logits, labels and indices of 2 of 4 samples, 3 classes);
L-BFGS a ``value_fn`` (half the squared norm of the params); the muP optimizers
infshapes inferred from a base tree of width 256 (``down`` 8x256, ``up`` 256x8).
SigProp runs on the tree as its ``"net"`` part (no ``signal_*`` leaves). Every LoRA
leaf is a matrix, as torch.muon requires.

``--step-time`` also times the jitted step (median of ``--steps`` steps after 3
warm-up steps, each optimizer alternating with ``jaxopt_adv.torch.adam``) and prints
its ratio to Adam's.

Usage:
  python benchmarks/compile_time.py
  python benchmarks/compile_time.py --only came,tam,adatam --step-time
"""

from __future__ import annotations

import argparse
import fnmatch
import os
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)  # tests.cases: the case table with each optimizer's example kwargs

import jaxopt_adv  # noqa: E402
from jaxopt_adv.mup import infer_infshapes  # noqa: E402
from tests.cases import CASES_BY_NAME  # noqa: E402

LAYERS = 25
PROJECTIONS = ("q", "k", "v", "o")
RANK, WIDTH, BASE_WIDTH = 8, 512, 256


def lora_shapes(width: int = WIDTH) -> dict[str, dict[str, dict[str, tuple[int, int]]]]:
    """{layer: {projection: {"down": (rank, width), "up": (width, rank)}}}."""
    return {
        f"layer{i}": {p: {"down": (RANK, width), "up": (width, RANK)} for p in PROJECTIONS}
        for i in range(LAYERS)
    }


def _is_shape(value: Any) -> bool:
    return isinstance(value, tuple) and all(isinstance(v, int) for v in value)


def lora_tree(seed: int) -> Any:
    """The 200-leaf float32 LoRA tree, normal values."""
    shapes, treedef = jax.tree.flatten(lora_shapes(), is_leaf=_is_shape)
    keys = jax.random.split(jax.random.key(seed), len(shapes))
    leaves = [jax.random.normal(k, s, jnp.float32) for k, s in zip(keys, shapes, strict=True)]
    return treedef.unflatten(leaves)


def _structs(width: int) -> Any:
    return jax.tree.map(
        lambda s: jax.ShapeDtypeStruct(s, jnp.float32), lora_shapes(width), is_leaf=_is_shape
    )


def half_squared_norm(params: Any) -> jax.Array:
    """L-BFGS's closure: a loss defined on the tree."""
    return sum(0.5 * jnp.sum(jnp.square(leaf)) for leaf in jax.tree.leaves(params))


def build(name: str) -> tuple[optax.GradientTransformation, dict[str, Any]]:
    """The optimizer ``name`` with its case-table hyperparameters, and its extra args."""
    case = CASES_BY_NAME[name]
    kwargs = dict(case.kwargs)
    extra = dict(case.extra_args)
    if "infshapes" in kwargs:
        kwargs["infshapes"] = infer_infshapes(_structs(BASE_WIDTH), _structs(WIDTH))
    if "value_fn" in extra:
        extra["value_fn"] = half_squared_norm
    return jaxopt_adv.get_optimizer(name)(**kwargs), extra


def make_step(tx: optax.GradientTransformation, extra: dict[str, Any]) -> Callable:
    """A jitted, donated ``update + apply_updates``; array extras are arguments,
    callables (L-BFGS's closure) are closed over."""
    static = {k: v for k, v in extra.items() if callable(v)}

    def step(params, state, grads, arrays):
        updates, state = tx.update(grads, state, params, **arrays, **static)
        return optax.apply_updates(params, updates), state

    return jax.jit(step, donate_argnums=(0, 1))


def _arrays(extra: dict[str, Any]) -> dict[str, Any]:
    return {k: jnp.asarray(v) for k, v in extra.items() if not callable(v)}


def compile_seconds(tx: optax.GradientTransformation, extra: dict[str, Any]) -> tuple[float, float]:
    """(wall, CPU) seconds of a cold trace + compile of one fresh jitted step."""
    jax.clear_caches()
    params, grads = lora_tree(2), lora_tree(1)
    state = tx.init(params)
    arrays = _arrays(extra)
    jax.block_until_ready(state)
    wall, cpu = time.perf_counter(), time.process_time()
    make_step(tx, extra).lower(params, state, grads, arrays).compile()
    return time.perf_counter() - wall, time.process_time() - cpu


def step_seconds(runners: dict[str, list], steps: int, warmup: int = 3) -> dict[str, float]:
    """Median seconds per step of each runner, alternating step by step."""
    samples: dict[str, list[float]] = {name: [] for name in runners}
    for i in range(warmup + steps):
        for name, r in runners.items():
            start = time.perf_counter()
            r[1], r[2] = r[0](r[1], r[2], r[3], r[4])
            jax.block_until_ready(r[1])
            if i >= warmup:
                samples[name].append(time.perf_counter() - start)
    return {name: statistics.median(v) for name, v in samples.items()}


def step_ratio(name: str, steps: int) -> float:
    """Median step time of ``name`` over ``jaxopt_adv.torch.adam``'s, same process."""
    runners = {}
    for key, (tx, extra) in {"opt": build(name), "adam": build("torch.adam")}.items():
        params = lora_tree(2)
        runners[key] = [make_step(tx, extra), params, tx.init(params), lora_tree(1), _arrays(extra)]
    timed = step_seconds(runners, steps)
    return timed["opt"] / timed["adam"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default="*", help="comma-separated name patterns")
    parser.add_argument("--step-time", action="store_true", help="also time the step vs Adam")
    parser.add_argument("--steps", type=int, default=20)
    args = parser.parse_args()
    jax.config.update("jax_enable_compilation_cache", False)
    patterns = args.only.split(",")
    names = [
        n for n in jaxopt_adv.list_optimizers() if any(fnmatch.fnmatch(n, p) for p in patterns)
    ]
    print(
        f"jax {jax.__version__}, optax {optax.__version__}, {jax.devices()[0].device_kind}, "
        f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}"
    )
    header = (
        "| optimizer | compile CPU s | adamw compile CPU s | ratio | compile wall s "
        "| adamw wall s | wall ratio |"
    )
    if args.step_time:
        header += " step / torch.adam step |"
    print(header)
    print("|---" * (header.count("|") - 1) + "|")
    adamw = (optax.adamw(1e-3), {})
    compile_seconds(*adamw)  # warm the Python-side imports and caches once
    for name in names:
        before = compile_seconds(*adamw)
        seconds = compile_seconds(*build(name))
        after = compile_seconds(*adamw)
        cells = []
        for i in (1, 0):  # CPU first: the process's own time, less sensitive to load
            reference = (before[i] + after[i]) / 2
            cells += [f"{seconds[i]:.2f}", f"{reference:.2f}", f"{seconds[i] / reference:.2f}"]
        row = f"| {name} | " + " | ".join(cells) + " |"
        if args.step_time:
            row += f" {step_ratio(name, args.steps):.2f} |"
        print(row, flush=True)
    print(f"load average at the end {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
