"""Gradient correction: spec 2.3 case, parity with a torch wrapper written from the spec.

Compiled with ``quick_compilation`` (``tests/helpers/quick.py``: why that is safe here).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import torch

import jaxopt_adv
from jaxopt_adv.correction import (
    GradientCorrectionState,
    create_gradient_correction_optimizer,
    gradient_correction,
    tensor_cosine,
)
from jaxopt_adv.grouping import GroupTree, leaf_slots, ungroup_leaves
from jaxopt_adv.torch import adam, sgd
from jaxopt_adv.train import CheckpointError, restore_checkpoint, save_checkpoint
from tests.harness import (
    ParityReport,
    _log,
    absolute_error,
    gradient_stream,
    make_params,
    max_abs,
    precision,
    run_parity,
)
from tests.reference.torch_gradient_correction import GradientCorrection

pytestmark = pytest.mark.usefixtures("quick_compilation")

STATE_MAP = {"prev_grad": "prev_grad", "prev_update": "prev_update", "a": "a"}

BASES = {
    "sgd": (
        lambda: sgd(0.05, momentum=0.9),
        lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9),
    ),
    "adam": (lambda: adam(0.01), lambda p: torch.optim.Adam(p, lr=0.01)),
    # a decay inside the base is scaled by (1 + a) as well
    "adam_l2": (
        lambda: adam(0.01, weight_decay=0.1),
        lambda p: torch.optim.Adam(p, lr=0.01, weight_decay=0.1),
    ),
}
OPTIONS = {
    "both": {},
    "gcw_only": {"use_gcode": False},
    "gcode_only": {"use_gcw": False},
    "hyper": {"gcw_lr": 0.2, "gcode_alpha": 0.5, "gcw_bounds": (-0.3, 0.1)},
}
RUNS = [(b, o) for b in ("sgd", "adam") for o in OPTIONS] + [("adam_l2", "both")]


def per_leaf(state: GradientCorrectionState, params) -> GradientCorrectionState:
    """``state`` with its stacked fields (``prev_grad``, ``prev_update``, ``a``) read per
    leaf of ``params``."""
    treedef = jax.tree.structure(params)
    fields = ("prev_grad", "prev_update", "a")
    return state._replace(
        **{
            f: ungroup_leaves(getattr(state, f), treedef)
            for f in fields
            if getattr(state, f) is not None
        }
    )


def stream_with_frozen_leaf(num_steps=20):
    """The harness stream plus a leaf whose gradient is always zero (zero-norm cosines),
    and a second matrix and frozen leaf of the same shapes (their weights' cosines go
    through one vmapped trace per shape)."""
    params = make_params()
    params = {
        **params,
        "matrix2": 0.5 * params["matrix"] + 1.0,
        "frozen": np.linspace(-1.0, 1.0, 3),
        "frozen2": np.linspace(2.0, 1.0, 3),
    }
    stream = [
        {**g, "matrix2": -0.7 * g["matrix"][::-1], "frozen": np.zeros(3), "frozen2": np.zeros(3)}
        for g in gradient_stream(num_steps)
    ]
    return params, stream


def state_map(options):
    used = {"prev_grad": options.get("use_gcode", True), "a": options.get("use_gcw", True)}
    used["prev_update"] = used["a"]
    return {k: v for k, v in STATE_MAP.items() if used[k]}


@pytest.mark.parametrize("base, option", RUNS, ids=[f"{b}-{o}" for b, o in RUNS])
def test_parity_float64(base, option):
    ours, theirs = BASES[base]
    options = OPTIONS[option]
    params, stream = stream_with_frozen_leaf()
    report = run_parity(
        gradient_correction(ours(), **options),
        lambda p: GradientCorrection(p, theirs, **options),
        dtype="float64",
        state_map=state_map(options),
        params=params,
        stream=stream,
    )
    assert report.num_steps == 20


@pytest.mark.parametrize("base", ["sgd", "adam", "adam_l2"])
def test_parity_float64_with_the_base_stacked(base):
    """``elementwise_base=True``: the base steps the stacks of like leaves (its state kept
    stacked too) and gives the torch wrapper's numbers as the per-leaf base does."""
    ours, theirs = BASES[base]
    params, stream = stream_with_frozen_leaf()
    tx = gradient_correction(ours(), elementwise_base=True, gcw_lr=0.2, gcode_alpha=0.5)
    base_state = jax.eval_shape(tx.init, jax.tree.map(np.float32, params)).base_state
    is_group = lambda x: isinstance(x, GroupTree)  # noqa: E731
    assert any(is_group(x) for x in jax.tree.leaves(base_state, is_leaf=is_group))
    run_parity(
        tx,
        lambda p: GradientCorrection(p, theirs, gcw_lr=0.2, gcode_alpha=0.5),
        dtype="float64",
        state_map=STATE_MAP,
        params=params,
        stream=stream,
    )


