"""mu_adam / mu_adamw / mu_sgd: the spec's values, width multiplier 1, the optax contract."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxopt_adv import torch as torch_exact
from jaxopt_adv.mup import (
    InfShape,
    add_mup_decayed_weights,
    infer_infshapes,
    mu_adam,
    mu_adamw,
    mu_sgd,
    mup_multipliers,
    scale_by_mup,
)
from tests.harness import make_params, precision, sine_steps
from tests.mup.common import harness_infshapes

# --------------------------------------------------------------------------------------
# Spec 5.6 (sanity values) and width multiplier 1 == the standard parametrization.

SANITY_BASE = {
    "input": (10, 64),
    "input_bias": (64,),
    "hidden": (64, 64),
    "hidden_bias": (64,),
    "readout": (64, 10),
    "readout_bias": (10,),
}
SANITY_TARGET = {
    "input": (10, 256),
    "input_bias": (256,),
    "hidden": (256, 256),
    "hidden_bias": (256,),
    "readout": (256, 10),
    "readout_bias": (10,),
}


def first_step(tx, base_shapes):
    """One update from p = 1, g = 0.5 (float64); returns {name: p1}."""
    with precision("float64"):
        params = {k: jnp.ones(s) for k, s in SANITY_TARGET.items()}
        grads = jax.tree.map(lambda p: jnp.full_like(p, 0.5), params)
        infshapes = infer_infshapes({k: jnp.ones(s) for k, s in base_shapes.items()}, params)
        tx = tx(infshapes)
        updates, _ = tx.update(grads, tx.init(params), params)
        new = optax.apply_updates(params, updates)
        return {k: np.unique(np.asarray(v)).item() for k, v in new.items()}


def test_spec_sanity_adamw():
    def adamw(decoupled):
        return lambda s: mu_adamw(1e-3, infshapes=s, weight_decay=0.01, decoupled_wd=decoupled)

    vector = 0.99899000002
    coupled = first_step(adamw(False), SANITY_BASE)
    np.testing.assert_allclose(coupled["hidden"], 0.99974000000, rtol=0, atol=1e-11)
    for name in ("input", "input_bias", "hidden_bias", "readout", "readout_bias"):
        np.testing.assert_allclose(coupled[name], vector, rtol=0, atol=1e-11)
    decoupled = first_step(adamw(True), SANITY_BASE)
    np.testing.assert_allclose(decoupled["hidden"], 0.99974750001, rtol=0, atol=1e-11)
    identity = first_step(adamw(False), SANITY_TARGET)  # base = target: m = 1
    for value in identity.values():
        np.testing.assert_allclose(value, vector, rtol=0, atol=1e-11)


def test_spec_sanity_sgd():
    p1 = first_step(lambda s: mu_sgd(0.1, infshapes=s), SANITY_BASE)
    for name in ("input", "input_bias", "hidden_bias", "readout"):  # vector-like: lr x 4
        np.testing.assert_allclose(p1[name] - 1.0, -0.2, rtol=1e-14)
    np.testing.assert_allclose(p1["hidden"] - 1.0, -0.05, rtol=1e-14)  # m_in / m_out = 1
    np.testing.assert_allclose(p1["readout_bias"] - 1.0, -0.05, rtol=1e-14)


SP_PAIRS = {
    "adamw": (
        lambda s: mu_adamw(0.01, infshapes=s, weight_decay=0.1),
        lambda: torch_exact.adamw(0.01, weight_decay=0.1),
    ),
    "adam": (
        lambda s: mu_adam(0.01, infshapes=s, b1=0.8, weight_decay=0.1),
        lambda: torch_exact.adam(0.01, b1=0.8, weight_decay=0.1),
    ),
    "sgd": (
        lambda s: mu_sgd(0.05, infshapes=s, momentum=0.9, dampening=0.1, weight_decay=0.01),
        lambda: torch_exact.sgd(0.05, momentum=0.9, dampening=0.1, weight_decay=0.01),
    ),
    "sgd_nesterov": (
        lambda s: mu_sgd(0.05, infshapes=s, momentum=0.9, nesterov=True),
        lambda: torch_exact.sgd(0.05, momentum=0.9, nesterov=True),
    ),
}


@pytest.mark.parametrize("name", list(SP_PAIRS))
def test_width_multiplier_one_is_the_standard_optimizer_exactly(name):
    """Base shapes = target shapes: every multiplier is 1 and the muP optimizer gives
    bit-identical parameters to jaxopt_adv.torch's (i.e. torch.optim's) optimizer."""
    ours, standard = SP_PAIRS[name]
    params = {k: jnp.asarray(v, jnp.float32) for k, v in make_params().items()}
    results = []
    for tx in (ours(infer_infshapes(params, params)), standard()):
        p, state = params, tx.init(params)
        step = jax.jit(lambda p, s, g, tx=tx: tx.update(g, s, p))
        for t in range(5):
            grads = jax.tree.map(lambda x, t=t: jnp.sin(x * (t + 1.0)), p)
            updates, state = step(p, state, grads)
            p = optax.apply_updates(p, updates)
        results.append(p)
    jax.tree.map(np.testing.assert_array_equal, *results)


# --------------------------------------------------------------------------------------
# optax contract details.


@pytest.mark.parametrize("factory", [mu_adam, mu_adamw, mu_sgd])
def test_inject_hyperparams_equivalent_and_traced_once(factory):
    kwargs = {"learning_rate": 0.01, "weight_decay": 0.01}
    if factory is mu_sgd:
        kwargs["momentum"] = 0.9
    traces = []

    with precision("float64"):
        params = {k: jnp.asarray(v) for k, v in make_params().items()}
        infshapes = harness_infshapes(layout="flax")
        injected = optax.inject_hyperparams(factory)(infshapes=infshapes, **kwargs)
        got, state = sine_steps(injected, params, traces)
        assert len(traces) == 1
        expected, _ = sine_steps(factory(infshapes=infshapes, **kwargs), params, traces)
        jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-12), got, expected)
        # the injected learning rate is live (it also scales the weight decay)
        state.hyperparams["learning_rate"] = jnp.asarray(0.0)
        updates, _ = injected.update(jax.tree.map(jnp.ones_like, got), state, got)
        assert all(float(jnp.max(jnp.abs(u))) == 0.0 for u in jax.tree.leaves(updates))


def test_update_dtype_follows_gradient():
    params = {k: jnp.asarray(v, jnp.bfloat16) for k, v in make_params().items()}
    tx = mu_adamw(0.01, infshapes=harness_infshapes(), weight_decay=0.1)
    updates, _ = jax.jit(tx.update)(params, tx.init(params), params)
    assert all(u.dtype == jnp.bfloat16 for u in jax.tree.leaves(updates))


def test_blocks_are_stateless_and_ignore_extra_args():
    params = {k: jnp.asarray(v, jnp.float32) for k, v in make_params().items()}
    infshapes = harness_infshapes()
    for tx in (scale_by_mup(infshapes), add_mup_decayed_weights(0.1, infshapes)):
        state = tx.init(params)
        assert state == optax.EmptyState()
        plain, _ = tx.update(params, state, params)
        extra, _ = tx.update(params, state, params, value=1.0, unknown=jnp.ones(3))
        jax.tree.map(np.testing.assert_array_equal, plain, extra)


# --------------------------------------------------------------------------------------
# Bad input.


@pytest.mark.parametrize(
    "factory, kwargs, message",
    [
        (mu_adamw, {"learning_rate": -1.0}, "Invalid learning rate"),
        (mu_adam, {"weight_decay": -0.1}, "Invalid weight_decay value"),
        (mu_adamw, {"b1": 1.0}, "Invalid beta parameter at index 0"),
        (mu_adam, {"b2": -0.1}, "Invalid beta parameter at index 1"),
        (mu_adamw, {"eps": -1.0}, "Invalid epsilon value"),
        (mu_sgd, {"momentum": -0.5}, "Invalid momentum value"),
        (mu_sgd, {"momentum": 0.9, "dampening": 0.1, "nesterov": True}, "Nesterov"),
        (mu_adamw, {"infshapes": {"w": jnp.ones(3)}}, "pytree of InfShape"),
        (mu_sgd, {"infshapes": {}}, "non-empty pytree of InfShape"),
    ],
)
def test_bad_arguments_raise_at_construction(factory, kwargs, message):
    kwargs = {"learning_rate": 0.1, "infshapes": harness_infshapes(), **kwargs}
    with pytest.raises(ValueError, match=message):
        factory(**kwargs)


def test_bad_scaling():
    with pytest.raises(ValueError, match="Invalid scaling"):
        scale_by_mup(harness_infshapes(), scaling="rmsprop")
    with pytest.raises(ValueError, match="Invalid scaling"):
        mup_multipliers(InfShape((2,), (4,), "bias"), "lion")


def test_params_without_infshape_fail_at_init_and_update():
    tx = mu_adamw(0.1, infshapes=harness_infshapes(), weight_decay=0.1)
    params = {k: jnp.asarray(v) for k, v in make_params().items()}
    other = {**params, "extra": jnp.ones(2)}
    with pytest.raises(ValueError, match="no infshape for parameter 'extra'"):
        tx.init(other)
    block = scale_by_mup(harness_infshapes())
    with pytest.raises(ValueError, match="no infshape for parameter 'extra'"):
        block.update(other, optax.EmptyState())


def test_weight_decay_needs_params():
    tx = mu_adamw(0.1, infshapes=harness_infshapes(), weight_decay=0.1)
    params = {k: jnp.asarray(v) for k, v in make_params().items()}
    with pytest.raises(ValueError, match="requires the current value of parameters"):
        tx.update(params, tx.init(params))
