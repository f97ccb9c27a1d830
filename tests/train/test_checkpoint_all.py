"""Every registered optimizer's state through orbax (driven by tests/cases.py).

After 3 jitted steps, params + optimizer state are saved and restored into an abstract
target (``jax.eval_shape(tx.init, params)``) and into a concrete one: bit-exact leaves,
same dtypes, and 2 more steps from the restored state equal 2 more from the original
(through the same compiled step: the restored state also has the original avals).
Restoring into another configuration of the same optimizer, or another optimizer, raises
``CheckpointError`` naming what differs.

Every test here runs under the ``quick_compilation`` fixture (XLA's optimisations mostly
off): a checkpoint is compared bit for bit with the state it saved, and a resumed run with
the original run through the same compiled step, which optimisation does not change.
"""

from __future__ import annotations

import dataclasses
import inspect

import jax
import jax.numpy as jnp
import optax
import pytest

from jaxopt_adv import get_optimizer
from jaxopt_adv import torch as torch_exact
from jaxopt_adv.train import CheckpointError, restore_checkpoint, save_checkpoint
from tests.cases import CASES, CASES_BY_NAME
from tests.harness import named_tuples
from tests.helpers.bit_exact import assert_bit_exact

pytestmark = pytest.mark.usefixtures("quick_compilation")

# the keys tests/cases.py's muP infshapes cover
SHAPES = {"matrix": (4, 3), "vector": (3,), "conv": (2, 2, 3, 3), "scalar": ()}


def make_tree(case, seed: int, scale: float = 1.0) -> dict[str, jax.Array]:
    """A random tree of ``SHAPES``, as ``case``'s optimizer takes it (matrices for Muon)."""
    keys = jax.random.split(jax.random.key(seed), len(SHAPES))
    return case.params(
        {
            k: scale * jax.random.normal(key, s, jnp.float32)
            for key, (k, s) in zip(keys, SHAPES.items(), strict=True)
        }
    )


def build(case, **overrides) -> optax.GradientTransformation:
    return get_optimizer(case.name)(**{**case.kwargs, **overrides})


def _automagic(**changes):
    return {
        "config": dataclasses.replace(
            CASES_BY_NAME["automagic_came_amp"].kwargs["config"], **changes
        )
    }


