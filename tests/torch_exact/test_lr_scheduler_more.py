"""torch.optim.lr_scheduler parity for the factor, cyclic and composed schedules.

Same method as ``test_lr_scheduler.py``: torch's scheduler stepped after every
``optimizer.step()``, its ``param_groups[0]["lr"]`` before each step against our
schedule under jit (float64 <= 1e-12 relative, float32 <= 1e-6), >= 50 steps, fixed and
randomly drawn arguments, plus harness parity runs of SGD driven by the schedule.
"""

import math

import numpy as np
import pytest
import torch
from torch.optim import lr_scheduler as torch_sched

import jaxopt_adv
from jaxopt_adv.torch import lr_scheduler
from jaxopt_adv.torch.lr_cyclic import cosine_annealing_warm_restarts
from jaxopt_adv.torch.lr_factor import constant_lr, lambda_lr, multiplicative_lr, polynomial_lr
from tests.harness import precision, run_parity
from tests.torch_exact.test_lr_scheduler import (
    LR,
    assert_sequence_close,
    ours_values,
    torch_values,
    with_scheduler,
)

STEPS = 60


def inverse_sqrt(k):
    return 1.0 / (1.0 + 0.1 * k) ** 0.5


def geometric(k):
    return 0.95**k


def wobble(k):
    return 1.0 - 0.02 * (k % 3)


# name -> (our factory(lr) -> schedule, torch factory(optimizer) -> scheduler)
SCHEDULES = {
    "lambda_inverse_sqrt": (
        lambda lr: lambda_lr(lr, inverse_sqrt),
        lambda o: torch_sched.LambdaLR(o, inverse_sqrt),
    ),
    "lambda_geometric": (
        lambda lr: lambda_lr(lr, geometric),
        lambda o: torch_sched.LambdaLR(o, geometric),
    ),
    "multiplicative_constant": (
        lambda lr: multiplicative_lr(lr, lambda k: 0.97),
        lambda o: torch_sched.MultiplicativeLR(o, lambda k: 0.97),
    ),
    "multiplicative_wobble": (
        lambda lr: multiplicative_lr(lr, wobble),
        lambda o: torch_sched.MultiplicativeLR(o, wobble),
    ),
    "constant_default": (constant_lr, torch_sched.ConstantLR),
    "constant_third_10": (
        lambda lr: constant_lr(lr, 0.3, 10),
        lambda o: torch_sched.ConstantLR(o, 0.3, 10),
    ),
    "constant_zero_iters": (
        lambda lr: constant_lr(lr, 0.25, 0),
        lambda o: torch_sched.ConstantLR(o, 0.25, 0),
    ),
    "constant_factor_zero_forever": (
        lambda lr: constant_lr(lr, 0.0, 0),
        lambda o: torch_sched.ConstantLR(o, 0.0, 0),
    ),
    "polynomial_default": (polynomial_lr, torch_sched.PolynomialLR),
    "polynomial_square_40": (
        lambda lr: polynomial_lr(lr, 40, 2.0),
        lambda o: torch_sched.PolynomialLR(o, 40, 2.0),
    ),
    "polynomial_root_50": (
        lambda lr: polynomial_lr(lr, 50, 0.5),
        lambda o: torch_sched.PolynomialLR(o, 50, 0.5),
    ),
    "polynomial_zero_iters": (
        lambda lr: polynomial_lr(lr, 0),
        lambda o: torch_sched.PolynomialLR(o, 0),
    ),
    "warm_restarts_7": (
        lambda lr: cosine_annealing_warm_restarts(lr, 7),
        lambda o: torch_sched.CosineAnnealingWarmRestarts(o, 7),
    ),
    "warm_restarts_3_mult_2_eta_min": (
        lambda lr: cosine_annealing_warm_restarts(lr, 3, 2, 1e-3),
        lambda o: torch_sched.CosineAnnealingWarmRestarts(o, 3, 2, 1e-3),
    ),
    "warm_restarts_1_mult_3": (
        lambda lr: cosine_annealing_warm_restarts(lr, 1, 3),
        lambda o: torch_sched.CosineAnnealingWarmRestarts(o, 1, 3),
    ),
}

FLOAT32_SCHEDULES = [
    "lambda_inverse_sqrt",
    "multiplicative_wobble",
    "constant_third_10",
    "polynomial_square_40",
    "warm_restarts_3_mult_2_eta_min",
]


