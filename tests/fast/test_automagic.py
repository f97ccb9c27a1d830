"""Automagic-CameAMP's scaling kernel (``jaxopt_adv.fast.scale_by_automagic_came``) and
direction kernel (``jaxopt_adv.fast.automagic.automagic_direction``): each block against
its JAX transform on leaves large enough to be split into tasks and
threads, the whole composite with ``kernel=True`` (its loose matrices stepped by the
scaling and direction in one kernel, ``tests/fast/test_automagic_body.py``) against
``kernel=False`` every step across all four phases (both presets, fixed and random
hyperparameters, gated and every-step penalties, float64 and float32), checkpoints that
cross between the two, non-finite gradients, the self-check, and the leaves and settings
left to JAX. The torch parity of the composite with ``kernel=True`` runs in
``tests/automagic/test_automagic.py``."""

from __future__ import annotations

import importlib
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxopt_adv import fast
from jaxopt_adv.automagic import create_full_finetune_optimizer, create_lora_optimizer
from jaxopt_adv.automagic.body import automagic_direction, scale_by_automagic_came
from jaxopt_adv.automagic.spd import selective_projection_decay
from jaxopt_adv.fast import build, selfcheck
from tests.fast.common import lowered, random_options
from tests.helpers.fast_paths import max_relative_error, step_fn
from tests.helpers.quick import quick_compilation
from tests.helpers.x64 import x64

AUTOMAGIC_MODULE = sys.modules["jaxopt_adv.fast.automagic"]
BODY_MODULE = importlib.import_module("jaxopt_adv.fast.automagic_body")
TARGET = "jaxopt_adv_automagic"
BODY_TARGET = "jaxopt_adv_automagic_body"
DIRECTION_TARGET = "jaxopt_adv_automagic_direction"
SPD_TARGET = "jaxopt_adv_automagic_spd"
TOLERANCE = {jnp.float64: 1e-10, jnp.float32: 1e-5}
# LoRA factors (one cosine per leaf), a leaf above TAM's auto threshold (one per row), a
# conv kernel (factored over its last two axes, no emphasis) and a vector (JAX path)
TREE = {"down": (8, 48), "up": (48, 8), "wide": (6, 250), "conv": (3, 2, 3, 3), "bias": (7,)}
# warm-up 10: EARLY t < 5 (four torque-aware steps), LATE t < 10, STABLE t < 20, MATURE
# at t = 20: all four phases in 20 steps
FAST = {"min_lr": 1e-4, "max_lr": 0.1, "lr_bump": 1e-3, "warmup_steps": 10}


COMPOSITES = {
    # the penalties gated (frequency on steps 1, 4, 7, ..., rank on 1, 5, 9, ...)
    "lora_gated": (create_lora_optimizer, {"frequency_every": 3, "rank_every": 4}),
    # every-step penalties, hyperparameters drawn at random
    "lora_every_step_random": (
        create_lora_optimizer,
        {**random_options(1), "frequency_every": 1, "rank_every": 1},
    ),
    # the default gating (steps 1 and 11)
    "full_finetune": (create_full_finetune_optimizer, {}),
    "full_random_row_cosine": (
        create_full_finetune_optimizer,
        {**random_options(2), "tam_correlation": "row_cosine"},
    ),
}


def tree_of(rng, shapes, dtype, scale=1.0):
    return {k: jnp.asarray(scale * rng.standard_normal(s), dtype) for k, s in shapes.items()}


def grads_of(rng, shapes, dtype, t):
    """Step ``t``'s gradients: a drift plus noise, scaled over five orders of magnitude."""
    return tree_of(rng, shapes, dtype, 1e-2 * 10.0 ** ((t % 5) - 2))


def kernel_in(tx, params) -> bool:
    """Whether the composite's scaling and direction kernel is in ``tx``'s program."""
    return f"@{BODY_TARGET}(" in lowered(tx, params)


