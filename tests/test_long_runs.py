"""Long runs: 10,000 steps at every registered optimizer's default hyperparameters.

Each optimizer is built with only the arguments its factory requires (the values come
from its case in ``tests/cases.py``; muP's ``infshapes`` are inferred for the trained
tree from a half-width base, since they must describe it). It then trains, as one
jitted ``lax.scan``, a quadratic and a small tanh MLP on a fixed synthetic regression
batch. The loss must stay finite at every step, parameters and optimizer state must be
finite at the end, and the final loss must be below where it started (every optimizer
trains at its defaults on both problems: no exception is needed).

Every test here runs under the ``quick_code_generation`` fixture (XLA:CPU's simpler code
generator, its optimisations on: ``tests/helpers/quick.py``): finite values and a falling
loss do not depend on it, and compilation is most of the file's run time.
"""

from __future__ import annotations

import inspect

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxopt_adv import get_optimizer
from jaxopt_adv.mup import infer_infshapes
from tests.cases import CASES

STEPS = 10_000
IN, HIDDEN, OUT, BATCH = 8, 16, 4, 32  # the student MLP: 212 parameters

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("quick_code_generation")]


def default_optimizer(case, params, base_params) -> optax.GradientTransformation:
    """The factory called with its required arguments only (defaults for the rest)."""
    factory = get_optimizer(case.name)
    required = {}
    for name, parameter in inspect.signature(factory).parameters.items():
        if parameter.default is not inspect.Parameter.empty or parameter.kind in (
            inspect.Parameter.VAR_POSITIONAL,
            inspect.Parameter.VAR_KEYWORD,
        ):
            continue
        if name == "infshapes":
            required[name] = infer_infshapes(base_params, params)
        else:
            required[name] = case.kwargs[name]
    return factory(**required)


def quadratic_problem():
    curvature = jnp.linspace(1.0, 10.0, 6)

    def loss(x):
        return 0.5 * jnp.sum(curvature * x**2)

    x0 = jnp.linspace(-2.0, 3.0, 6)
    return loss, x0, jax.ShapeDtypeStruct((3,), jnp.float32)


def _mlp(params, x):
    hidden = jnp.tanh(x @ params["hidden"]["kernel"] + params["hidden"]["bias"])
    return hidden @ params["out"]["kernel"] + params["out"]["bias"]


def _init_mlp(key, width):
    k1, k2 = jax.random.split(key)
    return {
        "hidden": {
            "kernel": jax.random.normal(k1, (IN, width)) / np.sqrt(IN),
            "bias": jnp.zeros(width),
        },
        "out": {
            "kernel": jax.random.normal(k2, (width, OUT)) / np.sqrt(width),
            "bias": jnp.zeros(OUT),
        },
    }


def mlp_problem():
    """A 8-16-4 tanh MLP regressing the outputs of a random teacher MLP of the same shape."""
    kx, kteacher, kstudent = jax.random.split(jax.random.key(0), 3)
    x = jax.random.normal(kx, (BATCH, IN))
    y = _mlp(_init_mlp(kteacher, HIDDEN), x)

    def loss(params):
        return jnp.mean((_mlp(params, x) - y) ** 2)

    base = jax.eval_shape(lambda: _init_mlp(kstudent, HIDDEN // 2))
    return loss, _init_mlp(kstudent, HIDDEN), base


def train(tx, loss, params, extra_args):
    def body(carry, _):
        params, state = carry
        value, grads = jax.value_and_grad(loss)(params)
        updates, state = tx.update(grads, state, params, **extra_args)
        return (optax.apply_updates(params, updates), state), value

    @jax.jit
    def run(params):
        return jax.lax.scan(body, (params, tx.init(params)), None, STEPS)

    return run(params)


def all_finite(tree) -> bool:
    leaves = [x for x in jax.tree.leaves(tree) if jnp.issubdtype(jnp.result_type(x), jnp.inexact)]
    return all(bool(jnp.all(jnp.isfinite(x))) for x in leaves)


@pytest.mark.parametrize("problem", [quadratic_problem, mlp_problem], ids=["quadratic", "mlp"])
@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_long_run_at_defaults_stays_finite(case, problem):
    loss, params, base = problem()
    params = case.params(params)  # the losses broadcast a (1, n) bias or vector
    tx = default_optimizer(case, params, base)
    (final, state), losses = train(tx, loss, params, case.extra_args)
    assert all_finite(losses), f"the loss went non-finite at step {np.argmin(np.isfinite(losses))}"
    assert all_finite(final), "parameters went non-finite"
    assert all_finite(state), "optimizer state went non-finite"
    start, end = float(loss(params)), float(loss(final))
    assert end < start, (start, end)
