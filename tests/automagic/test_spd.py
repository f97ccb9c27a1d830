"""SPD parity: chain(scale_by_adam, scale(-lr), SPD) vs the torch AdamSPD reference."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import torch

from jaxopt_adv.automagic.composition import with_reference_grads
from jaxopt_adv.automagic.spd import rank_aware_factor, selective_projection_decay, spd_leaf
from jaxopt_adv.torch import scale_by_adam
from tests.harness import REPEATED_SHAPES, gradient_stream, make_params, run_parity
from tests.reference.torch_spd import AdamSPD

LR, WD = 0.05, 0.3
TORCH_ANCHOR = {"init": "init", "zeros": "zeros", "current": "previous"}
CASES = {
    "init_paper": dict(anchor="init", eps=0.0),
    "init_rank_aware": dict(anchor="init", eps=1e-8, rank_aware=True),
    "zeros_paper": dict(anchor="zeros", eps=0.0),
    "zeros_active": dict(anchor="zeros", eps=1e-8, active_steps=12, rank_aware=True),
    "current": dict(anchor="current", eps=1e-8),
}


def adam_spd(**spd):
    """Adam(b1=0.9, b2=0.999, eps=1e-8) with SPD; ``spd`` are SPD's arguments."""
    body = optax.chain(
        scale_by_adam(0.9, 0.999, 1e-8), optax.scale(-LR), selective_projection_decay(WD, **spd)
    )
    return with_reference_grads(optax.identity(), body)


def torch_adam_spd(anchor, eps=0.0, rank_aware=False, active_steps=None):
    return lambda p: AdamSPD(
        p,
        lr=LR,
        weight_decay=WD,
        anchor=TORCH_ANCHOR[anchor],
        ratio_eps=eps,
        rank_aware=rank_aware,
        active_steps=active_steps,
    )


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("case", CASES)
def test_adam_spd_parity(case, dtype):
    kwargs = CASES[case]
    state_map = {"mu": "exp_avg", "nu": "exp_avg_sq"}
    if kwargs["anchor"] != "zeros":
        state_map["anchor"] = "pre"
    run_parity(
        adam_spd(**kwargs),
        torch_adam_spd(**kwargs),
        dtype=dtype,
        state_map=state_map,
        params=make_params(shapes=REPEATED_SHAPES),  # grouped per shape
        stream=gradient_stream(20, shapes=REPEATED_SHAPES),
    )


@pytest.mark.parametrize(
    "kwargs, reference",
    [
        (dict(anchor="init"), lambda p: torch.optim.Adam(p, lr=LR)),
        (dict(anchor="zeros"), lambda p: torch.optim.Adam(p, lr=LR)),
        (dict(anchor="init", rank_aware=True), torch_adam_spd("init")),
    ],
)
def test_options_change_the_trajectory(kwargs, reference):
    """SPD (and its rank-aware factor) changes the run measurably: the parity cases bite."""
    report = run_parity(adam_spd(**kwargs), reference, check=False)
    assert report.max_error > 1e-3


def test_current_anchor_is_a_no_op_after_step_one():
    """The refactored file's post-update anchor: SPD fires at t = 1 only."""
    params = {k: jnp.asarray(v) for k, v in make_params().items()}
    tx = selective_projection_decay(WD, "current")
    state = tx.init(params)
    step = jax.jit(tx.update)
    rng = np.random.default_rng(5)
    for t in range(4):
        d = {k: jnp.asarray(rng.normal(size=v.shape), jnp.float32) for k, v in params.items()}
        out, state = step(d, state, params, raw_grads=params)  # g . p > 0 : would fire
        changed = [not np.array_equal(out[k], d[k]) for k in d]
        assert any(changed) if t == 0 else not any(changed)
        params = optax.apply_updates(params, out)
        assert jax.tree.all(jax.tree.map(np.array_equal, state.anchor, params))


def test_reads_raw_gradients_not_updates():
    p = jnp.array([3.0, 4.0])
    tx = selective_projection_decay(0.5)
    fired, _ = tx.update(p / 5, tx.init(p), p, raw_grads=p)  # cond = -|p|^2 < 0
    kept, _ = tx.update(p / 5, tx.init(p), p, raw_grads=-p)  # cond > 0: no decay
    np.testing.assert_allclose(fired, [0.3, 0.4], rtol=1e-6)
    np.testing.assert_array_equal(kept, p / 5)


def test_ratio_clip_and_eps():
    p, a = jnp.array([3.0, 4.0]), jnp.zeros(2)
    # Moving toward the anchor: ratio < 0 -> clipped to 0, no decay.
    out = spd_leaf(p, -p / 5, p, a, 0.5, 0.0)
    np.testing.assert_array_equal(out, -p / 5)
    # Candidate exactly at the anchor with eps = 0: ratio 0, no NaN.
    out = spd_leaf(p, -p, p, a, 0.5, 0.0)
    np.testing.assert_array_equal(out, -p)
    # Far away: ratio close to 1 and the full decay lam * (p~ - a).
    out = spd_leaf(jnp.array([1e-3, 0.0]), jnp.array([1e3, 0.0]), jnp.ones(2), None, 0.5, 0.0)
    np.testing.assert_allclose(out, [1e3 - 0.5 * (1e3 + 1e-3 - 1e-3 * (1e3 + 1e-3) / 1e3), 0.0])
    # Inactive: the step passes through.
    np.testing.assert_array_equal(spd_leaf(p, p, p, None, 0.5, 0.0, False), p)


