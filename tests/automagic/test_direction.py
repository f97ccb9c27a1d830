"""Direction-control blocks: Grams and OrthoGrad against pytorch_optimizer 4.1.0, Cautious
and edge damping against the torch references written from the spec."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import torch
from pytorch_optimizer import Grams, OrthoGrad
from pytorch_optimizer.base.optimizer import BaseOptimizer

from jaxopt_adv.automagic.agr import edge_strength
from jaxopt_adv.automagic.composition import with_reference_grads
from jaxopt_adv.automagic.direction import (
    cautious,
    cautious_update,
    edge_damping,
    grams,
    orthogonalize,
    orthogonalize_update,
)
from jaxopt_adv.torch import adam, scale_by_adam, scale_by_sgd_momentum, sgd
from tests.harness import find_state_field, make_params, precision, run_parity
from tests.reference import torch_edge
from tests.reference.torch_cautious import CautiousMomentumSGD
from tests.reference.torch_edge import EdgeDampedMomentumSGD

ADAM_STATE = {"mu": "exp_avg", "nu": "exp_avg_sq"}
SGD_STATE = {"trace": "momentum_buffer"}


def with_grads_as_reference(*body, maximize=False):
    pre = optax.scale(-1.0) if maximize else optax.identity()
    return with_reference_grads(pre, optax.chain(*body))


# -------------------------------------------------------------------------------------
# Grams.


def grams_optimizer(lr, b1=0.9, b2=0.999, eps=1e-6, weight_decay=0.0, maximize=False):
    """pytorch_optimizer.Grams as a chain: Adam's bias-corrected ratio, sign from g."""
    decay = [optax.add_decayed_weights(weight_decay)] if weight_decay else []
    return with_grads_as_reference(
        scale_by_adam(b1, b2, eps),
        grams(),
        *decay,
        optax.scale_by_learning_rate(lr),
        maximize=maximize,
    )


GRAMS_RUNS = [
    ({}, {}, "float64"),
    ({}, {}, "float32"),
    ({"b1": 0.5, "b2": 0.9, "eps": 1e-3, "weight_decay": 0.1}, {}, "float64"),
    ({"b1": 0.5, "b2": 0.9, "eps": 1e-3, "weight_decay": 0.1}, {}, "float32"),
    ({"maximize": True, "weight_decay": 0.05}, {"foreach": True}, "float64"),
]


@pytest.mark.parametrize(
    "kwargs, torch_extra, dtype",
    GRAMS_RUNS,
    ids=["plain-f64", "plain-f32", "hyper-f64", "hyper-f32", "maximize-foreach-f64"],
)
def test_grams_parity(kwargs, torch_extra, dtype):
    kw = dict(kwargs)
    betas = (kw.pop("b1", 0.9), kw.pop("b2", 0.999))
    run_parity(
        grams_optimizer(0.05, **kwargs),
        lambda p: Grams(p, lr=0.05, betas=betas, **kw, **torch_extra),
        dtype=dtype,
        state_map=ADAM_STATE,
    )


def test_grams_coupled_weight_decay_is_a_no_op_in_the_reference():
    """pytorch_optimizer.Grams adds coupled decay to the gradient after forming the update."""
    run_parity(
        grams_optimizer(0.05),
        lambda p: Grams(p, lr=0.05, weight_decay=0.5, weight_decouple=False),
        state_map=ADAM_STATE,
    )


# -------------------------------------------------------------------------------------
# Cautious.

CAUTIOUS_CASES = {
    "mean_floor": {},
    # var(g) ranges from ~0.003 to ~30 over the stream: the halving fires on some steps
    # and tensors only; the scalar's variance is NaN and never fires.
    "background": {"mean_floor": 0.5, "background_threshold": 2.0, "background_factor": 0.3},
}


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("case", CAUTIOUS_CASES)
def test_cautious_parity_with_spec_reference(case, dtype):
    kwargs = CAUTIOUS_CASES[case]
    run_parity(
        with_grads_as_reference(
            scale_by_sgd_momentum(0.9), cautious(**kwargs), optax.scale_by_learning_rate(0.02)
        ),
        lambda p: CautiousMomentumSGD(p, lr=0.02, momentum=0.9, **kwargs),
        dtype=dtype,
        state_map=SGD_STATE,
    )


