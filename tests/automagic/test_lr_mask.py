"""Automagic lr-mask parity against the torch reference ``tests/reference/torch_lr_mask.py``."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import torch

from jaxopt_adv.automagic.composition import with_reference_grads
from jaxopt_adv.automagic.lr_mask import automagic_lr_mask, spatial_variance_leaf
from tests.harness import REPEATED_SHAPES, gradient_stream, make_params, run_parity
from tests.reference.torch_lr_mask import AutomagicLrMaskSGD

WARMUP = 8
MASK = dict(lr=0.01, min_lr=2e-3, max_lr=0.05, lr_bump=3e-3)
# Group lr per 0-based step: rises and falls in warmup (t = 1..7), then changes after it,
# including a drop below 0.1 x lr_max (the persistent floor) and a rise past lr_max.
GROUP_LR = [0.01, 0.012, 0.011, 0.015, 0.015, 0.02, 0.018, 0.02, 0.02, 0.015, 0.015, 0.01]
GROUP_LR += [0.01, 0.001, 0.001, 0.03, 0.03, 0.004, 0.004, 0.004, 0.02, 0.02, 0.02, 0.02]


def schedule(count):
    return jnp.asarray(GROUP_LR)[jnp.minimum(count, len(GROUP_LR) - 1)]


CASES = {
    "ref": dict(),
    "ref_spatial_persistent": dict(spatial=True, momentum=0.9, l2=0.5, group_lr=True),
    "ref_spatial_one_step": dict(
        spatial=True, momentum=0.9, l2=0.5, group_lr=True, persistent_schedule=False
    ),
    "raw_spatial": dict(polarity_source="raw", spatial=True, l2=0.5, detail_preservation=3.0),
    "update_one_step": dict(
        polarity_source="update", momentum=0.9, group_lr=True, persistent_schedule=False
    ),
}
# A float64 mask only exists with x64 on.
MASK_FLOAT64 = dict(mask_dtype="float64", spatial=True, group_lr=True, l2=0.5)


def ours(momentum=0.0, l2=0.0, group_lr=False, **kwargs):
    pre = optax.add_decayed_weights(l2) if l2 else optax.identity()
    body = [optax.trace(momentum)] if momentum else []
    body += [
        automagic_lr_mask(
            **MASK, group_lr=schedule if group_lr else None, warmup_steps=WARMUP, **kwargs
        ),
        optax.scale(-1.0),
    ]
    return with_reference_grads(pre, optax.chain(*body))


def reference(group_lr=False, mask_dtype="float32", **kwargs):
    dtype = getattr(torch, mask_dtype)
    return lambda p: AutomagicLrMaskSGD(p, **MASK, warmup_steps=WARMUP, mask_dtype=dtype, **kwargs)


@pytest.mark.parametrize(
    "case, dtype",
    [(c, d) for c in CASES for d in ("float64", "float32")] + [("mask_float64", "float64")],
)
def test_lr_mask_parity(case, dtype):
    """On a tree that repeats shapes: the mask's per-leaf maths runs grouped."""
    kwargs = CASES[case] if case in CASES else MASK_FLOAT64
    state_map = {"lr_mask": "lr_mask", "last_polarity": "last_polarity", "avg_lr": "avg_lr"}
    state_map["lr_max"] = "lr_max"
    if kwargs.get("spatial"):
        state_map["spatial_variance"] = "spatial_variance"
    run_parity(
        ours(**kwargs),
        reference(**kwargs),
        dtype=dtype,
        state_map=state_map,
        schedule=schedule if kwargs.get("group_lr") else None,
        params=make_params(shapes=REPEATED_SHAPES),
        stream=gradient_stream(len(GROUP_LR), shapes=REPEATED_SHAPES),
    )


def test_sources_and_semantics_differ():
    """Each option changes the trajectory (so the parity cases test something)."""
    base = dict(spatial=True, momentum=0.9, l2=0.5, group_lr=True)
    reports = {
        "polarity=raw": dict(base, polarity_source="raw"),
        "polarity=update": dict(base, polarity_source="update"),
        "one-step": dict(base, persistent_schedule=False),
        "no spatial": dict(base, spatial=False),
    }
    for name, kwargs in reports.items():
        report = run_parity(
            ours(**kwargs),
            reference(**base),
            num_steps=len(GROUP_LR),
            schedule=schedule,
            check=False,
        )
        assert report.max_error > 1e-4, name