def run_composites(factory, options, dtype, steps=20):
    """``steps`` of the composite with ``kernel=True`` and ``kernel=False`` from the same
    params and gradients; the worst relative error of params, updates and state.

    Both compile with XLA:CPU's quick code generator (``tests/helpers/quick.py``): the
    composite's kernels agree with its JAX blocks to rounding, not bit for bit, so an ulp
    of the JAX side's transcendental functions is far below the tolerance; the kernels'
    self-check runs on a thread of its own, with the default code generator."""
    ours = factory(1e-2, **FAST, **options, mask_dtype=np.dtype(dtype).name, kernel=True)
    theirs = factory(1e-2, **FAST, **options, mask_dtype=np.dtype(dtype).name)
    rng = np.random.default_rng(0)
    params = tree_of(rng, TREE, dtype, 0.5)
    with quick_compilation(optimizations=True):
        assert kernel_in(ours, params) == (BODY_MODULE._unavailable_reason() is None)
        a = b = (params, ours.init(params))
        step_ours, step_theirs = step_fn(ours), step_fn(theirs)
        worst = 0.0
        for t in range(steps):
            grads = grads_of(rng, TREE, dtype, t)
            a, b = step_ours(*a, grads), step_theirs(*b, grads)
            worst = max(worst, max_relative_error(a, b))
    return worst


@pytest.mark.parametrize("name", COMPOSITES)
def test_composite_matches_kernel_false_float64(name):
    factory, options = COMPOSITES[name]
    with x64(True):
        assert run_composites(factory, options, jnp.float64) <= TOLERANCE[jnp.float64]


@pytest.mark.parametrize("name", ["lora_gated", "full_random_row_cosine"])
def test_composite_matches_kernel_false_float32(name):
    factory, options = COMPOSITES[name]
    assert run_composites(factory, options, jnp.float32) <= TOLERANCE[jnp.float32]


# (shape, options): several tasks of one matrix on the thread pool (above the kernel's
# threading threshold), many small matrices per task, long thin leaves both ways, one row
BLOCK_OPTIONS = {
    "auto": {},
    "row_cosine": {"tam_correlation": "row_cosine", **random_options(3)},
    "cosine": {"tam_correlation": "cosine", "clip_threshold": 0.1, "betas": (0.0, 0.9, 0.99)},
}


def run_blocks(shape, dtype, options, steps=20):
    ours = fast.scale_by_automagic_came(warmup_steps=10, **options)
    theirs = scale_by_automagic_came(warmup_steps=10, **options)
    rng = np.random.default_rng(0)
    tree = {"x": shape}
    a = b = (None, ours.init(tree_of(rng, tree, dtype)))
    step_ours, step_theirs = jax.jit(ours.update), jax.jit(theirs.update)
    worst = 0.0
    for t in range(steps):
        grads = grads_of(rng, tree, dtype, t)
        a, b = step_ours(grads, a[1]), step_theirs(grads, b[1])
        worst = max(worst, max_relative_error(a, b))
    return worst


@pytest.mark.parametrize(
    ("shape", "options"),
    [((800, 700), "auto"), ((3, 300, 500), "row_cosine"), ((70000, 3), "cosine")]
    + [((2, 100000), "row_cosine"), ((1, 1500), "auto")],
)
def test_block_matches_the_jax_transform(shape, options, monkeypatch):
    # the kernel used whatever the self-check's outcome, so that a wrong one fails here
    monkeypatch.setattr(selfcheck._CHECKING, "active", True, raising=False)
    with x64(True):
        assert run_blocks(shape, jnp.float64, BLOCK_OPTIONS[options]) <= 1e-10
    assert run_blocks(shape, jnp.float32, BLOCK_OPTIONS[options]) <= 1e-5


def test_a_checkpoint_resumes_with_the_other_path():
    """The same state tree (structure, shapes, dtypes): 6 steps with ``kernel=True``, 6
    with ``kernel=False`` from its state, 4 with ``kernel=True`` again match 16 with
    ``kernel=False``."""
    with x64(True):
        kwargs = {**FAST, "mask_dtype": "float64"}
        ours = create_lora_optimizer(1e-2, **kwargs, kernel=True)
        theirs = create_lora_optimizer(1e-2, **kwargs)
        rng = np.random.default_rng(0)
        params = tree_of(rng, TREE, jnp.float64, 0.5)
        shapes = jax.tree.map(lambda x: (x.shape, x.dtype), ours.init(params))
        assert shapes == jax.tree.map(lambda x: (x.shape, x.dtype), theirs.init(params))
        stream = [grads_of(rng, TREE, jnp.float64, t) for t in range(16)]
        step_ours, step_theirs = step_fn(ours), step_fn(theirs)
        a = b = (params, theirs.init(params))
        for t, grads in enumerate(stream):
            a = (step_theirs if 6 <= t < 12 else step_ours)(*a, grads)
            b = step_theirs(*b, grads)
        assert jax.tree.map(lambda x: x.dtype, a) == jax.tree.map(lambda x: x.dtype, b)
        assert max_relative_error(a, b) <= 1e-10


