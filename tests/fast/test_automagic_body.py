"""Automagic-CameAMP's scaling and direction in one kernel
(``jaxopt_adv.fast.automagic_body.scale_and_direct``): the kernel against the two JAX
blocks on leaves split into tasks and threads, both phases, float64 and float32, random
hyperparameters; the leaves and settings it leaves to the other paths; its self-check.
The composite with ``kernel=True`` (which steps its loose matrices with it) is compared
with ``kernel=False`` in ``tests/fast/test_automagic.py``."""

from __future__ import annotations

import importlib

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxopt_adv import fast
from jaxopt_adv.automagic import create_lora_optimizer
from jaxopt_adv.automagic.body import automagic_direction, scale_by_automagic_came
from jaxopt_adv.fast import automagic as fast_automagic
from jaxopt_adv.fast import selfcheck
from jaxopt_adv.fast.automagic_body import BODY_TARGET, scale_and_direct
from tests.fast.common import lowered, random_options
from tests.helpers.fast_paths import max_relative_error
from tests.helpers.x64 import x64

BODY_MODULE = importlib.import_module("jaxopt_adv.fast.automagic_body")
SCALING_TARGET = "jaxopt_adv_automagic"
DIRECTION_TARGET = "jaxopt_adv_automagic_direction"

# (scaling options, direction options), all with warmup_steps=12: six early steps, then
# the EMA and Cautious
OPTIONS = {
    "defaults": ({}, {}),
    "row_cosine_plain": (
        {"tam_correlation": "row_cosine", **random_options(3)},
        {"edge_suppression": False, "background_regularization": False},
    ),
    "cosine_strong_edges": (
        {"tam_correlation": "cosine", "clip_threshold": 0.1, "betas": (0.0, 0.9, 0.99)},
        {"edge_threshold": 0.05, "edge_penalty": 2.0},
    ),
    "random": (random_options(4), {"edge_threshold": 0.3, "edge_penalty": 0.5}),
}


def run_body(shape, dtype, options, steps=12):
    """``steps`` of the kernel and of the two JAX blocks from the same state, the
    reference gradient unlike the scaling's input and a quarter of the time
    background-sized; the worst relative error of the updates and the state."""
    scaling, direction = ({**o, "warmup_steps": 12} for o in OPTIONS[options])
    ours = scale_and_direct(scaling, direction)
    theirs = optax.chain(scale_by_automagic_came(**scaling), automagic_direction(**direction))
    rng = np.random.default_rng(0)
    params = jnp.asarray(rng.standard_normal(shape), dtype)
    a = b = theirs.init(params)
    step_ours, step_theirs = jax.jit(ours.update), jax.jit(theirs.update)
    worst = 0.0
    for t in range(steps):
        g = jnp.asarray(rng.standard_normal(shape) * 10.0 ** ((t % 5) - 2), dtype)
        ref = jnp.asarray(rng.standard_normal(shape) * 10.0 ** (-(t % 4)), dtype)
        if t == 0:  # the kernel is in the program
            text = step_ours.lower(g, a, params, ref_grads=ref).as_text()
            assert f"@{BODY_TARGET}(" in text
        got, a = step_ours(g, a, params, ref_grads=ref)
        want, b = step_theirs(g, b, params, ref_grads=ref)
        worst = max(worst, max_relative_error((got, a), (want, b)))
    return worst


@pytest.mark.parametrize(
    ("shape", "options"),
    [((800, 700), "defaults"), ((3, 300, 500), "row_cosine_plain")]
    + [((70000, 3), "cosine_strong_edges"), ((2, 100000), "random")]
    + [((5, 1, 9), "cosine_strong_edges"), ((4, 6, 1), "defaults"), ((1, 1500), "random")],
)
def test_kernel_matches_the_jax_blocks(shape, options, monkeypatch):
    """Several tasks of one matrix on the thread pool, many small matrices per task, long
    thin leaves both ways, one row or one column per matrix; both phases."""
    # the kernel used whatever the self-check's outcome, so that a wrong one fails here
    monkeypatch.setattr(selfcheck._CHECKING, "active", True, raising=False)
    with x64(True):
        assert run_body(shape, jnp.float64, options) <= 1e-10
    assert run_body(shape, jnp.float32, options) <= 1e-5


def test_the_composite_steps_its_loose_matrices_with_one_call():
    """``kernel=True``: one call for the loose matrices of a dtype (four here), none of
    the scaling's or the direction's own kernels; a single-element matrix, a vector and
    the stacks take the JAX blocks."""
    assert BODY_MODULE._unavailable_reason() is None
    params = {
        "down": jnp.ones((8, 48)),
        "up": jnp.ones((48, 8)),
        "wide": jnp.ones((6, 250)),
        "conv": jnp.ones((3, 2, 3, 3)),
        "one": jnp.ones((1, 1)),
        "bias": jnp.ones(7),
    }
    text = lowered(create_lora_optimizer(1e-2, kernel=True), params)
    assert text.count(f"@{BODY_TARGET}(") == 1
    assert f"@{SCALING_TARGET}(" not in text and DIRECTION_TARGET not in text
    stacked = {f"w{i}": jnp.ones((8, 48)) for i in range(16)}
    assert BODY_TARGET not in lowered(create_lora_optimizer(1e-2, kernel=True), stacked)