def test_cautious_background_rule_fires_only_below_threshold():
    rule = jax.jit(cautious_update)
    u = jnp.array([1.0, -2.0, 3.0, 4.0])
    calm, busy = jnp.array([1.0, 1.0, 1.001, 1.0]), jnp.array([1.0, -5.0, 3.0, 9.0])
    plain = rule(u, calm)
    np.testing.assert_allclose(plain, u * jnp.array([1, 0, 1, 1]) / 0.75)
    np.testing.assert_allclose(rule(u, calm, background_threshold=1e-3), plain / 2)
    np.testing.assert_allclose(rule(u, busy, background_threshold=1e-3), u / 1.0)
    scalar = rule(jnp.float32(2.0), jnp.float32(1.0), background_threshold=1.0)
    assert float(scalar) == 2.0  # NaN variance of one element: no halving


def test_cautious_differs_from_pytorch_optimizer_apply_cautious():
    """Ours divides by max(mean, floor); apply_cautious multiplies by numel / (sum + 1)."""
    rng = np.random.default_rng(0)
    with precision("float64"):
        for shape in [(5, 4), (7,), (3, 2, 3, 3)]:
            u, g = rng.normal(size=shape), rng.normal(size=shape)
            kept = float(np.sum(u * g > 0))
            ours = np.asarray(cautious_update(jnp.asarray(u), jnp.asarray(g)))
            theirs = torch.tensor(u)
            BaseOptimizer.apply_cautious(theirs, torch.tensor(g))
            np.testing.assert_allclose(ours, u * (u * g > 0) * u.size / kept, rtol=1e-14)
            np.testing.assert_allclose(ours * kept / (kept + 1), theirs.numpy(), rtol=1e-14)
        # one element kept: pytorch_optimizer halves it, the mean floor does not
        u, g = np.array([1.0, 1.0, 1.0]), np.array([1.0, -1.0, -1.0])
        theirs = torch.tensor(u)
        BaseOptimizer.apply_cautious(theirs, torch.tensor(g))
        np.testing.assert_allclose(theirs.numpy(), [1.5, 0.0, 0.0])
        np.testing.assert_allclose(cautious_update(jnp.asarray(u), jnp.asarray(g)), [3, 0, 0])


def test_cautious_all_disagree_gives_zero_not_nan():
    out = cautious_update(jnp.array([1.0, -1.0]), jnp.array([-1.0, 1.0]))
    np.testing.assert_array_equal(out, jnp.zeros(2))
    out = cautious_update(jnp.zeros(3), jnp.zeros(3), background_threshold=1.0)
    np.testing.assert_array_equal(out, jnp.zeros(3))


# -------------------------------------------------------------------------------------
# Edge strength and edge damping.

EDGE_SHAPES = [(), (6,), (1, 6), (2, 6), (3, 3), (6, 1), (6, 2), (5, 7), (2, 3, 3, 3), (3, 2, 1, 1)]


@pytest.mark.parametrize("threshold, scale", [(0.6, 0.1), (2.0, 0.5), (0.0, 1.0)])
def test_edge_strength_matches_torch(threshold, scale):
    rng = np.random.default_rng(7)
    with precision("float64"):
        xs = {str(s): 2.0 * rng.normal(size=s) for s in EDGE_SHAPES}
        ours = jax.jit(lambda xs: jax.tree.map(lambda x: edge_strength(x, threshold, scale), xs))(
            xs
        )
        for key, x in xs.items():
            theirs = torch_edge.edge_strength(torch.tensor(x), threshold, scale).numpy()
            np.testing.assert_array_equal(ours[key], theirs, err_msg=key)
    matrix = np.asarray(ours[str((5, 7))])
    assert np.any(matrix > 0) and np.any(matrix == 0)  # edges above and below the threshold


def test_edge_strength_boundaries():
    edge = jax.jit(edge_strength)
    x = jnp.zeros((4, 4)).at[0, 1].set(1.0)  # border row: only its column term
    lap = torch_edge.laplacian(torch.tensor(np.asarray(x))).numpy()
    strength = np.asarray(edge(x, 0.0, 1.0))
    np.testing.assert_array_equal(strength, np.abs(lap))
    np.testing.assert_array_equal(strength[:2], [[0.0, 2.0, 1.0, 0.0], [0.0, 1.0, 0.0, 0.0]])
    rng = np.random.default_rng(8)
    flat = {
        str(s): 100.0 * rng.normal(size=s) for s in [(), (5,), (2, 2), (1, 2), (2, 1), (3, 2, 2)]
    }
    for key, e in jax.jit(lambda xs: jax.tree.map(edge_strength, xs))(flat).items():
        assert not np.any(np.asarray(e)), key  # no second differences: no edges
    x = jnp.array([[0.0, 0.7, 0.0]])  # |lap| = 1.4 at the centre, strictly above only
    assert [float(edge(x, t, 1.0)[0, 1]) for t in (0.6, 1.4, 1.3)] == pytest.approx([1.4, 0, 1.4])