def test_nonfinite_gradients_land_where_the_xla_path_puts_them():
    """An Inf, a -Inf and a NaN gradient element (early phase, then later): the same
    non-finite values in the same places of every update and state leaf."""
    ours = create_lora_optimizer(1e-2, **FAST, kernel=True)
    theirs = create_lora_optimizer(1e-2, **FAST)
    rng = np.random.default_rng(0)
    params = tree_of(rng, TREE, jnp.float32, 0.5)
    a = b = (params, ours.init(params))
    step_ours, step_theirs = step_fn(ours), step_fn(theirs)
    for t, (leaf, index, value) in enumerate(
        [("down", (2, 3), np.inf), ("wide", (1, 7), -np.inf), ("up", (4, 4), np.nan)] * 2
    ):
        grads = grads_of(rng, TREE, jnp.float32, t)
        grads[leaf] = grads[leaf].at[index].set(value)
        a, b = step_ours(*a, grads), step_theirs(*b, grads)
        for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
            x, y = np.asarray(x), np.asarray(y)
            np.testing.assert_array_equal(np.isfinite(x), np.isfinite(y))
            np.testing.assert_array_equal(x[~np.isfinite(x)], y[~np.isfinite(y)])


def test_the_kernel_is_used_on_this_host():
    """The kernels build here and the self-check passes (else every test here would
    compare the JAX path with itself)."""
    assert build.host_reason() is None, build.host_reason()
    assert AUTOMAGIC_MODULE._unavailable_reason() is None
    assert BODY_MODULE._unavailable_reason() is None


def test_the_self_check_passes_and_catches_a_wrong_kernel(monkeypatch):
    # as on the self-check's thread: the probed kernel is used whatever the outcome
    monkeypatch.setattr(selfcheck._CHECKING, "active", True, raising=False)
    assert AUTOMAGIC_MODULE._probe_mismatches() == {selfcheck.AUTOMAGIC: None}
    # a kernel that misreads TAM's momentum factor must fail the probes
    real_call = AUTOMAGIC_MODULE._call

    def wrong_call(scalars, options, leaves):
        return real_call([*scalars[:10], scalars[10] * 0.99, scalars[11]], options, leaves)

    monkeypatch.setattr(AUTOMAGIC_MODULE, "_call", wrong_call)
    mismatch = AUTOMAGIC_MODULE._probe_mismatches()[selfcheck.AUTOMAGIC]
    assert mismatch is not None and "warmup_steps" in mismatch


@pytest.mark.parametrize(
    "options",
    [
        {"tam_correlation": "dim0"},
        {"factored": False},
        {"came_enabled": False},
    ],
    ids=["dim0", "unfactored", "no_came"],
)
def test_settings_left_to_jax(options):
    text = lowered(create_lora_optimizer(1e-3, **options, kernel=True), {"w": jnp.ones((8, 48))})
    assert f"@{TARGET}(" not in text and BODY_TARGET not in text


def test_leaves_left_to_jax_next_to_kernel_leaves():
    """bfloat16 and 1-D leaves take the JAX path beside a float32 matrix in the kernel."""
    rng = np.random.default_rng(0)
    params = {
        "w": jnp.asarray(rng.standard_normal((8, 48)), jnp.float32),
        "h": jnp.asarray(rng.standard_normal((8, 48)), jnp.bfloat16),
        "b": jnp.asarray(rng.standard_normal(48), jnp.float32),
    }
    ours = create_lora_optimizer(1e-2, **FAST, kernel=True)
    theirs = create_lora_optimizer(1e-2, **FAST)
    assert kernel_in(ours, params) == (BODY_MODULE._unavailable_reason() is None)
    a = b = (params, ours.init(params))
    for t in range(8):
        grads = jax.tree.map(lambda p, t=t: (0.1 + t) * jnp.cos(p), params)
        a, b = step_fn(ours)(*a, grads), step_fn(theirs)(*b, grads)
    np.testing.assert_array_equal(a[0]["h"], b[0]["h"])
    # XLA fuses the tree-wide blocks around the kernel differently: rounding
    assert max_relative_error(a, b) <= 1e-5
    assert jax.tree.structure(a[1]) == jax.tree.structure(b[1])


