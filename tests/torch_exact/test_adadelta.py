"""torch.optim.Adadelta parity for jaxopt_adv.torch.adadelta."""

import optax
import pytest
import torch

from jaxopt_adv.torch import adadelta
from tests.harness import run_parity

CASES = {
    "defaults": {},
    "rho_eps": {"rho": 0.5, "eps": 1e-3},
    "l2_maximize": {"weight_decay": 0.1, "maximize": True},
}


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("case", CASES)
def test_parity(case, dtype):
    kwargs = CASES[case]
    run_parity(
        adadelta(**kwargs),
        lambda p: torch.optim.Adadelta(p, **kwargs),
        dtype=dtype,
        state_map={"e_g": "square_avg", "e_x": "acc_delta"},
    )


def test_parity_with_schedule():
    schedule = lambda t: 1.0 / (1 + 0.5 * t)  # noqa: E731
    run_parity(adadelta(schedule), lambda p: torch.optim.Adadelta(p), schedule=schedule)


def test_optax_adadelta_default_ascends():
    """optax.adadelta() without a learning rate steps the wrong way."""
    report = run_parity(optax.adadelta(), lambda p: torch.optim.Adadelta(p), check=False)
    assert report.max_error > 1e-3


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"learning_rate": -1.0}, "Invalid learning rate"),
        ({"rho": 1.5}, "Invalid rho value"),
        ({"eps": -1.0}, "Invalid epsilon value"),
        ({"weight_decay": -1.0}, "Invalid weight_decay value"),
    ],
)
def test_bad_hyperparameters(kwargs, message):
    with pytest.raises(ValueError, match=message):
        adadelta(**kwargs)