# For each optimizer, configurations whose state differs from its case's, with a text the
# error must contain (the field, block or leaf that differs). Only static options change a
# state (a hyperparameter's value never does, see test_restores_into_injected_hyperparams):
# adding a stateless block (maximize) shifts the chain's indices; flags that add or remove
# a state field name it.
STATE_CHANGING = {
    # no option changes muP Adam's or AdamW's state
    "mu_adam": [],
    "mu_adamw": [],
    "mu_sgd": [({"momentum": None}, "SgdMomentumState.trace")],
    "fer": [
        ({"base_optimizer": lambda lr: torch_exact.sgd(lr, momentum=0.9)}, "SgdMomentumState"),
        ({"num_samples": 5}, "FERState.memory) is float32(4, 3), the target expects float32(5, 3)"),
    ],
    "sigprop": [({"base": "sgd"}, "SgdMomentumState")],
    "gradient_correction": [
        ({"use_gcw": False}, "GradientCorrectionState.prev_update"),
        ({"use_gcode": False}, "GradientCorrectionState.prev_grad"),
    ],
    "automagic_came_amp": [
        (_automagic(factored=False), "AutomagicCameState.v_row"),
        (
            _automagic(full_finetune=True),
            "only in the target: GroupedState.inner [1] [4] SelectiveProjectionDecayState.anchor",
        ),
        (
            _automagic(mask_dtype="bfloat16"),
            "AutomagicLrMaskState.lr_mask ['loose'] ['conv']) is float32",
        ),
    ],
    "tam": [
        ({"fixed_decay": True}, "ScaleByTamState"),
        ({"mu_dtype": jnp.bfloat16}, "ScaleByTamState.mu ['conv']) is float32"),
    ],
    "adatam": [
        ({"decoupled_weight_decay": True}, "ScaleByAdaTamState"),
        ({"mu_dtype": jnp.bfloat16}, "the target expects bfloat16"),
    ],
    "came": [({"mu_dtype": jnp.bfloat16}, "ScaleByCameState.mu ['loose'] ['conv']) is float32")],
    "fast.came": [
        ({"mu_dtype": jnp.bfloat16}, "ScaleByCameState.mu ['loose'] ['conv']) is float32")
    ],
    "fast.tam": [
        ({"fixed_decay": True}, "ScaleByTamState"),
        ({"mu_dtype": jnp.bfloat16}, "ScaleByTamState.mu ['conv']) is float32"),
    ],
    "fast.adatam": [
        ({"decoupled_weight_decay": True}, "ScaleByAdaTamState"),
        ({"mu_dtype": jnp.bfloat16}, "the target expects bfloat16"),
    ],
    "torch.sgd": [
        ({"momentum": None}, "only in the checkpoint: [1] SgdMomentumState.count"),
        ({"accumulator_dtype": jnp.bfloat16}, "the target expects bfloat16"),
    ],
    "torch.adam": [({"amsgrad": False}, "only in the checkpoint: [1] ScaleByAdamState.nu_max")],
    "torch.adamw": [({"amsgrad": True}, "only in the target: [0] ScaleByAdamState.nu_max")],
    "torch.adamax": [({"maximize": True}, "ScaleByAdamState")],
    "torch.nadam": [
        ({"decoupled_weight_decay": False}, "ScaleByNadamState.mu_product"),
        ({"mu_dtype": jnp.bfloat16}, "ScaleByNadamState.mu ['conv']) is float32"),
    ],
    "torch.radam": [
        ({"mu_dtype": jnp.bfloat16}, "ScaleByRadamState.mu ['conv']) is float32"),
        ({"maximize": True}, "ScaleByRadamState"),
    ],
    "torch.rmsprop": [
        ({"centered": False}, "only in the target: [1] ScaleByRmsState.nu"),
        ({"momentum": None}, "only in the checkpoint: [2] TraceState.trace"),
    ],
    "torch.adadelta": [({"maximize": True}, "ScaleByAdaDeltaState.e_g")],
    "torch.asgd": [({"maximize": True}, "AsgdState.ax")],
    # no option changes these states (count + sum; previous grads + step sizes), so a
    # checkpoint restores into any configuration, as test_restores_across_learning_rates checks
    "torch.adafactor": [({"maximize": True}, "[1] ScaleByAdafactorState.row_var ['matrix']")],
    "torch.sparse_adam": [({"maximize": True}, "[1] ScaleBySparseAdamState.mu ['matrix']")],
    "torch.adagrad": [],
    "torch.rprop": [],
    # the history's length sets the curvature pairs' shapes
    "torch.lbfgs": [({"history_size": 4}, "LbfgsState.old_dirs) is float32(3, 52)")],
    # no option changes Muon's state (count + momentum buffer)
    "torch.muon": [],
}

ids = [case.name for case in CASES]
cases = pytest.mark.parametrize("case", CASES, ids=ids)
variants = [
    pytest.param(case, overrides, text, id=f"{case.name}-{i}")
    for case in CASES
    for i, (overrides, text) in enumerate(STATE_CHANGING.get(case.name, []))
]


@cases
def test_round_trip_and_resume_are_bit_exact(tmp_path, case):
    tx = build(case)
    traces = []

    @jax.jit
    def step(params, state, grads):
        traces.append(None)
        updates, state = tx.update(grads, state, params, **case.extra_args)
        return optax.apply_updates(params, updates), state

    params = make_tree(case, 0)
    state = tx.init(params)
    for t in range(3):
        params, state = step(params, state, make_tree(case, 100 + t, scale=(3.0, 0.5, 1.0)[t]))
    saved = {"params": params, "opt_state": state}
    path = save_checkpoint(tmp_path / "ck", saved)

    abstract = {
        "params": jax.eval_shape(lambda p: p, params),
        "opt_state": jax.eval_shape(tx.init, params),
    }
    fresh = make_tree(case, 1)
    concrete = {"params": fresh, "opt_state": tx.init(fresh)}
    restored = [restore_checkpoint(path, target) for target in (abstract, concrete)]
    for tree in restored:
        assert_bit_exact(tree, saved)

    def resume(params, state):
        for t in range(2):
            params, state = step(params, state, make_tree(case, 200 + t))
        return params, state

    expected = resume(params, state)
    for tree in restored:
        assert_bit_exact(resume(tree["params"], tree["opt_state"]), expected)
    assert len(traces) == 1  # the restored state has the original avals (weak types too)