def test_zero_params_and_zero_grads_do_not_fire():
    tx = selective_projection_decay(0.5, "zeros")
    d = {"w": jnp.ones((3, 4)), "b": jnp.ones(4)}
    zeros = jax.tree.map(jnp.zeros_like, d)
    out, _ = tx.update(d, tx.init(zeros), zeros, raw_grads=d)  # p - a == 0
    assert jax.tree.all(jax.tree.map(np.array_equal, out, d))
    ones = jax.tree.map(jnp.ones_like, d)
    out, _ = tx.update(d, tx.init(ones), ones, raw_grads=zeros)  # g == 0
    assert jax.tree.all(jax.tree.map(np.array_equal, out, d))


def test_nan_raw_gradient_skips_decay():
    p = jnp.array([3.0, 4.0])
    tx = selective_projection_decay(0.5)
    out, _ = tx.update(p / 5, tx.init(p), p, raw_grads=jnp.array([jnp.nan, 1.0]))
    np.testing.assert_array_equal(out, p / 5)


def test_rank_aware_factor():
    for shape in [(5, 4), (12, 30), (1, 7)]:
        n = min(shape)
        want = 1 + np.mean(np.exp(-0.1 * np.arange(n)))
        assert rank_aware_factor(shape) == pytest.approx(want, rel=1e-14)
    assert rank_aware_factor((3, 2, 3, 3)) == rank_aware_factor((7,)) == rank_aware_factor(()) == 1


def test_jit_once_across_active_boundary():
    traces = []
    tx = selective_projection_decay(0.5, "init", active_steps=3, rank_aware=True)
    params = {"w": jnp.ones((4, 3)), "b": jnp.ones(3)}

    @jax.jit
    def step(d, state, p):
        traces.append(1)
        return tx.update(d, state, p, raw_grads=p)

    state = tx.init(params)
    outs = []
    for _ in range(4):
        out, state = step(jax.tree.map(lambda x: 0.1 * x, params), state, params)
        outs.append(out)
        params = optax.apply_updates(params, out)
    assert len(traces) == 1 and int(state.count) == 4
    lam = {"w": 0.5 * rank_aware_factor((4, 3)), "b": 0.5}
    for k in ("w", "b"):
        first, second, third = (float(o[k][0]) if k == "b" else float(o[k][0, 0]) for o in outs[:3])
        assert first == pytest.approx(0.1)  # t = 1: p == anchor, cond == 0
        # t = 2: p - a = 0.1, p~ - a = 0.21, ratio = 0.11 / 0.21: out = 0.11 (1 - lam)
        assert second == pytest.approx(0.11 * (1 - lam[k]), rel=1e-5)
        p2 = 1.1 + second
        assert third == pytest.approx(0.1 * p2, rel=1e-6)  # t = 3 >= active_steps: plain d


def test_needs_params_and_raw_grads():
    tx = selective_projection_decay()
    p = jnp.ones(2)
    with pytest.raises(ValueError, match="params"):
        tx.update(p, tx.init(p), None, raw_grads=p)
    with pytest.raises(ValueError, match="raw_grads"):
        tx.update(p, tx.init(p), p)
    out, _ = tx.update(p, tx.init(p), p, raw_grads=p, unknown_extra=3)  # unknown extras ignored
    assert out.shape == (2,)


def test_dtype_follows_update():
    p = {"w": jnp.ones((3, 3), jnp.bfloat16)}
    tx = selective_projection_decay(0.5, "init")
    out, state = tx.update(jax.tree.map(lambda x: x * 0.1, p), tx.init(p), p, raw_grads=p)
    assert out["w"].dtype == jnp.bfloat16 and state.anchor["w"].dtype == jnp.bfloat16


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"weight_decay": -1e-4}, "weight_decay"),
        ({"anchor": "pre"}, "anchor"),
        ({"eps": -1.0}, "eps"),
        ({"active_steps": 0}, "active_steps"),
        ({"active_steps": 2.5}, "active_steps"),
    ],
)
def test_bad_hyperparameters(kwargs, message):
    with pytest.raises(ValueError, match=message):
        selective_projection_decay(**kwargs)


def test_inject_hyperparams():
    """Injected weight_decay / eps / active_steps (arrays) give the same update."""
    p = {"w": jnp.asarray(make_params()["matrix"], jnp.float32)}
    d = jax.tree.map(lambda x: 0.3 * x, p)
    kwargs = dict(weight_decay=0.4, anchor="zeros", active_steps=3, rank_aware=True)
    injected = optax.inject_hyperparams(
        selective_projection_decay, static_args=("anchor", "rank_aware")
    )(**kwargs)
    plain = selective_projection_decay(**kwargs)
    a, _ = jax.jit(injected.update)(d, injected.init(p), p, raw_grads=p)
    b, _ = plain.update(d, plain.init(p), p, raw_grads=p)
    np.testing.assert_allclose(a["w"], b["w"], rtol=1e-6)
    assert float(jnp.abs(b["w"] - d["w"]).max()) > 1e-3
