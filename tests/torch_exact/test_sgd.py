"""torch.optim.SGD parity for jaxopt_adv.torch.sgd."""

import jax.numpy as jnp
import numpy as np
import optax
import pytest
import torch

from jaxopt_adv.torch import scale_by_sgd_momentum, sgd
from tests.harness import run_parity
from tests.helpers.torch_optim_tests import case_parity_test, rejection_test

CASES = {
    "plain": {},
    "momentum": {"momentum": 0.9},
    "dampening": {"momentum": 0.9, "dampening": 0.3},
    "nesterov": {"momentum": 0.8, "nesterov": True},
    "weight_decay": {"momentum": 0.9, "weight_decay": 1e-2},
    "maximize": {"momentum": 0.5, "dampening": 0.1, "weight_decay": 0.1, "maximize": True},
}


test_parity = case_parity_test(
    sgd,
    torch.optim.SGD,
    CASES,
    learning_rate=0.05,
    state_map=lambda kwargs: {"trace": "momentum_buffer"} if "momentum" in kwargs else {},
)


@pytest.mark.parametrize("kwargs", [{}, {"momentum": 0.9, "dampening": 0.2, "nesterov": False}])
def test_parity_with_schedule(kwargs):
    schedule = lambda t: 0.1 * 0.8**t  # noqa: E731
    run_parity(
        sgd(schedule, **kwargs), lambda p: torch.optim.SGD(p, lr=0.1, **kwargs), schedule=schedule
    )


def test_optax_sgd_differs_with_dampening():
    report = run_parity(
        optax.sgd(0.05, momentum=0.9),
        lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9, dampening=0.3),
        check=False,
    )
    assert report.max_error > 1e-3


test_bad_hyperparameters = rejection_test(
    sgd,
    [
        ({"learning_rate": -1.0}, "Invalid learning rate"),
        ({"momentum": -0.1}, "Invalid momentum value"),
        ({"weight_decay": -1e-3}, "Invalid weight_decay value"),
        ({"momentum": 0.9, "dampening": 0.1, "nesterov": True}, "Nesterov momentum requires"),
        ({"nesterov": True}, "Nesterov momentum requires"),
        ({"learning_rate": float("nan")}, "Invalid learning rate"),
    ],
)


@pytest.mark.parametrize("momentum", [0.0, jnp.asarray(0.0)], ids=["python", "array"])
def test_block_with_zero_momentum_passes_the_gradient(momentum):
    """torch keeps no buffer at momentum 0 (dampening is then ignored)."""
    tx = scale_by_sgd_momentum(momentum, dampening=0.5)
    state = tx.init(jnp.zeros(3))
    for g in (jnp.ones(3), jnp.arange(3.0)):
        updates, state = tx.update(g, state)
        np.testing.assert_array_equal(updates, g)
