"""torch.nn.utils.clip_grad_norm_ / clip_grad_value_ parity for jaxopt_adv.torch.clip."""

import functools
import logging
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import torch

import jaxopt_adv
from jaxopt_adv.torch.clip import ClipGradNormState, clip_grad_norm, clip_grad_value, global_norm
from tests.harness import gradient_stream, make_params, precision, run_parity, torch_betas

NORM_TYPES = [1.0, 2.0, 3.5, math.inf]
# max_norm relative to the total norm: clipped, not clipped, and within 5e-7 either side.
REGIMES = {
    "above": lambda n: n / 3,
    "below": lambda n: 2 * n,
    "just_below_norm": lambda n: n + 5e-7,  # total = max - 5e-7: torch still scales
    "just_above_norm": lambda n: n - 5e-7,  # total = max + 5e-7
}
TOLERANCE = {"float64": 1e-12, "float32": 1e-6}


def grads_np(step: int = 0) -> dict[str, np.ndarray]:
    """Several leaves (matrix, vector, conv kernel, scalar) from the parity harness."""
    return gradient_stream(step + 1)[step]


def torch_clip(grads: dict, dtype: str, **kwargs) -> tuple[dict, float]:
    """torch's in-place clipping of ``.grad``; returns the clipped grads and the total."""
    tensors = {k: torch.zeros(v.shape, dtype=getattr(torch, dtype)) for k, v in grads.items()}
    for k, t in tensors.items():
        t.grad = torch.tensor(grads[k], dtype=getattr(torch, dtype))
    total = torch.nn.utils.clip_grad_norm_(list(tensors.values()), **kwargs)
    return {k: t.grad.numpy() for k, t in tensors.items()}, float(total)


def torch_total_norm(grads: dict, norm_type: float) -> float:
    """float64 total norm as torch computes it (to place max_norm around it)."""
    return float(
        torch.nn.utils.get_total_norm([torch.tensor(v) for v in grads.values()], norm_type)
    )


def ours_clip(tx, grads: dict, dtype: str, *, jit: bool = True):
    g = {k: jnp.asarray(v, dtype) for k, v in grads.items()}
    state = tx.init(g)
    update = jax.jit(tx.update) if jit else tx.update
    updates, state = update(g, state)
    return {k: np.asarray(v) for k, v in updates.items()}, state


def rel_error(ours: dict, ref: dict) -> float:
    scale = max(np.max(np.abs(v)) for v in ref.values())
    return max(np.max(np.abs(ours[k] - ref[k])) for k in ref) / scale


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("regime", REGIMES)
@pytest.mark.parametrize("norm_type", NORM_TYPES)
def test_clip_grad_norm_matches_torch(norm_type, regime, dtype):
    grads = grads_np()
    # Total norm ~2.5 whatever the norm type, so 5e-7 is a few float32 ulps.
    grads = {k: v * (2.5 / torch_total_norm(grads, norm_type)) for k, v in grads.items()}
    max_norm = REGIMES[regime](torch_total_norm(grads, norm_type))
    with precision(dtype):
        expected, total = torch_clip(grads, dtype, max_norm=max_norm, norm_type=norm_type)
        ours, state = ours_clip(clip_grad_norm(max_norm, norm_type), grads, dtype, jit=False)
        assert state.total_norm.dtype == jnp.dtype(dtype)
    assert rel_error(ours, expected) <= TOLERANCE[dtype]
    assert abs(float(state.total_norm) - total) <= TOLERANCE[dtype] * total
    for k in grads:
        assert ours[k].dtype == np.dtype(dtype)
    coef = max_norm / (total + 1e-6)
    if regime == "below":
        assert coef > 1  # not clipped: returned as is
        np.testing.assert_array_equal(ours["vector"], grads["vector"].astype(dtype))
    if regime == "just_below_norm" and dtype == "float64":
        assert total < max_norm and coef < 1  # torch scales although total < max_norm
        assert not np.array_equal(ours["vector"], grads["vector"])


@pytest.mark.parametrize("regime", ["just_below_norm", "just_above_norm", "above"])
def test_optax_clip_by_global_norm_gap(regime):
    """optax has no +1e-6 and a strict branch: ~1e-7 relative off, 0 for ours."""
    grads = grads_np()
    grads = {k: v * (2.5 / torch_total_norm(grads, 2.0)) for k, v in grads.items()}
    max_norm = REGIMES[regime](torch_total_norm(grads, 2.0))
    with precision("float64"):
        expected, _ = torch_clip(grads, "float64", max_norm=max_norm)
        ours, _ = ours_clip(clip_grad_norm(max_norm), grads, "float64")
        optax_out, _ = ours_clip(optax.clip_by_global_norm(max_norm), grads, "float64")
    assert rel_error(ours, expected) <= 1e-15
    gap = rel_error(optax_out, expected)  # ~1e-6 / 2.5 relative
    assert 1e-7 < gap < 1e-6, gap
    if regime == "just_below_norm":  # optax leaves them alone, torch scales them
        np.testing.assert_array_equal(optax_out["matrix"], grads["matrix"])
        assert not np.array_equal(expected["matrix"], grads["matrix"])