@pytest.mark.parametrize(
    "name, dtype, tolerance",
    [(name, "float64", 1e-12) for name in SCHEDULES]
    + [(name, "float32", 1e-6) for name in FLOAT32_SCHEDULES],
)
def test_lr_sequence_matches_torch(name, dtype, tolerance):
    ours_factory, torch_factory = SCHEDULES[name]
    with precision(dtype):
        values = ours_values(ours_factory(LR), STEPS)
        assert values.dtype == np.dtype(dtype)
    assert_sequence_close(values, torch_values(torch_factory, STEPS)[0], tolerance)


def random_cases(seed, count=4):
    """(name, our schedule factory, torch factory) with arguments drawn at random."""
    rng = np.random.default_rng(seed)
    cases = []
    for i in range(count):
        gamma = float(rng.uniform(0.8, 1.0))
        power = float(rng.uniform(0.1, 3.0))
        factor = float(rng.uniform(0.01, 1.0))
        iters = int(rng.integers(1, 40))
        t_0, t_mult = int(rng.integers(1, 12)), int(rng.integers(1, 4))
        eta_min = float(rng.uniform(0.0, 0.5 * LR))

        def lam(k, gamma=gamma):
            return gamma ** (k % 7)

        cases += [
            (f"lambda_{i}", lambda lr, f=lam: lambda_lr(lr, f),
             lambda o, f=lam: torch_sched.LambdaLR(o, f)),
            (f"multiplicative_{i}", lambda lr, f=lam: multiplicative_lr(lr, f),
             lambda o, f=lam: torch_sched.MultiplicativeLR(o, f)),
            (f"constant_{i}", lambda lr, a=factor, n=iters: constant_lr(lr, a, n),
             lambda o, a=factor, n=iters: torch_sched.ConstantLR(o, a, n)),
            (f"polynomial_{i}", lambda lr, n=iters, p=power: polynomial_lr(lr, n, p),
             lambda o, n=iters, p=power: torch_sched.PolynomialLR(o, n, p)),
            (f"warm_restarts_{i}",
             lambda lr, a=t_0, b=t_mult, c=eta_min: cosine_annealing_warm_restarts(lr, a, b, c),
             lambda o, a=t_0, b=t_mult, c=eta_min:
                 torch_sched.CosineAnnealingWarmRestarts(o, a, b, c)),
        ]  # fmt: skip
    return cases


@pytest.mark.parametrize("seed", [0, 1])
def test_random_arguments_match_torch(seed):
    for name, ours_factory, torch_factory in random_cases(seed):
        with precision("float64"):
            values = ours_values(ours_factory(LR), STEPS)
        error = assert_sequence_close(values, torch_values(torch_factory, STEPS)[0], 1e-12)
        assert error <= 1e-12, name


@pytest.mark.parametrize(
    "name", ["lambda_inverse_sqrt", "multiplicative_wobble", "constant_third_10",
             "polynomial_square_40", "warm_restarts_3_mult_2_eta_min"],
)  # fmt: skip
def test_sgd_parity_with_torch_scheduler(name):
    ours_factory, torch_factory = SCHEDULES[name]
    run_parity(
        jaxopt_adv.torch.sgd(ours_factory(LR), momentum=0.9, weight_decay=1e-3),
        with_scheduler(torch.optim.SGD, torch_factory, lr=LR, momentum=0.9, weight_decay=1e-3),
        num_steps=25,
        state_map={"trace": "momentum_buffer"},
    )


def test_constant_lr_reproduces_torch_rounding_after_total_iters():
    """torch multiplies back by ``1 / factor``: 0.1 * 0.7 * (1 / 0.7) != 0.1 in doubles."""
    lrs = torch_values(lambda o: torch_sched.ConstantLR(o, 0.7, 2), 4)[0]
    assert lrs[3] != LR
    with precision("float64"):
        values = ours_values(constant_lr(LR, 0.7, 2), 4)
    np.testing.assert_array_equal(values, lrs)


def test_multiplicative_lr_is_torch_product_bit_for_bit():
    lrs = torch_values(lambda o: torch_sched.MultiplicativeLR(o, wobble), STEPS)[0]
    with precision("float64"):
        values = ours_values(multiplicative_lr(LR, wobble), STEPS)
    np.testing.assert_array_equal(values, lrs)