def test_a_failed_self_check_or_host_takes_the_jax_path(monkeypatch):
    """A self-check failure of the scaling, direction, SPD and scaling-and-direction
    kernels (or a host without the kernels) leaves every leaf to JAX (the mask kernel
    still runs: its ``avg_lr`` is summed in float64, so to rounding).

    (With the SPD kernel on, this symmetric tree differs by ~1e-5: its SPD condition
    ``sum(g p)`` is 0 up to rounding, and the kernel's float64 sum and XLA's float32 one
    give it different signs, so the decay fires on one path only.)"""
    params = {"w": jnp.linspace(-1.0, 1.0, 8 * 48).reshape(8, 48)}
    grads = {"w": jnp.cos(params["w"])}
    assert kernel_in(create_lora_optimizer(1e-2, kernel=True), params)
    assert AUTOMAGIC_MODULE._unavailable_reason() is None  # each family checked first
    assert AUTOMAGIC_MODULE._direction_unavailable_reason() is None
    assert AUTOMAGIC_MODULE._spd_unavailable_reason() is None
    reason = "the kernels differ from XLA on this host (a probe)"
    families = (selfcheck.AUTOMAGIC, selfcheck.AUTOMAGIC_DIRECTION, selfcheck.AUTOMAGIC_SPD)
    families += (selfcheck.AUTOMAGIC_BODY,)
    for family in families:
        monkeypatch.setitem(selfcheck._RESULT[False], family, reason)
    assert AUTOMAGIC_MODULE._unavailable_reason() == reason
    ours = create_lora_optimizer(1e-2, kernel=True)
    theirs = create_lora_optimizer(1e-2, kernel=False)
    text = lowered(ours, params)
    assert f"@{TARGET}(" not in text and BODY_TARGET not in text
    assert DIRECTION_TARGET not in text and SPD_TARGET not in text
    got = step_fn(ours)(params, ours.init(params), grads)
    want = step_fn(theirs)(params, theirs.init(params), grads)
    assert max_relative_error(got, want) <= 1e-5
    monkeypatch.undo()
    monkeypatch.setattr(build, "host_reason", lambda: "disabled for the test")
    text = lowered(create_lora_optimizer(1e-2, kernel=True), params)
    assert "@jaxopt_adv_" not in text


# ---------------------------------------------------------------------- direction

DIRECTION_OPTIONS = {
    "defaults": {},
    "plain": {"edge_suppression": False, "background_regularization": False},
    "strong_edges": {"edge_threshold": 0.05, "edge_penalty": 2.0},
}


def run_direction(shape, dtype, options, steps=12):
    """``steps`` of the direction kernel and of its JAX transform (warm-up 12: six early
    steps, then Cautious), the gradient a quarter of the time background-sized; the worst
    relative error of the updates and the edge history."""
    ours = AUTOMAGIC_MODULE.automagic_direction(warmup_steps=12, **options)
    theirs = automagic_direction(warmup_steps=12, **options)
    rng = np.random.default_rng(0)
    params = jnp.asarray(rng.standard_normal(shape), dtype)
    a = b = ours.init(params)
    step_ours, step_theirs = jax.jit(ours.update), jax.jit(theirs.update)
    worst = 0.0
    for t in range(steps):
        u = jnp.asarray(rng.standard_normal(shape), dtype)
        g = jnp.asarray(rng.standard_normal(shape) * 10.0 ** (-(t % 4)), dtype)
        got, a = step_ours(u, a, params, ref_grads=g)
        want, b = step_theirs(u, b, params, ref_grads=g)
        worst = max(worst, max_relative_error((got, a), (want, b)))
    return worst


