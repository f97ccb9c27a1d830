"""Randomly drawn hyperparameters: the fused step stays bit-identical to the XLA path.

Each optimizer gets ``DRAWS`` draws of :func:`jaxopt_adv.fast.probes.random_hyperparameters`
(each numeric hyperparameter a value XLA and LLVM may simplify -- 0, 1, 1/2, a bound of
its range -- half the time, a random one from its range otherwise; each option on or
off), given as Python numbers or injected through ``optax.inject_hyperparams``, on
float32 leaves or (x64) float64 leaves: one 257 x 129 leaf, alone or with a leaf of 7
elements, of 1 element or 0-d. Every step's params and state are compared bit for bit
with ``tx.update`` + ``optax.apply_updates`` under jit, and the kernels must have run
unless the draw is one of the configurations the fast path documents as taking the XLA
path (``ROUTED``). ``JAXOPT_ADV_FAST_DRAW_SEED`` changes the draws, and
``JAXOPT_ADV_FAST_DRAWS`` their number (a longer sweep).
"""

from __future__ import annotations

import os

import numpy as np
import pytest

from jaxopt_adv.fast import SUPPORTED, probes, selfcheck
from jaxopt_adv.fast.plans import CONSTANT_LEARNING_RATE
from tests.helpers.fast_paths import F32, F64, expected_reason, run_both
from tests.helpers.x64 import x64

DRAWS = int(os.environ.get("JAXOPT_ADV_FAST_DRAWS", "5"))
SEED = int(os.environ.get("JAXOPT_ADV_FAST_DRAW_SEED", "2026"))
# the configurations the fast path leaves to XLA (see jaxopt_adv/fast/plans.py)
ROUTED = (
    "eps 0 (XLA computes an approximate rsqrt)",
    "momentum 1 (XLA folds the multiplication away)",
    "ASGD with maximize and no weight decay (XLA's contraction varies)",
    "decoupled weight decay 1 (XLA multiplies it away)",
    "eps 0 (XLA drops the addition and rewrites the division)",
    "ASGD with alpha 0 or lambd 0 (XLA folds the step size)",
    "NAdamW with injected hyperparameters, maximize and a 1-element leaf",
    "RMSprop with injected hyperparameters and a 1-element leaf",
    "Adamax with weight decay 1 and a 1-element leaf",
    CONSTANT_LEARNING_RATE,
)
PARAMS = [(name, draw) for name in SUPPORTED for draw in range(DRAWS)]


def draw_case(name: str, draw: int) -> tuple[dict, bool, bool, dict]:
    """``(hyperparameters, injected, x64, leaves)`` of one draw."""
    rng = np.random.default_rng([SEED, list(SUPPORTED).index(name), draw])
    hyperparams = probes.random_hyperparameters(name, rng)
    inject, wide = (bool(rng.random() < 0.5) for _ in range(2))
    dtype = F64 if wide else F32
    leaves = {"w": ((257, 129), dtype)}
    second = rng.integers(4)
    if second:
        leaves["b"] = ([(7,), (1,), ()][second - 1], dtype)
    return hyperparams, inject, wide, leaves


@pytest.mark.parametrize("name, draw", PARAMS, ids=[f"{n}-{d}" for n, d in PARAMS])
def test_random_hyperparameters_bit_identical(name, draw):
    hyperparams, inject, wide, leaves = draw_case(name, draw)
    with x64(wide):
        explained = run_both(name, hyperparams, leaves, inject=inject, steps=6, seed=draw)
    if explained not in ROUTED:
        assert explained == expected_reason(), (hyperparams, inject, wide)


EPS_0 = "eps 0 (XLA computes an approximate rsqrt)"
# Constants XLA's code generation simplifies (x * 1 -> x, x * -1 -> -x, x + 0 -> x), which
# changes which products LLVM contracts: each is mirrored, or takes the XLA path (reason).
FOLDED = [
    ("torch.adadelta", {"learning_rate": 1.0}, None),  # torch's default
    ("torch.rmsprop", {"learning_rate": 1.0}, None),
    ("torch.rmsprop", {"learning_rate": 1.0, "centered": True, "maximize": True}, None),
    ("torch.rmsprop", {"momentum": 1.0}, None),
    ("torch.radam", {"learning_rate": 1.0, "b2": 0.9}, None),
    ("torch.radam", {"learning_rate": 1.0, "b1": 0.5}, None),
    (
        "torch.radam",
        {"weight_decay": 1.0, "decoupled_weight_decay": True, "b2": 0.9},
        "decoupled weight decay 1 (XLA multiplies it away)",
    ),
    ("torch.nadam", {"eps": 0.0}, EPS_0),
    ("torch.radam", {"eps": 0.0, "b2": 0.9}, EPS_0),
    ("torch.adamax", {"weight_decay": 1.0, "maximize": True}, None),
    ("torch.adamax", {"weight_decay": 1.0}, None),
    ("torch.adam", {"weight_decay": 1.0}, None),
    ("torch.adam", {"eps": 1.0}, None),
    (
        "torch.adam",
        {"amsgrad": True, "eps": 0.0, "maximize": True},
        "eps 0 (XLA drops the addition and rewrites the division)",
    ),
    (
        "torch.asgd",
        {"lambd": 0.0, "t0": 2.0},
        "ASGD with alpha 0 or lambd 0 (XLA folds the step size)",
    ),
    (
        "torch.asgd",
        {"alpha": 0.0, "t0": 2.0},
        "ASGD with alpha 0 or lambd 0 (XLA folds the step size)",
    ),
    ("torch.rmsprop", {"centered": True, "maximize": True}, None),
]


@pytest.mark.parametrize("wide", [False, True], ids=["float32", "float64"])
@pytest.mark.parametrize(
    "name, hyperparams, reason", FOLDED, ids=[f"{n}-{'-'.join(k)}" for n, k, _ in FOLDED]
)
def test_simplified_constants_bit_identical(name, hyperparams, reason, wide):
    """One 257 x 129 leaf, 8 steps (RAdam rectifies from step 6 with b2 = 0.9): the
    kernels differed from XLA on these (up to half the elements after 3-4 steps)."""
    leaves = {"w": ((257, 129), F64 if wide else F32)}
    with x64(wide):
        explained = run_both(name, hyperparams, leaves, steps=8)
    assert explained == expected_reason(reason)


def test_the_self_check_draws_one_configuration_per_optimizer():
    """Besides its fixed probes, the self-check runs one configuration per optimizer from
    random_hyperparameters, in the family that gates that optimizer's kernel."""
    table = probes.probe_table(np.random.default_rng(1))
    drawn = {}
    for family, configurations in table.items():
        for name, inject, hyperparams, shapes in configurations[len(probes.PROBES[family]) :]:
            drawn[name] = (family, inject, hyperparams, shapes)
    assert sorted(drawn) == sorted(SUPPORTED)
    assert drawn["torch.adadelta"][0] == selfcheck.ADADELTA
    assert drawn["torch.rmsprop"][0] == selfcheck.KERNELS
    again = probes.probe_table(np.random.default_rng(2))
    assert again != table  # drawn, not a fixed list