EDGE_CASES = {
    "default": {},
    # strong edges: the damping factor reaches its floor
    "strong": {"decay": 0.5, "threshold": 1.0, "scale": 0.5, "floor": 0.2},
}


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("case", EDGE_CASES)
def test_edge_damping_parity_with_spec_reference(case, dtype):
    kwargs = EDGE_CASES[case]
    run_parity(
        optax.chain(
            scale_by_sgd_momentum(0.9), edge_damping(**kwargs), optax.scale_by_learning_rate(0.02)
        ),
        lambda p: EdgeDampedMomentumSGD(p, lr=0.02, momentum=0.9, **kwargs),
        dtype=dtype,
        state_map={**SGD_STATE, "edge_history": "edge_history"},
    )


def test_edge_damping_reaches_floor_and_skips_low_rank_leaves():
    tx = edge_damping(**EDGE_CASES["strong"])
    params = {k: jnp.asarray(v, jnp.float32) for k, v in make_params().items()}
    grads = jax.tree.map(lambda p: 20.0 * p, params)
    state, update = tx.init(params), jax.jit(tx.update)
    for _ in range(3):
        out, state = update(grads, state)
    ratio = out["matrix"] / grads["matrix"]
    assert float(jnp.min(ratio)) == pytest.approx(0.2)
    assert float(jnp.max(ratio)) == 1.0  # the (5, 4) border corners have no edges
    np.testing.assert_array_equal(out["vector"], grads["vector"])
    assert state.edge_history["vector"].shape == (0,)
    assert state.edge_history["scalar"].shape == (0,)


# -------------------------------------------------------------------------------------
# OrthoGrad.

ORTHO_RUNS = {
    "sgd_momentum": (lambda lr: sgd(lr, momentum=0.9), torch.optim.SGD, {"momentum": 0.9}),
    "adam": (adam, torch.optim.Adam, {}),
}


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("case", ORTHO_RUNS)
def test_orthograd_parity(case, dtype):
    ours, torch_cls, kwargs = ORTHO_RUNS[case]
    run_parity(
        optax.chain(orthogonalize_update(), ours(0.02)),
        lambda p: OrthoGrad(torch_cls, params=p, lr=0.02, **kwargs),
        dtype=dtype,
        state_map=SGD_STATE if case == "sgd_momentum" else ADAM_STATE,
    )


def test_orthograd_parity_foreach_and_zero_params():
    """The batched projection path, from all-zero starting weights (w = 0: no projection)."""
    params = {k: np.zeros_like(v) for k, v in make_params().items()}
    run_parity(
        optax.chain(orthogonalize_update(), sgd(0.02, momentum=0.9)),
        lambda p: OrthoGrad(torch.optim.SGD, params=p, lr=0.02, momentum=0.9, foreach=True),
        params=params,
        state_map=SGD_STATE,
    )


@pytest.mark.parametrize("dtype", [jnp.float64, jnp.float32])
def test_orthogonalize_degenerate_cases(dtype):
    with precision("float64" if dtype == jnp.float64 else "float32"):
        w, u = jnp.array([1.0, 2.0], dtype), jnp.array([2.0, 4.0], dtype)  # u exactly 2 w
        assert not bool(jnp.any(orthogonalize(u, w)))
        np.testing.assert_array_equal(orthogonalize(u, w, rule="automagic"), u)
        reference = torch.tensor(np.asarray(w), requires_grad=True)
        reference.grad = torch.tensor(np.asarray(u))
        BaseOptimizer.apply_orthogonal_gradients([reference], eps=1e-30)
        np.testing.assert_array_equal(reference.grad.numpy(), [0.0, 0.0])
        zero_w = jnp.zeros(2, dtype)
        np.testing.assert_array_equal(orthogonalize(u, zero_w, rule="automagic"), u)
        np.testing.assert_allclose(orthogonalize(u, zero_w), u, rtol=1e-15)
        for rule in ("pytorch_optimizer", "automagic"):
            np.testing.assert_array_equal(orthogonalize(jnp.zeros(2, dtype), w, rule=rule), 0)
        rng = np.random.default_rng(2)
        w, u = jnp.asarray(rng.normal(size=(4, 3)), dtype), jnp.asarray(rng.normal(size=(4, 3)))
        a, b = orthogonalize(u, w), orthogonalize(u, w, rule="automagic")
        np.testing.assert_array_equal(a, b)
        assert abs(float(jnp.vdot(a, w))) < 1e-5
        np.testing.assert_allclose(jnp.linalg.norm(a), jnp.linalg.norm(u), rtol=1e-6)


