"""torch.optim.RAdam parity for jaxopt_adv.torch.radam."""

import jax.numpy as jnp
import numpy as np
import optax
import pytest
import torch

from jaxopt_adv.torch import radam
from jaxopt_adv.torch.radam import _rho, rectification
from tests.harness import precision, run_parity, torch_betas
from tests.helpers.torch_optim_tests import case_parity_test, rejection_test

STATE = {"mu": "exp_avg", "nu": "exp_avg_sq"}
CASES = {
    "plain": {},
    "large_eps": {"eps": 1e-3},
    "fast_b2": {"b1": 0.5, "b2": 0.9},  # rectification starts at step 6 vs 7
    "l2": {"weight_decay": 0.1},
    "decoupled": {"weight_decay": 0.1, "decoupled_weight_decay": True, "maximize": True},
}


test_parity = case_parity_test(
    radam,
    torch.optim.RAdam,
    CASES,
    learning_rate=0.05,
    state_map=STATE,
    to_torch=torch_betas,
    torch_default_dtype=True,
)


@pytest.mark.parametrize("torch_default", ["float32", "float64"])
def test_rectifies_when_torch_does_with_b2_near_one(torch_default):
    """b2 = 1 - 1e-9: torch's double-precision rho_t is 2t - 1 (not about t), so torch
    rectifies from step 4; so does this (the accurate rho_t waits for step 6)."""
    kwargs = {"b2": 1 - 1e-9}
    torch_run = lambda p: torch.optim.RAdam(p, lr=0.05, **torch_betas(kwargs))  # noqa: E731
    ours = radam(0.05, **kwargs, torch_default_dtype=torch_default)
    run_parity(ours, torch_run, state_map=STATE, num_steps=25, torch_default=torch_default)
    accurate = radam(0.05, **kwargs, torch_default_dtype=None)
    report = run_parity(accurate, torch_run, num_steps=25, check=False)
    assert report.max_error > 0.1
    with precision("float64"):
        t = jnp.arange(1, 8, dtype=jnp.float64)
        np.testing.assert_array_equal(rectification(1 - 1e-9, t) > 0, t >= 4)
        np.testing.assert_array_equal(rectification(1 - 1e-9, t, None) > 0, t >= 6)


def test_parity_with_schedule():
    schedule = lambda t: 0.05 * 0.95**t  # noqa: E731
    run_parity(radam(schedule), lambda p: torch.optim.RAdam(p, lr=0.05), schedule=schedule)


def test_optax_radam_differs_in_eps():
    report = run_parity(
        optax.radam(0.05, eps=1e-3),
        lambda p: torch.optim.RAdam(p, lr=0.05, eps=1e-3),
        check=False,
    )
    assert report.max_error > 1e-6


test_bad_hyperparameters = rejection_test(
    radam,
    [
        ({"learning_rate": -1.0}, "Invalid learning rate"),
        ({"b1": -0.5}, "Invalid beta parameter at index 0"),
        ({"eps": -1.0}, "Invalid epsilon value"),
        ({"weight_decay": -1.0}, "Invalid weight_decay value"),
    ],
)


@pytest.mark.parametrize("b2", [0.9, 0.99, 0.999, 0.9999])
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_rho_series_matches_the_closed_form(b2, dtype):
    """rho_t (no float32 cancellation) equals torch's double-precision formula."""
    t = np.arange(1, 20001, dtype=np.float64)
    expected = 2 / (1 - b2) - 1 - 2 * t * b2**t / (1 - b2**t)
    with precision(dtype):
        got = np.asarray(_rho(b2, jnp.asarray(t, dtype)), np.float64)
    # absolute error relative to the size of the terms that cancel (~2 / (1 - b2)); the
    # double-precision closed form carries ~1e-13 of that itself (b2 = 0.9999)
    error = np.max(np.abs(got - expected)) / (2 / (1 - b2))
    assert error < (1e-12 if dtype == "float64" else 3e-7)
    near_threshold = np.abs(expected - 5) < 1
    if dtype == "float32" and near_threshold.any():  # where rectification switches on
        assert np.max(np.abs(got - expected)[near_threshold]) < 1e-5