@pytest.mark.parametrize("base", ["sgd", "adam"])
def test_parity_float32(base):
    """Parameters and the learned weight to 1e-5. torch's update is read back as
    ``p_after - p_before``, exact only to the parameters' float32 rounding, so the stored
    update itself is compared in float64 only."""
    ours, theirs = BASES[base]
    params, stream = stream_with_frozen_leaf()
    run_parity(
        gradient_correction(ours()),
        lambda p: GradientCorrection(p, theirs),
        dtype="float32",
        state_map={"prev_grad": "prev_grad", "a": "a"},
        params=params,
        stream=stream,
    )


@pytest.mark.usefixtures("default_compilation")
def test_parity_with_xlas_default_compilation():
    """This module compiles quickly (its ``pytestmark``); the parity with the torch
    reference also holds compiled with XLA's default settings, the code users run."""
    test_parity_float64("adam_l2", "both")
    test_parity_float32("adam")


def test_weights_move_and_stay_in_bounds():
    """The parity runs are not vacuous: ``a`` moves, hits a bound, and stays zero on
    the frozen leaf."""
    params, stream = stream_with_frozen_leaf()
    tx = gradient_correction(sgd(0.05, momentum=0.9), gcw_lr=0.2, gcw_bounds=(-0.3, 0.1))
    state, update = (
        tx.init({k: jnp.asarray(v, jnp.float32) for k, v in params.items()}),
        jax.jit(tx.update),
    )
    seen = []
    for g in stream:
        _, state = update({k: jnp.asarray(v, jnp.float32) for k, v in g.items()}, state)
        seen.append({k: float(v) for k, v in per_leaf(state, params).a.items()})
    values = np.array([[s[k] for k in ("matrix", "vector", "conv", "scalar")] for s in seen])
    low, high = np.float32(-0.3), np.float32(0.1)  # the bounds as float32 weights hold them
    assert values.min() >= low and values.max() <= high
    assert np.any(values == high) and np.any(values == low)
    assert len(np.unique(values)) >= 10
    assert all(s["frozen"] == 0.0 for s in seen)


# ---------------------------------------------------------------- closed loop, MLP


