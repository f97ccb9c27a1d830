"""The fused CPU step is bit-identical to ``tx.update`` + ``optax.apply_updates`` under jit.

Every option combination of the eleven kernels runs 20 steps twice: on a float32 tree
(x64 off) and, with ``jax_enable_x64``, on a tree of float64 and float32 leaves (the
float32 bias corrections are then converted from float64). The trees hold leaves above
the thread pool's chunk size (a 4-D one of even size, and one of odd size: XLA emits odd
sizes above 2^15 differently), a 0-d leaf and a 1-element leaf (and, in the other trees,
small odd sizes and zero-size leaves); the gradients contain
zeros, negative zeros and subnormal numbers. Params and every state array are compared
bit for bit (``-0.0 != 0.0`` here), and the kernels must have run for the whole tree.
"""

from __future__ import annotations

import pytest

from tests.helpers.fast_paths import F32, F64, expected_reason, run_both
from tests.helpers.x64 import x64

# name: (shape, dtype with x64); without x64 every leaf is float32
TREE = {  # (the 0-d leaf only with x64, the 1-element one only without: compile time)
    "big_4d": ((4, 5, 40, 50), F32),
    "big_odd": ((40001,), F64),
    "scalar": ((), F64),
    "one": ((1, 1), None),
}
TINY = ("scalar", "one")

