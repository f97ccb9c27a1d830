"""torch.optim.Adamax parity for jaxopt_adv.torch.adamax."""

import numpy as np
import pytest
import torch

from jaxopt_adv.torch import adamax
from tests.harness import PRECISIONS, run_parity, torch_betas
from tests.helpers.torch_optim_tests import case_parity_test, rejection_test

STATE = {"mu": "exp_avg", "nu": "exp_inf"}
# 1.5 * 2**24 steps: torch's float32 step counter stopped at 2**24 long before
LONG_RUN = 3 * 2**23

CASES = {
    "plain": {},
    "eps_l2": {"eps": 1e-2, "weight_decay": 0.1},
    "maximize": {"b1": 0.5, "b2": 0.9, "maximize": True},
}


test_parity = case_parity_test(
    adamax, torch.optim.Adamax, CASES, learning_rate=0.05, state_map=STATE, to_torch=torch_betas
)


def _draw(seed: int) -> dict:
    rng = np.random.default_rng(seed)
    return {
        "b1": float(1 - 10 ** rng.uniform(-9, -0.3)),
        "b2": float(rng.uniform(0.0, 0.9999)),
        "eps": float(10 ** rng.uniform(-8, -2)),
        "weight_decay": float(rng.uniform(0.0, 0.2)),
        "maximize": bool(rng.integers(2)),
    }


def _torch_step(count: int, torch_default: str) -> float:
    """torch's ``state["step"]`` after ``count`` steps: a float32 counter stops at 2**24."""
    return float(min(count, 2**24)) if torch_default == "float32" else float(count)


def _run_25_steps(kwargs: dict, dtype: str, torch_default: str, **more) -> None:
    """25 steps of ``adamax(0.05, **kwargs)`` against torch's under ``torch_default``."""
    run_parity(
        adamax(0.05, **kwargs, torch_default_dtype=torch_default),
        lambda p: torch.optim.Adamax(p, lr=0.05, **torch_betas(kwargs)),
        dtype=dtype,
        state_map=STATE,
        num_steps=25,
        torch_default=torch_default,
        **more,
    )


@pytest.mark.parametrize("dtype, torch_default", PRECISIONS)
@pytest.mark.parametrize("seed", range(3))
def test_parity_random_under_torch_default_dtype(seed, dtype, torch_default):
    _run_25_steps(_draw(seed), dtype, torch_default)


@pytest.mark.parametrize("dtype, torch_default", PRECISIONS)
def test_step_counter_stops_at_2_24_under_float32(dtype, torch_default):
    """After 1.5 * 2**24 steps torch's bias correction still uses t = 2**24 under its
    default float32: with b1 = 1 - 1e-8 that is 1 - b1**t = 0.155 instead of 0.222.
    (The float32 run also checks that b1 rounding to 1 gives no infinite step.)"""
    kwargs = {"b1": 1 - 1e-8, "weight_decay": 0.05}
    resume = (LONG_RUN, _torch_step(LONG_RUN, torch_default))
    _run_25_steps(kwargs, dtype, torch_default, resume=resume)


def test_accurate_form_is_not_torchs():
    """``torch_default_dtype=None`` takes the exact count and ``-expm1(t log b1)``: after
    1.5 * 2**24 steps with b1 = 1 - 1e-8 it is 8.7e-8 from torch (default float32)."""
    kwargs = {"b1": 1 - 1e-8}
    report = run_parity(
        adamax(0.05, **kwargs, torch_default_dtype=None),
        lambda p: torch.optim.Adamax(p, lr=0.05, **torch_betas(kwargs)),
        num_steps=25,
        torch_default="float32",
        resume=(LONG_RUN, 2.0**24),
        check=False,
    )
    assert report.max_error > 1e-8


def test_parity_with_schedule():
    schedule = lambda t: 0.1 * 0.9**t  # noqa: E731
    run_parity(adamax(schedule), lambda p: torch.optim.Adamax(p, lr=0.1), schedule=schedule)


test_bad_hyperparameters = rejection_test(
    adamax,
    [
        ({"learning_rate": -1.0}, "Invalid learning rate"),
        ({"b1": 1.0}, "Invalid beta parameter at index 0"),
        ({"eps": -1.0}, "Invalid epsilon value"),
        ({"weight_decay": -1.0}, "Invalid weight_decay value"),
    ],
)