class TorchMLP(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.hidden = torch.nn.Linear(4, 8)
        self.out = torch.nn.Linear(8, 3)

    def forward(self, x):
        return self.out(torch.tanh(self.hidden(x)))


def mlp_loss(params, x, y):
    logits = jnp.tanh(x @ params["w1"] + params["b1"]) @ params["w2"] + params["b2"]
    return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()


@pytest.mark.parametrize("base", ["sgd", "adam"])
def test_mlp_parity_float64(base):
    """Spec 2.4: 20 steps on a tiny MLP, each framework computing its own gradients."""
    ours, theirs = BASES[base]
    rng = np.random.default_rng(0)
    batches = [(rng.normal(size=(16, 4)), rng.integers(0, 3, size=16)) for _ in range(20)]
    torch.manual_seed(0)
    with precision("float64"):
        model = TorchMLP().double()
        params = {
            "w1": jnp.asarray(model.hidden.weight.detach().numpy().T),
            "b1": jnp.asarray(model.hidden.bias.detach().numpy()),
            "w2": jnp.asarray(model.out.weight.detach().numpy().T),
            "b2": jnp.asarray(model.out.bias.detach().numpy()),
        }
        tx = gradient_correction(ours(), gcw_lr=0.1)
        state = tx.init(params)
        optimizer = GradientCorrection(list(model.parameters()), theirs, gcw_lr=0.1)

        @jax.jit
        def step(params, state, x, y):
            grads = jax.grad(mlp_loss)(params, x, y)
            updates, state = tx.update(grads, state, params)
            return optax.apply_updates(params, updates), state

        errors, scales = {}, {}
        for x, y in batches:
            params, state = step(params, state, jnp.asarray(x), jnp.asarray(y))
            optimizer.zero_grad()
            loss = torch.nn.functional.cross_entropy(model(torch.tensor(x)), torch.tensor(y))
            loss.backward()
            optimizer.step()
            pairs = {
                "w1": (params["w1"], model.hidden.weight.detach().numpy().T),
                "b1": (params["b1"], model.hidden.bias.detach().numpy()),
                "w2": (params["w2"], model.out.weight.detach().numpy().T),
                "b2": (params["b2"], model.out.bias.detach().numpy()),
                "a:w1": (
                    per_leaf(state, params).a["w1"],
                    optimizer.state[model.hidden.weight]["a"].numpy(),
                ),
            }
            for key, (got, expected) in pairs.items():
                scales[key] = max(scales.get(key, 0.0), max_abs(expected))
                error = absolute_error(got, expected) / max(scales[key], 1e-30)
                errors[key] = max(errors.get(key, 0.0), error)
    report = ParityReport(errors, len(batches))
    _log(report, "float64")  # $JAXOPT_ADV_PARITY_LOG, as run_parity does
    assert report.max_error <= 1e-10, errors
    assert float(jnp.abs(per_leaf(state, params).a["w1"])) > 1e-3  # the weight did move


# ---------------------------------------------------------------- spec case, units


def test_spec_sanity_case():
    """Spec 2.3: base sgd(0.1), beta 0.01, alpha 0.1, g0 = [0.3, -0.4], g1 = [0.25, -0.1]."""
    with precision("float64"):
        tx = gradient_correction(optax.sgd(0.1), gcw_lr=0.01, gcode_alpha=0.1)
        state = tx.init(jnp.zeros(2))
        u0, state = tx.update(jnp.array([0.3, -0.4]), state)
        np.testing.assert_allclose(u0, [-0.03, 0.04], rtol=0, atol=1e-12)
        assert float(per_leaf(state, u0).a) == 0.0
        cos = tensor_cosine(jnp.array([0.25, -0.1]), u0)
        np.testing.assert_allclose(cos, -0.85419856, rtol=0, atol=1e-8)
        u1, state = tx.update(jnp.array([0.25, -0.1]), state)
        a = per_leaf(state, u1).a
        np.testing.assert_allclose(a, 0.00854199, rtol=0, atol=1e-8)
        np.testing.assert_allclose(u1, [-0.02470928, 0.00705979], rtol=0, atol=1e-8)
        # GC-ODE's extrapolated gradient is g1 + 0.1 (g1 - g0) = [0.245, -0.07]
        np.testing.assert_allclose(u1 / (1 + a), [-0.0245, 0.007], rtol=1e-12)


def test_options_off_is_the_base_optimizer():
    tx = gradient_correction(adam(0.01), use_gcw=False, use_gcode=False)
    base = adam(0.01)
    params = {k: jnp.asarray(v, jnp.float32) for k, v in make_params().items()}
    state, base_state = tx.init(params), base.init(params)
    assert state.prev_grad is None and state.prev_update is None and state.a is None
    for g in gradient_stream(5):
        g = {k: jnp.asarray(v, jnp.float32) for k, v in g.items()}
        u, state = jax.jit(tx.update)(g, state)
        expected, base_state = jax.jit(base.update)(g, base_state)
        jax.tree.map(np.testing.assert_array_equal, u, expected)


def test_eps_floors_the_cosine():
    x, y = jnp.array([1e-4, 0.0]), jnp.array([2e-4, 0.0])
    assert float(tensor_cosine(x, y)) == pytest.approx(1.0, rel=1e-6)
    assert float(tensor_cosine(x, y, eps=1e-4)) == pytest.approx(2e-8 / 1e-4, rel=1e-5)
    tx = gradient_correction(optax.sgd(1e-2), eps=1.0)  # every cosine now ~ <g, u>
    state = tx.init(x)
    _, state = tx.update(x, state)
    _, state = tx.update(x, state)
    assert float(per_leaf(state, x).a) == pytest.approx(0.01 * 1e-2 * 1e-8, rel=1e-4)


def test_jit_matches_eager_and_compiles_once():
    tx = create_gradient_correction_optimizer(1e-2)
    params = {k: jnp.asarray(v, jnp.float32) for k, v in make_params().items()}
    traces = []

    @jax.jit
    def jitted(g, state):
        traces.append(None)
        return tx.update(g, state, params)

    eager_state = jit_state = tx.init(params)
    for g in gradient_stream(2):
        g = {k: jnp.asarray(v, jnp.float32) for k, v in g.items()}
        expected, eager_state = tx.update(g, eager_state, params)
        got, jit_state = jitted(g, jit_state)
        jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, 1e-6, 1e-9), got, expected)
    assert len(traces) == 1