@pytest.mark.parametrize(
    ("shape", "options"),
    [((700, 500), "defaults"), ((3, 300, 200), "strong_edges"), ((70000, 3), "plain")]
    + [((2, 100000), "defaults"), ((5, 1, 9), "strong_edges"), ((4, 6, 1), "defaults")],
)
def test_direction_block_matches_the_jax_transform(shape, options, monkeypatch):
    """Leaves split into tasks on the thread pool, many matrices per task, one row or one
    column per matrix; both phases, the edge damping and background halving on and off."""
    # the kernel used whatever the self-check's outcome, so that a wrong one fails here
    monkeypatch.setattr(selfcheck._CHECKING, "active", True, raising=False)
    with x64(True):
        assert run_direction(shape, jnp.float64, DIRECTION_OPTIONS[options]) <= 1e-10
    assert run_direction(shape, jnp.float32, DIRECTION_OPTIONS[options]) <= 1e-5


def test_direction_of_an_update_along_the_weights(monkeypatch):
    """An early-phase update within 1e-4 of the weights' direction: OrthoGrad's orthogonal
    norm cancels too much to be formed from the sums, and takes its own pass."""
    monkeypatch.setattr(selfcheck._CHECKING, "active", True, raising=False)
    options = {"warmup_steps": 100, **DIRECTION_OPTIONS["plain"]}
    ours = AUTOMAGIC_MODULE.automagic_direction(**options)
    theirs = automagic_direction(**options)
    rng = np.random.default_rng(0)
    with x64(True):
        w = jnp.asarray(rng.standard_normal((300, 200)))
        for _ in range(3):
            u = w * (1.0 + 1e-4 * rng.standard_normal(w.shape))
            got = jax.jit(ours.update)(u, ours.init(w), w, ref_grads=w)[0]
            want = jax.jit(theirs.update)(u, theirs.init(w), w, ref_grads=w)[0]
            assert max_relative_error(got, want) <= 1e-10


def test_the_composite_steps_its_loose_leaves_with_the_direction_and_spd_kernels():
    """``kernel=True``: one scaling-and-direction call for the loose matrices of a dtype
    (the tests' tree: four, in one call) and one SPD call for its loose leaves (five);
    none for the stacks, with ``kernel=False``, or for SPD with a ``weight_decay_mask``."""
    rng = np.random.default_rng(0)
    params = tree_of(rng, TREE, jnp.float32)
    assert BODY_MODULE._unavailable_reason() is None
    assert AUTOMAGIC_MODULE._spd_unavailable_reason() is None
    text = lowered(create_lora_optimizer(1e-2, kernel=True), params)
    assert text.count(f"@{BODY_TARGET}(") == 1
    assert text.count(f"@{SPD_TARGET}(") == 1
    text = lowered(create_lora_optimizer(1e-2), params)
    assert BODY_TARGET not in text and SPD_TARGET not in text
    mask = {k: k != "bias" for k in TREE}
    text = lowered(create_lora_optimizer(1e-2, kernel=True, weight_decay_mask=mask), params)
    assert SPD_TARGET not in text and f"@{BODY_TARGET}(" in text
    # 16 like matrices are one stack: the vmapped JAX blocks, no kernel
    stacked = {f"w{i}": jnp.ones((8, 48)) for i in range(16)}
    text = lowered(create_lora_optimizer(1e-2, kernel=True), stacked)
    assert BODY_TARGET not in text and SPD_TARGET not in text


def test_the_direction_self_check_passes_and_catches_a_wrong_kernel(monkeypatch):
    monkeypatch.setattr(selfcheck._CHECKING, "active", True, raising=False)
    family = selfcheck.AUTOMAGIC_DIRECTION
    assert AUTOMAGIC_MODULE._direction_probe_mismatches() == {family: None}
    real_call = AUTOMAGIC_MODULE._direction_call

    def wrong_call(scalars, leaves, edge, background):  # a misread edge history decay
        return real_call([scalars[0], scalars[1] * 0.99, *scalars[2:]], leaves, edge, background)

    monkeypatch.setattr(AUTOMAGIC_MODULE, "_direction_call", wrong_call)
    mismatch = AUTOMAGIC_MODULE._direction_probe_mismatches()[family]
    assert mismatch is not None and "warmup_steps" in mismatch


