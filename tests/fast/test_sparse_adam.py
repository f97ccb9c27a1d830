"""SparseAdam in the fused CPU step: bit-identical to the XLA path where gradients are
sparse (rows of an embedding without a gradient, zeros and negative zeros inside the
rows looked up) or not finite, torch parity through the fused step, and what takes the
XLA path: a constant learning rate, ``mask=``, a failed self-check.

The option combinations on the shared trees are in ``test_bit_identity.py``; random
hyperparameters in ``test_bit_identity_random.py``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxopt_adv import fast
from jaxopt_adv.fast import selfcheck
from jaxopt_adv.fast.plans import CONSTANT_LEARNING_RATE
from tests.fast.common import assert_bit_identical
from tests.helpers.fast_paths import F32, F64, expected_reason
from tests.helpers.sparse_adam_parity import CASES, run_sparse_parity
from tests.helpers.x64 import x64

ROWS, COLS = 300, 129
SCHEDULE = optax.exponential_decay(0.05, 1, 0.9)  # a traced learning rate: the kernel's


def embedding_gradient(rng: np.random.Generator, t: int) -> np.ndarray:
    """Most rows zero (not looked up at step ``t``), some zeros and negative zeros inside
    the rows that are, and row ``t`` all negative zeros."""
    g = (0.5 + t % 3) * rng.standard_normal((ROWS, COLS))
    g[rng.uniform(size=ROWS) < 0.7] = 0.0
    g[rng.uniform(size=g.shape) < 0.1] = -0.0
    g[t % ROWS] = -0.0
    return g


@pytest.mark.parametrize("maximize", [False, True], ids=["minimize", "maximize"])
@pytest.mark.parametrize("wide", [False, True], ids=["float32", "float64"])
def test_rows_without_a_gradient_keep_their_bits(wide, maximize):
    dtype = F64 if wide else F32
    kwargs = {"learning_rate": SCHEDULE, "b1": 0.8, "maximize": maximize}
    with x64(wide):
        ours = fast.fused("torch.sparse_adam", **kwargs)
        theirs = fast.fused("torch.sparse_adam", kernel=False, **kwargs)
        rng = np.random.default_rng(3)
        params = {"table": jnp.asarray(rng.standard_normal((ROWS, COLS)), dtype)}
        state = ours.init(params)
        assert ours.explain(params, params, state) == expected_reason()
        step_ours, step_theirs = jax.jit(ours.step), jax.jit(theirs.step)
        a, b = (params, state), (params, state)
        for t in range(8):
            g = embedding_gradient(rng, t)
            grads = {"table": jnp.asarray(g, dtype)}
            before = jax.device_get(a)
            a = step_ours(a[0], grads, a[1])
            b = step_theirs(b[0], grads, b[1])
            assert_bit_identical(a, b, f"step {t + 1}")
            idle = g == 0
            after = jax.device_get(a)
            for old, new in zip(jax.tree.leaves(before), jax.tree.leaves(after), strict=True):
                if np.shape(old) == idle.shape:  # params, mu, nu
                    np.testing.assert_array_equal(new[idle], old[idle])


def test_mask_and_a_constant_learning_rate_take_the_xla_path_with_their_reason():
    """The kernel reads the gradients only: a step given ``mask=`` is the transform's; so
    is a step with a constant learning rate (XLA's rounding of it varies by shape)."""
    params = jnp.ones((3, 2))
    grads = jnp.array([[0.0, 0.0], [0.5, 0.0], [0.0, 0.0]])
    for learning_rate in (0.1, optax.constant_schedule(0.1)):
        constant = fast.fused("torch.sparse_adam", learning_rate=learning_rate)
        explained = constant.explain(params, grads, constant.init(params))
        assert explained == expected_reason(CONSTANT_LEARNING_RATE)
    opt = fast.fused("torch.sparse_adam", learning_rate=SCHEDULE)
    state = opt.init(params)
    mask = jnp.array([True, True, False])
    reason = "the argument mask (the kernels take none)"
    assert opt.explain(params, grads, state, mask=mask) == expected_reason(reason)
    assert opt.explain(params, grads, state, mask=None) == expected_reason()
    step = fast.jit_step(opt)
    for t in range(3):
        updates, expected = opt.tx.update(grads, state, params, mask=mask)
        expected_params = optax.apply_updates(params, updates)
        params, state = step(params, grads, state, mask=mask)
        assert_bit_identical((params, state), (expected_params, expected), f"step {t + 1}")


def test_flat_state_with_a_mask_takes_the_xla_path():
    opt = fast.fused("torch.sparse_adam", learning_rate=SCHEDULE, flat_state=True)
    params = {"a": jnp.ones((3, 2)), "b": jnp.ones(4)}
    grads = {"a": jnp.zeros((3, 2)).at[1, 0].set(0.5), "b": jnp.ones(4)}
    state = opt.init(params)
    mask = {"a": jnp.array([True, True, False]), "b": None}
    reason = "the argument mask (the kernels take none)"
    assert opt.explain(params, grads, state, mask=mask) == expected_reason(reason)
    assert opt.explain(params, grads, state) == expected_reason()
    new_params, _ = jax.jit(opt.step)(params, grads, state, mask=mask)
    np.testing.assert_array_equal(np.asarray(new_params["a"])[2], 1.0)  # masked out, no grad


def test_non_finite_gradients_give_the_same_values():
    """inf and NaN gradients take part (they are nonzero), as in the transform."""
    ours = fast.fused("torch.sparse_adam", learning_rate=SCHEDULE, maximize=True)
    theirs = fast.fused("torch.sparse_adam", learning_rate=SCHEDULE, maximize=True, kernel=False)
    rng = np.random.default_rng(5)
    params = {"w": jnp.asarray(rng.standard_normal(70001), F32)}
    a = b = (params, ours.init(params))
    step_ours, step_theirs = jax.jit(ours.step), jax.jit(theirs.step)
    for t, special in enumerate([np.inf, -np.inf, np.nan, 1e30]):
        g = rng.standard_normal(70001).astype(np.float32)
        g[t::97] = special
        g[t + 1 :: 89] = 0.0
        grads = {"w": jnp.asarray(g)}
        a, b = step_ours(a[0], grads, a[1]), step_theirs(b[0], grads, b[1])
        for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
            np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_a_failed_self_check_sends_only_sparse_adam_to_the_xla_path(monkeypatch):
    assert fast.available(), fast.unavailable_reason()  # as on this project's machines
    reason = "the kernels differ from XLA on this host (a probe)"
    monkeypatch.setitem(selfcheck._RESULT[False], selfcheck.SPARSE_ADAM, reason)
    opt = fast.fused("torch.sparse_adam", learning_rate=SCHEDULE)
    params = {"w": jnp.ones((4, 3))}
    assert opt.explain(params, params, opt.init(params)) == reason
    adam = fast.fused("torch.adam")
    assert adam.explain(params, params, adam.init(params)) is None


def traced_constant(learning_rate: float):
    """A schedule that is ``learning_rate`` at every step, computed from the step count (a
    traced value: the kernel's; ``optax.constant_schedule`` returns a constant)."""
    return lambda count: jnp.where(count >= 0, learning_rate, 0.0)


def through_fused_step(learning_rate: float, **kwargs) -> optax.GradientTransformationExtraArgs:
    """``fast.fused("torch.sparse_adam", ...)`` as a transform whose ``update`` runs the
    fused step (and passes ``mask=`` on) and returns ``new_params - params``."""
    opt = fast.fused("torch.sparse_adam", learning_rate=traced_constant(learning_rate), **kwargs)

    def update(grads, state, params=None, *, mask=None, **extra_args):
        new_params, state = opt.step(params, grads, state, mask=mask)
        return jax.tree.map(lambda new, old: new - old, new_params, params), state

    return optax.GradientTransformationExtraArgs(opt.init, update)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("use_mask", [False, True], ids=["nonzero", "row_mask"])
@pytest.mark.parametrize("case", ["defaults", "maximize", "random0"])
def test_fused_step_matches_torch_sparse_adam(case, use_mask, dtype):
    """torch.optim.SparseAdam on sparse gradients, 20 steps, every step compared
    (the fused step's mask-free steps run the kernel; the others the XLA path)."""
    run_sparse_parity(CASES[case], dtype, use_mask, make_tx=through_fused_step)
