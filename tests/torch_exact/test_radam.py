"""torch.optim.RAdam parity for jaxopt_adv.torch.radam."""

import optax
import pytest
import torch

from jaxopt_adv.torch import radam
from tests.harness import run_parity

STATE = {"mu": "exp_avg", "nu": "exp_avg_sq"}
CASES = {
    "plain": {},
    "large_eps": {"eps": 1e-3},
    "fast_b2": {"b1": 0.5, "b2": 0.9},  # rectification starts at step 6 vs 7
    "l2": {"weight_decay": 0.1},
    "decoupled": {"weight_decay": 0.1, "decoupled_weight_decay": True, "maximize": True},
}


def _torch_kwargs(kwargs):
    kwargs = dict(kwargs)
    return {"betas": (kwargs.pop("b1", 0.9), kwargs.pop("b2", 0.999)), **kwargs}


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("case", CASES)
def test_parity(case, dtype):
    kwargs = CASES[case]
    run_parity(
        radam(0.05, **kwargs),
        lambda p: torch.optim.RAdam(p, lr=0.05, **_torch_kwargs(kwargs)),
        dtype=dtype,
        state_map=STATE,
    )


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


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"learning_rate": -1.0}, "Invalid learning rate"),
        ({"b1": -0.5}, "Invalid beta parameter at index 0"),
        ({"eps": -1.0}, "Invalid epsilon value"),
        ({"weight_decay": -1.0}, "Invalid weight_decay value"),
    ],
)
def test_bad_hyperparameters(kwargs, message):
    with pytest.raises(ValueError, match=message):
        radam(**kwargs)