CASES = {
    "torch.adam": {
        "plain": {},
        "betas": {"b1": 0.5, "b2": 0.9, "eps": 1e-3},
        "amsgrad_l2_maximize": {"amsgrad": True, "weight_decay": 0.05, "maximize": True},
        "maximize_decoupled": {
            "maximize": True,
            "weight_decay": 0.1,
            "decoupled_weight_decay": True,
        },
        "schedule_l2": {"learning_rate": lambda t: 0.1 / (1 + t), "weight_decay": 0.1},
    },
    "torch.adamw": {"amsgrad": {"amsgrad": True, "weight_decay": 0.3}},
    "torch.sgd": {
        "plain": {},
        "weight_decay": {"weight_decay": 0.1},
        "zero_momentum": {"momentum": 0.0, "dampening": 0.3},  # a buffer, torch's step
        "dampening": {"momentum": 0.9, "dampening": 0.3},
        "nesterov_l2": {"momentum": 0.8, "nesterov": True, "weight_decay": 1e-2},
        "maximize": {"momentum": 0.5, "dampening": 0.1, "weight_decay": 0.1, "maximize": True},
        "schedule": {"learning_rate": lambda t: 0.1 * 0.8**t, "momentum": 0.9, "dampening": 0.2},
    },
    "torch.rmsprop": {
        "alpha_eps": {"eps": 1e-2, "alpha": 0.9},
        "zero_momentum": {"momentum": 0.0},  # a buffer, torch's step
        "centered": {"centered": True},
        "centered_momentum_l2": {"centered": True, "momentum": 0.9, "weight_decay": 0.1},
        "maximize": {"maximize": True, "momentum": 0.5},
        "half_alpha_centered": {"alpha": 0.5, "centered": True},
        "half_alpha_maximize_l2": {"alpha": 0.5, "maximize": True, "weight_decay": 0.1},
    },
    "torch.adagrad": {
        "plain": {},
        "lr_decay_eps": {"lr_decay": 0.1, "eps": 1e-3},
        "l2_initial": {"weight_decay": 0.1, "initial_accumulator_value": 0.5},
        "maximize_l2": {"maximize": True, "weight_decay": 0.05, "lr_decay": 0.01},
        "schedule": {"learning_rate": lambda t: 0.1 / (1 + t), "lr_decay": 0.05},
    },
    "torch.adamax": {
        "plain": {},
        "betas_eps": {"b1": 0.8, "b2": 0.5, "eps": 1e-3},
        "half_b1_l2": {"b1": 0.5, "weight_decay": 0.1},
        "maximize_l2": {"maximize": True, "weight_decay": 0.05},
        "zero_eps_maximize": {"eps": 0.0, "maximize": True},
        "schedule": {"learning_rate": lambda t: 0.1 / (1 + t), "b1": 0.7},
        # the bias correction's accurate form (-expm1(t log b1)), and torch's in doubles
        "accurate": {"b1": 0.999, "torch_default_dtype": None},
        "torch_float64": {"b1": 1 - 1e-8, "torch_default_dtype": "float64"},
    },
    "torch.nadam": {
        "plain": {},
        "betas_eps_decay": {"b1": 0.8, "b2": 0.5, "eps": 1e-3, "momentum_decay": 0.01},
        "half_b1_l2": {"b1": 0.5, "weight_decay": 0.1},
        "maximize": {"maximize": True},
        "maximize_l2": {"maximize": True, "weight_decay": 0.05},
        "nadamw_maximize": {
            "weight_decay": 0.1,
            "decoupled_weight_decay": True,
            "maximize": True,
        },
        "schedule": {"learning_rate": lambda t: 0.1 / (1 + t), "b1": 0.7},
        # mu_product unrounded, or rounded to float64 (torch's default float64)
        "accurate": {"torch_default_dtype": None},
        "torch_float64": {"torch_default_dtype": "float64", "momentum_decay": 0.05},
    },
    "torch.adadelta": {
        "plain": {},
        "rho_eps_l2": {"rho": 0.8, "eps": 1e-3, "weight_decay": 0.1},
        "half_rho_maximize": {"rho": 0.5, "maximize": True},
        "schedule": {"learning_rate": lambda t: 1.0 / (1 + t)},
    },
    "torch.radam": {
        # rectification from step 6 (b2 = 0.9) or 7 (0.999) on: both forms are covered
        "plain": {},
        "betas_eps": {"b1": 0.8, "b2": 0.9, "eps": 1e-3},
        "half_b1_l2_maximize": {"b1": 0.5, "weight_decay": 0.1, "maximize": True},
        "radamw_maximize": {
            "weight_decay": 0.1,
            "decoupled_weight_decay": True,
            "maximize": True,
        },
        "schedule": {"learning_rate": lambda t: 0.1 / (1 + t), "b2": 0.9},
    },
    "torch.rprop": {
        "plain": {},
        "etas_clamped": {"etas": (0.3, 1.7), "step_sizes": (0.02, 0.06)},
        "maximize_unclamped": {"maximize": True, "step_sizes": (0.0, float("inf"))},
    },
    "torch.asgd": {
        # t0 = 5: the average is the parameters until step 6, then a running mean
        "plain": {"t0": 5.0},
        "lambd_alpha": {"lambd": 0.01, "alpha": 0.5, "t0": 0.0},
        "maximize_l2": {"maximize": True, "weight_decay": 0.1, "t0": 3.0},
        "schedule_l2": {"learning_rate": lambda t: 0.1 / (1 + t), "weight_decay": 0.05},
        "accurate": {"t0": 5.0, "lambd": 0.1, "torch_default_dtype": None},
    },
    # a traced learning rate (a constant one takes the XLA path: test_sparse_adam.py); the
    # gradients' zeros and negative zeros leave their elements untouched
    "torch.sparse_adam": {
        "plain": {"learning_rate": lambda t: 0.05 * 0.9**t},
        "betas_eps": {"learning_rate": lambda t: 0.1 / (1 + t), "b1": 0.5, "b2": 0.9, "eps": 1e-3},
        "zero_betas_maximize": {
            "learning_rate": lambda t: 0.1 / (1 + t),
            "b1": 0.0,
            "b2": 0.0,
            "maximize": True,
        },
        "accurate": {
            "learning_rate": lambda t: 0.05 * 0.9**t,
            "torch_default_dtype": None,
            "b2": 1 - 1e-9,
        },
    },
}
PARAMS = [(name, case) for name, cases in CASES.items() for case in cases]


def layout(wide: bool, exclude: tuple[str, ...] = (), dtype=None) -> dict[str, tuple]:
    """``{name: (shape, dtype)}`` of the test tree: float32 only unless ``wide`` (x64);
    ``dtype`` overrides every leaf's."""
    leaves = {k: (s, d if wide else F32) for k, (s, d) in TREE.items() if k not in exclude}
    if not wide:
        leaves.pop("scalar", None)
    return {k: (s, dtype or d) for k, (s, d) in leaves.items() if dtype or d}


