"""The CAME kernel (``jaxopt_adv.fast.came``): agreement with the JAX transform on leaves
large enough to be split into tasks and threads, parity with official CAME on a large
leaf, the compiled program, and the leaves and hosts it leaves to JAX. The torch parity
of the small layouts runs in ``tests/came/test_came.py`` for both implementations."""

from __future__ import annotations

import sys

import came_pytorch
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxopt_adv import fast
from jaxopt_adv._state import find_state
from jaxopt_adv.came.came import ScaleByCameState, came, scale_by_came
from jaxopt_adv.fast import build, selfcheck
from jaxopt_adv.grouping import ungroup_leaves
from tests.harness import run_parity
from tests.helpers.fast_paths import assert_left_to_jax, compiled, max_relative_error, step_fn
from tests.helpers.x64 import x64

# (rows, cols) split into several tasks of one matrix, many small matrices per task,
# long thin leaves both ways, and a leaf above the kernel's threading threshold
SHAPES = [(600, 700), (3, 300, 500), (2, 3, 4, 5), (70000, 3), (2, 100000), (1, 9), (9, 1)]
CAME_MODULE = sys.modules["jaxopt_adv.fast.came"]  # ``fast.came`` is the function
KWARGS = {"weight_decay": 0.1, "clip_threshold": 0.1, "b1": 0.8, "b2": 0.99, "b3": 0.999}


def run_both(shapes, dtype, steps=25, **kwargs):
    """Steps of ``fast.came`` and ``came`` from the same params and gradient stream; the
    worst relative error of params and state over all steps."""
    rng = np.random.default_rng(0)
    params = {f"x{i}": jnp.asarray(rng.standard_normal(s), dtype) for i, s in enumerate(shapes)}
    ours, theirs = fast.came(1e-2, **kwargs), came(1e-2, **kwargs)
    a = b = (params, ours.init(params))
    step_ours, step_theirs = step_fn(ours), step_fn(theirs)
    worst = 0.0
    for t in range(steps):
        scale = 10.0 ** ((t % 5) - 2)
        grads = {
            k: jnp.asarray(scale * rng.standard_normal(p.shape), dtype) for k, p in params.items()
        }
        a = step_ours(*a, grads)
        b = step_theirs(*b, grads)
        worst = max(worst, max_relative_error(a, b))
    return worst


def test_kernels_are_available():
    assert build.host_reason() is None, build.host_reason()


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_matches_the_jax_transform_float64(shape):
    with x64(True):
        assert run_both([shape], jnp.float64, **KWARGS) <= 1e-12


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_matches_the_jax_transform_float32(shape):
    assert run_both([shape], jnp.float32, **KWARGS) <= 1e-5


def test_many_leaves_of_both_dtypes_and_unfactored_leaves():
    """A tree of more leaves than one custom call takes (two calls), with vectors and
    scalars left to JAX, float32 and float64 together."""
    shapes = [(30, 20)] * 20 + [(7,), ()]
    with x64(True):
        assert run_both(shapes, jnp.float64, steps=20) <= 1e-12
        rng = np.random.default_rng(1)
        mixed = {
            "a": jnp.asarray(rng.standard_normal((50, 60)), jnp.float32),
            "b": jnp.asarray(rng.standard_normal((40, 30)), jnp.float64),
        }
        ours, theirs = fast.came(1e-2), came(1e-2)
        state = ours.init(mixed)
        got = step_fn(ours)(mixed, state, mixed)
        want = step_fn(theirs)(mixed, state, mixed)
        assert max_relative_error(got, want) <= 1e-6


def test_parity_with_official_came_on_a_large_leaf():
    """600x700 (four tasks with their own column sums) and a batch of 300x500 matrices
    against ``came_pytorch.CAME`` in float64, 20 steps."""
    rng = np.random.default_rng(2)
    shapes = {"w": (600, 700), "k": (3, 300, 500)}
    params = {k: rng.normal(size=s) for k, s in shapes.items()}
    stream = [{k: rng.normal(size=s) for k, s in shapes.items()} for _ in range(20)]
    kwargs = {"clip_threshold": 0.1, "weight_decay": 0.05}
    state_map = {"mu": "exp_avg", "v_row": "exp_avg_sq_row", "r_col": "exp_avg_res_col"}

    def official(p):
        return came_pytorch.CAME(p, lr=0.05, clip_threshold=0.1, weight_decay=0.05)

    report = run_parity(
        fast.came(0.05, **kwargs), official, state_map=state_map, params=params, stream=stream
    )
    assert report.max_error <= 1e-10


def test_one_custom_call_and_the_apply_loop_per_matrix():
    """The kernel replaces CAME's five whole-leaf loops: what is left per leaf is the
    custom call and the ``apply_updates`` loop (which also applies the learning rate)."""
    params = {"w": jnp.ones((300, 200)), "k": jnp.ones((4, 30, 20))}
    ours = compiled(fast.came(1e-3), params)
    entry = ours[ours.index("ENTRY") :]
    assert entry.count('custom_call_target="jaxopt_adv_came"') == 1
    full = [line for line in entry.splitlines() if " fusion(" in line and "f32[300,200]" in line]
    assert len(full) == 1, full
    reference = compiled(came(1e-3), params)
    reference = reference[reference.index("ENTRY") :]
    assert "jaxopt_adv_came" not in reference
    assert sum(" fusion(" in line and "f32[300,200]" in line for line in reference.splitlines()) > 1