def test_every_optimizer_has_state_changing_configurations():
    """A new registered optimizer must list its state-changing options above."""
    assert sorted(STATE_CHANGING) == sorted(ids)


def changed(x):
    """Another value of the same dtype (not the init values a wrong restore would give)."""
    if jnp.issubdtype(x.dtype, jax.dtypes.prng_key):
        return jax.random.split(x, 1)[0] if x.ndim == 0 else x
    return ~x if x.dtype == jnp.bool_ else x + jnp.ones((), x.dtype)


@pytest.fixture(scope="module")
def saved_states(tmp_path_factory):
    """case -> (state, its checkpoint): each case's init state + 1, saved once per module."""
    directory = tmp_path_factory.mktemp("states")
    saved = {}

    def get(case):
        if case.name not in saved:
            state = jax.tree.map(changed, build(case).init(make_tree(case, 0)))
            saved[case.name] = state, save_checkpoint(directory / case.name, state)
        return saved[case.name]

    return get


@pytest.mark.parametrize(("case", "overrides", "text"), variants)
def test_other_configuration_is_refused_naming_the_difference(saved_states, case, overrides, text):
    _, path = saved_states(case)
    other = jax.eval_shape(build(case, **overrides).init, make_tree(case, 0))
    with pytest.raises(CheckpointError) as error:
        restore_checkpoint(path, other)
    assert text in str(error.value), str(error.value)


def state_classes(tree) -> set[str]:
    """Names of the NamedTuple classes in a state tree."""
    return {type(node).__name__ for node in named_tuples(tree)}


def avals(tree):
    return jax.tree.structure(tree), [(x.shape, x.dtype) for x in jax.tree.leaves(tree)]


@cases
def test_other_optimizer_is_refused_naming_the_difference(saved_states, case):
    state, path = saved_states(case)
    mine = jax.eval_shape(lambda: state)
    # the next case in the table whose state differs (muP Adam and AdamW share theirs)
    start = ids.index(case.name)
    for other_case in CASES[start + 1 :] + CASES[:start]:
        other = jax.eval_shape(build(other_case).init, make_tree(other_case, 0))
        if avals(other) != avals(mine):
            break
    with pytest.raises(CheckpointError, match="different tree|the target expects") as error:
        restore_checkpoint(path, other)
    message = str(error.value)
    differing = state_classes(mine) ^ state_classes(other)
    if differing:
        assert any(name in message for name in differing), (differing, message)
    else:
        assert "only in the" in message or "the target expects" in message, message


@cases
def test_restores_into_injected_hyperparams(saved_states, case):
    """The plain optimizer's checkpoint restores into its optax.inject_hyperparams version
    (a run that switched to a schedule), and into the same optimizer with every momentum
    and weight decay at 0: a hyperparameter's value never changes the state."""
    state, path = saved_states(case)
    factory = get_optimizer(case.name)
    injected = optax.inject_hyperparams(factory, static_args=case.static_args)(**case.kwargs)
    target = jax.eval_shape(injected.init, make_tree(case, 0)).inner_state
    assert_bit_exact(restore_checkpoint(path, target), state)
    zeros = {
        k: 0.0 for k in ("momentum", "weight_decay") if k in inspect.signature(factory).parameters
    }
    assert_bit_exact(restore_checkpoint(path, build(case, **zeros).init(make_tree(case, 0))), state)


@cases
def test_restores_across_learning_rates(saved_states, case):
    """A configuration with the same state (another learning rate) restores the values."""
    state, path = saved_states(case)
    other = build(case, learning_rate=case.kwargs["learning_rate"] / 2).init(make_tree(case, 0))
    assert_bit_exact(restore_checkpoint(path, other), state)