@pytest.mark.parametrize("wide", [False, True], ids=["float32", "float64+float32"])
@pytest.mark.parametrize("name, case", PARAMS, ids=[f"{n}-{c}" for n, c in PARAMS])
def test_bit_identical(name, case, wide):
    with x64(wide):
        explained = run_both(name, CASES[name][case], layout(wide))
    assert explained == expected_reason()


INJECTED = [
    ("torch.adam", {"weight_decay": 0.1}, False),
    ("torch.adamw", {"amsgrad": True}, True),
    ("torch.sgd", {}, False),  # momentum=None stays static: no buffer
    ("torch.sgd", {"momentum": 0.9, "dampening": 0.3}, False),
    ("torch.sgd", {"momentum": 0.8, "nesterov": True, "weight_decay": 0.1}, True),
    ("torch.rmsprop", {"centered": True}, False),  # momentum=None: no buffer
    ("torch.rmsprop", {"momentum": 0.9}, False),
    ("torch.rmsprop", {"centered": True, "momentum": 0.5, "maximize": True}, True),
    ("torch.adagrad", {"lr_decay": 0.1, "initial_accumulator_value": 0.1}, False),
    ("torch.adagrad", {"weight_decay": 0.1, "lr_decay": 0.01, "maximize": True}, True),
    ("torch.adamax", {"b1": 0.5, "eps": 1e-3}, False),
    ("torch.adamax", {"weight_decay": 0.1, "maximize": True}, True),
    ("torch.nadam", {"maximize": True, "momentum_decay": 0.01}, False),
    ("torch.nadam", {"weight_decay": 0.1, "decoupled_weight_decay": True}, True),
    ("torch.adadelta", {"rho": 0.8, "maximize": True}, False),
    ("torch.adadelta", {"weight_decay": 0.1, "eps": 1e-3}, True),
    ("torch.radam", {"b2": 0.9, "maximize": True}, False),
    ("torch.radam", {"weight_decay": 0.1, "decoupled_weight_decay": True}, True),
    ("torch.rprop", {"etas": (0.25, 2.0)}, False),
    ("torch.rprop", {"maximize": True, "step_sizes": (0.01, 0.08)}, True),
    ("torch.asgd", {"t0": 4.0}, False),
    ("torch.asgd", {"maximize": True, "t0": 2.0}, False),
    ("torch.asgd", {"lambd": 0.01, "weight_decay": 0.1, "maximize": True, "t0": 0.0}, True),
    ("torch.sparse_adam", {"b1": 0.5}, False),
    ("torch.sparse_adam", {"maximize": True, "eps": 1e-3}, True),
]


@pytest.mark.parametrize("name, kwargs, wide", INJECTED, ids=[n for n, *_ in INJECTED])
def test_bit_identical_injected(name, kwargs, wide):
    """optax.inject_hyperparams: every hyperparameter a traced scalar in the state (in
    the params' widest dtype, so the x64 runs use float64 leaves only)."""
    # XLA's code for 1-element leaves with traced RMSprop hyperparameters is not mirrored
    exclude = TINY if name == "torch.rmsprop" else ()
    leaves = layout(wide, exclude, F64 if wide else None)
    with x64(wide):
        explained = run_both(name, kwargs, leaves, inject=True)
    assert explained == expected_reason()


def test_injected_float64_hyperparameters_with_float32_leaves_take_the_xla_path():
    """Injected hyperparameters are float64 in a mixed tree; float32 leaves would then be
    updated in float64 arithmetic, which the kernels do not do."""
    with x64(True):
        explained = run_both("torch.adam", {}, layout(True), inject=True, steps=3)
    assert explained == expected_reason("the learning rate would promote the float32 arithmetic")


def test_rmsprop_injected_with_a_one_element_leaf_takes_the_xla_path():
    """... so such a tree takes the XLA path (bit-identical by construction)."""
    with x64(False):
        explained = run_both("torch.rmsprop", {"momentum": 0.9}, layout(False), inject=True)
    reason = "RMSprop with injected hyperparameters and a 1-element leaf"
    assert explained == expected_reason(reason)


