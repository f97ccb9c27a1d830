"""CAME: parity with came_pytorch.CAME and pytorch_optimizer.CAME, the spec's first-step
values, O(rows + cols) state, argument checks, the non-finite-gradient behaviour and
zero-size leaves (every CAME-family optimizer of the registry)."""

from __future__ import annotations

import importlib

import came_pytorch
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import pytorch_optimizer

from jaxopt_adv import fast
from jaxopt_adv._state import find_state
from jaxopt_adv.automagic import automagic_stats
from jaxopt_adv.came.came import ScaleByCameState, came, scale_by_came
from jaxopt_adv.grouping import GroupTree, ungroup_leaves
from jaxopt_adv.registry import get_optimizer
from jaxopt_adv.train import CheckpointError, restore_checkpoint, save_checkpoint
from tests.cases import CASES_BY_NAME
from tests.harness import drifting_stream, precision, run_parity, sine_steps

LR = 0.05
# leaves CAME factors (over the last two axes) and leaves it keeps elementwise; the
# references store different state keys for the two, so each layout is its own run
LAYOUTS = {
    "factored": {"matrix": (5, 4), "conv": (3, 2, 3, 3)},
    "unfactored": {"vector": (7,), "scalar": ()},
    # leaves of one shape go through one vmapped trace (jaxopt_adv.grouping)
    "repeated": {"matrix": (5, 4), "m2": (5, 4), "m3": (5, 4), "t1": (4, 5), "t2": (4, 5)},
}
STATE_MAPS = {
    "factored": {
        "mu": "exp_avg",
        "v_row": "exp_avg_sq_row",
        "v_col": "exp_avg_sq_col",
        "r_row": "exp_avg_res_row",
        "r_col": "exp_avg_res_col",
    },
    "unfactored": {"mu": "exp_avg", "v": "exp_avg_sq"},
}
STATE_MAPS["repeated"] = STATE_MAPS["factored"]
CONFIGS = {
    "defaults": {},  # no weight decay, clip_threshold 1
    # no momentum: m = u exactly, so the instability is exactly eps2 (its rounding error
    # would dominate it)
    "b1_zero": {"b1": 0.0},
    "clip_0.1_decay_betas": {
        "clip_threshold": 0.1,
        "weight_decay": 0.05,
        "b1": 0.8,
        "b2": 0.99,
        "b3": 0.999,
        "eps2": 1e-10,
    },
}


# the JAX transform and the fast path's (its matrices scaled by the C++ kernel)
IMPLEMENTATIONS = {"jax": came, "kernel": fast.came}


def params_and_stream(layout: str, num_steps: int = 20, seed: int = 0):
    """Starting params and a gradient stream (persistent drift + noise, per-step scale;
    every fourth step an all-zero first row, so a factored row statistic only decays)."""
    shapes = LAYOUTS[layout]
    rng = np.random.default_rng(seed)
    params = {k: rng.normal(size=s) for k, s in shapes.items()}
    stream = drifting_stream(rng, num_steps, shapes)
    return params, stream


def official(kwargs, lr=LR):
    """``came_pytorch.CAME`` with our keyword arguments."""
    return lambda p: came_pytorch.CAME(
        p,
        lr=lr,
        betas=(kwargs.get("b1", 0.9), kwargs.get("b2", 0.999), kwargs.get("b3", 0.9999)),
        eps=(kwargs.get("eps1", 1e-30), kwargs.get("eps2", 1e-16)),
        clip_threshold=kwargs.get("clip_threshold", 1.0),
        weight_decay=kwargs.get("weight_decay", 0.0),
    )


def library(kwargs, lr=LR, **options):
    """``pytorch_optimizer.CAME`` (its settings equal to official CAME unless overridden)."""
    return lambda p: pytorch_optimizer.CAME(
        p,
        lr=lr,
        betas=(kwargs.get("b1", 0.9), kwargs.get("b2", 0.999), kwargs.get("b3", 0.9999)),
        eps1=kwargs.get("eps1", 1e-30),
        eps2=kwargs.get("eps2", 1e-16),
        clip_threshold=kwargs.get("clip_threshold", 1.0),
        weight_decay=kwargs.get("weight_decay", 0.0),
        **{"weight_decouple": True, "fixed_decay": False, "ams_bound": False, **options},
    )


def parity(ours, reference, layout, dtype="float64", **kwargs):
    params, stream = params_and_stream(layout)
    return run_parity(
        ours,
        reference,
        dtype=dtype,
        state_map=STATE_MAPS[layout],
        params=params,
        stream=stream,
        **kwargs,
    )


