"""torch.optim.Adamax parity for jaxopt_adv.torch.adamax."""

import pytest
import torch

from jaxopt_adv.torch import adamax
from tests.harness import run_parity, torch_betas

CASES = {
    "plain": {},
    "eps_l2": {"eps": 1e-2, "weight_decay": 0.1},
    "maximize": {"b1": 0.5, "b2": 0.9, "maximize": True},
}


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("case", CASES)
def test_parity(case, dtype):
    kwargs = CASES[case]
    run_parity(
        adamax(0.05, **kwargs),
        lambda p: torch.optim.Adamax(p, lr=0.05, **torch_betas(kwargs)),
        dtype=dtype,
        state_map={"mu": "exp_avg", "nu": "exp_inf"},
    )


def test_parity_with_schedule():
    schedule = lambda t: 0.1 * 0.9**t  # noqa: E731
    run_parity(adamax(schedule), lambda p: torch.optim.Adamax(p, lr=0.1), schedule=schedule)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"learning_rate": -1.0}, "Invalid learning rate"),
        ({"b1": 1.0}, "Invalid beta parameter at index 0"),
        ({"eps": -1.0}, "Invalid epsilon value"),
        ({"weight_decay": -1.0}, "Invalid weight_decay value"),
    ],
)
def test_bad_hyperparameters(kwargs, message):
    with pytest.raises(ValueError, match=message):
        adamax(**kwargs)