@pytest.mark.parametrize("wide", [False, True], ids=["float32", "float64+float32"])
def test_asgd_maximize_without_weight_decay_takes_the_xla_path(wide):
    """XLA moves the sign of ``-eta * (-g)`` into the constants where it can, and LLVM
    then contracts its two copies of the new parameters differently; not mirrored.
    (Injected hyperparameters keep a traced weight decay: the kernel runs, see
    ``INJECTED``.)"""
    with x64(wide):
        explained = run_both("torch.asgd", {"maximize": True}, layout(wide))
    assert explained == expected_reason(
        "ASGD with maximize and no weight decay (XLA's contraction varies)"
    )


RAGGED = [
    ({"momentum": 0.9}, {"a": ((32769,), F32), "b": ((40001, 1), F32), "c": ((3, 12000), F32)}),
    ({"momentum": 0.9, "centered": True}, {"a": ((26215,), F32), "b": ((30001,), F32)}),
]


@pytest.mark.parametrize("kwargs, leaves", RAGGED, ids=["plain", "centered"])
def test_rmsprop_injected_momentum_follows_xlas_loop_split(kwargs, leaves):
    """With a traced momentum the trace's arithmetic depends on whether XLA splits the
    leaf's loop into unequal parallel tasks (one dimension, size vs. bytes per task)."""
    with x64(False):
        explained = run_both("torch.rmsprop", kwargs, leaves, inject=True)
    assert explained == expected_reason()


ADAMAX_RAGGED = {
    "a": ((32769,), F32),
    "b": ((40001, 1), F32),
    "c": ((3, 12000), F32),
    "d": ((100002,), F32),
    "e": ((1,), F32),
}


@pytest.mark.parametrize("weight_decay", [0.0, 0.1], ids=["plain", "l2"])
def test_adamax_injected_maximize_follows_xlas_loop_split(weight_decay):
    """Under maximize with traced hyperparameters, which product of the first moment LLVM
    fuses depends on whether XLA splits the leaf's loop into unequal parallel tasks."""
    kwargs = {"maximize": True, "weight_decay": weight_decay}
    with x64(False):
        explained = run_both("torch.adamax", kwargs, ADAMAX_RAGGED, inject=True)
    assert explained == expected_reason()