@pytest.mark.parametrize(
    "options", [{"tam_correlation": "dim0"}, {"factored": False}, {"came_enabled": False}]
)
def test_settings_without_the_scaling_kernel_take_the_two_blocks(options):
    """Without the scaling's kernel the scaling takes JAX and the direction its kernel."""
    text = lowered(create_lora_optimizer(1e-2, **options, kernel=True), {"w": jnp.ones((8, 48))})
    assert BODY_TARGET not in text and f"@{SCALING_TARGET}(" not in text
    assert f"@{DIRECTION_TARGET}(" in text


def test_a_failed_self_check_takes_the_two_kernels(monkeypatch):
    params = {"w": jnp.ones((8, 48))}
    assert BODY_MODULE._unavailable_reason() is None  # checked on this host
    reason = "the kernels differ from XLA on this host (a probe)"
    monkeypatch.setitem(selfcheck._RESULT[False], selfcheck.AUTOMAGIC_BODY, reason)
    assert BODY_MODULE._unavailable_reason() == reason
    text = lowered(create_lora_optimizer(1e-2, kernel=True), params)
    assert BODY_TARGET not in text
    assert f"@{SCALING_TARGET}(" in text and f"@{DIRECTION_TARGET}(" in text


def test_one_warmup_for_both_blocks():
    with pytest.raises(ValueError, match="warmup_steps"):
        scale_and_direct({"warmup_steps": 10}, {"warmup_steps": 12})


def test_the_self_check_passes_and_catches_a_wrong_kernel(monkeypatch):
    monkeypatch.setattr(selfcheck._CHECKING, "active", True, raising=False)
    family = selfcheck.AUTOMAGIC_BODY
    assert BODY_MODULE._probe_mismatches() == {family: None}
    real_call = BODY_MODULE._call

    # a misread edge history decay (early phase), then a misread background factor (later)
    for index in (12, 20):

        def wrong_call(scalars, *args, index=index):
            return real_call(scalars.at[index].multiply(0.99), *args)

        monkeypatch.setattr(BODY_MODULE, "_call", wrong_call)
        mismatch = BODY_MODULE._probe_mismatches()[family]
        assert mismatch is not None and "warmup_steps" in mismatch


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.float64])
def test_later_count_of_products_near_underflow(dtype, monkeypatch):
    """Later phase: products ``m' g`` that underflow where ``U g`` does not (a row whose
    confidence factor is 1e8), subnormal reference gradient elements, and an Inf gradient
    element (NaN confidence factors): the count of ``U g > 0`` takes its own pass there,
    and agrees with the two kernels' count."""
    monkeypatch.setattr(selfcheck._CHECKING, "active", True, raising=False)
    options = {"warmup_steps": 2}
    ours = scale_and_direct(options, options)
    theirs = optax.chain(
        fast.scale_by_automagic_came(**options), fast_automagic.automagic_direction(**options)
    )
    rng = np.random.default_rng(0)
    tiny = float(jnp.finfo(dtype).tiny)
    with x64(dtype == jnp.float64):
        params = jnp.asarray(rng.standard_normal((64, 300)), dtype)
        a = b = theirs.init(params)
        for t in range(5):
            g = rng.standard_normal((64, 300))
            ref = rng.standard_normal((64, 300))
            # row 0: a tiny gradient, so eps1 sets its second moment (row factor 1e15)
            # and eps2 its residual (confidence factor 1e8): m' g underflows, U g not
            g[0] *= 1e-30 if dtype == jnp.float32 else 1e-160
            ref[0] *= 1e-29 if dtype == jnp.float32 else 1e-165
            ref[:, ::11] *= tiny * 1e-3  # subnormal (flushed to zero)
            if t == 4:
                g[3, 5] = np.inf
            g, ref = jnp.asarray(g, dtype), jnp.asarray(ref, dtype)
            got, a = jax.jit(ours.update)(g, a, params, ref_grads=ref)
            want, b = jax.jit(theirs.update)(g, b, params, ref_grads=ref)
            for x, y in zip(jax.tree.leaves((got, a)), jax.tree.leaves((want, b)), strict=True):
                x, y = np.asarray(x), np.asarray(y)
                np.testing.assert_array_equal(np.isfinite(x), np.isfinite(y))
                finite = np.isfinite(y)
                scale = max(float(np.max(np.abs(y[finite]), initial=0.0)), 1e-30)
                assert np.max(np.abs(x[finite] - y[finite]), initial=0.0) <= 1e-10 * scale