@pytest.mark.parametrize(
    "params, kwargs",
    [
        ({"b": jnp.ones(5, jnp.float32)}, {}),  # unfactored
        ({"w": jnp.ones((4, 3), jnp.bfloat16)}, {}),  # not float32/float64
        ({"w": jnp.ones((4, 3), jnp.float32)}, {"mu_dtype": jnp.bfloat16}),  # momentum dtype
        ({"w": jnp.ones((0, 3), jnp.float32)}, {}),  # empty
        ({"w": jnp.ones((4, 3), jnp.float32)}, {"kernel": False}),
    ],
    ids=["vector", "bfloat16", "mu_dtype", "empty", "kernel_false"],
)
def test_leaves_left_to_jax(params, kwargs):
    """Leaves the kernel does not take go through the JAX transform, bit for bit."""
    ours, theirs = fast.came(1e-3, **kwargs), came(1e-3, mu_dtype=kwargs.get("mu_dtype"))
    assert_left_to_jax(ours, theirs, params, "jaxopt_adv_came")


def test_disabled_kernels_leave_every_leaf_to_jax(monkeypatch):
    monkeypatch.setattr(build, "host_reason", lambda: "disabled for the test")
    text = compiled(fast.came(1e-3), {"w": jnp.ones((40, 30))})
    assert "jaxopt_adv_came" not in text


def test_came_kernel_is_self_checked_and_a_failure_takes_the_jax_path(monkeypatch):
    params = {"w": jnp.ones((6, 4))}
    assert "jaxopt_adv_came" in compiled(fast.came(1e-2), params)
    assert selfcheck._RESULT[False][selfcheck.CAME] is None  # checked on this host
    reason = "the kernels differ from XLA on this host (a probe)"
    monkeypatch.setitem(selfcheck._RESULT[False], selfcheck.CAME, reason)
    assert CAME_MODULE._unavailable_reason() == reason
    assert "jaxopt_adv_came" not in compiled(fast.came(1e-2), params)
    grads = {"w": jnp.full((6, 4), 0.3)}
    ours, theirs = fast.came(1e-2), came(1e-2)
    got = step_fn(ours)(params, ours.init(params), grads)
    want = step_fn(theirs)(params, theirs.init(params), grads)
    jax.tree.map(np.testing.assert_array_equal, got, want)


def test_came_probes_pass_here_and_catch_a_difference():
    assert CAME_MODULE._probe_mismatches() == {selfcheck.CAME: None}
    stream = [{"w": np.ones((4, 3), np.float32), "c": np.ones((2, 3, 2), np.float32)}] * 2
    ours = fast.scale_by_came(b1=0.9)
    rtol = CAME_MODULE._PROBE_RTOL
    assert not selfcheck.steps_differ(ours, fast.scale_by_came(kernel=False), stream, rtol)
    assert selfcheck.steps_differ(ours, fast.scale_by_came(b1=0.8, kernel=False), stream, rtol)
    reference = fast.scale_by_came(kernel=False)

    def nan_update(updates, state, params=None):
        updates, state = reference.update(updates, state, params)
        return jax.tree.map(lambda u: u * np.nan, updates), state

    # NaN where the other path has a finite value is a difference
    nan_out = optax.GradientTransformation(reference.init, nan_update)
    assert selfcheck.steps_differ(ours, nan_out, stream, rtol)


def test_inject_hyperparams_and_interchangeable_state():
    """Hyperparameters injected into the state reach the kernel; the kernel's state can be
    handed to the JAX transform (and back) mid-run."""
    params = {"w": jnp.ones((64, 48))}
    rng = np.random.default_rng(3)
    grads = [{"w": jnp.asarray(rng.standard_normal((64, 48)), jnp.float32)} for _ in range(6)]
    ours = optax.inject_hyperparams(fast.came)(learning_rate=1e-2, b1=0.5, clip_threshold=0.2)
    theirs = optax.inject_hyperparams(came)(learning_rate=1e-2, b1=0.5, clip_threshold=0.2)
    a = b = (params, ours.init(params))
    for t, g in enumerate(grads):
        if t == 3:
            a[1].hyperparams["b1"] = jnp.asarray(0.9)
            b[1].hyperparams["b1"] = jnp.asarray(0.9)
        a = step_fn(ours if t % 2 == 0 else theirs)(*a, g)
        b = step_fn(theirs)(*b, g)
        assert max_relative_error(a, b) <= 1e-5
    assert jax.tree.structure(a) == jax.tree.structure(b)


def test_vmap_over_a_batch_of_optimizers():
    params = jnp.ones((3, 20, 10))
    tx = fast.scale_by_came()
    reference = scale_by_came()
    state = jax.vmap(tx.init)(params)
    grads = jnp.asarray(np.random.default_rng(4).standard_normal((3, 20, 10)), jnp.float32)
    got = jax.jit(jax.vmap(tx.update))(grads, state)
    want = jax.jit(jax.vmap(reference.update))(grads, state)
    assert max_relative_error(got, want) <= 1e-5


def test_nonfinite_gradient_element_poisons_only_its_leaf():
    params = {"w": jnp.ones((300, 400)), "v": jnp.ones((30, 40))}
    grads = jax.tree.map(lambda p: jnp.full(p.shape, 0.5), params)
    grads["w"] = grads["w"].at[7, 9].set(jnp.inf)
    tx = fast.came(1e-2)
    updates, state = jax.jit(tx.update)(grads, tx.init(params), params)
    assert bool(jnp.all(jnp.isnan(updates["w"])))
    assert bool(jnp.all(jnp.isfinite(updates["v"])))
    mu = ungroup_leaves(find_state(state, ScaleByCameState).mu, jax.tree.structure(params))
    assert bool(jnp.all(jnp.isfinite(mu["v"])))