def came_state(state, params) -> ScaleByCameState:
    """The CAME statistics of ``state`` per leaf of ``params`` (they are kept stacked per
    group of like leaves)."""
    found = find_state(state, ScaleByCameState)
    treedef = jax.tree.structure(params)
    return jax.tree.map(
        lambda field: ungroup_leaves(field, treedef) if isinstance(field, GroupTree) else field,
        found,
        is_leaf=lambda x: isinstance(x, GroupTree),
    )


# ------------------------------------------------------------------------------- parity


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("config", CONFIGS)
@pytest.mark.parametrize("reference", ["came_pytorch", "pytorch_optimizer"])
@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
def test_parity(implementation, reference, config, layout, dtype):
    kwargs = CONFIGS[config]
    factory = official if reference == "came_pytorch" else library
    parity(IMPLEMENTATIONS[implementation](LR, **kwargs), factory(kwargs), layout, dtype)


@pytest.mark.usefixtures("default_compilation")
@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
def test_parity_with_xlas_default_compilation(implementation, dtype):
    """The package compiles quickly (``conftest.py``); the parity with the official
    implementation also holds compiled with XLA's default settings, the code users run."""
    kwargs = CONFIGS["clip_0.1_decay_betas"]
    parity(IMPLEMENTATIONS[implementation](LR, **kwargs), official(kwargs), "factored", dtype)


def test_parity_pytorch_optimizer_single_tensor_path():
    """pytorch_optimizer runs its foreach path on CPU by default; its per-tensor loop
    (``foreach=False``, lerp for the momentum) gives the same numbers."""
    kwargs = CONFIGS["clip_0.1_decay_betas"]
    parity(came(LR, **kwargs), library(kwargs, foreach=False), "factored")


def test_parity_without_momentum_with_injected_b1():
    """b1 = 0 arriving traced (inject_hyperparams): the same exact-zero residual, f32.
    The other hyperparameters stay static: injected, b3 = 0.9999 is a float32 whose
    1 - b3 is 1.7e-4 off torch's (a Python float)."""
    static = ("b2", "b3", "eps1", "eps2", "clip_threshold", "weight_decay")
    ours = optax.inject_hyperparams(came, static_args=static)(learning_rate=LR, b1=0.0)
    parity(ours, official({"b1": 0.0}), "factored", "float32")


@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
def test_parity_with_schedule(implementation):
    """The decay is scaled by the scheduled lr; torch gets ``param_groups[0]['lr']``."""
    schedule = lambda t: 0.1 / (1 + t)  # noqa: E731
    kwargs = {"weight_decay": 0.1}
    ours = IMPLEMENTATIONS[implementation](schedule, **kwargs)
    parity(ours, official(kwargs, lr=0.1), "factored", schedule=schedule)


@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
def test_weight_decay_mask(implementation):
    """Only the leaves the mask selects are decayed."""
    came = IMPLEMENTATIONS[implementation]
    params = {"w": jnp.ones((3, 2)), "b": jnp.ones(2)}
    grads = {"w": jnp.full((3, 2), 0.5), "b": jnp.full(2, -0.5)}
    masked = came(LR, weight_decay=0.1, weight_decay_mask={"w": True, "b": False})

    def first_update(tx):
        return jax.jit(tx.update)(grads, tx.init(params), params)[0]

    got = first_update(masked)
    decayed = first_update(came(LR, weight_decay=0.1))
    plain = first_update(came(LR))
    np.testing.assert_array_equal(got["w"], decayed["w"])
    np.testing.assert_array_equal(got["b"], plain["b"])
    assert not np.allclose(decayed["w"], plain["w"])


def test_mu_dtype():
    params = {"w": jnp.ones((4, 3), jnp.float32), "b": jnp.ones(3, jnp.bfloat16)}
    tx = came(LR, mu_dtype=jnp.bfloat16)
    state = tx.init(params)
    grads = jax.tree.map(lambda p: jnp.full(p.shape, 0.3, p.dtype), params)
    updates, state = jax.jit(tx.update)(grads, state, params)
    stats = came_state(state, params)
    assert {x.dtype for x in jax.tree.leaves(stats.mu)} == {jnp.dtype(jnp.bfloat16)}
    # the statistics stay float32 (a bf16 EMA with 1 - b2 = 1e-3 would stall)
    for field in ("v_row", "v_col", "v", "r_row", "r_col"):
        assert {x.dtype for x in jax.tree.leaves(getattr(stats, field))} == {jnp.dtype(jnp.float32)}
    assert updates["w"].dtype == jnp.float32 and updates["b"].dtype == jnp.bfloat16


# -------------------------- pytorch_optimizer.CAME options that official CAME does not have