SHAPED = [
    # one leaf: XLA multiplies by the reciprocal bias corrections
    ("torch.adam", {}, {"w": ((40001,), F32)}, False),
    ("torch.adam", {"amsgrad": True}, {"w": ((33, 65), F64)}, True),
    ("torch.adamw", {}, {"w": ((5, 4), F32), "b": ((7,), F32), "e": ((0,), F32)}, False),
    ("torch.rmsprop", {"momentum": 0.9}, {"w": ((65537,), F32)}, False),
    ("torch.sgd", {"momentum": 0.9}, {"w": ((2, 3, 4, 5), F64), "e": ((0, 3), F64)}, True),
    ("torch.adagrad", {"lr_decay": 0.1}, {"w": ((65537,), F32), "e": ((0,), F32)}, False),
    ("torch.adagrad", {"weight_decay": 0.1}, {"w": ((33, 65), F64), "b": ((7,), F64)}, True),
    # one leaf: XLA multiplies by the reciprocal bias correction, as for Adam
    ("torch.adamax", {}, {"w": ((40001,), F32)}, False),
    ("torch.adamax", {"weight_decay": 0.1}, {"w": ((33, 65), F64)}, True),
    ("torch.adamax", {"maximize": True}, {"w": ((5, 4), F32), "e": ((0,), F32)}, False),
    # one leaf: XLA multiplies by the reciprocal bias correction, as for Adam
    ("torch.nadam", {}, {"w": ((40001,), F32), "e": ((0,), F32)}, False),
    ("torch.nadam", {"maximize": True}, {"w": ((33, 65), F64)}, True),
    ("torch.nadam", {"maximize": True}, {"s": ((), F32)}, False),
    # float32 1-element leaves with x64 on: a converted 1 - b2^t, the division form
    ("torch.nadam", {}, {"o": ((1,), F32)}, True),
    ("torch.nadam", {"maximize": True}, {"w": ((7,), F32), "s": ((), F32)}, True),
    ("torch.adadelta", {"maximize": True}, {"w": ((33, 65), F64), "e": ((0,), F64)}, True),
    ("torch.adadelta", {"weight_decay": 0.1}, {"s": ((), F32)}, False),
    # one leaf: XLA multiplies by the reciprocal bias correction, as for Adam
    ("torch.radam", {}, {"w": ((40001,), F32), "e": ((0,), F32)}, False),
    ("torch.radam", {"maximize": True, "b2": 0.9}, {"w": ((33, 65), F64)}, True),
    ("torch.radam", {"maximize": True}, {"o": ((1,), F32)}, False),
    ("torch.rprop", {"maximize": True}, {"w": ((33, 65), F64), "e": ((0,), F64)}, True),
    ("torch.rprop", {}, {"s": ((), F32)}, False),
    # of p * (1 - lambd * eta) - eta * g LLVM fuses the gradient's product in a
    # 1-element array's code, the parameter's elsewhere
    ("torch.asgd", {"t0": 2.0}, {"o": ((1,), F32), "s": ((), F32), "w": ((7,), F32)}, False),
    ("torch.asgd", {"weight_decay": 0.1}, {"o": ((1, 1), F64), "w": ((33, 65), F64)}, True),
    ("torch.asgd", {"t0": 1.0}, {"w": ((2, 3), F32), "v": ((40001,), F32)}, True),
    # XLA drops zero-size leaves: one leaf shares the bias correction here
    ("torch.adam", {"weight_decay": 0.1}, {"w": ((5, 4), F32), "e": ((0,), F32)}, False),
    # b2 = 1 - 1e-9 in float64: torch's 1 - b2**t in doubles, and the accurate form; RAdam
    # rectifies from step 4 with torch's rho_t, from step 6 with the accurate one
    ("torch.adam", {"b2": 1 - 1e-9}, {"w": ((33, 65), F64), "s": ((), F64)}, True),
    ("torch.adam", {"b2": 1 - 1e-9, "torch_default_dtype": None}, {"w": ((33, 65), F64)}, True),
    ("torch.radam", {"b2": 1 - 1e-9}, {"w": ((33, 65), F64), "s": ((), F64)}, True),
    ("torch.radam", {"b2": 1 - 1e-9, "torch_default_dtype": None}, {"w": ((33, 65), F64)}, True),
    # one leaf (odd and even sizes); 1-element and 0-d leaves; b2 = 1 - 1e-9 (only 1 - b2
    # enters the kernel)
    (
        "torch.sparse_adam",
        {"learning_rate": lambda t: 0.1 / (1 + t)},
        {"w": ((40001,), F32)},
        False,
    ),
    (
        "torch.sparse_adam",
        {"learning_rate": lambda t: 0.1 / (1 + t), "maximize": True},
        {"w": ((40000,), F32), "o": ((1,), F32), "s": ((), F32)},
        False,
    ),
    (
        "torch.sparse_adam",
        {"learning_rate": lambda t: 0.05 * 0.9**t, "b2": 1 - 1e-9},
        {"w": ((33, 65), F32), "s": ((), F64)},
        True,
    ),
]


@pytest.mark.parametrize("name, kwargs, leaves, wide", SHAPED, ids=[n for n, *_ in SHAPED])
def test_bit_identical_other_trees(name, kwargs, leaves, wide):
    with x64(wide):
        explained = run_both(name, kwargs, leaves)
    assert explained == expected_reason()


@pytest.mark.parametrize("name", ["torch.adam", "torch.nadam", "torch.radam"])
def test_beta_that_rounds_to_one_takes_the_xla_path(name):
    """b2 = 1 - 1e-9 is 1 in float32: XLA multiplies it away and LLVM then contracts the
    second moment's products differently (the kernels were 2.4e-7 off at step 2)."""
    with x64(False):
        explained = run_both(name, {"b2": 1 - 1e-9}, {"w": ((4, 5, 40, 50), F32)})
    reason = "hyperparameter b2 rounds to 1 in float32 (XLA multiplies it away)"
    assert explained == expected_reason(reason)
