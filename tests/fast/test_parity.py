"""torch parity of the fused step, through the shared harness (``tests/harness.py``).

``run_parity`` drives an optax transform (``update`` then ``optax.apply_updates`` under
jit); :func:`through_fused_step` wraps the fused step in that shape: its ``update`` runs
the kernel and returns ``new_params - params``, which the harness adds back (exact up to
one rounding of that sum). The state the harness compares with torch's is the kernel's.
"""

from __future__ import annotations

import jax
import numpy as np
import optax
import pytest
import torch

from jaxopt_adv import fast
from tests.harness import find_state_field, make_params, precision, run_parity, torch_betas
from tests.helpers.rmsprop_overflow import (
    HUGE_GRADIENT,
    HUGE_PARAMS,
    huge_gradient_stream,
    torch_rmsprop_step,
)

ADAM_STATE = {"mu": "exp_avg", "nu": "exp_avg_sq"}
SGD_STATE = {"trace": "momentum_buffer"}
ADAGRAD_STATE = {"sum_of_squares": "sum"}
ADAMAX_STATE = {"mu": "exp_avg", "nu": "exp_inf"}
NADAM_STATE = {"mu": "exp_avg", "nu": "exp_avg_sq", "mu_product": "mu_product"}
RADAM_STATE = {"mu": "exp_avg", "nu": "exp_avg_sq"}
ADADELTA_STATE = {"e_g": "square_avg", "e_x": "acc_delta"}
RPROP_STATE = {"prev": "prev", "step_size": "step_size"}
ASGD_STATE = {"ax": "ax"}


def through_fused_step(opt: fast.FusedOptimizer) -> optax.GradientTransformation:
    def update(grads, state, params=None, **extra_args):
        new_params, state = opt.step(params, grads, state)
        return jax.tree.map(lambda new, old: new - old, new_params, params), state

    return optax.GradientTransformation(opt.init, update)


def check_kernel_used(opt: fast.FusedOptimizer, dtype: str) -> None:
    with precision(dtype):
        params = {k: jax.numpy.asarray(v, dtype) for k, v in make_params().items()}
        assert opt.explain(params, params, opt.init(params)) == fast.unavailable_reason()


CASES = [
    ("torch.adam", torch.optim.Adam, {}, ADAM_STATE),
    ("torch.adam", torch.optim.Adam, {"weight_decay": 0.1, "b1": 0.5}, ADAM_STATE),
    (
        "torch.adam",
        torch.optim.Adam,
        {"amsgrad": True, "weight_decay": 0.05, "maximize": True},
        {**ADAM_STATE, "nu_max": "max_exp_avg_sq"},
    ),
    ("torch.adamw", torch.optim.AdamW, {"weight_decay": 0.3}, ADAM_STATE),
    ("torch.sgd", torch.optim.SGD, {"momentum": 0.9, "dampening": 0.3}, SGD_STATE),
    (
        "torch.sgd",
        torch.optim.SGD,
        {"momentum": 0.8, "nesterov": True, "weight_decay": 0.1, "maximize": True},
        SGD_STATE,
    ),
    (
        "torch.rmsprop",
        torch.optim.RMSprop,
        {"centered": True, "momentum": 0.9, "weight_decay": 0.1},
        {"nu": "square_avg", "mu": "grad_avg", "trace": "momentum_buffer"},
    ),
    ("torch.rmsprop", torch.optim.RMSprop, {"alpha": 0.5, "maximize": True}, {"nu": "square_avg"}),
    (
        "torch.adagrad",
        torch.optim.Adagrad,
        {"lr_decay": 0.1, "initial_accumulator_value": 0.1, "eps": 1e-2},
        ADAGRAD_STATE,
    ),
    (
        "torch.adagrad",
        torch.optim.Adagrad,
        {"weight_decay": 0.1, "lr_decay": 0.01, "maximize": True},
        ADAGRAD_STATE,
    ),
    ("torch.adamax", torch.optim.Adamax, {"b1": 0.8, "b2": 0.99, "eps": 1e-3}, ADAMAX_STATE),
    (
        "torch.adamax",
        torch.optim.Adamax,
        {"weight_decay": 0.1, "maximize": True},
        ADAMAX_STATE,
    ),
    ("torch.nadam", torch.optim.NAdam, {"b1": 0.8, "momentum_decay": 0.01}, NADAM_STATE),
    (
        "torch.nadam",
        torch.optim.NAdam,
        {"weight_decay": 0.1, "decoupled_weight_decay": True, "maximize": True},
        NADAM_STATE,
    ),
    ("torch.adadelta", torch.optim.Adadelta, {"rho": 0.8, "weight_decay": 0.1}, ADADELTA_STATE),
    ("torch.adadelta", torch.optim.Adadelta, {"eps": 1e-3, "maximize": True}, ADADELTA_STATE),
    ("torch.radam", torch.optim.RAdam, {"b1": 0.5, "b2": 0.9, "eps": 1e-3}, RADAM_STATE),
    (
        "torch.radam",
        torch.optim.RAdam,
        {"weight_decay": 0.1, "decoupled_weight_decay": True, "maximize": True},
        RADAM_STATE,
    ),
    (
        "torch.rprop",
        torch.optim.Rprop,
        {"etas": (0.3, 1.5), "step_sizes": (1e-3, 0.2)},
        RPROP_STATE,
    ),
    ("torch.rprop", torch.optim.Rprop, {"maximize": True}, RPROP_STATE),
    # lambd large enough that eta decays visibly; averaging starts mid-run
    ("torch.asgd", torch.optim.ASGD, {"lambd": 0.5, "alpha": 0.6, "t0": 5.0}, ASGD_STATE),
    (
        "torch.asgd",
        torch.optim.ASGD,
        {"weight_decay": 0.1, "maximize": True, "t0": 0.0},
        ASGD_STATE,
    ),
]


