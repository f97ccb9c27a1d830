"""``fast.automagic_lr_mask``: the kernel's scaled updates, masks and polarities are the
JAX path's (``jaxopt_adv.automagic.lr_mask.automagic_lr_mask``) bit for bit, and ``avg_lr``
agrees to rounding, across warmup and the frozen phase, every sign source, the spatial
bump, schedules, injected hyperparameters, float32 and float64, NaN inputs, and 0-d,
1-element and empty leaves."""

from __future__ import annotations

import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxopt_adv import fast
from jaxopt_adv.automagic.lr_mask import automagic_lr_mask
from jaxopt_adv.fast import selfcheck
from tests.fast.common import assert_bit_identical
from tests.helpers.x64 import x64

LR_MASK_MODULE = sys.modules["jaxopt_adv.fast.lr_mask"]
SHAPES = {"w": (33, 65), "v": (7,), "s": (), "o": (1,), "e": (0, 3), "c": (2, 3, 40001)}
CASES = {
    "update_source": {"polarity_source": "update"},
    "ref_spatial": {"polarity_source": "ref", "spatial": True},
    "raw_schedule": {
        "polarity_source": "raw",
        "group_lr": optax.linear_schedule(1e-6, 5e-6, 6),
    },
    "spatial_refactored_schedule": {
        "spatial": True,
        "group_lr": lambda c: 2e-6 * (1.5 + jnp.sin(c.astype(jnp.float32))),
        "persistent_schedule": False,
    },
    # min_lr = -0.0 takes the kernel's exact form of XLA's clamp
    "signed_zero_floor": {"polarity_source": "update", "min_lr": -0.0, "lr_bump": 1e-5},
}


def kernel_used(tx, tree, state) -> bool:
    lowered = jax.jit(tx.update).lower(tree, state, ref_grads=tree, raw_grads=tree)
    return "jaxopt_adv_lr_mask" in lowered.as_text()


def run_both(ours, theirs, dtype, steps=12, nan_at=3):
    """``steps`` updates of both from the same state; every output compared each step."""
    rng = np.random.default_rng(0)
    trees = [
        {k: jnp.asarray(rng.standard_normal(s), dtype) for k, s in SHAPES.items()}
        for _ in range(2 * steps + 1)
    ]
    state_ours = state_theirs = ours.init(trees[0])
    assert kernel_used(ours, trees[0], state_ours) == (fast.unavailable_reason() is None)
    step_ours, step_theirs = jax.jit(ours.update), jax.jit(theirs.update)
    for t in range(steps):
        u, ref = trees[2 * t + 1], trees[2 * t + 2]
        if t == nan_at:  # a NaN sign source and a NaN row of the spatial variance
            ref = {**ref, "s": jnp.asarray(jnp.nan, dtype), "w": ref["w"].at[3, 5].set(jnp.nan)}
        out_ours, state_ours = step_ours(u, state_ours, ref_grads=ref, raw_grads=u)
        out_theirs, state_theirs = step_theirs(u, state_theirs, ref_grads=ref, raw_grads=u)
        assert_bit_identical(out_ours, out_theirs, f"updates, step {t + 1}")
        assert_bit_identical(*(without_avg_lr(x) for x in (state_ours, state_theirs)))
        # XLA sums float32 in float32 (relative error ~1e-6 over 2e5 elements here)
        rtol = 1e-12 if dtype == jnp.float64 else 1e-5
        for a, b in zip(avg_lr(state_ours), avg_lr(state_theirs), strict=True):
            np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=rtol)


def avg_lr(state) -> list:
    return jax.tree.leaves(getattr(state, "inner_state", state).avg_lr)


def without_avg_lr(state):
    """The state with ``avg_lr`` left out (it agrees to rounding only)."""
    if hasattr(state, "inner_state"):
        return state._replace(inner_state=state.inner_state._replace(avg_lr=None))
    return state._replace(avg_lr=None)


@pytest.mark.parametrize("wide", [False, True], ids=["float32", "float64"])
@pytest.mark.parametrize("case", CASES)
def test_bit_identical_to_the_jax_path(case, wide):
    kwargs = {"lr": 1e-6, "warmup_steps": 6, **CASES[case]}
    dtype = jnp.float64 if wide else jnp.float32
    with x64(wide):
        mask_dtype = "float64" if wide else "float32"
        ours = fast.automagic_lr_mask(mask_dtype=mask_dtype, **kwargs)
        theirs = automagic_lr_mask(mask_dtype=mask_dtype, **kwargs)
        run_both(ours, theirs, dtype)


def test_injected_hyperparameters():
    kwargs = {"lr": 1e-6, "min_lr": 2e-7, "lr_bump": 2e-6, "warmup_steps": 5, "spatial": True}
    ours = optax.inject_hyperparams(fast.automagic_lr_mask)(**kwargs)
    theirs = optax.inject_hyperparams(automagic_lr_mask)(**kwargs)
    with x64(False):
        run_both(ours, theirs, jnp.float32, steps=8)


