"""Randomly drawn hyperparameters: the fused step stays bit-identical to the XLA path.

Each optimizer gets ``DRAWS`` draws of :func:`jaxopt_adv.fast.step.random_hyperparameters`
(each numeric hyperparameter a value XLA and LLVM may simplify -- 0, 1, 1/2, a bound of
its range -- half the time, a random one from its range otherwise; each option on or
off), given as Python numbers or injected through ``optax.inject_hyperparams``, on
float32 leaves or (x64) float64 leaves, on one 257 x 129 leaf or on that and a 7-element
leaf. Every step's params and state are compared bit for bit with ``tx.update`` +
``optax.apply_updates`` under jit, and the kernels must have run unless the draw is one
of the configurations the fast path documents as taking the XLA path (``ROUTED``).
``JAXOPT_ADV_FAST_DRAW_SEED`` changes the draws (a longer sweep: ``JAXOPT_ADV_FAST_DRAWS``).
"""

from __future__ import annotations

import os

import numpy as np
import pytest

from jaxopt_adv.fast import step as fast_step
from tests.fast.common import x64
from tests.fast.test_bit_identity import F32, F64, expected_reason, run_both

DRAWS = int(os.environ.get("JAXOPT_ADV_FAST_DRAWS", "5"))
SEED = int(os.environ.get("JAXOPT_ADV_FAST_DRAW_SEED", "2026"))
# the configurations the fast path leaves to XLA (see jaxopt_adv/fast/step.py's plans)
ROUTED = (
    "eps 0 (XLA computes an approximate rsqrt)",
    "momentum 1 (XLA folds the multiplication away)",
    "ASGD with maximize and no weight decay (XLA's contraction varies)",
    "decoupled weight decay 1 (XLA multiplies it away)",
)
PARAMS = [(name, draw) for name in fast_step.SUPPORTED for draw in range(DRAWS)]


def draw_case(name: str, draw: int) -> tuple[dict, bool, bool, dict]:
    """``(hyperparameters, injected, x64, leaves)`` of one draw."""
    rng = np.random.default_rng([SEED, list(fast_step.SUPPORTED).index(name), draw])
    hyperparams = fast_step.random_hyperparameters(name, rng)
    inject, wide, two_leaves = (bool(rng.random() < 0.5) for _ in range(3))
    dtype = F64 if wide else F32
    leaves = {"w": ((257, 129), dtype)}
    if two_leaves:
        leaves["b"] = ((7,), dtype)
    return hyperparams, inject, wide, leaves


@pytest.mark.parametrize("name, draw", PARAMS, ids=[f"{n}-{d}" for n, d in PARAMS])
def test_random_hyperparameters_bit_identical(name, draw):
    hyperparams, inject, wide, leaves = draw_case(name, draw)
    with x64(wide):
        explained = run_both(name, hyperparams, leaves, inject=inject, steps=6, seed=draw)
    if explained not in ROUTED:
        assert explained == expected_reason(), (hyperparams, inject, wide)