def test_pytorch_optimizer_coupled_decay_differs():
    """``weight_decouple=False`` adds wd * p to the gradient before CAME: not official
    CAME, but the chain ``add_decayed_weights -> scale_by_came -> lr`` reproduces it."""
    kwargs = {"weight_decay": 0.1}
    reference = library(kwargs, weight_decouple=False)
    report = parity(came(LR, **kwargs), reference, "factored", check=False)
    assert report.max_error > 1e-3
    coupled = optax.chain(
        optax.add_decayed_weights(0.1), scale_by_came(), optax.scale_by_learning_rate(LR)
    )
    parity(coupled, reference, "factored")


def test_pytorch_optimizer_fixed_decay_differs():
    """``fixed_decay=True`` decays by ``p * (1 - wd)``, without the learning rate."""
    kwargs = {"weight_decay": 0.1}
    reference = library(kwargs, fixed_decay=True)
    report = parity(came(LR, **kwargs), reference, "factored", check=False)
    assert report.max_error > 1e-3
    fixed = optax.chain(
        scale_by_came(), optax.scale_by_learning_rate(LR), optax.add_decayed_weights(-0.1)
    )
    parity(fixed, reference, "factored")


def test_pytorch_optimizer_ams_bound_differs():
    """``ams_bound=True`` (a running max of the second moment) is not official CAME."""
    report = parity(came(LR), library({}, ams_bound=True), "factored", check=False)
    assert report.max_error > 1e-3


# --------------------------------------------------------------- spec 9.1 first-step values


def test_first_step_values():
    with precision("float64"):
        w = jnp.array([[0.5, -0.2, 0.1], [0.3, 0.4, -0.6]])
        g = jnp.array([[0.10, -0.20, 0.05], [-0.30, 0.02, 0.40]])
        b = jnp.array([0.1, -0.2, 0.3])
        g_b = jnp.array([0.01, 0.5, -2.0])
        lr = 1e-3
        tx = came(lr)
        update = jax.jit(tx.update)
        params = {"w": w, "b": b}
        grads = {"w": g, "b": g_b}
        state = tx.init(params)
        updates, state = update(grads, state, params)
        s = came_state(state, params)
        np.testing.assert_allclose(s.v_row["w"], [1.75e-05, 8.346667e-05], rtol=1e-6)
        np.testing.assert_allclose(s.v_col["w"], [5.0e-05, 2.02e-05, 8.125e-05], rtol=1e-6)
        u = s.mu["w"] / 0.1  # m = (1 - b1) u at step 1
        expected_u = [[0.631888, -1.988288, 0.247847], [-0.868008, 0.091042, 0.907895]]
        np.testing.assert_allclose(u, expected_u, atol=1e-6)
        np.testing.assert_allclose(jnp.sqrt(jnp.mean(u * u)), 1.0, atol=1e-12)  # clipped
        expected = [[7.624213, -12.940831, 3.411587], [-17.472025, 0.988528, 20.848434]]
        np.testing.assert_allclose(-updates["w"] / lr, expected, atol=1e-6)
        params = optax.apply_updates(params, updates)
        np.testing.assert_allclose(
            params["w"],
            [[0.492376, -0.187059, 0.096588], [0.317472, 0.399011, -0.620848]],
            atol=1e-6,
        )
        # 1-D: no factoring, no confidence; u = +-31.62 is clipped to +-1, update = m
        np.testing.assert_allclose(-updates["b"] / lr, [0.1, 0.1, -0.1], atol=1e-12)
        np.testing.assert_allclose(params["b"], [0.0999, -0.2001, 0.3001], atol=1e-12)
        updates, state = update(grads, state, params)
        step2 = [[10.768, -18.276, 4.818], [-24.676, 1.396, 29.444]]  # given to 3 decimals
        np.testing.assert_allclose(-updates["w"] / lr, step2, atol=5e-4)


# ------------------------------------------------------------------------------- memory


def state_bytes(tree) -> int:
    return sum(int(np.prod(x.shape)) * jnp.dtype(x.dtype).itemsize for x in jax.tree.leaves(tree))


