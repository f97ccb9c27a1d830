"""torch.optim.ASGD parity for jaxopt_adv.torch.asgd."""

import jax.numpy as jnp
import pytest
import torch

from jaxopt_adv.torch import asgd
from tests.harness import run_parity
from tests.helpers.torch_optim_tests import case_parity_test, rejection_test

CASES = {
    "defaults": {},
    # lambd large enough that eta decays visibly; t0 small so averaging starts mid-run
    "averaging": {"lambd": 0.5, "alpha": 0.6, "t0": 5.0},
    "l2_maximize": {"weight_decay": 0.1, "maximize": True, "t0": 0.0},
}


test_parity = case_parity_test(
    asgd,
    torch.optim.ASGD,
    CASES,
    learning_rate=0.05,
    state_map={"ax": "ax"},
    torch_default_dtype=True,
)


def test_eta_and_mu_are_torchs_float32():
    """Under torch's default dtype float32 torch holds eta and mu in float32 for float64
    params; unrounded (``torch_default_dtype=None``) they are 1e-8 away."""
    kwargs = CASES["averaging"]
    torch_run = lambda p: torch.optim.ASGD(p, lr=0.05, **kwargs)  # noqa: E731
    run_parity(asgd(0.05, **kwargs), torch_run, state_map={"ax": "ax"}, torch_default="float32")
    report = run_parity(
        asgd(0.05, **kwargs, torch_default_dtype=None),
        torch_run,
        torch_default="float32",
        check=False,
    )
    assert report.max_error > 1e-9


def test_parity_with_schedule():
    schedule = lambda t: 0.05 * 0.9**t  # noqa: E731
    kwargs = {"lambd": 0.5, "t0": 3.0}
    run_parity(
        asgd(schedule, **kwargs),
        lambda p: torch.optim.ASGD(p, lr=0.05, **kwargs),
        schedule=schedule,
        state_map={"ax": "ax"},
        torch_default="float32",
    )


test_bad_hyperparameters = rejection_test(
    asgd,
    [
        ({"learning_rate": -1.0}, "Invalid learning rate"),
        ({"weight_decay": -1.0}, "Invalid weight_decay value"),
    ],
)


def test_needs_params():
    tx = asgd(0.1)
    state = tx.init(jnp.zeros(2))
    with pytest.raises(ValueError, match="requires the current value of parameters"):
        tx.update(jnp.ones(2), state)
