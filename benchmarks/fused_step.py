"""The fused CPU step (``jaxopt_adv.fast``) against the XLA path, optax and torch fused.

For each size (elements, float32) and layout (one leaf, or split over many), one donated
jitted step of Adam, AdamW, SGD-momentum, RMSprop, Adagrad, Adadelta, Adamax, NAdam, RAdam,
Rprop, ASGD and SparseAdam, five ways:

- ``fused``: ``jaxopt_adv.fast.fused(...)`` through ``fast.jit_step`` (one C++ pass);
- ``flat``: the same with ``flat_state=True`` (each state field one array: fewer arrays
  through the jitted call on many-leaf trees);
- ``xla``: the same optimizer on the pure-JAX path (``kernel=False``: ``tx.update`` +
  ``optax.apply_updates``, what ``jaxopt_adv.torch.*`` compiles to);
- ``optax``: optax's counterpart (``optax.adam``, ``optax.adamw(weight_decay=1e-2)``,
  ``optax.sgd(momentum=0.9)``, ``optax.rmsprop(decay=0.99, eps=1e-8)``,
  ``optax.adagrad(initial_accumulator_value=0, eps=1e-10)``, ``optax.adadelta``,
  ``optax.adamax``; ``optax.nadam``: torch's NAdam without its momentum schedule,
  ``optax.radam``: eps placed differently, ``optax.rprop``: another Rprop variant, and
  for ASGD, which optax lacks, ``optax.sgd(momentum=0.9)``, each moving the same bytes);
- ``torch fused``: ``torch.optim.*(fused=True)`` (torch 2.13 has no fused RMSprop,
  Adadelta, Adamax, NAdam, RAdam, Rprop or ASGD).

Each framework runs in its own worker process (their thread pools slow each other
down); inside the JAX worker the four JAX variants alternate step by step, and after
each round of them the copy floor is measured once more (the bandwidth of these shared
machines drifts by 2x within minutes): the best in-place read+write bandwidth of a
donated XLA kernel and of numpy (one thread, and one thread per core); an optimizer's
floor is the bytes it must move (Adam/AdamW/Adadelta/Adamax/NAdam/RAdam/Rprop: read p, g
and two state arrays, write p and the two = 28 B per float32 element; SGD-momentum,
RMSprop, Adagrad and ASGD: 20 B) at that bandwidth. For a tree of many leaves a second,
"layout" floor is measured the same way on a tree of that shape: small separate buffers
copy more slowly than one large array (4 KiB pages instead of huge pages, one stream per
buffer), and no step over that tree can beat that copy.

Also printed: the loop fusions and custom calls per leaf in the optimized HLO of each
path, and the time to trace and compile a step over a tree of many leaves.

  python benchmarks/fused_step.py                       # 1e7,5e7 x 1,200 leaves
  python benchmarks/fused_step.py --sizes 1e6 --leaves 1 --steps 5 --rounds 1   # smoke
  python benchmarks/fused_step.py --only rprop,nadam      # these (and Adam) only
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from jaxopt_adv.app import bench
from jaxopt_adv.app.bench import LR, leaf_sizes

# the optimizers of `jaxopt-adv bench` that have a fused kernel, plus Adamax (torch has no
# fused Adamax, so that command leaves it out): name -> (bytes per float32 element, our
# factory name and kwargs, optax name and kwargs, torch class and kwargs)
FUSED = (
    "torch.adam",
    "torch.adamw",
    "torch.sgd",
    "torch.rmsprop",
    "torch.adagrad",
    "torch.nadam",
    "torch.radam",
)
OPTIMIZERS = {k: v for k, v in bench.OPTIMIZERS.items() if v[1][0] in FUSED}
OPTIMIZERS["adamax"] = (28, ("torch.adamax", {}), ("adamax", {}), ("Adamax", {}))
OPTIMIZERS["adadelta"] = (28, ("torch.adadelta", {}), ("adadelta", {}), ("Adadelta", {}))
# Rprop reads p, g, prev, step_size and writes p, prev, step_size; optax.rprop is another
# variant (see jaxopt_adv.torch.scale_by_rprop) that moves the same bytes
OPTIMIZERS["rprop"] = (28, ("torch.rprop", {}), ("rprop", {}), ("Rprop", {}))
# ASGD reads p, g, ax and writes p, ax; optax has no ASGD: optax.sgd with momentum moves
# the same bytes (p, g, trace)
OPTIMIZERS["asgd"] = (20, ("torch.asgd", {}), ("sgd", {"momentum": 0.9}), ("ASGD", {}))


def _traced_lr(count):
    """``LR`` at every step, computed from the step count: a traced learning rate (the
    SparseAdam kernel's; a constant one takes the XLA path)."""
    import jax.numpy as jnp

    return jnp.where(count >= 0, LR, 0.0)


# SparseAdam (dense random gradients: every element takes part, its slowest case) reads p,
# g, mu, nu and writes p, mu, nu; optax has no SparseAdam: optax.adam moves the same
# bytes; torch's SparseAdam takes sparse gradients only (and has no fused=True)
OPTIMIZERS["sparse_adam"] = (
    28,
    ("torch.sparse_adam", {"learning_rate": _traced_lr}),
    ("adam", {}),
    ("SparseAdam", {}),
)
JAX_IMPLS = ("fused", "flat", "xla", "optax")


def step_and_init(name: str, impl: str):
    """``(step(params, grads, state) -> (params, state), init)`` of one variant, unjitted."""
    import optax

    from jaxopt_adv import fast

    _, (ours, kwargs), (twin, twin_kwargs), _ = OPTIMIZERS[name]
    if impl == "optax":
        tx = getattr(optax, twin)(LR, **twin_kwargs)

        def step(params, grads, state):
            updates, state = tx.update(grads, state, params)
            return optax.apply_updates(params, updates), state

        return step, tx.init
    kernel, flat_state = impl in ("fused", "flat"), impl == "flat"
    kwargs = {"learning_rate": LR, **kwargs}
    opt = fast.fused(ours, kernel=kernel, flat_state=flat_state, **kwargs)
    return opt.step, opt.init


# ------------------------------------------------------------------------------ workers


def jax_worker(total: int, leaves: int, steps: int) -> dict:
    import jax

    from jaxopt_adv import fast

    sizes = leaf_sizes(total, leaves)
    grads = bench.random_leaves(sizes, 1)
    results: dict = {"kernels": fast.unavailable_reason() or "used"}
    floors, release = copy_floor(total, sizes)
    for name in OPTIMIZERS:
        runners = {}
        for impl in JAX_IMPLS:
            step, init = step_and_init(name, impl)
            jitted = jax.jit(step, donate_argnums=(0, 2), keep_unused=True)
            params = bench.random_leaves(sizes, 2)
            runners[impl] = [jitted, params, init(params)]
        for _ in range(3):  # compile and warm up
            for r in runners.values():
                r[1], r[2] = r[0](r[1], grads, r[2])
                jax.block_until_ready(r[1])
        for _ in range(steps):
            for impl, r in runners.items():
                start = time.perf_counter()
                r[1], r[2] = r[0](r[1], grads, r[2])
                jax.block_until_ready(r[1])
                results.setdefault(f"{impl}.{name}", []).append(time.perf_counter() - start)
            # the floor in the same stretch of time (this machine's bandwidth drifts)
            for key, copy in floors.items():
                results.setdefault(key, []).append(copy())
        del runners
    release()
    return results


def copy_floor(total: int, sizes: list[int] | None = None) -> tuple[dict, Callable]:
    """Timed in-place reads and writes of ``total`` float32 elements: ``({key: fn}, release)``,
    each ``fn()`` one pass, returning its seconds.

    ``copy.*``: one array of ``total`` elements (a donated XLA kernel; numpy on one
    thread and on one thread per core). ``layout.*``: the same bytes in the leaves of
    ``sizes`` (a donated XLA kernel over the tree; numpy, the leaves split over one
    thread per core), the floor of a step over that tree: separate buffers of a few
    hundred KiB sit on 4 KiB pages (numpy and glibc ask for transparent huge pages only
    for large allocations), and each is a new stream.
    """
    import jax
    import numpy as np

    workers = os.cpu_count() or 1
    pool = ThreadPoolExecutor(workers)
    scale = jax.jit(lambda t: [v * 1.0000001 for v in t], donate_argnums=0)

    def timed(fn) -> float:
        start = time.perf_counter()
        fn()
        return time.perf_counter() - start

    def scale_in_place(arrays):
        for a in arrays:
            np.multiply(a, 1.0000001, out=a)

    def runners(prefix: str, layout: list[int]) -> dict:
        device = [jax.block_until_ready(scale(bench.random_leaves(layout, 0)))]
        host = [np.asarray(a).copy() for a in device[0]]
        if len(host) == 1:
            groups = [[c] for c in np.array_split(host[0], workers)]
        else:
            groups = [host[i::workers] for i in range(workers)]

        def xla():
            device[0] = jax.block_until_ready(scale(device[0]))

        return {
            f"{prefix}.xla": lambda: timed(xla),
            f"{prefix}.numpy": lambda: timed(lambda: scale_in_place(host)),
            f"{prefix}.numpy_threads": lambda: timed(
                lambda: list(pool.map(scale_in_place, groups))
            ),
        }

    out = runners("copy", [total])
    if sizes is not None and len(sizes) > 1:
        out.update(runners("layout", sizes))
    return out, pool.shutdown


def torch_worker(total: int, leaves: int, steps: int) -> dict:
    import torch

    sizes = leaf_sizes(total, leaves)
    gen = torch.Generator().manual_seed(0)
    results: dict = {"torch_copy": []}
    # torch's own copy floor, timed between its steps: one in-place x * c over `total`
    scratch = torch.randn(total, generator=gen)
    for name, (*_, (cls, kwargs)) in OPTIMIZERS.items():
        params = [torch.randn(n, generator=gen, requires_grad=True) for n in sizes]
        for p in params:
            p.grad = torch.randn(p.shape, generator=gen)
        try:
            opt = getattr(torch.optim, cls)(params, lr=LR, fused=True, **kwargs)
        except (RuntimeError, TypeError, ValueError) as error:
            results[f"torch_fused.{name}"] = {"error": str(error).splitlines()[0]}
            continue
        with torch.no_grad():
            for _ in range(3):
                opt.step()
            times = []
            for _ in range(steps):
                start = time.perf_counter()
                opt.step()
                times.append(time.perf_counter() - start)
                start = time.perf_counter()
                scratch.mul_(1.0000001)
                results["torch_copy"].append(time.perf_counter() - start)
        results[f"torch_fused.{name}"] = times
        del opt, params
    return results


def hlo_worker(leaves: int) -> dict:
    """Loop fusions and custom calls per leaf in each path's optimized HLO."""
    import jax
    import jax.numpy as jnp

    params = [jnp.zeros((100_000 + i,), jnp.float32) for i in range(leaves)]
    out = {}
    for name in OPTIMIZERS:
        for impl in JAX_IMPLS:
            step, init = step_and_init(name, impl)
            text = jax.jit(step).lower(params, params, init(params)).compile().as_text()
            entry = text[text.index("ENTRY") :]
            shape = r"f32\[1\d{5}\]"  # the leaves' shapes, not scalars
            fusions = len(re.findall(rf"= {shape}\S* fusion\(", entry))
            fusions += len(re.findall(r"= \([^)]*f32\[1\d{5}\][^)]*\) fusion\(", entry))
            calls = len(re.findall(r"custom_call_target=\"jaxopt_adv_", entry))
            out[f"{impl}.{name}"] = {
                "leaves": leaves,
                "loop_fusions_per_leaf": fusions / leaves,
                "custom_calls": calls,
            }
    return out


def compile_worker(leaves: int) -> dict:
    """Seconds to trace + lower and to compile one step over ``leaves`` leaves."""
    import jax
    import jax.numpy as jnp

    from jaxopt_adv import fast

    fast.available()  # build / load the kernels outside the timing
    params = [jnp.zeros((50_000,), jnp.float32) for _ in range(leaves)]
    out = {}
    # twice: the first pass also pays JAX's and XLA's one-time start-up costs
    for name in [*OPTIMIZERS] * 2:
        for impl in JAX_IMPLS:
            step, init = step_and_init(name, impl)
            jitted = jax.jit(step, donate_argnums=(0, 2), keep_unused=True)
            start = time.perf_counter()
            lowered = jitted.lower(params, params, init(params))
            traced = time.perf_counter()
            lowered.compile()
            done = time.perf_counter()
            out[f"{impl}.{name}"] = {"trace_s": traced - start, "compile_s": done - traced}
    return out


WORKERS = {"jax": jax_worker, "torch": torch_worker}


# ------------------------------------------------------------------------------- driver


def select(only: str | None) -> None:
    """Keep the optimizers named in ``only`` (comma-separated), and Adam: torch's fused
    Adam is every row's reference."""
    if only:
        keep = {"adam", *only.split(",")}
        unknown = keep - set(OPTIMIZERS)
        if unknown:
            raise SystemExit(f"unknown optimizers {sorted(unknown)}; known: {sorted(OPTIMIZERS)}")
        for name in [*OPTIMIZERS]:
            if name not in keep:
                del OPTIMIZERS[name]


def spawn(*args: str) -> dict:
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", *args]
    cmd += ["--only", ",".join(OPTIMIZERS)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, env=os.environ.copy())
    return json.loads(out.stdout.strip().splitlines()[-1])


def summarise(samples: dict, total: int) -> dict:
    med = {k: statistics.median(v) for k, v in samples.items() if isinstance(v, list) and v}
    bandwidth = max(2 * 4 * total / med[k] for k in med if k.startswith("copy."))
    # the same layout can only be slower to copy than one array; one leaf is one array
    layout_keys = [k for k in med if k.startswith("layout.")] or [k for k in med if "copy." in k]
    layout_bandwidth = min(bandwidth, max(2 * 4 * total / med[k] for k in layout_keys))
    rows = {"copy_GBps": bandwidth / 1e9, "layout_GBps": layout_bandwidth / 1e9}
    if "torch_copy" in med:
        rows["torch_copy_GBps"] = 2 * 4 * total / med["torch_copy"] / 1e9
    for name, (bytes_per_element, *_) in OPTIMIZERS.items():
        floor = bytes_per_element * total / bandwidth
        layout_floor = bytes_per_element * total / layout_bandwidth
        row = {"floor_ms": 1e3 * floor, "layout_floor_ms": 1e3 * layout_floor}
        for impl in (*JAX_IMPLS, "torch_fused"):
            if f"{impl}.{name}" in med:
                row[f"{impl}_ms"] = 1e3 * med[f"{impl}.{name}"]
        row["floor_fraction"] = floor * 1e3 / row["fused_ms"]
        row["layout_floor_fraction"] = layout_floor * 1e3 / row["fused_ms"]
        if "torch_fused_ms" in row:
            row["fused_vs_torch"] = row["fused_ms"] / row["torch_fused_ms"]
        row["fused_vs_torch_adam"] = row["fused_ms"] / (1e3 * med["torch_fused.adam"])
        if "torch_copy" in med and "torch_fused_ms" in row:
            torch_floor = bytes_per_element * total / (rows["torch_copy_GBps"] * 1e9)
            row["torch_floor_fraction"] = torch_floor * 1e3 / row["torch_fused_ms"]
        if "flat_ms" in row:
            row["flat_floor_fraction"] = floor * 1e3 / row["flat_ms"]
            row["flat_vs_torch_adam"] = row["flat_ms"] / (1e3 * med["torch_fused.adam"])
        rows[name] = row
    return rows


def fmt(x, spec=".2f") -> str:
    return "n/a" if x is None else format(x, spec)


def row_lines(table: dict, header: list[str], cells: Callable) -> list[str]:
    """A markdown table: ``elements | leaves | optimizer`` and ``cells(rows, row)`` per
    optimizer and layout (rows where ``cells`` returns ``None`` are left out)."""
    lines = ["| " + " | ".join(["elements", "leaves", "optimizer", *header]) + " |"]
    lines.append("|" + "---|" * (3 + len(header)))
    for key, rows in table.items():
        total, leaves = key.split("x")
        for name in OPTIMIZERS:
            values = cells(rows, rows[name])
            if values is not None:
                lines.append(f"| {int(total):,} | {leaves} | {name} | " + " | ".join(values) + " |")
    return lines


def markdown(table: dict, hlo: dict | None, compile_times: dict | None) -> str:
    header = "fused ms, xla ms, optax ms, torch fused ms, floor ms, floor/fused, layout floor ms, "
    header += "layout floor/fused, fused/torch fused, fused/torch fused Adam, xla/fused, flat ms, "
    header += "floor/flat, flat/torch fused Adam"
    keys = ["fused_ms", "xla_ms", "optax_ms", "torch_fused_ms", "floor_ms", "floor_fraction"]
    keys += ["layout_floor_ms", "layout_floor_fraction", "fused_vs_torch", "fused_vs_torch_adam"]

    def times(rows, r):
        tail = [r.get("flat_ms"), r.get("flat_floor_fraction"), r.get("flat_vs_torch_adam")]
        return (
            [fmt(r.get(k)) for k in keys]
            + [fmt(r["xla_ms"] / r["fused_ms"])]
            + [fmt(x) for x in tail]
        )

    lines = row_lines(table, header.split(", "), times)
    bandwidths = {
        k: (round(v["copy_GBps"], 1), round(v["layout_GBps"], 1)) for k, v in table.items()
    }
    lines.append(
        f"\ncopy bandwidth (GB/s, read+write; one array, same layout) by run: {bandwidths}"
    )

    # each framework against the copy floor measured in its own process (the two run at
    # different times; this ratio does not depend on the machine's drift between them)
    def floors(rows, r):
        if "torch_floor_fraction" not in r:
            return None
        fractions = [r["torch_floor_fraction"], r["floor_fraction"], r.get("flat_floor_fraction")]
        return [fmt(rows.get("torch_copy_GBps"))] + [fmt(x) for x in fractions]

    lines.append("")
    lines += row_lines(
        table,
        ["torch copy GB/s", "torch fused: floor/time", "fused: floor/time", "flat: floor/time"],
        floors,
    )
    if hlo:
        lines += [
            "",
            "| optimizer | path | loop fusions per leaf | custom calls (for all leaves) |",
            "|---|---|---|---|",
        ]
        for key, row in hlo.items():
            impl, name = key.split(".")
            lines.append(
                f"| {name} | {impl} | {row['loop_fusions_per_leaf']:.2f} | "
                f"{row['custom_calls']} ({row['leaves']} leaves) |"
            )
    if compile_times:
        lines += ["", "| optimizer | path | trace + lower s | compile s |", "|---|---|---|---|"]
        for key, row in compile_times.items():
            impl, name = key.split(".")
            lines.append(f"| {name} | {impl} | {row['trace_s']:.2f} | {row['compile_s']:.2f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1e7,5e7", help="elements per tree (float32)")
    parser.add_argument("--leaves", default="1,200", help="leaf counts to split them over")
    parser.add_argument("--steps", type=int, default=20, help="timed steps per worker run")
    parser.add_argument("--rounds", type=int, default=2, help="worker runs per framework")
    parser.add_argument("--no-torch", action="store_true", help="skip the torch worker")
    parser.add_argument("--hlo-leaves", type=int, default=4, help="leaves for the HLO count")
    parser.add_argument("--compile-leaves", type=int, default=200, help="0 skips the timing")
    parser.add_argument("--only", help="comma-separated optimizers (Adam is always kept)")
    parser.add_argument("--json", help="also write the raw results here")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--total", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    select(args.only)

    if args.worker in WORKERS:
        print(json.dumps(WORKERS[args.worker](args.total, int(args.leaves), args.steps)))
        return
    if args.worker == "hlo":
        print(json.dumps(hlo_worker(int(args.leaves))))
        return
    if args.worker == "compile":
        print(json.dumps(compile_worker(int(args.leaves))))
        return

    table = {}
    for total in [int(float(s)) for s in args.sizes.split(",")]:
        for leaves in [int(n) for n in args.leaves.split(",")]:
            samples: dict = {}
            for _ in range(args.rounds):
                frameworks = ["jax"] if args.no_torch else ["jax", "torch"]
                for framework in frameworks:
                    run = spawn(
                        framework,
                        "--total",
                        str(total),
                        "--leaves",
                        str(leaves),
                        "--steps",
                        str(args.steps),
                    )
                    for k, v in run.items():
                        if isinstance(v, list):
                            samples.setdefault(k, []).extend(v)
                        elif k == "kernels" and v != "used":
                            print(f"warning: kernels not used: {v}", file=sys.stderr)
            if "torch_fused.adam" not in samples:
                samples["torch_fused.adam"] = [float("nan")]
            table[f"{total}x{leaves}"] = summarise(samples, total)
            print(f"done {total:,} elements x {leaves} leaves", file=sys.stderr)
    hlo = spawn("hlo", "--leaves", str(args.hlo_leaves)) if args.hlo_leaves else None
    compile_times = (
        spawn("compile", "--leaves", str(args.compile_leaves)) if args.compile_leaves else None
    )
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"table": table, "hlo": hlo, "compile": compile_times}, f, indent=2)
    print(markdown(table, hlo, compile_times))


if __name__ == "__main__":
    main()