def test_state_is_linear_in_rows_plus_cols():
    """mu (4 B per float32 element) plus four row/column vectors: O(rows + cols)."""
    rows, cols, n = 4096, 1024, 1000
    params = {
        "w": jax.ShapeDtypeStruct((rows, cols), jnp.float32),
        "conv": jax.ShapeDtypeStruct((8, 64, 3, 5), jnp.float32),
        "b": jax.ShapeDtypeStruct((n,), jnp.float32),
    }
    state = came_state(jax.eval_shape(came(1e-3).init, params), params)
    assert state_bytes(state.mu) == 4 * (rows * cols + 8 * 64 * 3 * 5 + n)
    factored_stats = 2 * 4 * (rows + cols) + 2 * 4 * (8 * 64 * 3 + 8 * 64 * 5)
    assert state_bytes((state.v_row, state.v_col, state.r_row, state.r_col)) == factored_stats
    assert state_bytes(state.v) == 4 * n  # only the 1-D leaf keeps an elementwise moment
    for field in ("v_row", "v_col", "r_row", "r_col"):
        assert getattr(state, field)["b"].shape == (0,)  # zero-size placeholders
    assert state.v["w"].shape == state.v["conv"].shape == (0,)
    total = state_bytes(state)
    adam = state_bytes(jax.eval_shape(optax.adam(1e-3).init, params))
    assert total == 4 + 4 * (rows * cols + 8 * 64 * 15 + n) + factored_stats + 4 * n
    # the matrix: 4 B per element plus 8 B per row and per column, half of Adam's 8
    matrix = state_bytes([getattr(state, f)["w"] for f in ScaleByCameState._fields[1:]])
    assert matrix / (rows * cols) == 4 + 8 * (rows + cols) / (rows * cols) < 4.01
    assert total < 0.51 * adam


def test_stacked_state_takes_the_bytes_of_the_per_leaf_state():
    """Like leaves share one buffer per field; the bytes are the per-leaf state's plus
    one int32 position per stacked leaf (GroupedState.slots)."""
    params = {f"w{i}": jax.ShapeDtypeStruct((8, 64), jnp.float32) for i in range(5)}
    params["b"] = jax.ShapeDtypeStruct((64,), jnp.float32)
    state = jax.eval_shape(came(1e-3).init, params)
    stacked = find_state(state, ScaleByCameState)
    assert stacked.mu.stacks[0].shape == (5, 8, 64) and stacked.v_row.stacks[0].shape == (5, 8)
    per_leaf = 4 * 5 * (8 * 64 + 2 * (8 + 64)) + 4 * 2 * 64  # w: mu + 4 factors; b: mu + v
    assert state_bytes(state) == 4 + per_leaf + 4 * 5


# ------------------------------------------------------- the state stacked per shape group


@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
def test_program_grows_with_shapes_not_leaves(implementation):
    """The statistics are kept stacked per group of like leaves
    (jaxopt_adv.grouping.with_grouped_leaves): a leaf more of a shape adds its slot, its
    gradient's place in the stack, one read-back and its lr scaling, about 5 lines of
    the lowered step; stacking the gradients and reading the update and six statistics
    back per leaf (the per-leaf state) added about 18."""
    opt = IMPLEMENTATIONS[implementation](1e-3)

    def lines(n):
        params = {f"w{i}": jnp.ones((16, 12)) for i in range(n)} | {"b": jnp.ones(7)}
        lowered = jax.jit(opt.update).lower(params, opt.init(params), params)
        return len(lowered.as_text().splitlines())

    two, twenty = lines(2), lines(20)
    assert (twenty - two) / 18 <= 7, (two, twenty)


@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
def test_a_checkpoint_of_the_per_leaf_state_is_refused(implementation, tmp_path, monkeypatch):
    """A checkpoint of the statistics kept per leaf (the scaling without its grouping
    wrapper) does not restore into the stacked state: a CheckpointError names the new
    layout."""
    params = {f"w{i}": jnp.ones((4, 3)) for i in range(3)} | {"b": jnp.ones(3)}
    stacked = IMPLEMENTATIONS[implementation](LR).init(params)
    for module in ("jaxopt_adv.came.came", "jaxopt_adv.fast.came"):
        monkeypatch.setattr(importlib.import_module(module), "with_grouped_leaves", lambda tx: tx)
    per_leaf = IMPLEMENTATIONS[implementation](LR).init(params)
    assert find_state(per_leaf, ScaleByCameState).mu["w1"].shape == (4, 3)
    path = save_checkpoint(tmp_path / "per_leaf", per_leaf)
    with pytest.raises(CheckpointError, match="holds a different tree") as error:
        restore_checkpoint(path, stacked)
    assert "GroupedState.inner" in str(error.value)