def _run(tx, grads, *, ref=None, steps=1):
    state = tx.init(grads)
    step = jax.jit(tx.update)
    outs = []
    for _ in range(steps):
        out, state = step(grads, state, ref_grads=grads if ref is None else ref)
        outs.append(out)
    return outs, state


def test_first_step_quirk():
    """t = 1: last_polarity is False, so g <= 0 'agrees' (+bump) and g > 0 gets -bump."""
    g = jnp.array([2.0, 0.0, -3.0])
    tx = automagic_lr_mask(lr=0.1, max_lr=1.0, lr_bump=0.01, warmup_steps=4)
    (out,), state = _run(tx, g)
    np.testing.assert_allclose(state.lr_mask, [0.09, 0.11, 0.11], rtol=1e-6)
    np.testing.assert_array_equal(state.last_polarity, [True, False, False])
    np.testing.assert_allclose(out, g * state.lr_mask, rtol=1e-6)
    assert float(state.avg_lr) == pytest.approx(np.mean([0.09, 0.11, 0.11]), rel=1e-6)


def test_warmup_clamps_and_freezes():
    g = jnp.array([1.0, -1.0])  # constant signs: both agree from step 2 on
    tx = automagic_lr_mask(lr=0.1, min_lr=0.05, max_lr=0.13, lr_bump=0.01, warmup_steps=6)
    outs, state = _run(tx, g, steps=9)
    masks = [np.asarray(o) / np.asarray(g) for o in outs]
    np.testing.assert_allclose(masks[0], [0.09, 0.11], rtol=1e-6)
    np.testing.assert_allclose(masks[3], [0.12, 0.13], rtol=1e-6)  # second element clamped
    np.testing.assert_allclose(masks[4], [0.13, 0.13], rtol=1e-6)
    for m in masks[5:]:  # t >= 6: frozen
        np.testing.assert_allclose(m, [0.13, 0.13], rtol=1e-6)
    assert int(state.count) == 9


@pytest.mark.parametrize("persistent", [True, False])
def test_schedule_semantics_after_warmup(persistent):
    """A drop of the group lr after warmup: persistent scaling vs one step (refactored)."""
    table = jnp.array([0.1, 0.1, 0.05, 0.05, 0.05, 0.001])

    def group_lr(count):
        return table[jnp.minimum(count, 5)]

    tx = automagic_lr_mask(
        lr=0.1,
        max_lr=1.0,
        lr_bump=0.0,
        group_lr=group_lr,
        warmup_steps=2,
        persistent_schedule=persistent,
    )
    outs, state = _run(tx, jnp.ones(2), steps=7)
    lrs = [float(o[0]) for o in outs]
    if persistent:
        want = [0.1, 0.1, 0.05, 0.05, 0.05, 0.01, 0.01]  # ratio floored at 0.1
        assert float(state.lr_max) == pytest.approx(0.1)
    else:
        want = [0.1, 0.1, 0.05, 0.1, 0.1, 0.1 * 0.001 / 0.05, 0.1]
        assert float(state.lr_max) == pytest.approx(0.001)
    np.testing.assert_allclose(lrs, want, rtol=1e-5)


def test_warmup_honours_increases_only():
    table = jnp.array([0.1, 0.15, 0.12, 0.2])
    tx = automagic_lr_mask(
        lr=0.1, max_lr=1.0, lr_bump=0.0, group_lr=lambda c: table[c], warmup_steps=10
    )
    outs, state = _run(tx, jnp.ones(1), steps=4)
    np.testing.assert_allclose([float(o[0]) for o in outs], [0.1, 0.15, 0.15, 0.2], rtol=1e-5)
    assert float(state.lr_max) == pytest.approx(0.2)


