"""ZeroShotTransferOptimizer: seed 000's call shape, what it builds, and its checks."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from jaxopt_adv import torch as torch_exact
from jaxopt_adv.models import MLP
from jaxopt_adv.mup import (
    MuMLP,
    ZeroShotTransferOptimizer,
    infer_infshapes,
    mu_adam,
    mu_adamw,
    mu_sgd,
)


def make(width: int, width_mult: float = 1.0) -> MuMLP:
    return MuMLP(6, (width, width), 3, width_mult=width_mult, rngs=nnx.Rngs(0))


BASE = jax.eval_shape(lambda: nnx.state(make(8), nnx.Param))


def trained(tx, model, steps: int = 2):
    """Parameters after ``steps`` updates of ``tx`` from the model's, on fixed gradients."""
    params = nnx.as_pure(nnx.state(model, nnx.Param))
    state = tx.init(params)
    for t in range(steps):
        grads = jax.tree.map(lambda p, t=t: jnp.cos(p * (t + 1.0)), params)
        updates, state = tx.update(grads, state, params)
        params = optax.apply_updates(params, updates)
    return params


def assert_same(a, b):
    jax.tree.map(np.testing.assert_array_equal, a, b)


def test_seed_call_shape_without_a_base_is_plain_adamw():
    """As mup.set_base_shapes(model, None): the model is its own base, multipliers are 1."""
    model = make(32, 4.0)
    tx = ZeroShotTransferOptimizer(
        nnx.state(model, nnx.Param), model, base_optimizer_kwargs={"lr": 1e-3, "weight_decay": 0.01}
    )
    assert_same(trained(tx, model), trained(torch_exact.adamw(1e-3, weight_decay=0.01), model))


@pytest.mark.parametrize(
    "base_optimizer, torch_kwargs, expected",
    [
        ("adamw", {"lr": 0.01, "betas": (0.8, 0.99), "weight_decay": 0.1}, mu_adamw),
        ("adamw", {"lr": 0.01, "weight_decay": 0.1, "decoupled_wd": True}, mu_adamw),
        ("adam", {"lr": 0.01, "eps": 1e-6, "weight_decay": 0.1}, mu_adam),
        ("sgd", {"lr": 0.05, "momentum": 0.9, "nesterov": True, "weight_decay": 0.01}, mu_sgd),
    ],
)
def test_builds_the_mu_optimizer_from_torch_kwargs(base_optimizer, torch_kwargs, expected):
    model = make(32, 4.0)
    params = nnx.state(model, nnx.Param)
    infshapes = infer_infshapes(BASE, params)
    ours = dict(torch_kwargs)
    ours["learning_rate"] = ours.pop("lr")
    if "betas" in ours:
        ours["b1"], ours["b2"] = ours.pop("betas")
    reference = trained(expected(infshapes=infshapes, **ours), model)
    for mu_parametrization in (BASE, infshapes):  # base shapes or a ready infshapes tree
        tx = ZeroShotTransferOptimizer(
            None,
            model,
            base_optimizer=base_optimizer,
            base_optimizer_kwargs=torch_kwargs,
            mu_parametrization=mu_parametrization,
        )
        assert_same(trained(tx, model), reference)
    assert not all(jax.tree.leaves(jax.tree.map(np.array_equal, reference, nnx.as_pure(params))))


def test_layer_mapping_is_passed_to_the_inference():
    model = make(32, 4.0)
    tx = ZeroShotTransferOptimizer(
        None,
        model,
        base_optimizer_kwargs={"lr": 0.01},
        mu_parametrization=BASE,
        layer_mapping={"layers/2/kernel": "scalar"},
    )
    infshapes = infer_infshapes(
        BASE, nnx.state(model, nnx.Param), layer_mapping={"layers/2/kernel": "scalar"}
    )
    assert_same(trained(tx, model), trained(mu_adamw(0.01, infshapes=infshapes), model))


def test_a_plain_linear_readout_is_rejected():
    """The optimizer alone is not muP: a widened SP model (plain Linear readout) fails."""
    model = MLP(6, (32, 32), 3, dropout_rate=0.0, rngs=nnx.Rngs(0))
    base = jax.eval_shape(
        lambda: nnx.state(MLP(6, (8, 8), 3, dropout_rate=0.0, rngs=nnx.Rngs(0)), nnx.Param)
    )
    with pytest.raises(ValueError, match="not MuReadout: the muP optimizer alone is not muP"):
        ZeroShotTransferOptimizer(None, model, mu_parametrization=base)


def test_a_mureadout_with_the_wrong_width_mult_is_rejected():
    with pytest.raises(ValueError, match="has width_mult=2.0, but its shapes give 4.0"):
        ZeroShotTransferOptimizer(None, make(32, 2.0), mu_parametrization=BASE)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"base_optimizer": "lion"}, "Invalid base_optimizer"),
        ({"base_optimizer_kwargs": {"lr": 0.1, "amsgrad": True}}, "\\['amsgrad'\\] are not"),
        (
            {"base_optimizer": "sgd", "base_optimizer_kwargs": {"lr": 0.1, "betas": (0.9, 0.9)}},
            "betas",
        ),
        ({"base_optimizer_kwargs": {"weight_decay": 0.1}}, "needs 'lr'"),
        ({"base_optimizer_kwargs": {"lr": -0.1}}, "Invalid learning rate"),
        (
            {"layer_mapping": {"layers": "scalar"}, "mu_parametrization": "infshapes"},
            "layer_mapping",
        ),
    ],
)
def test_bad_arguments(kwargs, message):
    model = make(32, 4.0)
    if kwargs.get("mu_parametrization") == "infshapes":
        kwargs["mu_parametrization"] = infer_infshapes(BASE, nnx.state(model, nnx.Param))
    with pytest.raises(ValueError, match=message):
        ZeroShotTransferOptimizer(None, model, **kwargs)


def test_needs_params_or_model():
    with pytest.raises(ValueError, match="needs params or a model"):
        ZeroShotTransferOptimizer()


def test_nnx_optimizer_applies_the_multipliers():
    """infshapes from an nnx.State of Variables serve the plain dict nnx.Optimizer passes
    to update: after one step from unit gradients, hidden kernels move lr / 4."""
    model = make(32, 4.0)
    infshapes = infer_infshapes(BASE, nnx.state(model, nnx.Param))
    optimizer = nnx.Optimizer(model, mu_adamw(0.1, infshapes=infshapes), wrt=nnx.Param)
    before = nnx.as_pure(nnx.state(model, nnx.Param))
    grads = jax.tree.map(jnp.ones_like, nnx.state(model, nnx.Param))
    nnx.jit(lambda model, optimizer, grads: optimizer.update(model, grads))(model, optimizer, grads)
    after = nnx.as_pure(nnx.state(model, nnx.Param))
    moved = jax.tree.map(lambda a, b: float(jnp.max(jnp.abs(a - b))), after, before)
    np.testing.assert_allclose(moved["layers"][2]["kernel"], 0.1 / 4, rtol=1e-5)  # hidden
    np.testing.assert_allclose(moved["layers"][0]["kernel"], 0.1, rtol=1e-5)  # input
    np.testing.assert_allclose(moved["layers"][4]["kernel"], 0.1, rtol=1e-5)  # readout
