"""Run in a subprocess: every registered optimizer under ``optax.MultiSteps`` with mixed
precision, in one process (optax's ``test_multi_steps_mixed_precision`` logic).

For each optimizer, each gradient dtype and each parameter dtype (float32, float16,
bfloat16), a Flax ``Dense`` loss is stepped ``k + 1`` times with and without
``MultiSteps(k)``; the updates of both must have the same dtypes, and applying them must
keep the parameters' dtypes. Prints one JSON line per failure and exits non-zero if any.

optax runs its test eagerly and reads only dtypes. Here, per optimizer, one jitted init
builds the parameters and both states of all nine (parameter dtype, gradient dtype) runs,
and one jitted step computes, for each run, the gradient, both updates and the new
parameters; both are evaluated abstractly (``jax.eval_shape``): tracing gives every output
the dtype that running the program gives it (the types of a jitted program's outputs are
those of its trace; an eager run has the same types), and XLA compiles nothing. The
``k + 1`` steps carry the states' dtypes from step to step, so a state whose dtype
changes after a step is traced again with it. Compiling the two programs per optimizer
took about 4 s of CPU each (28 optimizers: 114 s); tracing them takes a fraction of that.

History: run eagerly over the whole registry in one process, this check once killed the
interpreter inside XLA:CPU ("LLVM compilation error: Cannot allocate memory", then a
segfault, exit 139) after about twenty optimizers: eager dispatch compiles one executable
per operation, shape and dtype, each keeps its machine code in about three memory
mappings of its own, and some 2,500 per optimizer reached the kernel's
``vm.max_map_count`` (65530). The check stays in a subprocess of its own.
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

DTYPES = ("float32", "float16", "bfloat16")  # (by name: the keys of a dict pytree)
K_STEPS = 4


class Loss(nn.Module):
    """A Dense layer's squared output; without a bias for an optimizer that takes only
    matrices (torch.optim.Muon)."""

    use_bias: bool = True

    @nn.compact
    def __call__(self, x, dtype=jnp.float32, param_dtype=jnp.float32):
        dense = nn.Dense(10, use_bias=self.use_bias, dtype=dtype, param_dtype=param_dtype)
        return jnp.sum(dense(x) ** 2)


def dtypes_of(tree):
    return jax.tree.map(lambda x: jnp.dtype(x.dtype).name, tree)


def case_kwargs(case, loss: Loss, data: jax.Array) -> dict:
    """The case's hyperparameters; muP's infshapes for the Dense layer (base width 2)."""
    kwargs = dict(case.kwargs)
    if "infshapes" in kwargs:
        base_dense = {"Dense_0": {"kernel": (2, 10), "bias": (10,)}}
        target = jax.eval_shape(loss.init, jax.random.key(0), data)["params"]
        base_shapes = jax.tree.map(
            lambda s: jax.ShapeDtypeStruct(s, jnp.float32),
            base_dense,
            is_leaf=lambda x: isinstance(x, tuple),
        )
        kwargs["infshapes"] = infer_infshapes(base_shapes, target)
    return kwargs


def all_steps(loss: Loss, base, multi, extra_args: dict):
    """One jitted step of every (parameter dtype, gradient dtype) run: for each, the
    gradient cast to the run's gradient dtype, the plain and the MultiSteps updates from
    it, and the parameters with the MultiSteps updates applied."""

    @jax.jit
    def step(runs, data):
        out = {}
        for (param_dtype, grad_dtype), (params, state, multi_state) in runs.items():
            x = data.astype(param_dtype)
            grads = jax.grad(lambda p, x=x: loss.apply({"params": p}, x))(params)
            grads = jax.tree.map(lambda g, d=grad_dtype: g.astype(d), grads)  # varying dtypes
            updates, state = base.update(grads, state, params, **extra_args)
            multi_updates, multi_state = multi.update(grads, multi_state, params, **extra_args)
            new_params = optax.apply_updates(params, multi_updates)
            out[param_dtype, grad_dtype] = updates, state, multi_updates, multi_state, new_params
        return out

    return step


def check_case(case, failures: list[dict], batch: int, features: int) -> None:
    loss = Loss(use_bias=not case.matrices_only)
    data = jnp.ones([batch, features])
    base = get_optimizer(case.name)(**case_kwargs(case, loss, data))
    if "value_fn" in case.extra_args:
        # Not applicable: a closure-driven optimizer (torch.lbfgs) evaluates value_fn at
        # its own trial points within one step; MultiSteps' mean of K_STEPS mini-batch
        # gradients is not that closure's gradient. Assert the optimizer needs the closure.
        params = loss.init(jax.random.key(0), data)["params"]
        try:
            base.update(params, base.init(params), params)
        except ValueError as error:
            if "value_fn" in str(error):
                return
        failures.append({"case": case.name, "problem": "value_fn case runs without value_fn"})
        return
    multi = optax.MultiSteps(base, K_STEPS)

    @jax.jit
    def init(data):
        """Every (parameter dtype, gradient dtype) run's params and both states."""
        runs = {}
        for param_dtype in DTYPES:
            x = data.astype(param_dtype)
            params = loss.init(jax.random.key(0), x, param_dtype=param_dtype)["params"]
            for grad_dtype in DTYPES:
                runs[param_dtype, grad_dtype] = params, base.init(params), multi.init(params)
        return runs

    runs = jax.eval_shape(init, data)
    step = all_steps(loss, base, multi, case.extra_args)
    for _ in range(K_STEPS + 1):
        out = jax.eval_shape(step, runs, data)
        for (param_dtype, grad_dtype), (params, _, _) in runs.items():
            updates, state, multi_updates, multi_state, new_params = out[param_dtype, grad_dtype]
            where = {"case": case.name, "grad_dtype": grad_dtype, "param_dtype": param_dtype}
            if dtypes_of(updates) != dtypes_of(multi_updates):
                failures.append({**where, "problem": "MultiSteps changed the updates' dtypes"})
            if dtypes_of(new_params) != dtypes_of(params):
                failures.append({**where, "problem": "updates changed the params' dtypes"})
            runs[param_dtype, grad_dtype] = new_params, state, multi_state


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
        checked += 1
    for failure in failures:
        print(json.dumps(failure, default=str))
    print(f"checked {checked} optimizers, {len(failures)} failures")
    return 1 if failures or not checked else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