@pytest.mark.parametrize("norm_type", [2.0, 3.5, math.inf])
def test_traced_hyperparameters_match_torch(norm_type):
    """Through inject_hyperparams both max_norm and norm_type arrive as arrays."""
    grads = grads_np(1)
    with precision("float64"):
        expected, total = torch_clip(grads, "float64", max_norm=0.7, norm_type=norm_type)
        tx = optax.inject_hyperparams(clip_grad_norm)(max_norm=0.7, norm_type=norm_type)
        ours, state = ours_clip(tx, grads, "float64")
    assert rel_error(ours, expected) <= 1e-12
    assert abs(float(state.inner_state.total_norm) - total) <= 1e-12 * total


@pytest.mark.parametrize("norm_type", [2.0, math.inf])
def test_nonfinite_gradients_behave_as_in_torch(norm_type):
    """NaN anywhere -> all NaN; inf -> 0 for finite entries, NaN for the inf one."""
    base = grads_np()
    for bad in (np.nan, np.inf, -np.inf):
        grads = {k: v.copy() for k, v in base.items()}
        grads["vector"][2] = bad
        with precision("float64"):
            expected, total = torch_clip(grads, "float64", max_norm=1.0, norm_type=norm_type)
            ours, state = ours_clip(clip_grad_norm(1.0, norm_type), grads, "float64", jit=False)
        for k in grads:
            np.testing.assert_array_equal(ours[k], expected[k])
        np.testing.assert_array_equal(float(state.total_norm), total)
        if np.isnan(bad):
            assert all(np.isnan(v).all() for v in ours.values())
        else:
            assert np.isnan(ours["vector"][2]) and np.isinf(float(state.total_norm))
            assert np.all(ours["matrix"] == 0) and np.count_nonzero(ours["vector"][[0, 1]]) == 0


def test_error_if_nonfinite_raises_eagerly_and_under_jit(caplog):
    grads = grads_np()
    grads["matrix"][1, 1] = np.inf
    with pytest.raises(RuntimeError, match="non-finite"):  # torch raises for the same input
        torch_clip(grads, "float64", max_norm=1.0, error_if_nonfinite=True)
    tx = clip_grad_norm(1.0, error_if_nonfinite=True)
    with precision("float64"):
        with pytest.raises(RuntimeError, match="not finite, so they cannot be clipped"):
            ours_clip(tx, grads, "float64", jit=False)
        # Under jit a host callback raises; the jitted call fails with JaxRuntimeError.
        with caplog.at_level(logging.CRITICAL), pytest.raises(RuntimeError) as info:
            out, _ = ours_clip(tx, grads, "float64", jit=True)
            jax.block_until_ready(out)
        assert isinstance(info.value, jax.errors.JaxRuntimeError)
        assert "not finite, so they cannot be clipped" in str(info.value)
        # Finite gradients pass in both modes and equal the flag-less result.
        fine = grads_np()
        reference, _ = ours_clip(clip_grad_norm(1.0), fine, "float64")
        for jit in (False, True):
            out, _ = ours_clip(tx, fine, "float64", jit=jit)
            for k in fine:
                np.testing.assert_array_equal(out[k], reference[k])


def test_error_if_nonfinite_under_vmap_and_scan(caplog):
    tx = clip_grad_norm(1.0, error_if_nonfinite=True)
    batch = jnp.stack([jnp.ones(3), jnp.array([1.0, jnp.nan, 0.0])])
    state = tx.init(jnp.ones(3))
    vmapped = jax.jit(jax.vmap(tx.update, in_axes=(0, None)))
    out, _ = vmapped(batch[:1], state)
    np.testing.assert_allclose(out[0], np.ones(3) / (math.sqrt(3) + 1e-6), rtol=1e-6)
    with caplog.at_level(logging.CRITICAL), pytest.raises(RuntimeError, match="not finite"):
        jax.block_until_ready(vmapped(batch, state))

    def body(state, g):
        return tx.update(g, state)[1], None

    with caplog.at_level(logging.CRITICAL), pytest.raises(RuntimeError, match="not finite"):
        jax.block_until_ready(jax.jit(lambda s: jax.lax.scan(body, s, batch))(state))


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("clip_value", [0.0, 0.3, 1.5])
def test_clip_grad_value_matches_torch(clip_value, dtype):
    grads = grads_np()
    grads["vector"][0] = np.nan
    with precision(dtype):
        tensors = [torch.zeros(v.shape, dtype=getattr(torch, dtype)) for v in grads.values()]
        for t, v in zip(tensors, grads.values(), strict=True):
            t.grad = torch.tensor(v, dtype=getattr(torch, dtype))
        torch.nn.utils.clip_grad_value_(tensors, clip_value)
        ours, _ = ours_clip(clip_grad_value(clip_value), grads, dtype, jit=False)
    for t, k in zip(tensors, grads, strict=True):
        np.testing.assert_array_equal(ours[k], t.grad.numpy())
        assert ours[k].dtype == np.dtype(dtype)
    assert np.isnan(ours["vector"][0])
    assert np.max(np.abs(np.nan_to_num(ours["matrix"]))) <= clip_value


