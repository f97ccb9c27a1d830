"""Frequency and rank penalties: parity with ``tests/reference/torch_penalties.py``."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxopt_adv.automagic.agr import agr
from jaxopt_adv.automagic.penalties import (
    frequency_penalty,
    frequency_penalty_leaf,
    low_rank_penalty,
    low_rank_penalty_leaf,
    radius_mask,
)
from jaxopt_adv.grouping import with_slots
from jaxopt_adv.torch import sgd
from tests.harness import precision, run_parity
from tests.reference import torch_penalties
from tests.reference.torch_penalties import PenaltySGD

LR = 0.1


def make(shapes, seed):
    rng = np.random.default_rng(seed)
    return {k: rng.normal(size=s) for k, s in shapes.items()}


def stream(shapes, num_steps=20, seed=1):
    """Persistent drift plus noise; every fourth step the first matrix row is zero."""
    rng = np.random.default_rng(seed)
    drift = make(shapes, seed + 100)
    out = []
    for t in range(num_steps):
        g = {k: (0.5 * drift[k] + rng.normal(size=s)) * (1 + t % 3) for k, s in shapes.items()}
        if t % 4 == 3:
            g["m54"][0] = 0.0
        out.append(g)
    return out


# shapes repeat: with slots (with_slots) the per-leaf maths runs grouped per shape
FREQ_SHAPES = {
    "m54": (5, 4),
    "m54b": (5, 4),
    "m79": (7, 9),
    "m79b": (7, 9),
    "m88": (8, 8),
    "v": (7,),
    "conv": (3, 2, 3, 3),
    "s": (),
}
RANK_SHAPES = {
    "m54": (5, 4),
    "m1216": (12, 16),
    "m1216b": (12, 16),
    "m2011": (20, 11),
    "v": (7,),
    "s": (),
}


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("mode", ["highpass", "faithful"])
def test_frequency_parity(mode, dtype):
    options = dict(strength=0.3, radius_ratio=0.3, mode=mode)
    run_parity(
        optax.chain(with_slots(frequency_penalty(0.3, 0.3, mode=mode)), sgd(LR)),
        lambda p: PenaltySGD(p, lr=LR, frequency=options),
        dtype=dtype,
        params=make(FREQ_SHAPES, 0),
        stream=stream(FREQ_SHAPES),
    )


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("mode, rank", [("tail", 10), ("tail", 4), ("faithful", 10)])
def test_rank_parity(mode, rank, dtype):
    options = dict(strength=0.5, rank=rank, mode=mode)
    run_parity(
        optax.chain(with_slots(low_rank_penalty(0.5, rank, mode=mode)), sgd(LR)),
        lambda p: PenaltySGD(p, lr=LR, rank=options),
        dtype=dtype,
        params=make(RANK_SHAPES, 0),
        stream=stream(RANK_SHAPES),
    )


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_preprocessing_chain_parity(dtype):
    """The spec's order: AGR (group sum, edge) -> frequency -> rank, all faithful."""
    shapes = {**RANK_SHAPES, "conv": (3, 2, 3, 3)}
    agr_options = dict(scope="tree", edge=True, edge_threshold=0.6, edge_scale=0.1, eps=1e-10)
    run_parity(
        optax.chain(
            with_slots(
                optax.chain(
                    agr(**agr_options),
                    frequency_penalty(mode="faithful"),
                    low_rank_penalty(mode="faithful"),
                )
            ),
            sgd(LR),
        ),
        lambda p: PenaltySGD(
            p,
            lr=LR,
            agr=agr_options,
            frequency=dict(mode="faithful"),
            rank=dict(mode="faithful"),
        ),
        dtype=dtype,
        params=make(shapes, 0),
        stream=stream(shapes),
    )


def test_radius_mask_matches_reference_and_traced():
    for h, w in [(5, 4), (7, 9), (12, 16), (1, 6)]:
        want = torch_penalties.radius_mask(h, w, 0.3).numpy()
        np.testing.assert_array_equal(radius_mask(h, w, 0.3), want)
        traced = jax.jit(lambda r, h=h, w=w: radius_mask(h, w, r))(0.3)
        np.testing.assert_array_equal(traced, want)
    # Shifted layout: ifftshift puts the (unmasked) centre at DC.
    assert not bool(jnp.fft.ifftshift(radius_mask(6, 7))[0, 0])


def test_frequency_constant_gradient():
    """Spec 3.3b: the faithful mask keeps DC, so a constant 1e-3 loses 5e-5; highpass: 0."""
    g = jnp.full((6, 5), 1e-3)
    faithful = frequency_penalty_leaf(g, 0.05, 0.3, "faithful")
    highpass = frequency_penalty_leaf(g, 0.05, 0.3, "highpass")
    np.testing.assert_allclose(faithful, 1e-3 - 5e-5, rtol=1e-5)
    np.testing.assert_allclose(highpass, 1e-3, rtol=1e-5)


def test_highpass_is_a_projection():
    rng = np.random.default_rng(3)
    g = jnp.asarray(rng.normal(size=(8, 8)))
    p = g - frequency_penalty_leaf(g, 1.0, 0.3, "highpass")  # the high-frequency part
    # An idempotent projection: the high-frequency part has no low-frequency part left.
    np.testing.assert_allclose(frequency_penalty_leaf(p, 1.0, 0.3, "highpass"), 0.0, atol=1e-5)
    assert abs(float(p.mean())) < 1e-6
    # The Nyquist checkerboard is all high frequency: removed completely.
    checker = jnp.asarray((-1.0) ** np.add.outer(np.arange(8), np.arange(8)))
    np.testing.assert_allclose(
        frequency_penalty_leaf(checker, 1.0, 0.3, "highpass"), 0.0, atol=1e-5
    )
    # The faithful version keeps the checkerboard's energy at DC only after |.|: not zero.
    assert float(jnp.abs(frequency_penalty_leaf(checker, 1.0, 0.3, "faithful")).max()) > 0.5