def test_a_failed_direction_self_check_takes_the_jax_direction(monkeypatch):
    """With the scaling-and-direction kernel off too: the scaling's kernel, the JAX
    direction."""
    params = {"w": jnp.linspace(-1.0, 1.0, 8 * 48).reshape(8, 48)}
    assert BODY_MODULE._unavailable_reason() is None  # each family checked first
    assert AUTOMAGIC_MODULE._direction_unavailable_reason() is None
    reason = "the kernels differ from XLA on this host (a probe)"
    monkeypatch.setitem(selfcheck._RESULT[False], selfcheck.AUTOMAGIC_BODY, reason)
    monkeypatch.setitem(selfcheck._RESULT[False], selfcheck.AUTOMAGIC_DIRECTION, reason)
    assert AUTOMAGIC_MODULE._direction_unavailable_reason() == reason
    text = lowered(create_lora_optimizer(1e-2, kernel=True), params)
    assert DIRECTION_TARGET not in text and f"@{TARGET}(" in text


# ------------------------------------------------------------ selective projection decay

SPD_OPTIONS = {
    "zeros": {"weight_decay": 0.3, "anchor": "zeros", "rank_aware": True},
    "init": {"weight_decay": 0.7, "anchor": "init", "active_steps": 5},
}


def run_spd(shape, dtype, options, steps=8):
    """``steps`` of the SPD kernel and of its JAX transform, the raw gradient pulling
    toward the anchor on odd steps and away on even ones (the decay fires on some steps
    only); the worst relative error of the updates, and the steps where the decay fired."""
    ours = AUTOMAGIC_MODULE.selective_projection_decay(**options)
    theirs = selective_projection_decay(**options)
    rng = np.random.default_rng(0)
    state = ours.init(jnp.asarray(rng.standard_normal(shape), dtype))
    step_ours, step_theirs = jax.jit(ours.update), jax.jit(theirs.update)
    worst, fired = 0.0, 0
    for t in range(steps):
        p = rng.standard_normal(shape)
        d = jnp.asarray(0.1 * rng.standard_normal(shape), dtype)
        g = jnp.asarray(rng.standard_normal(shape) + (-1) ** t * p, dtype)
        p = jnp.asarray(p, dtype)
        got, _ = step_ours(d, state, p, raw_grads=g)
        want, state = step_theirs(d, state, p, raw_grads=g)
        worst = max(worst, max_relative_error(got, want))
        fired += int(not np.array_equal(want, d))
    return worst, fired


@pytest.mark.parametrize(
    ("shape", "options"),
    [((700, 500), "zeros"), ((3, 300, 200), "init"), ((5, 1, 9), "init"), ((), "zeros")],
)
def test_spd_block_matches_the_jax_transform(shape, options, monkeypatch):
    """Leaves split into tasks on the thread pool, a small one and a scalar, both
    anchors; the decay fires on some steps, not on others, and stops after
    ``active_steps``."""
    monkeypatch.setattr(selfcheck._CHECKING, "active", True, raising=False)
    with x64(True):
        worst, fired = run_spd(shape, jnp.float64, SPD_OPTIONS[options])
        assert worst <= 1e-10 and 0 < fired < 8
    worst, fired = run_spd(shape, jnp.float32, SPD_OPTIONS[options])
    assert worst <= 1e-5 and 0 < fired < 8


def test_the_spd_self_check_passes_and_catches_a_wrong_kernel(monkeypatch):
    monkeypatch.setattr(selfcheck._CHECKING, "active", True, raising=False)
    family = selfcheck.AUTOMAGIC_SPD
    assert AUTOMAGIC_MODULE._spd_probe_mismatches() == {family: None}
    real_call = AUTOMAGIC_MODULE._spd_call

    def wrong_call(scalars, decays, leaves):  # a misread decay
        return real_call(scalars, decays * 1.01, leaves)

    monkeypatch.setattr(AUTOMAGIC_MODULE, "_spd_call", wrong_call)
    mismatch = AUTOMAGIC_MODULE._spd_probe_mismatches()[family]
    assert mismatch is not None and "anchor" in mismatch