def clipping_optimizer(torch_cls, clip, **kwargs):
    """A torch optimizer whose ``step`` first clips ``.grad`` (the usual training loop)."""

    def factory(params):
        optimizer = torch_cls(params, **kwargs)
        step = optimizer.step

        @functools.wraps(step)
        def clip_then_step(*args, **kw):
            clip(params)
            return step(*args, **kw)

        optimizer.step = clip_then_step
        return optimizer

    return factory


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("norm_type", [2.0, math.inf])
def test_clip_then_adam_matches_torch(norm_type, dtype):
    kwargs = {"weight_decay": 0.1}
    ours = optax.chain(clip_grad_norm(1.0, norm_type), jaxopt_adv.torch.adam(0.05, **kwargs))
    clip = functools.partial(torch.nn.utils.clip_grad_norm_, max_norm=1.0, norm_type=norm_type)
    run_parity(
        ours,
        clipping_optimizer(torch.optim.Adam, clip, lr=0.05, **torch_betas(kwargs)),
        dtype=dtype,
        num_steps=20,
        state_map={"mu": "exp_avg", "nu": "exp_avg_sq"},
    )


def test_clip_value_then_sgd_matches_torch():
    ours = optax.chain(clip_grad_value(0.5), jaxopt_adv.torch.sgd(0.05, momentum=0.9))
    clip = functools.partial(torch.nn.utils.clip_grad_value_, clip_value=0.5)
    run_parity(
        ours,
        clipping_optimizer(torch.optim.SGD, clip, lr=0.05, momentum=0.9),
        state_map={"trace": "momentum_buffer"},
    )


def test_clipping_is_active_in_the_adam_run():
    """The composition test means something: some steps clip, some do not."""
    totals = [torch_total_norm(g, 2.0) for g in gradient_stream(20)]
    assert min(totals) < 1.0 < max(totals)


def test_state_and_dtypes():
    tx = clip_grad_norm(1.0)
    params = {"w": jnp.ones((2, 3), jnp.bfloat16), "b": jnp.ones(3, jnp.bfloat16)}
    state = tx.init(params)
    assert isinstance(state, ClipGradNormState) and state.total_norm.dtype == jnp.float32
    updates, new_state = jax.jit(tx.update)(params, state, params, unknown_extra=1)
    assert all(u.dtype == jnp.bfloat16 for u in jax.tree.leaves(updates))
    assert new_state.total_norm.dtype == jnp.float32 and new_state.total_norm.shape == ()
    np.testing.assert_allclose(float(new_state.total_norm), 3.0, rtol=1e-6)
    # An empty tree: norm 0 (torch returns 0 for no gradients), nothing to scale.
    empty_updates, empty_state = tx.update({}, tx.init({}))
    assert empty_updates == {} and float(empty_state.total_norm) == 0.0
    assert float(global_norm({})) == 0.0
    assert jax.eval_shape(tx.init, params).total_norm.dtype == jnp.float32


def test_total_norm_matches_make_params_leaves():
    """global_norm on the harness params equals torch's get_total_norm for each p."""
    params = make_params()
    with precision("float64"):
        for p in NORM_TYPES + [0.5]:
            ours = float(global_norm({k: jnp.asarray(v) for k, v in params.items()}, p))
            assert abs(ours - torch_total_norm(params, p)) <= 1e-13 * ours


@pytest.mark.parametrize(
    "factory, kwargs, message",
    [
        (clip_grad_norm, {"max_norm": -1.0}, "Invalid max_norm value"),
        (clip_grad_norm, {"max_norm": float("nan")}, "Invalid max_norm value"),
        (clip_grad_norm, {"max_norm": 1.0, "norm_type": 0.0}, "Invalid norm_type value"),
        (clip_grad_norm, {"max_norm": 1.0, "norm_type": -2.0}, "Invalid norm_type value"),
        (clip_grad_norm, {"max_norm": 1.0, "norm_type": float("nan")}, "Invalid norm_type"),
        (clip_grad_value, {"clip_value": -0.1}, "Invalid clip_value value"),
    ],
)
def test_bad_hyperparameters(factory, kwargs, message):
    with pytest.raises(ValueError, match=message):
        factory(**kwargs)