def test_zero_norm_and_empty_leaves_never_give_nan():
    params = {"zero": jnp.zeros((3, 2)), "empty": jnp.zeros((0,)), "w": jnp.ones(4)}
    for base in (sgd(0.1, momentum=0.9), adam(0.1)):
        tx = gradient_correction(base)
        state = tx.init(params)
        step = jax.jit(tx.update)
        for t in range(4):
            g = {"zero": jnp.zeros((3, 2)), "empty": jnp.zeros((0,)), "w": jnp.full(4, t % 2)}
            updates, state = step(g, state, params)
            assert all(bool(jnp.all(jnp.isfinite(x))) for x in jax.tree.leaves((updates, state)))
        a = per_leaf(state, params).a
        assert float(a["zero"]) == 0.0 and float(a["empty"]) == 0.0
        np.testing.assert_array_equal(updates["zero"], 0.0)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"gcw_lr": -0.1}, "gcw_lr"),
        ({"gcode_alpha": -1.0}, "gcode_alpha"),
        ({"eps": -1e-12}, "eps"),
        ({"gcw_bounds": (0.1, 0.5)}, "gcw_bounds"),
        ({"gcw_bounds": (-1.0, 0.5)}, "gcw_bounds"),
        ({"gcw_bounds": (-0.5, -0.1)}, "gcw_bounds"),
        ({"gcw_bounds": (0.5,)}, "gcw_bounds"),
        ({"gcw_lr": float("nan")}, "gcw_lr"),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        gradient_correction(optax.sgd(0.1), **kwargs)
    with pytest.raises(ValueError, match=match):
        create_gradient_correction_optimizer(1e-3, **kwargs)


def test_elementwise_base_must_be_a_bool():
    with pytest.raises(TypeError, match="elementwise_base must be a bool"):
        gradient_correction(optax.sgd(0.1), elementwise_base="yes")


# ------------------------------------------------------- the state stacked per shape group


