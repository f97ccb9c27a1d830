"""torch.optim.Adam / AdamW parity for jaxopt_adv.torch.adam, adamw and scale_by_amsgrad."""

import optax
import pytest
import torch

from jaxopt_adv.torch import adam, adamw
from tests.harness import run_parity, torch_betas
from tests.helpers.torch_optim_tests import case_parity_test

ADAM_STATE = {"mu": "exp_avg", "nu": "exp_avg_sq"}
AMSGRAD_STATE = {**ADAM_STATE, "nu_max": "max_exp_avg_sq"}

CASES = {
    "plain": {},
    "betas": {"b1": 0.5, "b2": 0.9, "eps": 1e-3},
    "l2": {"weight_decay": 0.1},
    "decoupled": {"weight_decay": 0.1, "decoupled_weight_decay": True},
    "amsgrad": {"amsgrad": True},
    "amsgrad_l2_maximize": {"amsgrad": True, "weight_decay": 0.05, "maximize": True},
    "maximize": {"maximize": True, "weight_decay": 0.1, "decoupled_weight_decay": True},
}


test_adam_parity = case_parity_test(
    adam,
    torch.optim.Adam,
    CASES,
    learning_rate=0.05,
    state_map=lambda kwargs: AMSGRAD_STATE if kwargs.get("amsgrad") else ADAM_STATE,
    to_torch=torch_betas,
    torch_default_dtype=True,
)


@pytest.mark.parametrize("factory", [adam, adamw])
def test_bias_corrections_are_torchs_doubles(factory):
    """b2 = 1 - 1e-9: torch's ``1 - b2**t`` in doubles carries a 1e-7 relative rounding
    error, which this reproduces; the accurate form (``torch_default_dtype=None``) is
    3e-10 away from torch."""
    kwargs = {"b2": 1 - 1e-9}
    torch_cls = torch.optim.Adam if factory is adam else torch.optim.AdamW
    torch_run = lambda p: torch_cls(p, lr=0.05, **torch_betas(kwargs))  # noqa: E731
    run_parity(factory(0.05, **kwargs), torch_run, state_map=ADAM_STATE, num_steps=25)
    report = run_parity(
        factory(0.05, **kwargs, torch_default_dtype=None), torch_run, num_steps=25, check=False
    )
    assert report.max_error > 1e-10


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("kwargs", [{}, {"amsgrad": True, "weight_decay": 0.3}])
def test_adamw_parity(kwargs, dtype):
    run_parity(
        adamw(0.05, **kwargs),
        lambda p: torch.optim.AdamW(p, lr=0.05, **kwargs),
        dtype=dtype,
        state_map=AMSGRAD_STATE if kwargs.get("amsgrad") else ADAM_STATE,
    )


@pytest.mark.parametrize(
    "factory, torch_cls, kwargs",
    [
        (adam, torch.optim.Adam, {"weight_decay": 0.1}),
        (adam, torch.optim.Adam, {"amsgrad": True}),
        (adamw, torch.optim.AdamW, {"weight_decay": 0.2}),
    ],
)
def test_parity_with_schedule(factory, torch_cls, kwargs):
    schedule = lambda t: 0.1 / (1 + t)  # noqa: E731
    run_parity(
        factory(schedule, **kwargs), lambda p: torch_cls(p, lr=0.1, **kwargs), schedule=schedule
    )


def test_torch_defaults():
    """adamw keeps torch's weight_decay=1e-2 default (optax's is 1e-4)."""
    run_parity(adamw(), lambda p: torch.optim.AdamW(p), num_steps=20)


def test_float32_closer_to_torch_than_optax():
    """Bias corrections from -expm1(t log beta): 20x closer to torch in float32."""
    ours = run_parity(adam(0.05), lambda p: torch.optim.Adam(p, lr=0.05), dtype="float32")
    theirs = run_parity(
        optax.adam(0.05), lambda p: torch.optim.Adam(p, lr=0.05), dtype="float32", check=False
    )
    assert ours.max_error < 5e-7 < 1e-6 < theirs.max_error


def test_optax_amsgrad_differs():
    report = run_parity(
        optax.amsgrad(0.05),
        lambda p: torch.optim.Adam(p, lr=0.05, amsgrad=True),
        check=False,
    )
    assert report.max_error > 1e-3


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"learning_rate": -1e-3}, "Invalid learning rate"),
        ({"b1": 1.0}, "Invalid beta parameter at index 0"),
        ({"b2": -0.1}, "Invalid beta parameter at index 1"),
        ({"eps": -1e-8}, "Invalid epsilon value"),
        ({"weight_decay": -1.0}, "Invalid weight_decay value"),
        ({"b2": 1.5, "amsgrad": True}, "Invalid beta parameter at index 1"),
    ],
)
@pytest.mark.parametrize("factory", [adam, adamw])
def test_bad_hyperparameters(factory, kwargs, message):
    with pytest.raises(ValueError, match=message):
        factory(**kwargs)