# float64 for every case, float32 for one case of each kernel
DTYPES = [("float64", case) for case in CASES] + [
    ("float32", CASES[i]) for i in (0, 3, 4, 6, 8, 11, 13, 15, 17, 19, 21)
]


@pytest.mark.parametrize(
    "dtype, case", DTYPES, ids=[f"{case[0]}-{dtype}-{i}" for i, (dtype, case) in enumerate(DTYPES)]
)
def test_fused_step_parity(dtype, case):
    name, torch_cls, kwargs, state_map = case
    opt = fast.fused(name, learning_rate=0.05, **kwargs)
    check_kernel_used(opt, dtype)
    torch_kwargs = torch_betas(kwargs) if "adam" in name else kwargs
    run_parity(
        through_fused_step(opt),
        lambda p: torch_cls(p, lr=0.05, **torch_kwargs),
        dtype=dtype,
        state_map=state_map,
        torch_default="float32",
    )


@pytest.mark.parametrize(
    "name, torch_cls, kwargs",
    [
        ("torch.adam", torch.optim.Adam, {"weight_decay": 0.1}),
        ("torch.sgd", torch.optim.SGD, {"momentum": 0.9, "dampening": 0.2}),
        ("torch.rmsprop", torch.optim.RMSprop, {"momentum": 0.9, "centered": True}),
        ("torch.adagrad", torch.optim.Adagrad, {"lr_decay": 0.05, "weight_decay": 0.1}),
        ("torch.adamax", torch.optim.Adamax, {"weight_decay": 0.1}),
        ("torch.nadam", torch.optim.NAdam, {"weight_decay": 0.1}),
        ("torch.radam", torch.optim.RAdam, {"weight_decay": 0.1}),
        ("torch.adadelta", torch.optim.Adadelta, {"rho": 0.8}),
        ("torch.asgd", torch.optim.ASGD, {"lambd": 0.5, "t0": 3.0}),
    ],
    ids=["adam", "sgd", "rmsprop", "adagrad", "adamax", "nadam", "radam", "adadelta", "asgd"],
)
def test_fused_step_parity_with_schedule(name, torch_cls, kwargs):
    schedule = lambda t: 0.1 / (1 + t)  # noqa: E731
    opt = fast.fused(name, learning_rate=schedule, **kwargs)
    check_kernel_used(opt, "float64")
    run_parity(
        through_fused_step(opt),
        lambda p: torch_cls(p, lr=0.1, **kwargs),
        schedule=schedule,
        torch_default="float32",
    )


@pytest.mark.parametrize("alpha", [0.99, 1.0])
def test_fused_rmsprop_squares_in_torchs_order(alpha):
    """A float32 gradient of 3e19: ``(1 - alpha) * g * g`` stays finite where ``g * g``
    overflows (the kernel squared first: an update of 0, or NaN for alpha 1)."""
    opt = fast.fused("torch.rmsprop", learning_rate=0.01, alpha=alpha)
    check_kernel_used(opt, "float32")
    params = jax.numpy.asarray(HUGE_PARAMS)
    new_params, state = jax.jit(opt.step)(
        params, jax.numpy.asarray(HUGE_GRADIENT), opt.init(params)
    )
    torch_params, square_avg = torch_rmsprop_step(alpha)
    np.testing.assert_allclose(np.asarray(new_params), torch_params, rtol=1e-6)
    np.testing.assert_allclose(np.asarray(find_state_field(state, "nu")), square_avg, rtol=1e-6)
    run_parity(
        through_fused_step(opt),
        lambda p: torch.optim.RMSprop(p, lr=0.01, alpha=alpha),
        dtype="float32",
        state_map={"nu": "square_avg"},
        stream=huge_gradient_stream(),
    )