def test_warm_restarts_long_run_and_huge_counts():
    """T_mult = 2 over 5000 steps (nine restarts), and counts near the int32 limit."""
    steps = 5000
    lrs = torch_values(lambda o: torch_sched.CosineAnnealingWarmRestarts(o, 5, 2), steps)[0]
    schedule = cosine_annealing_warm_restarts(LR, 5, 2)
    with precision("float64"):
        values = ours_values(schedule, steps)
        assert_sequence_close(values, lrs, 1e-9)  # torch's cosine rounds near the minima
        big = np.asarray(schedule(np.int32(2**31 - 1)))
    # 5 * (2^28 - 1) is the last restart below 2^31: 2^31 - 1 is 805306372 steps into it.
    t_cur, t_i = 2**31 - 1 - 5 * (2**28 - 1), 5 * 2**28
    assert big == pytest.approx(LR * (1 + math.cos(math.pi * t_cur / t_i)) / 2, rel=1e-12)


def test_new_schedules_are_exported_where_the_old_ones_are():
    for name in ["lambda_lr", "multiplicative_lr", "constant_lr", "polynomial_lr",
                 "cosine_annealing_warm_restarts"]:  # fmt: skip
        assert getattr(jaxopt_adv.torch, name) is getattr(lr_scheduler, name)


@pytest.mark.parametrize(
    "factory, kwargs, error, message",
    [
        (lambda_lr, {"learning_rate": -0.1, "lr_lambda": geometric}, ValueError,
         "Invalid learning rate"),
        (lambda_lr, {"learning_rate": 0.1, "lr_lambda": 0.5}, TypeError, "lr_lambda"),
        (multiplicative_lr, {"learning_rate": 0.1, "lr_lambda": None}, TypeError, "lr_lambda"),
        (constant_lr, {"learning_rate": 0.1, "factor": 1.5}, ValueError, "Invalid factor"),
        (constant_lr, {"learning_rate": 0.1, "factor": -0.5}, ValueError, "Invalid factor"),
        (constant_lr, {"learning_rate": 0.1, "factor": 0.0}, ValueError, "ZeroDivision"),
        (constant_lr, {"learning_rate": 0.1, "total_iters": -1}, ValueError, "total_iters"),
        (polynomial_lr, {"learning_rate": 0.1, "total_iters": 2.5}, ValueError, "total_iters"),
        (polynomial_lr, {"learning_rate": 0.1, "power": -1.0}, ValueError, "Invalid power"),
        (cosine_annealing_warm_restarts, {"learning_rate": 0.1, "T_0": 0}, ValueError, "T_0"),
        (cosine_annealing_warm_restarts, {"learning_rate": 0.1, "T_0": 2.0}, ValueError,
         "T_0"),
        (cosine_annealing_warm_restarts, {"learning_rate": 0.1, "T_0": 2, "T_mult": 0},
         ValueError, "T_mult"),
        (cosine_annealing_warm_restarts, {"learning_rate": 0.1, "T_0": 2, "eta_min": -1.0},
         ValueError, "eta_min"),
    ],
)  # fmt: skip
def test_bad_arguments(factory, kwargs, error, message):
    with pytest.raises(error, match=message):
        factory(**kwargs)


@pytest.mark.parametrize(
    "make, error",
    [
        (lambda o: torch_sched.LambdaLR(o, [geometric, geometric]), ValueError),
        (lambda o: torch_sched.MultiplicativeLR(o, 0.5), TypeError),
        (lambda o: torch_sched.ConstantLR(o, 1.5), ValueError),
        (lambda o: torch_sched.CosineAnnealingWarmRestarts(o, 0), ValueError),
        (lambda o: torch_sched.CosineAnnealingWarmRestarts(o, 2.0), ValueError),
        (lambda o: torch_sched.CosineAnnealingWarmRestarts(o, 2, 0), ValueError),
    ],
)
def test_torch_rejects_what_we_reject(make, error):
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=LR)
    with pytest.raises(error):
        make(optimizer)


def test_torch_constant_lr_factor_zero_divides():
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=LR)
    scheduler = torch_sched.ConstantLR(optimizer, 0.0, 1)
    optimizer.step()
    with pytest.raises(ZeroDivisionError):
        scheduler.step()
