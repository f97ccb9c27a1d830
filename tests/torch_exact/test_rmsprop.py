"""torch.optim.RMSprop parity for jaxopt_adv.torch.rmsprop."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import torch

from jaxopt_adv.torch import rmsprop
from tests.harness import find_state_field, run_parity
from tests.helpers.rmsprop_overflow import (
    HUGE_GRADIENT,
    HUGE_PARAMS,
    huge_gradient_stream,
    torch_rmsprop_step,
)
from tests.helpers.torch_optim_tests import case_parity_test, rejection_test

CASES = {
    "plain": {},
    "eps": {"eps": 1e-2, "alpha": 0.9},
    "centered": {"centered": True},
    "momentum": {"momentum": 0.9},
    "centered_momentum_l2": {"centered": True, "momentum": 0.9, "weight_decay": 0.1},
    "maximize": {"maximize": True, "momentum": 0.5},
}


def _state_map(kwargs):
    state = {"nu": "square_avg"}
    if kwargs.get("centered"):
        state["mu"] = "grad_avg"
    if kwargs.get("momentum"):
        state["trace"] = "momentum_buffer"
    return state


test_parity = case_parity_test(
    rmsprop, torch.optim.RMSprop, CASES, learning_rate=0.01, state_map=_state_map
)


@pytest.mark.parametrize("kwargs", [{"momentum": 0.9}, {"momentum": 0.9, "centered": True}])
def test_parity_with_schedule(kwargs):
    """torch multiplies the whole momentum buffer by the current lr."""
    schedule = lambda t: 0.01 * 0.8**t  # noqa: E731
    run_parity(
        rmsprop(schedule, **kwargs),
        lambda p: torch.optim.RMSprop(p, lr=0.01, **kwargs),
        schedule=schedule,
        state_map=_state_map(kwargs),
    )


@pytest.mark.parametrize("alpha", [0.99, 1.0])
def test_parity_squares_in_torchs_order(alpha):
    """optax's ``(1 - alpha) * g**2`` gave an update of 0 (alpha 0.99) or NaN (alpha 1)."""
    tx = rmsprop(0.01, alpha=alpha)
    params = jnp.asarray(HUGE_PARAMS)

    @jax.jit
    def step(params, grads):
        updates, state = tx.update(grads, tx.init(params), params)
        return optax.apply_updates(params, updates), find_state_field(state, "nu")

    new_params, nu = step(params, jnp.asarray(HUGE_GRADIENT))
    torch_params, square_avg = torch_rmsprop_step(alpha)
    np.testing.assert_allclose(np.asarray(new_params), torch_params, rtol=1e-6)
    np.testing.assert_allclose(np.asarray(nu), square_avg, rtol=1e-6)
    run_parity(
        rmsprop(0.01, alpha=alpha),
        lambda p: torch.optim.RMSprop(p, lr=0.01, alpha=alpha),
        dtype="float32",
        state_map=_state_map({}),
        stream=huge_gradient_stream(),
    )


def test_optax_rmsprop_differs_under_schedule():
    schedule = lambda t: 0.01 * 0.8**t  # noqa: E731
    report = run_parity(
        optax.rmsprop(schedule, decay=0.99, eps_in_sqrt=False, momentum=0.9),
        lambda p: torch.optim.RMSprop(p, lr=0.01, momentum=0.9),
        schedule=schedule,
        check=False,
    )
    assert report.max_error > 1e-3


test_bad_hyperparameters = rejection_test(
    rmsprop,
    [
        ({"learning_rate": -1.0}, "Invalid learning rate"),
        ({"alpha": 1.5}, "Invalid alpha value"),
        ({"eps": -1.0}, "Invalid epsilon value"),
        ({"momentum": -0.5}, "Invalid momentum value"),
        ({"weight_decay": -1.0}, "Invalid weight_decay value"),
    ],
)