@pytest.mark.parametrize(
    "elementwise_base, per_leaf_lines", [(True, 4), (False, 34)], ids=["stacked", "leaf_base"]
)
def test_program_grows_with_shapes_not_leaves(elementwise_base, per_leaf_lines):
    """The wrapper's state is kept stacked per group of like leaves: around an
    elementwise base (the factory's torch.adam, whose state is then stacked too) a leaf
    more of a shape adds about 2 lines of the lowered step (its slot, its place in the
    stacks, one read-back), where the per-leaf state added about 41; with the base on
    the leaves, its own per-leaf step (about 20) and the read-backs around it remain
    (about 31)."""
    opt = gradient_correction(adam(1e-3), elementwise_base=elementwise_base)

    def lines(n):
        params = {f"w{i}": jnp.ones((16, 12)) for i in range(n)} | {"b": jnp.ones(7)}
        lowered = jax.jit(opt.update).lower(params, opt.init(params), params)
        return len(lowered.as_text().splitlines())

    two, twenty = lines(2), lines(20)
    assert (twenty - two) / 18 <= per_leaf_lines, (two, twenty)


def test_a_checkpoint_of_the_per_leaf_state_is_refused(tmp_path):
    """A checkpoint of the state as it was kept per leaf (``prev_grad``, ``prev_update``
    and ``a`` one array per leaf, and a slot per leaf) does not restore into the stacked
    state: a CheckpointError names the field."""
    params = {f"w{i}": jnp.ones((4, 3)) for i in range(3)} | {"b": jnp.ones(3)}
    opt = create_gradient_correction_optimizer(1e-2)
    stacked = opt.init(params)
    per_leaf_layout = GradientCorrectionState(
        count=jnp.zeros([], jnp.int32),
        prev_grad=optax.tree.zeros_like(params),
        prev_update=optax.tree.zeros_like(params),
        a=jax.tree.map(lambda p: jnp.zeros([], p.dtype), params),
        base_state=adam(1e-2).init(params),
        slots=leaf_slots(params),
    )
    path = save_checkpoint(tmp_path / "per_leaf", per_leaf_layout)
    with pytest.raises(CheckpointError, match="holds a different tree") as error:
        restore_checkpoint(path, stacked)
    assert "GradientCorrectionState" in str(error.value)


@pytest.mark.parametrize("bad", [jnp.nan, jnp.inf])
def test_nonfinite_gradient(bad):
    """A NaN/Inf gradient gives non-finite updates, ``prev_grad`` and ``prev_update``, and
    through ``prev_grad`` the next step's too (in the poisoned elements); ``a`` is left as
    it was (a non-finite cosine counts as 0). ``apply_if_finite`` skips the step instead,
    leaves the state untouched, and the run continues as if the step never came."""
    params = {"w": jnp.ones(3), "b": jnp.zeros(2)}
    grads = [
        {"w": jnp.array([0.3, -0.2, 0.1]) * (t + 1), "b": jnp.array([0.5, -0.5])} for t in range(3)
    ]
    poisoned = {"w": jnp.array([0.1, bad, 0.2]), "b": jnp.array([0.5, -0.5])}
    tx = create_gradient_correction_optimizer(1e-2)
    update = jax.jit(tx.update)

    state = tx.init(params)
    _, state = update(grads[0], state, params)
    _, state = update(grads[1], state, params)
    weight = per_leaf(state, params).a["w"]
    assert float(weight) != 0.0
    updates, state = update(poisoned, state, params)
    assert not bool(jnp.all(jnp.isfinite(updates["w"])))
    assert not bool(jnp.all(jnp.isfinite(per_leaf(state, params).prev_grad["w"])))
    assert not bool(jnp.all(jnp.isfinite(per_leaf(state, params).prev_update["w"])))
    assert float(per_leaf(state, params).a["w"]) == float(weight)
    updates, state = update(grads[2], state, params)
    # g + alpha (g - NaN) and Adam's moments keep the poisoned element non-finite
    np.testing.assert_array_equal(jnp.isfinite(updates["w"]), [True, False, True])
    assert float(per_leaf(state, params).a["w"]) == float(weight)
    assert bool(jnp.all(jnp.isfinite(updates["b"])))  # other leaves are unaffected

    guarded = optax.apply_if_finite(tx, max_consecutive_errors=3)
    guarded_update = jax.jit(guarded.update)
    state = guarded.init(params)
    _, state = guarded_update(grads[0], state, params)
    before = state.inner_state
    updates, state = guarded_update(poisoned, state, params)
    assert all(float(jnp.max(jnp.abs(u))) == 0.0 for u in jax.tree.leaves(updates))
    jax.tree.map(np.testing.assert_array_equal, state.inner_state, before)
    after_skip, _ = guarded_update(grads[1], state, params)

    clean = tx.init(params)
    _, clean = update(grads[0], clean, params)
    expected, _ = update(grads[1], clean, params)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6), after_skip, expected)


