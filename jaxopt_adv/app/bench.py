"""``jaxopt-adv bench``: optimizer step time against optax and torch.optim, and the floor.

Times one jitted ``update + apply_updates`` step (params and state donated) of each
optimizer in :data:`OPTIMIZERS` against its optax counterpart (the same math, where optax
has one) and against ``torch.optim`` (single-tensor default, foreach, fused, where the
build has them), on float32 trees of the given sizes held in one leaf or split over many.

Each framework runs in its own worker process (torch's and XLA's thread pools slow each
other down in one process). Inside the JAX worker ours and optax alternate step by step,
so both see the same machine state. The reported time is the median over all timed
steps of ``rounds`` worker runs.

The floor is the time to move the bytes an optimizer must move (Adam: read p, g, m, v
and write p, m, v = 7 x 4 B per element; SGD with momentum, RMSprop, Adagrad, CAME's
elementwise part: 5 x 4 B) at the best in-place read+write bandwidth measured in the same
run (a donated XLA kernel, or numpy with ``out=`` on one thread or one thread per core).
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
from typing import Any

__all__ = ["OPTIMIZERS", "markdown", "run", "stop_workers", "write_outputs"]

LR = 1e-3
# name: (bytes moved per element, our registered name and kwargs, optax counterpart
# (function name and kwargs) or None, torch.optim class and kwargs or None)
OPTIMIZERS: dict[str, tuple[int, tuple, tuple | None, tuple | None]] = {
    "adam": (28, ("torch.adam", {}), ("adam", {}), ("Adam", {})),
    "adamw": (
        28,
        ("torch.adamw", {"weight_decay": 1e-2}),
        ("adamw", {"weight_decay": 1e-2}),
        ("AdamW", {"weight_decay": 1e-2}),
    ),
    "sgd": (
        20,
        ("torch.sgd", {"momentum": 0.9}),
        ("sgd", {"momentum": 0.9}),
        ("SGD", {"momentum": 0.9}),
    ),
    "rmsprop": (
        20,
        ("torch.rmsprop", {}),
        ("rmsprop", {"decay": 0.99, "eps": 1e-8}),
        ("RMSprop", {}),
    ),
    "adagrad": (
        20,
        ("torch.adagrad", {}),
        ("adagrad", {"initial_accumulator_value": 0.0, "eps": 1e-10}),
        ("Adagrad", {}),
    ),
    "nadam": (28, ("torch.nadam", {}), ("nadam", {}), ("NAdam", {})),
    "radam": (28, ("torch.radam", {}), ("radam", {}), ("RAdam", {})),
    "came": (20, ("came", {}), None, None),
}


def leaf_sizes(total: int, leaves: int) -> list[int]:
    base = total // leaves
    return [base + (1 if i < total - base * leaves else 0) for i in range(leaves)]


# --------------------------------------------------------------------------- JAX worker


def random_leaves(sizes: list[int], seed: int) -> list:
    """Standard-normal float32 vectors of the given sizes (imports JAX: workers only)."""
    import jax
    import jax.numpy as jnp

    keys = jax.random.split(jax.random.fold_in(jax.random.key(0), seed), len(sizes))
    return [jax.random.normal(k, (n,), jnp.float32) for k, n in zip(keys, sizes, strict=True)]


def jax_worker(total: int, leaves: int, steps: int, names: list[str]) -> dict:
    import jax
    import jax.numpy as jnp
    import numpy as np
    import optax

    import jaxopt_adv

    pairs = {}
    for name in names:
        _, (ours, kwargs), optax_twin, _ = OPTIMIZERS[name]
        pairs[name] = {"jaxopt_adv": jaxopt_adv.get_optimizer(ours)(LR, **kwargs)}
        if optax_twin is not None:
            pairs[name]["optax"] = getattr(optax, optax_twin[0])(LR, **optax_twin[1])
    sizes = leaf_sizes(total, leaves)
    grads = random_leaves(sizes, 1)
    results: dict[str, list[float]] = {}
    for name, implementations in pairs.items():
        runners = {}
        for impl, tx in implementations.items():

            def step(params, state, grads, tx=tx):
                updates, state = tx.update(grads, state, params)
                return optax.apply_updates(params, updates), state

            params = random_leaves(sizes, 2)
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
    x = jax.random.normal(jax.random.key(0), (n,), jnp.float32)
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


def torch_worker(total: int, leaves: int, steps: int, names: list[str]) -> dict:
    import torch

    sizes = leaf_sizes(total, leaves)
    gen = torch.Generator().manual_seed(0)
    kinds = [("default", {}), ("foreach", {"foreach": True}), ("fused", {"fused": True})]
    twins = {name: OPTIMIZERS[name][-1] for name in names}
    variants = {name: twin for name, twin in twins.items() if twin is not None}
    results: dict[str, Any] = {}
    for name, (cls, settings) in variants.items():
        for kind, kwargs in kinds:
            params = [torch.randn(n, generator=gen, requires_grad=True) for n in sizes]
            for p in params:
                p.grad = torch.randn(p.shape, generator=gen)
            try:
                opt = getattr(torch.optim, cls)(params, lr=LR, **settings, **kwargs)
                for _ in range(3):
                    opt.step()
            except (RuntimeError, TypeError, ValueError) as error:  # a variant it lacks
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


# worker processes running now
_WORKERS: set[subprocess.Popen] = set()


def stop_workers() -> None:
    """Kill the running worker processes (on Ctrl-C, before the driver ends)."""
    for worker in list(_WORKERS):
        worker.kill()
        worker.wait()
        _WORKERS.discard(worker)


def spawn(framework: str, total: int, leaves: int, steps: int, names: list[str]) -> dict:
    """Run one worker process; its timings. Raises RuntimeError with the worker's last
    error line if it fails."""
    cmd = [sys.executable, "-m", "jaxopt_adv.app.bench", "--worker", framework]
    cmd += ["--total", str(total)]
    cmd += ["--leaves", str(leaves), "--steps", str(steps), "--optimizers", ",".join(names)]
    worker = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=os.environ.copy()
    )
    _WORKERS.add(worker)
    try:
        stdout, stderr = worker.communicate()
    finally:
        _WORKERS.discard(worker)
    if worker.returncode != 0:
        last = (stderr.strip().splitlines() or [f"exit status {worker.returncode}"])[-1]
        raise RuntimeError(f"the {framework} worker failed ({total} elements): {last}")
    return json.loads(stdout.strip().splitlines()[-1])


def summarise(samples: dict, total: int, names: list[str]) -> dict:
    med = {k: statistics.median(v) for k, v in samples.items() if isinstance(v, list)}
    copy_bw = max(2 * 4 * total / med[k] for k in med if k.startswith("copy."))
    rows: dict[str, Any] = {}
    for name in names:
        bytes_per_element = OPTIMIZERS[name][0]
        floor = bytes_per_element * total / copy_bw
        row = {"ours_ms": 1e3 * med[f"jaxopt_adv.{name}"], "floor_ms": 1e3 * floor}
        if f"optax.{name}" in med:
            row["optax_ms"] = 1e3 * med[f"optax.{name}"]
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
        for name in (n for n in rows if n in OPTIMIZERS):
            r = rows[name]
            lines.append(
                f"| {int(total):,} | {leaves} | {name} | {fmt(r['ours_ms'])} | "
                f"{fmt(r.get('optax_ms'))} | {fmt(r.get('ours_vs_optax'), '.3f')} | "
                f"{fmt(r.get('torch_default_ms'))} | {fmt(r.get('torch_foreach_ms'))} | "
                f"{fmt(r.get('torch_fused_ms'))} | {fmt(r.get('ours_vs_torch_fused'), '.2f')} | "
                f"{fmt(r['floor_ms'])} | {fmt(r['floor_fraction'], '.2f')} |"
            )
    return "\n".join(lines)


def run(
    sizes: list[int],
    layouts: list[int],
    steps: int,
    rounds: int,
    use_torch: bool,
    names: list[str] | None = None,
) -> dict:
    """The timing table: ``{"<elements>x<leaves>": {optimizer: row, ...}}`` for the
    optimizers ``names`` (keys of :data:`OPTIMIZERS`, in its order; default: all)."""
    names = list(OPTIMIZERS) if names is None else names
    table = {}
    for total in sizes:
        for leaves in layouts:
            samples: dict[str, list] = {}
            for _ in range(rounds):
                for framework in ["jax", "torch"] if use_torch else ["jax"]:
                    for k, v in spawn(framework, total, leaves, steps, names).items():
                        if isinstance(v, list):
                            samples.setdefault(k, []).extend(v)
            table[f"{total}x{leaves}"] = summarise(samples, total, names)
            print(f"done {total:,} elements x {leaves} leaves", file=sys.stderr)
    return table


def _figure(table: dict, path: Path) -> None:
    """Grouped bars: ms per step of ours, optax and torch fused, per optimizer and size."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = list(table)
    fig, axes = plt.subplots(1, len(keys), figsize=(6 * len(keys), 4), squeeze=False)
    columns = (
        ("ours_ms", "jaxopt_adv"),
        ("optax_ms", "optax"),
        ("torch_foreach_ms", "torch foreach"),
        ("torch_fused_ms", "torch fused"),
    )
    for ax, key in zip(axes[0], keys, strict=True):
        names = [n for n in table[key] if n in OPTIMIZERS]
        for j, (column, label) in enumerate(columns):
            values = [table[key][n].get(column, 0.0) for n in names]
            ax.bar([i + 0.2 * j for i in range(len(names))], values, width=0.2, label=label)
        floor = table[key][names[0]]["floor_ms"]
        ax.axhline(floor, color="k", ls=":", lw=1, label=f"{names[0]} floor")
        total, leaves = key.split("x")
        ax.set(title=f"{int(total):,} elements, {leaves} leaves", ylabel="ms per step")
        ax.set_xticks([i + 0.3 for i in range(len(names))], names, rotation=30)
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_outputs(out: Path, table: dict) -> list[Path]:
    """``bench.json`` and ``bench.png`` in ``out``."""
    json_path, png_path = out / "bench.json", out / "bench.png"
    json_path.write_text(json.dumps(table, indent=2) + "\n")
    _figure(table, png_path)
    return [json_path, png_path]


def main() -> None:
    """Worker entry point (``python -m jaxopt_adv.app.bench --worker jax ...``)."""
    parser = argparse.ArgumentParser(description="one benchmark worker")
    parser.add_argument("--worker", choices=["jax", "torch"], required=True)
    parser.add_argument("--total", type=int, required=True)
    parser.add_argument("--leaves", type=int, default=1)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--optimizers", default=",".join(OPTIMIZERS))
    args = parser.parse_args()
    worker = jax_worker if args.worker == "jax" else torch_worker
    print(json.dumps(worker(args.total, args.leaves, args.steps, args.optimizers.split(","))))


if __name__ == "__main__":
    main()
