"""Optimizer step time: jaxopt_adv.torch vs optax vs torch.optim, and the memory floor.

Times one jitted ``update + apply_updates`` step (params and state donated) of
``jaxopt_adv.torch.{adam, adamw, sgd(momentum)}`` against ``optax.{adam, adamw, sgd}``
computing the same math, and against ``torch.optim`` (single-tensor default, foreach,
fused), on 1M / 10M / 50M float32 elements held in one leaf or split over 200 leaves.

Each framework runs in its own worker process (torch's and XLA's thread pools slow each
other down in one process). Inside the JAX worker ours and optax alternate step by step,
so both see the same machine state. The reported time is the median over all timed
steps of ``--rounds`` worker runs.

The floor is the time to move the bytes an optimizer must move (Adam/AdamW: read p, g,
m, v and write p, m, v = 7 x 4 B per element; SGD with momentum: 5 x 4 B) at the best
in-place read+write bandwidth measured in the same run (a donated XLA kernel, or numpy
with ``out=`` on one thread or on one thread per core; in place, like the donated
optimizer steps, so no page faults).

Usage:
  python benchmarks/step_time.py                      # the full table (a few minutes)
  python benchmarks/step_time.py --sizes 1e6 --rounds 1 --steps 20
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

OPTIMIZERS = {
    # name: (bytes moved per element, learning rate, weight decay, momentum)
    "adam": 28,
    "adamw": 28,
    "sgd": 20,
}
LR = 1e-3


def leaf_sizes(total: int, leaves: int) -> list[int]:
    base = total // leaves
    return [base + (1 if i < total - base * leaves else 0) for i in range(leaves)]


# --------------------------------------------------------------------------- JAX worker


def jax_worker(total: int, leaves: int, steps: int) -> dict:
    import jax
    import jax.numpy as jnp
    import numpy as np
    import optax

    import jaxopt_adv

    pairs = {
        "adam": (jaxopt_adv.torch.adam(LR), optax.adam(LR)),
        "adamw": (
            jaxopt_adv.torch.adamw(LR, weight_decay=1e-2),
            optax.adamw(LR, weight_decay=1e-2),
        ),
        "sgd": (jaxopt_adv.torch.sgd(LR, momentum=0.9), optax.sgd(LR, momentum=0.9)),
    }
    sizes = leaf_sizes(total, leaves)
    key = jax.random.key(0)

    def tree(seed):
        ks = jax.random.split(jax.random.fold_in(key, seed), len(sizes))
        return [jax.random.normal(k, (n,), jnp.float32) for k, n in zip(ks, sizes, strict=True)]

    grads = tree(1)
    results: dict[str, list[float]] = {}
    for name, (ours, theirs) in pairs.items():
        runners = {}
        for impl, tx in (("jaxopt_adv", ours), ("optax", theirs)):

            def step(params, state, grads, tx=tx):
                updates, state = tx.update(grads, state, params)
                return optax.apply_updates(params, updates), state

            params = tree(2)
            runners[impl] = [
                jax.jit(step, donate_argnums=(0, 1)),
                params,
                tx.init(params),
            ]
        for _ in range(3):  # compile and warm up
            for r in runners.values():
                r[1], r[2] = r[0](r[1], r[2], grads)
                jax.block_until_ready(r[1])
        for _ in range(steps):
            for impl, r in runners.items():
                start = time.perf_counter()
                r[1], r[2] = r[0](r[1], r[2], grads)
                jax.block_until_ready(r[1])
                results.setdefault(f"{impl}.{name}", []).append(time.perf_counter() - start)
        del runners

    # copy floor: read n + write n in place (no allocation, as the donated optimizer
    # steps do), the faster of a donated XLA kernel and numpy with ``out=``
    n = total
    x = jax.random.normal(key, (n,), jnp.float32)
    scale = jax.jit(lambda v: v * 1.0000001, donate_argnums=0)
    x = jax.block_until_ready(scale(x))
    host = np.asarray(x).copy()
    workers = os.cpu_count() or 1
    chunks = np.array_split(host, workers)
    pool = ThreadPoolExecutor(workers)  # numpy releases the GIL: one chunk per core

    def threaded():
        list(pool.map(lambda c: np.multiply(c, 1.0000001, out=c), chunks))

    def timed(fn):
        start = time.perf_counter()
        out = fn()
        return out, time.perf_counter() - start

    timings = {"copy.xla": [], "copy.numpy": [], "copy.numpy_threads": []}
    for _ in range(steps):
        x, seconds = timed(lambda x=x: jax.block_until_ready(scale(x)))
        timings["copy.xla"].append(seconds)
        timings["copy.numpy"].append(timed(lambda: np.multiply(host, 1.0000001, out=host))[1])
        timings["copy.numpy_threads"].append(timed(threaded)[1])
    pool.shutdown()
    results.update(timings)
    return results


# ------------------------------------------------------------------------- torch worker


def torch_worker(total: int, leaves: int, steps: int) -> dict:
    import torch

    sizes = leaf_sizes(total, leaves)
    gen = torch.Generator().manual_seed(0)
    variants = {
        "adam": [("default", {}), ("foreach", {"foreach": True}), ("fused", {"fused": True})],
        "adamw": [("default", {}), ("foreach", {"foreach": True}), ("fused", {"fused": True})],
        "sgd": [("default", {}), ("foreach", {"foreach": True}), ("fused", {"fused": True})],
    }
    classes = {
        "adam": lambda p, kw: torch.optim.Adam(p, lr=LR, **kw),
        "adamw": lambda p, kw: torch.optim.AdamW(p, lr=LR, weight_decay=1e-2, **kw),
        "sgd": lambda p, kw: torch.optim.SGD(p, lr=LR, momentum=0.9, **kw),
    }
    results: dict[str, list[float]] = {}
    for name, kinds in variants.items():
        for kind, kwargs in kinds:
            params = [torch.randn(n, generator=gen, requires_grad=True) for n in sizes]
            for p in params:
                p.grad = torch.randn(p.shape, generator=gen)
            try:
                opt = classes[name](params, kwargs)
                for _ in range(3):
                    opt.step()
            except (RuntimeError, ValueError) as error:  # a variant this build lacks
                results[f"torch_{kind}.{name}"] = {"error": str(error).splitlines()[0]}
                continue
            times = []
            with torch.no_grad():
                for _ in range(steps):
                    start = time.perf_counter()
                    opt.step()
                    times.append(time.perf_counter() - start)
            results[f"torch_{kind}.{name}"] = times
            del opt, params
    return results


# ------------------------------------------------------------------------------ driver


def spawn(framework: str, total: int, leaves: int, steps: int) -> dict:
    cmd = [sys.executable, __file__, "--worker", framework, "--total", str(total)]
    cmd += ["--leaves", str(leaves), "--steps", str(steps)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, env=os.environ.copy())
    return json.loads(out.stdout.strip().splitlines()[-1])


def summarise(samples: dict, total: int) -> dict:
    med = {k: statistics.median(v) for k, v in samples.items() if isinstance(v, list)}
    copy_bw = max(2 * 4 * total / med[k] for k in med if k.startswith("copy."))
    rows = {}
    for name, bytes_per_element in OPTIMIZERS.items():
        floor = bytes_per_element * total / copy_bw
        row = {
            "ours_ms": 1e3 * med[f"jaxopt_adv.{name}"],
            "optax_ms": 1e3 * med[f"optax.{name}"],
            "floor_ms": 1e3 * floor,
        }
        row["ours_vs_optax"] = row["ours_ms"] / row["optax_ms"]
        row["floor_fraction"] = row["floor_ms"] / row["ours_ms"]
        for kind in ("default", "foreach", "fused"):
            key = f"torch_{kind}.{name}"
            if key in med:
                row[f"torch_{kind}_ms"] = 1e3 * med[key]
        if "torch_fused_ms" in row:
            row["ours_vs_torch_fused"] = row["ours_ms"] / row["torch_fused_ms"]
        rows[name] = row
    rows["copy_bandwidth_GBps"] = copy_bw / 1e9
    return rows


def markdown(table: dict) -> str:
    lines = [
        "| elements | leaves | optimizer | ours ms | optax ms | ours/optax | torch default ms"
        " | torch foreach ms | torch fused ms | ours/torch fused | floor ms | floor/ours |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]

    def fmt(x, spec=".2f"):
        return "n/a" if x is None else format(x, spec)

    for key, rows in table.items():
        total, leaves = key.split("x")
        for name in OPTIMIZERS:
            r = rows[name]
            lines.append(
                f"| {int(total):,} | {leaves} | {name} | {fmt(r['ours_ms'])} | "
                f"{fmt(r['optax_ms'])} | {fmt(r['ours_vs_optax'], '.3f')} | "
                f"{fmt(r.get('torch_default_ms'))} | {fmt(r.get('torch_foreach_ms'))} | "
                f"{fmt(r.get('torch_fused_ms'))} | {fmt(r.get('ours_vs_torch_fused'), '.2f')} | "
                f"{fmt(r['floor_ms'])} | {fmt(r['floor_fraction'], '.2f')} |"
            )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worker", choices=["jax", "torch"])
    parser.add_argument("--total", type=int)
    parser.add_argument("--leaves", type=int, default=1)
    parser.add_argument("--sizes", default="1e6,1e7,5e7")
    parser.add_argument("--layouts", default="1,200", help="leaf counts")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--no-torch", action="store_true")
    parser.add_argument("--out", default=str(Path(__file__).parent / "out" / "step_time.json"))
    args = parser.parse_args()

    if args.worker:
        worker = jax_worker if args.worker == "jax" else torch_worker
        print(json.dumps(worker(args.total, args.leaves, args.steps)))
        return

    table = {}
    for total in (int(float(s)) for s in args.sizes.split(",")):
        for leaves in (int(n) for n in args.layouts.split(",")):
            samples: dict[str, list] = {}
            for _ in range(args.rounds):
                frameworks = ["jax"] if args.no_torch else ["jax", "torch"]
                for framework in frameworks:
                    for k, v in spawn(framework, total, leaves, args.steps).items():
                        if isinstance(v, list):
                            samples.setdefault(k, []).extend(v)
            table[f"{total}x{leaves}"] = summarise(samples, total)
            print(f"done {total:,} elements x {leaves} leaves", file=sys.stderr)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(table, indent=2))
    print(markdown(table))
    bw = {k: round(v["copy_bandwidth_GBps"], 2) for k, v in table.items()}
    print(f"\ncopy bandwidth (GB/s, read+write): {bw}")


if __name__ == "__main__":
    main()