def test_update_dtype_follows_gradient():
    params = {"w": jnp.ones((3, 2), jnp.bfloat16), "v": jnp.ones(4, jnp.float32)}
    tx = gradient_correction(adam(1e-2))
    state = tx.init(params)
    assert per_leaf(state, params).a["w"].dtype == jnp.float32  # at least float32
    for t in range(3):
        grads = jax.tree.map(lambda p, t=t: jnp.full_like(p, 0.1 * (t + 1)), params)
        updates, state = jax.jit(tx.update)(grads, state, params)
    assert updates["w"].dtype == jnp.bfloat16 and updates["v"].dtype == jnp.float32
    assert per_leaf(state, params).prev_update["w"].dtype == jnp.bfloat16


def test_factory_is_adam_and_injectable():
    params = {k: jnp.asarray(v, jnp.float32) for k, v in make_params().items()}
    stream = [{k: jnp.asarray(v, jnp.float32) for k, v in g.items()} for g in gradient_stream(2)]
    expected = gradient_correction(adam(1e-2), gcw_lr=0.05, gcode_alpha=0.3)
    variants = [
        jaxopt_adv.create_gradient_correction_optimizer(1e-2, gcw_lr=0.05, gcode_alpha=0.3),
        optax.inject_hyperparams(create_gradient_correction_optimizer)(
            learning_rate=1e-2, gcw_lr=0.05, gcode_alpha=0.3
        ),
    ]
    ref_state = expected.init(params)
    states = [v.init(params) for v in variants]
    for g in stream:
        want, ref_state = jax.jit(expected.update)(g, ref_state, params)
        for i, v in enumerate(variants):
            got, states[i] = jax.jit(v.update)(g, states[i], params)
            jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, 1e-6, 1e-9), got, want)
    assert isinstance(states[0], GradientCorrectionState)


def test_chain_serialization_and_no_host_transfers():
    """Spec 6's generic checks: inside ``chain(clip, .)``, a flax.serialization round
    trip of the state, and jitted updates without host transfers."""
    from flax import serialization

    params = {k: jnp.asarray(v, jnp.float32) for k, v in make_params().items()}
    tx = optax.chain(optax.clip_by_global_norm(1.0), create_gradient_correction_optimizer(1e-2))
    state = tx.init(params)
    step = jax.jit(tx.update)
    grads = [{k: jnp.asarray(v, jnp.float32) for k, v in g.items()} for g in gradient_stream(3)]
    _, state = step(grads[0], state, params)
    restored = serialization.from_state_dict(
        tx.init(params), serialization.to_state_dict(jax.device_get(state))
    )
    restored = jax.device_put(restored)  # checkpoints restore to the host
    with jax.transfer_guard("disallow"):
        for g in grads[1:]:
            expected, state = step(g, state, params)
            got, restored = step(g, restored, params)
    jax.tree.map(np.testing.assert_array_equal, got, expected)
    jax.tree.map(np.testing.assert_array_equal, restored, state)