def test_spatial_variance_rows():
    rng = np.random.default_rng(0)
    ref = jnp.asarray(rng.normal(size=(3, 2, 4)), jnp.float32)
    sv = spatial_variance_leaf(ref, jnp.ones((3, 2, 1)))
    want = 0.9 + 0.1 * np.var(np.asarray(ref), axis=-1, ddof=1, keepdims=True)
    np.testing.assert_allclose(sv, want, rtol=1e-6)
    # A last axis of length 1 counts as variance 1; 1-D leaves keep their scalar 1.
    np.testing.assert_array_equal(spatial_variance_leaf(ref[..., :1], jnp.ones((3, 2, 1))), 1.0)
    assert spatial_variance_leaf(ref[0, 0], jnp.ones(())).shape == ()
    # The bump factor: clip(0.8 * SV, 0.5, 1.5) -> 0.8 at first.
    tx = automagic_lr_mask(lr=0.1, max_lr=1.0, lr_bump=0.01, spatial=True, warmup_steps=4)
    _, state = _run(tx, -jnp.ones((2, 3)))
    np.testing.assert_allclose(state.lr_mask, 0.1 + 0.008, rtol=1e-6)
    np.testing.assert_allclose(state.spatial_variance, 0.9, rtol=1e-6)  # var of constants = 0


def test_zero_gradients():
    """Zero sources count as non-positive: they keep agreeing after step 1."""
    tx = automagic_lr_mask(lr=0.1, max_lr=1.0, lr_bump=0.01, spatial=True, warmup_steps=10)
    outs, state = _run(tx, jnp.zeros((3, 4)), steps=3)
    # Spatial factor clip(0.8 SV, 0.5, 1.5) with SV = 1, 0.9, 0.81 (zero variance).
    np.testing.assert_allclose(state.lr_mask, 0.1 + 0.01 * 0.8 * (1 + 0.9 + 0.81), rtol=1e-6)
    assert not np.any(outs[-1])
    np.testing.assert_allclose(state.spatial_variance, 0.9**3, rtol=1e-6)


def test_jit_once_across_warmup_and_dtypes():
    traces = []
    tx = automagic_lr_mask(lr=0.01, group_lr=schedule, spatial=True, warmup_steps=4)
    params = {"w": jnp.ones((4, 3), jnp.bfloat16), "b": jnp.ones(3)}

    @jax.jit
    def step(u, state):
        traces.append(1)
        return tx.update(u, state, ref_grads=u)

    state = tx.init(params)
    for t in range(12):
        sign = (-1.0) ** t
        u = jax.tree.map(lambda x, s=sign: x * s, params)
        out, state = step(u, state)
    assert len(traces) == 1
    assert out["w"].dtype == jnp.bfloat16 and out["b"].dtype == jnp.float32
    assert state.lr_mask["w"].dtype == jnp.float32
    assert state.last_polarity["w"].dtype == jnp.bool_
    assert state.spatial_variance["w"].shape == (4, 1) and state.spatial_variance["b"].shape == ()


def test_missing_extra_args():
    g = jnp.ones(3)
    with pytest.raises(ValueError, match="ref_grads"):
        tx = automagic_lr_mask()
        tx.update(g, tx.init(g))
    with pytest.raises(ValueError, match="raw_grads"):
        tx = automagic_lr_mask(polarity_source="raw")
        tx.update(g, tx.init(g), ref_grads=g)
    with pytest.raises(ValueError, match="ref_grads"):
        tx = automagic_lr_mask(polarity_source="update", spatial=True)
        tx.update(g, tx.init(g))
    tx = automagic_lr_mask(polarity_source="update")
    out, _ = tx.update(g, tx.init(g), unknown=1)
    assert out.shape == (3,)


def test_inject_hyperparams():
    g = jnp.array([1.0, -2.0])
    injected = optax.inject_hyperparams(automagic_lr_mask)(lr=0.1, max_lr=1.0, lr_bump=0.02)
    plain = automagic_lr_mask(lr=0.1, max_lr=1.0, lr_bump=0.02)
    a, _ = injected.update(g, injected.init(g), ref_grads=g)
    b, _ = plain.update(g, plain.init(g), ref_grads=g)
    np.testing.assert_allclose(a, b, rtol=1e-6)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"lr": 0.0}, "lr"),
        ({"min_lr": -1.0}, "min_lr"),
        ({"min_lr": 1e-3, "max_lr": 1e-4}, "min_lr"),
        ({"lr_bump": -1e-6}, "lr_bump"),
        ({"detail_preservation": -0.1}, "detail_preservation"),
        ({"warmup_steps": 0}, "warmup_steps"),
        ({"warmup_steps": 5.0}, "warmup_steps"),
        ({"polarity_source": "grad"}, "polarity_source"),
        ({"group_lr": -1.0}, "group_lr"),
    ],
)
def test_bad_hyperparameters(kwargs, message):
    with pytest.raises(ValueError, match=message):
        automagic_lr_mask(**kwargs)
