"""Run in a subprocess: every registered optimizer under ``optax.MultiSteps`` with mixed
precision, in one process (optax's ``test_multi_steps_mixed_precision`` logic).

For each optimizer, each gradient dtype and each parameter dtype (float32, float16,
bfloat16), a Flax ``Dense`` loss is trained ``k + 1`` steps with and without
``MultiSteps(k)``; the updates of both must have the same dtypes, and applying them must
keep the parameters' dtypes. Prints one JSON line per failure and exits non-zero if any.

Run eagerly, as optax's test is, this compiles one small XLA:CPU executable per distinct
operation, thousands over the registry; each keeps its LLVM-compiled code in its own
memory mappings. Without clearing JAX's caches the process ran out of mappings
(``vm.max_map_count`` is 65530 here): "LLVM compilation error: Cannot allocate memory"
from XLA's execution engine, then a segfault (exit 139), at ``torch.rprop`` (21st case),
after ``fast.came`` and ``torch.rmsprop`` had passed. ``jax.clear_caches()`` after each
optimizer releases them.
"""

from __future__ import annotations

import json
import sys

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from jaxopt_adv import get_optimizer
from jaxopt_adv.mup import infer_infshapes
from tests.cases import CASES

DTYPES = (jnp.float32, jnp.float16, jnp.bfloat16)
K_STEPS = 4


class Loss(nn.Module):
    @nn.compact
    def __call__(self, x, dtype=jnp.float32, param_dtype=jnp.float32):
        return jnp.sum(nn.Dense(10, dtype=dtype, param_dtype=param_dtype)(x) ** 2)


def dtypes_of(tree):
    return jax.tree.map(lambda x: jnp.dtype(x.dtype).name, tree)


def check_case(case, failures: list[dict], batch: int, features: int) -> None:
    loss = Loss()
    data = jnp.ones([batch, features])
    kwargs = dict(case.kwargs)
    if "infshapes" in kwargs:  # muP: the Dense layer's widths, base width 2 (outputs 10)
        base_dense = {"Dense_0": {"kernel": (2, 10), "bias": (10,)}}
        target = jax.eval_shape(loss.init, jax.random.key(0), data)["params"]
        base_shapes = jax.tree.map(
            lambda s: jax.ShapeDtypeStruct(s, jnp.float32),
            base_dense,
            is_leaf=lambda x: isinstance(x, tuple),
        )
        kwargs["infshapes"] = infer_infshapes(base_shapes, target)
    base = get_optimizer(case.name)(**kwargs)
    multi = optax.MultiSteps(base, K_STEPS)

    def step(params, state, tx, grad_dtype, data):
        grads = jax.grad(lambda p: loss.apply({"params": p}, data))(params)
        grads = jax.tree.map(lambda g: g.astype(grad_dtype), grads)  # mimic varying dtypes
        return tx.update(grads, state, params, **case.extra_args)

    for grad_dtype in DTYPES:
        for param_dtype in DTYPES:
            data = data.astype(param_dtype)
            params = loss.init(jax.random.key(0), data, param_dtype=param_dtype)
            params = params["params"]
            state, multi_state = base.init(params), multi.init(params)
            for _ in range(K_STEPS + 1):
                updates, state = step(params, state, base, grad_dtype, data)
                multi_updates, multi_state = step(params, multi_state, multi, grad_dtype, data)
                new_params = optax.apply_updates(params, multi_updates)
                where = {
                    "case": case.name,
                    "grad_dtype": jnp.dtype(grad_dtype).name,
                    "param_dtype": jnp.dtype(param_dtype).name,
                }
                if dtypes_of(updates) != dtypes_of(multi_updates):
                    failures.append({**where, "problem": "MultiSteps changed the updates' dtypes"})
                if dtypes_of(new_params) != dtypes_of(params):
                    failures.append({**where, "problem": "updates changed the params' dtypes"})
                params = new_params


def main(argv: list[str]) -> int:
    names = [a for a in argv if not a.startswith("--")]
    small = "--small" in argv
    batch, features = (4, 3) if small else (32, 7)
    failures: list[dict] = []
    checked = 0
    for case in CASES:
        if names and case.name not in names:
            continue
        print("case", case.name, flush=True)
        check_case(case, failures, batch, features)
        jax.clear_caches()  # drop the case's executables (see the module docstring)
        checked += 1
    for failure in failures:
        print(json.dumps(failure, default=str))
    print(f"checked {checked} optimizers, {len(failures)} failures")
    return 1 if failures or not checked else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