# ------------------------------------------------------------------ arguments, jit, NaNs


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"learning_rate": -1e-3}, "Invalid learning rate"),
        ({"b1": 1.0}, "Invalid beta parameter at index 0"),
        ({"b2": -0.1}, "Invalid beta parameter at index 1"),
        ({"b3": 1.0}, "Invalid beta parameter at index 2"),
        ({"eps1": -1e-30}, "Invalid eps1 value"),
        ({"eps2": float("nan")}, "Invalid eps2 value"),
        ({"clip_threshold": 0.0}, "Invalid clip_threshold value"),
        ({"clip_threshold": -1.0}, "clip_threshold must be in"),
        ({"weight_decay": -0.1}, "Invalid weight_decay value"),
    ],
)
def test_bad_hyperparameters(kwargs, message):
    kwargs = {"learning_rate": 1e-3, **kwargs}
    with pytest.raises(ValueError, match=message):
        came(**kwargs)
    kwargs.pop("learning_rate"), kwargs.pop("weight_decay", None)
    if kwargs:
        with pytest.raises(ValueError, match=message):
            scale_by_came(**kwargs)


@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
def test_jit_compiles_once(implementation):
    tx = IMPLEMENTATIONS[implementation](optax.linear_schedule(1e-2, 1e-3, 10), weight_decay=1e-2)
    params = {"w": jnp.ones((6, 5)), "b": jnp.ones(5), "s": jnp.ones(())}
    traces = []
    _, state = sine_steps(tx, params, traces)
    assert len(traces) == 1
    assert int(find_state(state, ScaleByCameState).count) == 4


@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
def test_nonfinite_gradient_poisons_the_leaf_unless_skipped(implementation):
    """One NaN element makes the whole factored leaf's update NaN (the mean of the row
    statistic feeds every element) and stays in its statistics, so later finite steps are
    NaN too; other leaves are unaffected. apply_if_finite skips the step instead."""
    params = {"w": jnp.ones((4, 3)), "b": jnp.ones(3)}
    grads = {"w": jnp.full((4, 3), 0.5).at[1, 2].set(jnp.nan), "b": jnp.full(3, 0.5)}
    tx = IMPLEMENTATIONS[implementation](1e-2)
    update = jax.jit(tx.update)
    updates, state = update(grads, tx.init(params), params)
    assert bool(jnp.all(jnp.isnan(updates["w"])))
    stats = came_state(state, params)
    assert bool(jnp.isnan(stats.v_row["w"][1])) and bool(jnp.isnan(stats.v_col["w"][2]))
    assert bool(jnp.all(jnp.isfinite(updates["b"])))
    finite = jax.tree.map(jnp.ones_like, grads)
    updates, _ = update(finite, state, params)
    assert bool(jnp.all(jnp.isnan(updates["w"]))) and bool(jnp.all(jnp.isfinite(updates["b"])))

    guarded = optax.apply_if_finite(tx, max_consecutive_errors=2)
    state = guarded.init(params)
    before = state.inner_state
    updates, state = jax.jit(guarded.update)(grads, state, params)
    assert all(float(jnp.max(jnp.abs(u))) == 0 for u in jax.tree.leaves(updates))
    jax.tree.map(np.testing.assert_array_equal, state.inner_state, before)


# ------------------------------------------------------------------- zero-size leaves

CAME_FAMILY = ("came", "fast.came", "automagic_came_amp")


@pytest.mark.parametrize("shape", [(0,), (0, 5), (5, 0), (2, 0, 3)])
@pytest.mark.parametrize("name", CAME_FAMILY)
def test_zero_size_leaf_leaves_no_nan(name, shape):
    """An empty leaf has no row / column means (0 / 0): its statistics stay as they were,
    nothing NaN is computed (jax_debug_nans), and the other leaves step as without it."""
    case = CASES_BY_NAME[name]
    tx = get_optimizer(name)(**case.kwargs)
    extra = {"ref_grads": None} if name == "automagic_came_amp" else {}

    @jax.jit
    def step(params, state, grads):
        args = {k: grads for k in extra}
        updates, state = tx.update(grads, state, params, **args)
        return optax.apply_updates(params, updates), state

    def run(params):
        state = tx.init(params)
        for t in range(6):  # Automagic (warmup_steps=4): early and late phases
            grads = {k: jnp.full(p.shape, 0.5 - 0.2 * t) + jnp.sin(p) for k, p in params.items()}
            params, state = step(params, state, grads)
        return params, state

    w = jnp.arange(12.0).reshape(3, 4) / 10
    with jax.debug_nans(True):
        params, state = run({"w": w, "z": jnp.zeros(shape)})
    for leaf in jax.tree.leaves(state):
        assert not bool(jnp.any(jnp.isnan(leaf)))
    assert params["z"].shape == shape
    np.testing.assert_allclose(params["w"], run({"w": w})[0]["w"], rtol=1e-6)
    if name == "automagic_came_amp":
        assert bool(jnp.isfinite(automagic_stats(state, case.kwargs["config"])["mean_lr"]))