def test_orthogonalize_update_needs_params():
    tx = orthogonalize_update()
    with pytest.raises(ValueError, match="params"):
        tx.update(jnp.ones(2), tx.init(jnp.ones(2)))


# -------------------------------------------------------------------------------------
# Contract details shared by the blocks.


@pytest.mark.parametrize("factory", [grams, cautious])
def test_missing_ref_grads_raises(factory):
    tx = factory()
    with pytest.raises(ValueError, match="ref_grads"):
        tx.update(jnp.ones(2), tx.init(jnp.ones(2)))
    with pytest.raises(ValueError, match="structure"):
        tx.update({"a": jnp.ones(2)}, tx.init(jnp.ones(2)), ref_grads=jnp.ones(2))


@pytest.mark.parametrize(
    "factory, kwargs, message",
    [
        (cautious, {"mean_floor": 0.0}, "Invalid mean_floor value"),
        (cautious, {"background_threshold": -1.0}, "Invalid background_threshold value"),
        (cautious, {"background_factor": -0.5}, "Invalid background_factor value"),
        (edge_damping, {"decay": 1.0}, "Invalid decay value"),
        (edge_damping, {"threshold": -0.1}, "Invalid threshold value"),
        (edge_damping, {"scale": -0.1}, "Invalid scale value"),
        (edge_damping, {"floor": 1.5}, "Invalid floor value"),
        (orthogonalize_update, {"eps": -1.0}, "Invalid eps value"),
        (orthogonalize_update, {"rule": "gram_schmidt"}, "Invalid rule"),
    ],
)
def test_bad_hyperparameters(factory, kwargs, message):
    with pytest.raises(ValueError, match=message):
        factory(**kwargs)


def test_zero_gradients_give_zero_updates():
    params = {k: jnp.asarray(v, jnp.float32) for k, v in make_params().items()}
    zeros = jax.tree.map(jnp.zeros_like, params)
    body = optax.chain(
        scale_by_adam(), grams(), edge_damping(), cautious(background_threshold=1e-6)
    )
    tx = optax.chain(with_reference_grads(optax.identity(), body), orthogonalize_update())
    updates, _ = jax.jit(tx.update)(zeros, tx.init(params), params)
    for leaf in jax.tree.leaves(updates):
        np.testing.assert_array_equal(leaf, jnp.zeros_like(leaf))


def test_composite_chain_jits_once_with_traced_hyperparameters():
    """All blocks in one body, numeric hyperparameters injected (traced): one trace, and
    the same numbers as the plain chain."""

    def body(inject):
        wrap = optax.inject_hyperparams if inject else (lambda f: f)
        return with_reference_grads(
            optax.identity(),
            optax.chain(
                scale_by_adam(),
                wrap(grams)(),
                wrap(edge_damping)(decay=0.5, threshold=1.0, scale=0.5, floor=0.2),
                wrap(cautious)(mean_floor=0.3, background_threshold=2.0),
                wrap(orthogonalize_update)(eps=1e-30),
                optax.scale_by_learning_rate(0.02),
            ),
        )

    traces = []

    def run(tx):
        @jax.jit
        def step(params, state, t):
            traces.append(1)
            grads = jax.tree.map(lambda p: jnp.sin(3.0 * p * (t + 1.0)), params)
            updates, state = tx.update(grads, state, params, unused_extra=t)
            return optax.apply_updates(params, updates), state

        params = {k: jnp.asarray(v) for k, v in make_params().items()}
        state = tx.init(params)
        for t in range(4):
            params, state = step(params, state, jnp.asarray(t, jnp.float64))
        return params

    with precision("float64"):
        got = run(body(inject=True))
        assert len(traces) == 1
        expected = run(body(inject=False))
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-12), got, expected)


def test_update_dtype_follows_updates():
    params = {k: jnp.asarray(v, jnp.bfloat16) for k, v in make_params().items()}
    body = optax.chain(grams(), edge_damping(), cautious(background_threshold=1.0))
    tx = optax.chain(with_reference_grads(optax.identity(), body), orthogonalize_update())
    updates, state = jax.jit(tx.update)(params, tx.init(params), params)
    assert all(u.dtype == jnp.bfloat16 for u in jax.tree.leaves(updates))
    history = find_state_field(state, "edge_history")
    assert all(h.dtype == jnp.bfloat16 for h in jax.tree.leaves(history))
