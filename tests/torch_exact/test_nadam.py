"""torch.optim.NAdam parity for jaxopt_adv.torch.nadam."""

import optax
import torch

from jaxopt_adv.torch import nadam
from tests.harness import run_parity, torch_betas
from tests.helpers.torch_optim_tests import case_parity_test, rejection_test

STATE = {"mu": "exp_avg", "nu": "exp_avg_sq", "mu_product": "mu_product"}
CASES = {
    "plain": {},
    "momentum_decay": {"momentum_decay": 0.05, "b1": 0.8, "eps": 1e-3},
    "l2": {"weight_decay": 0.1},
    "decoupled": {"weight_decay": 0.1, "decoupled_weight_decay": True},
    "maximize": {"maximize": True},
}


test_parity = case_parity_test(
    nadam,
    torch.optim.NAdam,
    CASES,
    learning_rate=0.05,
    state_map=STATE,
    to_torch=torch_betas,
    torch_default_dtype=True,
)


def test_mu_product_is_torchs_float32():
    """Under torch's default dtype float32 torch holds mu_product in float32 for float64
    params; the accurate form (``torch_default_dtype=None``) is 1e-9 away from it."""
    kwargs = {"momentum_decay": 0.05, "b1": 0.8}
    torch_run = lambda p: torch.optim.NAdam(p, lr=0.05, **torch_betas(kwargs))  # noqa: E731
    run_parity(nadam(0.05, **kwargs), torch_run, state_map=STATE, torch_default="float32")
    report = run_parity(
        nadam(0.05, **kwargs, torch_default_dtype=None),
        torch_run,
        state_map=STATE,
        torch_default="float32",
        check=False,
    )
    assert report.errors["state:mu_product:matrix"] > 1e-9


def test_parity_with_schedule():
    schedule = lambda t: 0.05 * (1 + t) ** -0.5  # noqa: E731
    kwargs = {"weight_decay": 0.1, "decoupled_weight_decay": True}
    run_parity(
        nadam(schedule, **kwargs),
        lambda p: torch.optim.NAdam(p, lr=0.05, **kwargs),
        schedule=schedule,
        torch_default="float32",
    )


def test_long_run_momentum_schedule():
    """300 steps: the momentum-decay schedule has moved well away from its start."""
    run_parity(
        nadam(1e-3), lambda p: torch.optim.NAdam(p, lr=1e-3), num_steps=300, torch_default="float32"
    )


def test_optax_nadam_differs():
    report = run_parity(optax.nadam(0.05), lambda p: torch.optim.NAdam(p, lr=0.05), check=False)
    assert report.max_error > 1e-3


test_bad_hyperparameters = rejection_test(
    nadam,
    [
        ({"learning_rate": -1.0}, "Invalid learning rate"),
        ({"b2": 1.0}, "Invalid beta parameter at index 1"),
        ({"eps": -1.0}, "Invalid epsilon value"),
        ({"weight_decay": -1.0}, "Invalid weight_decay value"),
        ({"momentum_decay": -1.0}, "Invalid momentum_decay value"),
    ],
)
