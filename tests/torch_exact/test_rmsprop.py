"""torch.optim.RMSprop parity for jaxopt_adv.torch.rmsprop."""

import optax
import pytest
import torch

from jaxopt_adv.torch import rmsprop
from tests.harness import run_parity

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


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("case", CASES)
def test_parity(case, dtype):
    kwargs = CASES[case]
    run_parity(
        rmsprop(0.01, **kwargs),
        lambda p: torch.optim.RMSprop(p, lr=0.01, **kwargs),
        dtype=dtype,
        state_map=_state_map(kwargs),
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


def test_optax_rmsprop_differs_under_schedule():
    schedule = lambda t: 0.01 * 0.8**t  # noqa: E731
    report = run_parity(
        optax.rmsprop(schedule, decay=0.99, eps_in_sqrt=False, momentum=0.9),
        lambda p: torch.optim.RMSprop(p, lr=0.01, momentum=0.9),
        schedule=schedule,
        check=False,
    )
    assert report.max_error > 1e-3


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"learning_rate": -1.0}, "Invalid learning rate"),
        ({"alpha": 1.5}, "Invalid alpha value"),
        ({"eps": -1.0}, "Invalid epsilon value"),
        ({"momentum": -0.5}, "Invalid momentum value"),
        ({"weight_decay": -1.0}, "Invalid weight_decay value"),
    ],
)
def test_bad_hyperparameters(kwargs, message):
    with pytest.raises(ValueError, match=message):
        rmsprop(**kwargs)
