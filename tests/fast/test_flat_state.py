"""``fast.fused(..., flat_state=True)``: per-parameter state fields as one array each.

The flat layout's kernel step is compared bit for bit with the tree layout's (itself
bit-identical to the XLA path, ``test_bit_identity.py``) over 20 steps for every
kernel, and with ``torch.optim.Adam`` directly; the XLA fallback agrees to rounding.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import torch

from jaxopt_adv import fast
from tests.fast.common import assert_bit_identical
from tests.helpers.x64 import x64

# a leaf above the kernel's chunk size (odd), a matrix, a 1-element, a zero-size and a
# 0-d leaf
SHAPES = {"big": (40001,), "mat": (3, 5), "one": (1, 1), "empty": (0,), "scalar": ()}

CASES = [
    ("torch.adam", {"amsgrad": True, "weight_decay": 0.05, "maximize": True}),
    ("torch.adamw", {"weight_decay": 0.3}),
    ("torch.sgd", {"momentum": 0.8, "nesterov": True, "weight_decay": 0.1}),
    ("torch.rmsprop", {"centered": True, "momentum": 0.9, "weight_decay": 0.1}),
    ("torch.adagrad", {"lr_decay": 0.1, "initial_accumulator_value": 0.1}),
    ("torch.adadelta", {"rho": 0.8, "weight_decay": 0.1}),
    ("torch.adamax", {"b1": 0.5, "maximize": True}),
    ("torch.nadam", {"weight_decay": 0.1, "decoupled_weight_decay": True}),
    ("torch.radam", {"b2": 0.9, "weight_decay": 0.1}),
    ("torch.rprop", {"etas": (0.25, 2.0)}),
    ("torch.asgd", {"t0": 3.0, "weight_decay": 0.1}),
]


def tree(seed: int, dtype=jnp.float32, shapes=SHAPES) -> dict[str, jax.Array]:
    rng = np.random.default_rng(seed)
    return {k: jnp.asarray(rng.standard_normal(s), dtype) for k, s in shapes.items()}


def run_layouts(name, kwargs, *, dtype=jnp.float32, inject=False, kernel=True, steps=20):
    """``steps`` jitted steps in the tree and the flat layout from the same start; yields
    ``(step, tree-layout (params, state), flat optimizer, flat-layout (params, state))``."""
    kwargs = {"learning_rate": 0.05, **kwargs}
    ours = fast.fused(name, flat_state=True, inject_hyperparams=inject, kernel=kernel, **kwargs)
    theirs = fast.fused(name, inject_hyperparams=inject, kernel=kernel, **kwargs)
    params = tree(0, dtype)
    a, b = (params, ours.init(params)), (params, theirs.init(params))
    step_ours, step_theirs = jax.jit(ours.step), jax.jit(theirs.step)
    for t in range(steps):
        grads = tree(t + 1, dtype)
        a, b = step_ours(a[0], grads, a[1]), step_theirs(b[0], grads, b[1])
        yield t + 1, b, ours, a


@pytest.mark.parametrize("name, kwargs", CASES, ids=[n for n, _ in CASES])
def test_flat_layout_is_bit_identical_to_the_tree_layout(name, kwargs):
    opt = fast.fused(name, flat_state=True, learning_rate=0.05, **kwargs)
    params = tree(0)
    assert opt.explain(params, params, opt.init(params)) == fast.unavailable_reason()
    for t, (params_tree, state_tree), ours, (params_flat, state_flat) in run_layouts(name, kwargs):
        assert_bit_identical(params_flat, params_tree, f"step {t} params")
        assert_bit_identical(ours.to_tree_state(state_flat, params_flat), state_tree, f"step {t}")


@pytest.mark.parametrize(
    "name, kwargs, inject",
    [
        ("torch.adam", {"weight_decay": 0.1, "amsgrad": True}, False),
        ("torch.sgd", {"momentum": 0.9, "dampening": 0.3}, True),
        ("torch.adamw", {}, True),
        ("torch.sparse_adam", {"maximize": True}, True),
    ],
)
def test_flat_layout_float64_and_injected_hyperparameters(name, kwargs, inject):
    with x64(True):
        for t, (p_tree, s_tree), ours, (p_flat, s_flat) in run_layouts(
            name, kwargs, dtype=jnp.float64, inject=inject
        ):
            assert_bit_identical(p_flat, p_tree, f"step {t} params")
            assert_bit_identical(ours.to_tree_state(s_flat, p_flat), s_tree, f"step {t}")


def test_flat_adam_matches_torch_adam_every_step():
    """float64, 20 steps: params and both moments against ``torch.optim.Adam``."""
    torch.set_num_threads(1)
    shapes = {k: s for k, s in SHAPES.items() if k != "big"} | {"big": (513,)}
    with x64(True):
        opt = fast.fused("torch.adam", flat_state=True, learning_rate=0.05, weight_decay=0.1)
        params = tree(0, jnp.float64, shapes)
        state = opt.init(params)
        step = jax.jit(opt.step)
        names = list(params)
        theirs = [torch.tensor(np.asarray(params[k]), requires_grad=True) for k in names]
        reference = torch.optim.Adam(theirs, lr=0.05, weight_decay=0.1, foreach=False)
        worst = 0.0
        for t in range(20):
            grads = tree(t + 1, jnp.float64, shapes)
            params, state = step(params, grads, state)
            for k, p in zip(names, theirs, strict=True):
                p.grad = torch.tensor(np.asarray(grads[k]))
            reference.step()
            moments = next(s for s in opt.to_tree_state(state, params) if hasattr(s, "mu"))
            for k, p in zip(names, theirs, strict=True):
                torch_state = reference.state[p]
                pairs = [
                    (params[k], p.detach()),
                    (moments.mu[k], torch_state["exp_avg"]),
                    (moments.nu[k], torch_state["exp_avg_sq"]),
                ]
                for ours, expected in pairs:
                    expected = expected.numpy()
                    scale = max(np.max(np.abs(expected), initial=0.0), 1e-300)
                    error = np.max(np.abs(np.asarray(ours) - expected), initial=0.0) / scale
                    worst = max(worst, error)
        assert worst <= 1e-10, worst


def test_non_finite_gradients_stay_in_their_leaf():
    """A NaN or inf in one leaf's gradient poisons that leaf's elements (as in the tree
    layout, bit for bit) and no part of the flat arrays that belongs to another leaf."""
    kwargs = {"learning_rate": 0.05, "weight_decay": 0.1}
    ours = fast.fused("torch.adam", flat_state=True, **kwargs)
    theirs = fast.fused("torch.adam", **kwargs)
    params = tree(0)
    a, b = (params, ours.init(params)), (params, theirs.init(params))
    for t in range(3):
        grads = tree(t + 1)
        grads["big"] = grads["big"].at[7].set(jnp.nan).at[9].set(jnp.inf)
        a, b = jax.jit(ours.step)(a[0], grads, a[1]), jax.jit(theirs.step)(b[0], grads, b[1])
    state = ours.to_tree_state(a[1], a[0])
    assert_bit_identical((a[0], state), b)
    assert np.isnan(a[0]["big"][7]) and np.isnan(a[0]["big"][9])
    moments = next(s for s in state if hasattr(s, "nu"))
    for k in ("mat", "one", "scalar"):
        assert np.all(np.isfinite(a[0][k])) and np.all(np.isfinite(moments.nu[k]))


def test_the_state_layout_and_its_round_trip():
    opt = fast.fused("torch.adam", flat_state=True, amsgrad=True)
    params = tree(0)
    state = opt.init(params)
    total = sum(x.size for x in params.values())
    position = next(i for i, s in enumerate(state) if hasattr(s, "mu"))
    inner = state[position]
    for field in (inner.mu, inner.nu, inner.nu_max):
        assert isinstance(field, jax.Array) and field.shape == (total,)
    assert inner.count.shape == ()
    tree_state = opt.to_tree_state(state, params)
    assert jax.tree.structure(tree_state) == jax.tree.structure(opt.tx.init(params))
    assert_bit_identical(opt.from_tree_state(tree_state, params), state)
    # the leaves keep their order and shapes
    numbered = list(state)
    numbered[position] = inner._replace(mu=jnp.arange(total, dtype=jnp.float32))
    mu = opt.to_tree_state(tuple(numbered), params)[position].mu
    start = 0
    for k, leaf in params.items():
        expected = np.arange(start, start + leaf.size).reshape(leaf.shape)
        np.testing.assert_array_equal(mu[k], expected)
        start += leaf.size
    assert "flat_state=True" in repr(opt)


def test_one_leaf_keeps_the_tree_layout():
    opt = fast.fused("torch.adam", flat_state=True)
    params = jnp.ones((3, 4))
    state = opt.init(params)
    assert_bit_identical(state, opt.tx.init(params))
    params, state = jax.jit(opt.step)(params, params, state)
    assert jax.tree.structure(state) == jax.tree.structure(opt.tx.init(params))


def test_a_flat_step_passes_fewer_arrays_and_updates_in_place():
    opt = fast.fused("torch.adam", flat_state=True, learning_rate=0.1)
    shapes = {f"w{i}": (16, 8) for i in range(40)}
    params = tree(0, shapes=shapes)
    state = opt.init(params)
    assert len(jax.tree.leaves(state)) == 3  # count, mu, nu: not one array per leaf
    step = fast.jit_step(opt)
    params, state = step(params, tree(1, shapes=shapes), state)
    moments = lambda state: [x for x in jax.tree.leaves(state) if x.ndim == 1]  # noqa: E731
    old = moments(state)
    pointers = [x.unsafe_buffer_pointer() for x in old]
    params, state = step(params, tree(2, shapes=shapes), state)
    assert all(x.is_deleted() for x in old)
    if fast.available():
        assert [x.unsafe_buffer_pointer() for x in moments(state)] == pointers
        hlo = step.lower(params, params, state).compile().as_text()
        assert "concatenate" not in hlo and " slice(" not in hlo


def test_the_xla_fallback_agrees_to_rounding():
    """Without the kernel XLA fuses the slicing into its loops and may round differently
    from the tree layout: float32 agreement relative to each array's scale."""

    def close(ours, theirs, where):
        for a, b in zip(jax.tree.leaves(ours), jax.tree.leaves(theirs), strict=True):
            a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
            scale = np.max(np.abs(b), initial=0.0)
            assert np.max(np.abs(a - b), initial=0.0) <= 1e-5 * scale, where

    name, kwargs = "torch.rmsprop", {"centered": True, "momentum": 0.9}
    for t, (p_tree, s_tree), ours, (p_flat, s_flat) in run_layouts(name, kwargs, kernel=False):
        nu = optax.tree.get(s_flat, "nu")
        assert isinstance(nu, jax.Array) and nu.ndim == 1
        close(p_flat, p_tree, f"step {t} params")
        close(ours.to_tree_state(s_flat, p_flat), s_tree, f"step {t} state")


def test_bad_layouts_raise():
    with pytest.raises(TypeError, match="flat_state"):
        fast.fused("torch.adam", flat_state="yes")
    opt = fast.fused("torch.adam", flat_state=True)
    mixed = {"a": jnp.ones(3, jnp.float32), "b": jnp.ones(2, jnp.bfloat16)}
    with pytest.raises(ValueError, match="one dtype"):
        opt.init(mixed)
    params = tree(0)
    tree_state = opt.tx.init(params)  # the tree layout, not this optimizer's
    with pytest.raises(ValueError, match="flat layout"):
        opt.step(params, params, tree_state)
    other = tree(0, shapes={"a": (3,), "b": (4,)})
    with pytest.raises(ValueError, match="flat layout"):
        opt.step(params, params, opt.init(other))