def test_other_ranks_pass_through():
    g = {
        "v": jnp.ones(7),
        "conv": jnp.ones((3, 2, 3, 3)),
        "s": jnp.ones(()),
        "m": jnp.ones((5, 11)),
    }
    for tx in (
        frequency_penalty(0.5),
        low_rank_penalty(0.5),
        low_rank_penalty(0.5, 10, mode="faithful"),
    ):
        out, _ = tx.update(g, tx.init(g), g)
        for k in ("v", "conv", "s"):
            np.testing.assert_array_equal(out[k], g[k])
    out, _ = low_rank_penalty(0.5).update(g, optax.EmptyState(), g)
    np.testing.assert_array_equal(out["m"], g["m"])  # min dim 5 <= rank 10: gate off


def test_tail_shrinks_only_the_tail():
    """Zero loss gradient + SGD: tail singular values shrink by (1 - lr s), head fixed."""
    rng = np.random.default_rng(0)
    u, _ = np.linalg.qr(rng.normal(size=(14, 14)))
    v, _ = np.linalg.qr(rng.normal(size=(12, 12)))
    sv = np.linspace(10.0, 1.0, 12)
    p = jnp.asarray(u[:, :12] @ np.diag(sv) @ v.T, jnp.float32)
    tx = optax.chain(low_rank_penalty(0.5, rank=10), sgd(0.2))
    state = tx.init(p)
    step = jax.jit(tx.update)
    for _ in range(5):
        upd, state = step(jnp.zeros_like(p), state, p)
        p = optax.apply_updates(p, upd)
    got = np.linalg.svd(np.asarray(p), compute_uv=False)
    np.testing.assert_allclose(got[:10], sv[:10], rtol=1e-5)
    np.testing.assert_allclose(got[10:], sv[10:] * 0.9**5, rtol=1e-4)


def test_rank_zero_params_and_gates():
    g = jnp.ones((12, 12))
    zeros = jnp.zeros((12, 12))
    for mode in ("tail", "faithful"):  # zero LoRA matrix: no penalty, no NaN
        np.testing.assert_array_equal(low_rank_penalty_leaf(g, zeros, 0.5, 10, mode), g)
    rng = np.random.default_rng(1)
    p = jnp.asarray(rng.normal(size=(12, 12)), jnp.float32)
    np.testing.assert_allclose(
        low_rank_penalty_leaf(g, p, 0.5, 10, "faithful"), g + 0.5 * p, rtol=1e-6
    )
    # NaN parameters: the SVD is not finite, so no penalty (the gradient passes).
    bad = p.at[0, 0].set(jnp.nan)
    for mode in ("tail", "faithful"):
        np.testing.assert_array_equal(low_rank_penalty_leaf(g, bad, 0.5, 10, mode), g)


def test_frequency_nan_spreads_over_the_matrix():
    g = jnp.ones((4, 5)).at[1, 2].set(jnp.nan)
    assert np.all(np.isnan(frequency_penalty_leaf(g, 0.05, 0.3, "highpass")))


def test_injected_zero_strength_skips_and_jit_once():
    rng = np.random.default_rng(2)
    p = {"w": jnp.asarray(rng.normal(size=(12, 16)), jnp.float32), "b": jnp.ones(3)}
    traces = []
    for factory, static in ((low_rank_penalty, ("rank", "mode")), (frequency_penalty, "mode")):
        tx = optax.inject_hyperparams(factory, static_args=static)(strength=0.5)
        state = tx.init(p)

        @jax.jit
        def step(g, state, tx=tx):
            traces.append(1)
            return tx.update(g, state, p)

        for strength in (0.5, 0.0, 0.2):
            state.hyperparams["strength"] = jnp.asarray(strength)
            out, state = step(p, state)
            if strength == 0.0:
                np.testing.assert_array_equal(out["w"], p["w"])
            else:
                assert float(jnp.abs(out["w"] - p["w"]).max()) > 1e-3
    assert len(traces) == 2  # one compilation per transform


def test_dtypes_and_float64():
    g = {"w": jnp.ones((12, 12), jnp.bfloat16)}
    p = {"w": jnp.eye(12, dtype=jnp.bfloat16)}
    for tx in (frequency_penalty(), low_rank_penalty(rank=4)):
        out, _ = tx.update(g, tx.init(p), p)
        assert out["w"].dtype == jnp.bfloat16
    with precision("float64"):
        g = jnp.ones((12, 12))
        out, _ = frequency_penalty(mode="faithful").update(g, optax.EmptyState())
        assert out.dtype == jnp.float64


def test_needs_params():
    tx = low_rank_penalty()
    with pytest.raises(ValueError, match="params"):
        tx.update(jnp.ones((12, 12)), tx.init(None))


@pytest.mark.parametrize(
    "factory, kwargs, message",
    [
        (frequency_penalty, {"strength": -0.1}, "strength"),
        (frequency_penalty, {"radius_ratio": -0.3}, "radius_ratio"),
        (frequency_penalty, {"mode": "kernel3x3"}, "mode"),
        (low_rank_penalty, {"strength": -0.1}, "strength"),
        (low_rank_penalty, {"rank": -1}, "rank"),
        (low_rank_penalty, {"rank": 2.5}, "rank"),
        (low_rank_penalty, {"mode": "gate"}, "mode"),
    ],
)
def test_bad_hyperparameters(factory, kwargs, message):
    with pytest.raises(ValueError, match=message):
        factory(**kwargs)
