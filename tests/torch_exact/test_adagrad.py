"""torch.optim.Adagrad parity for jaxopt_adv.torch.adagrad."""

import optax
import torch

from jaxopt_adv.torch import adagrad
from tests.harness import run_parity
from tests.helpers.torch_optim_tests import case_parity_test, rejection_test

CASES = {
    "plain": {},
    "lr_decay": {"lr_decay": 0.1},
    "accumulator_eps": {"initial_accumulator_value": 0.1, "eps": 1e-2},
    "l2_maximize": {"weight_decay": 0.1, "maximize": True},
}


test_parity = case_parity_test(
    adagrad,
    torch.optim.Adagrad,
    CASES,
    learning_rate=0.1,
    state_map={"sum_of_squares": "sum"},
    torch_default_dtype=True,
)


def test_parity_with_schedule_and_lr_decay():
    schedule = lambda t: 0.1 * 0.9**t  # noqa: E731
    run_parity(
        adagrad(schedule, lr_decay=0.05),
        lambda p: torch.optim.Adagrad(p, lr=0.1, lr_decay=0.05),
        schedule=schedule,
    )


def test_optax_adagrad_differs():
    report = run_parity(optax.adagrad(0.1), lambda p: torch.optim.Adagrad(p, lr=0.1), check=False)
    assert report.max_error > 1e-3


test_bad_hyperparameters = rejection_test(
    adagrad,
    [
        ({"learning_rate": -1.0}, "Invalid learning rate"),
        ({"lr_decay": -1.0}, "Invalid lr_decay value"),
        ({"initial_accumulator_value": -1.0}, "Invalid initial_accumulator_value value"),
        ({"eps": -1.0}, "Invalid epsilon value"),
        ({"weight_decay": -1.0}, "Invalid weight_decay value"),
    ],
)