def test_a_bfloat16_mask_takes_the_jax_path():
    """The kernel takes masks in the update's dtype only; the result is the JAX path's."""
    kwargs = {"lr": 1e-6, "warmup_steps": 4, "polarity_source": "update", "mask_dtype": "bfloat16"}
    ours, theirs = fast.automagic_lr_mask(**kwargs), automagic_lr_mask(**kwargs)
    u = {"w": jnp.linspace(-1.0, 1.0, 60).reshape(6, 10)}
    state = ours.init(u)
    assert not kernel_used(ours, u, state)
    for _ in range(6):
        out_ours, state = jax.jit(ours.update)(u, state)
    state_theirs = theirs.init(u)
    for _ in range(6):
        out_theirs, state_theirs = jax.jit(theirs.update)(u, state_theirs)
    assert_bit_identical((out_ours, state), (out_theirs, state_theirs))


def test_kernel_false_and_donated_chain():
    """``kernel=False`` compiles no custom call; in a donated jitted chain the kernel
    updates the mask and the polarity in place (no copies of them)."""
    u = {"w": jnp.ones((64, 32))}
    plain = fast.automagic_lr_mask(polarity_source="update", kernel=False)
    assert not kernel_used(plain, u, plain.init(u))
    tx = optax.chain(optax.scale(2.0), fast.automagic_lr_mask(polarity_source="update"))
    step = jax.jit(tx.update, donate_argnums=(0, 1))
    text = step.lower(u, tx.init(u)).compile().as_text()
    if LR_MASK_MODULE._unavailable_reason() is None:
        assert "jaxopt_adv_lr_mask" in text
        assert "pred[64,32]{1,0} copy(" not in text
    out, state = step({"w": jnp.ones((64, 32))}, tx.init(u))
    # step 1: the polarity (True) disagrees with the initial False, 1e-6 - 3e-6 < min_lr
    np.testing.assert_allclose(np.asarray(out["w"]), 2.0 * 1e-7, rtol=1e-6)
    assert bool(jnp.all(state[1].last_polarity["w"]))


@pytest.mark.parametrize(
    "kwargs, text",
    [
        ({"lr": -1.0}, "lr"),
        ({"min_lr": 1e-3, "max_lr": 1e-4}, "min_lr"),
        ({"polarity_source": "grad"}, "polarity_source"),
        ({"lr_bump": -1.0}, "lr_bump"),
    ],
    ids=["lr", "min_max", "source", "bump"],
)
def test_bad_hyperparameters_raise_at_construction(kwargs, text):
    with pytest.raises(ValueError, match=text):
        fast.automagic_lr_mask(**kwargs)


def test_a_missing_sign_source_is_a_clear_error():
    tx = fast.automagic_lr_mask()  # polarity_source="ref"
    u = {"w": jnp.ones((3, 4))}
    with pytest.raises(ValueError, match="needs the extra argument ref_grads"):
        tx.update(u, tx.init(u))


def test_lr_mask_kernel_is_self_checked_and_a_failure_takes_the_jax_path(monkeypatch):
    u = {"w": jnp.ones((6, 4))}
    tx = fast.automagic_lr_mask(polarity_source="update")
    assert kernel_used(tx, u, tx.init(u))
    assert selfcheck._RESULT[False][selfcheck.LR_MASK] is None  # checked on this host
    reason = "the kernels differ from XLA on this host (a probe)"
    monkeypatch.setitem(selfcheck._RESULT[False], selfcheck.LR_MASK, reason)
    assert LR_MASK_MODULE._unavailable_reason() == reason
    tx = fast.automagic_lr_mask(polarity_source="update")  # not traced before
    assert not kernel_used(tx, u, tx.init(u))
    theirs = automagic_lr_mask(polarity_source="update")
    got = jax.jit(tx.update)(u, tx.init(u))
    want = jax.jit(theirs.update)(u, theirs.init(u))
    assert_bit_identical(got, want)


def test_lr_mask_probes_pass_here_and_catch_a_difference():
    assert LR_MASK_MODULE._probe_mismatches() == {selfcheck.LR_MASK: None}
    stream = [{"w": np.ones((4, 3), np.float32), "c": -np.ones((2, 3, 2), np.float32)}] * 2
    rtol, sources = LR_MASK_MODULE._PROBE_RTOL, LR_MASK_MODULE._probe_sign_sources
    ours = fast.automagic_lr_mask(lr_bump=1e-6)
    same = fast.automagic_lr_mask(lr_bump=1e-6, kernel=False)
    assert not selfcheck.steps_differ(ours, same, stream, rtol, sources)
    other = fast.automagic_lr_mask(lr_bump=2e-6, kernel=False)
    assert selfcheck.steps_differ(ours, other, stream, rtol, sources)

    def nan_update(updates, state, params=None, **extra_args):
        updates, state = same.update(updates, state, params, **extra_args)
        return jax.tree.map(lambda u: u * np.nan, updates), state

    # NaN where the other path has a finite value is a difference
    nan_out = optax.GradientTransformationExtraArgs(same.init, nan_update)
    assert selfcheck.steps_differ(ours, nan_out, stream, rtol, sources)
