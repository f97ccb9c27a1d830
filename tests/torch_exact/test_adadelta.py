"""torch.optim.Adadelta parity for jaxopt_adv.torch.adadelta."""

import optax
import torch

from jaxopt_adv.torch import adadelta
from tests.harness import run_parity
from tests.helpers.torch_optim_tests import case_parity_test, rejection_test

CASES = {
    "defaults": {},
    "rho_eps": {"rho": 0.5, "eps": 1e-3},
    "l2_maximize": {"weight_decay": 0.1, "maximize": True},
}


test_parity = case_parity_test(
    adadelta, torch.optim.Adadelta, CASES, state_map={"e_g": "square_avg", "e_x": "acc_delta"}
)


def test_parity_with_schedule():
    schedule = lambda t: 1.0 / (1 + 0.5 * t)  # noqa: E731
    run_parity(adadelta(schedule), lambda p: torch.optim.Adadelta(p), schedule=schedule)


def test_optax_adadelta_default_ascends():
    """optax.adadelta() without a learning rate steps the wrong way."""
    report = run_parity(optax.adadelta(), lambda p: torch.optim.Adadelta(p), check=False)
    assert report.max_error > 1e-3


test_bad_hyperparameters = rejection_test(
    adadelta,
    [
        ({"learning_rate": -1.0}, "Invalid learning rate"),
        ({"rho": 1.5}, "Invalid rho value"),
        ({"eps": -1.0}, "Invalid epsilon value"),
        ({"weight_decay": -1.0}, "Invalid weight_decay value"),
    ],
)
