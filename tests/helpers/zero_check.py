"""Run in a subprocess with 4 host CPU devices: ZeRO-1 (``train.shard_optimizer_state``) for
every torch-exact optimizer and CAME.

On an MLP-shaped tree with replicated parameters, ``NUM_STEPS`` jitted steps of the wrapped
transform must give the unwrapped single-device numbers (float32, <= 1e-6 relative), keep
the parameters replicated, and leave each device at most 0.6 of the state's bytes (every
param-shaped leaf and CAME's and Adafactor's row statistics sliced, the rest replicated).
Prints one JSON line per failure and exits non-zero if there is any.

XLA compiles quickly, as in ``sharding_check`` (``tests/helpers/quick.py``'s settings, in
``XLA_FLAGS``): both runs compared are compiled with the same
settings, and the run time is mostly compilation.
"""

from __future__ import annotations

import json
import os
import sys

if __name__ == "__main__":  # not on import (pytest's doctest collection imports this module)
    from tests.helpers.quick import quick_xla_flags

    os.environ["XLA_FLAGS"] = quick_xla_flags("--xla_force_host_platform_device_count=4")

import jax  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
from jax.sharding import NamedSharding  # noqa: E402
from jax.sharding import PartitionSpec as P  # noqa: E402

from jaxopt_adv import get_optimizer  # noqa: E402
from jaxopt_adv.train import shard_optimizer_state  # noqa: E402
from tests.cases import CASES  # noqa: E402
from tests.helpers.trees import random_tree  # noqa: E402

# Registered torch-exact optimizers this check leaves out, and why.
NOT_ZERO = {
    # one flat history over all the parameters and a line search whose accept/reject
    # decisions a change of summation order flips: sliced, the same 3 float32 steps end
    # 2.6% apart (measured), an honest difference of rounding, not a usable equality test
    "torch.lbfgs": "closure-driven full-batch method (not data-parallel ZeRO-1)",
}
NAMES = [
    "came",
    *sorted(c.name for c in CASES if c.name.startswith("torch.") and c.name not in NOT_ZERO),
]
SHAPES = {"w1": (64, 32), "b1": (32,), "w2": (32, 10), "b2": (10,), "scale": ()}
NUM_STEPS = 3


def make_tree(seed: int, case) -> dict[str, jax.Array]:
    """A random tree of ``SHAPES``, as ``case``'s optimizer takes it (matrices for Muon)."""
    return case.params(random_tree(seed, SHAPES))


def run(tx, case, place):
    """``NUM_STEPS`` jitted steps from ``place``d params; ``(params, state)``."""
    extra_args = case.extra_args
    params = place(make_tree(0, case))
    state = tx.init(params)

    @jax.jit
    def step(params, state, grads):
        updates, state = tx.update(grads, state, params, **extra_args)
        return optax.apply_updates(params, updates), state

    for t in range(NUM_STEPS):
        params, state = step(params, state, place(make_tree(100 + t, case)))
    return params, state


def bytes_per_device(state) -> dict[jax.Device, int]:
    held: dict[jax.Device, int] = {}
    for leaf in jax.tree.leaves(state):
        for shard in leaf.addressable_shards:
            held[shard.device] = held.get(shard.device, 0) + shard.data.nbytes
    return held


def check(name: str, failures: list[dict]) -> None:
    case = next(case for case in CASES if case.name == name)
    tx = get_optimizer(name)(**case.kwargs)
    reference, plain_state = run(tx, case, lambda tree: tree)
    mesh = jax.make_mesh((4,), ("data",))
    replicated = NamedSharding(mesh, P())

    def place(tree):
        return jax.device_put(tree, replicated)

    params, state = run(shard_optimizer_state(tx, mesh), case, place)
    for k in SHAPES:
        ref = np.asarray(reference[k], np.float64)
        err = np.max(np.abs(np.asarray(params[k], np.float64) - ref), initial=0.0)
        rel = err / max(np.max(np.abs(ref), initial=0.0), 1e-30)
        if not rel <= 1e-6:
            failures.append({"case": name, "param": k, "rel": rel})
        if not params[k].sharding.is_fully_replicated:
            failures.append({"case": name, "param": k, "sharding": str(params[k].sharding)})
    total = sum(leaf.nbytes for leaf in jax.tree.leaves(plain_state))
    most = max(bytes_per_device(state).values())
    if not most <= 0.6 * total:
        failures.append({"case": name, "state bytes per device": most, "of": total})


def main(names: list[str]) -> int:
    assert jax.device_count() == 4, jax.devices()
    failures: list[dict] = []
    for name in names or NAMES:
        check(name, failures)
    for failure in failures:
        print(json.dumps(failure, default=str))
    print(f"checked {len(names or NAMES)} optimizers, {len(failures)} failures")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
