"""torch.optim.lr_scheduler parity for the factor, cyclic and composed schedules.

Same method as ``test_lr_scheduler.py``: torch's scheduler stepped after every
``optimizer.step()``, its ``param_groups[0]["lr"]`` before each step against our
schedule under jit (float64 <= 1e-12 relative, float32 <= 1e-6), >= 50 steps, fixed and
randomly drawn arguments, plus harness parity runs of SGD driven by the schedule.
"""

import math

import jax.numpy as jnp
import numpy as np
import optax
import pytest
import torch
from torch.optim import lr_scheduler as torch_sched

import jaxopt_adv
from jaxopt_adv.torch import lr_scheduler
from jaxopt_adv.torch.lr_compose import chained_scheduler, sequential_lr
from jaxopt_adv.torch.lr_cyclic import (
    cosine_annealing_warm_restarts,
    cyclic_lr,
    cyclic_momentum,
)
from jaxopt_adv.torch.lr_factor import constant_lr, lambda_lr, multiplicative_lr, polynomial_lr
from jaxopt_adv.torch.lr_scheduler import exponential_lr, reduce_lr_on_plateau
from tests.harness import gradient_stream, make_params, precision, run_parity
from tests.helpers.lr_schedules import (
    LR,
    assert_sequence_close,
    ours_values,
    plateau_losses,
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
    names = ["lambda_lr", "multiplicative_lr", "constant_lr", "polynomial_lr",
             "cosine_annealing_warm_restarts", "sequential_lr", "chained_scheduler",
             "cyclic_lr", "cyclic_momentum"]  # fmt: skip
    for name in names:
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


# ------------------------------------------------------------- SequentialLR, ChainedScheduler


def pair(ours_name, torch_cls, *args):
    """(our factory(lr), torch factory(optimizer)) for the same scheduler arguments."""
    return (
        lambda lr: getattr(lr_scheduler, ours_name)(lr, *args),
        lambda o: torch_cls(o, *args),
    )


def sequential(pairs, milestones):
    return (
        lambda lr: sequential_lr([ours(lr) for ours, _ in pairs], milestones),
        lambda o: torch_sched.SequentialLR(o, [make(o) for _, make in pairs], milestones),
    )


def chained(pairs):
    return (
        lambda lr: chained_scheduler([ours(lr) for ours, _ in pairs], lr),
        lambda o: torch_sched.ChainedScheduler([make(o) for _, make in pairs]),
    )


COMPOSED = {
    "sequential_warmup_cosine": sequential(
        [pair("linear_lr", torch_sched.LinearLR, 0.1, 1.0, 5),
         pair("cosine_annealing_lr", torch_sched.CosineAnnealingLR, 50)], [5]),
    "sequential_three": sequential(
        [pair("constant_lr", torch_sched.ConstantLR, 0.5, 3),
         pair("exponential_lr", torch_sched.ExponentialLR, 0.9),
         pair("step_lr", torch_sched.StepLR, 7, 0.5)], [10, 30]),
    "sequential_repeated_milestone": sequential(
        [pair("constant_lr", torch_sched.ConstantLR, 0.5, 3),
         pair("exponential_lr", torch_sched.ExponentialLR, 0.9),
         pair("polynomial_lr", torch_sched.PolynomialLR, 20, 2.0)], [10, 10]),
    "sequential_milestone_zero": sequential(
        [pair("exponential_lr", torch_sched.ExponentialLR, 0.5),
         pair("linear_lr", torch_sched.LinearLR, 0.5, 1.0, 4)], [0]),
    "sequential_lambda_restarts": sequential(
        [pair("lambda_lr", torch_sched.LambdaLR, inverse_sqrt),
         pair("cosine_annealing_warm_restarts", torch_sched.CosineAnnealingWarmRestarts, 5, 2)],
        [8]),
    "sequential_multiplicative_first": sequential(
        [pair("multiplicative_lr", torch_sched.MultiplicativeLR, wobble),
         pair("linear_lr", torch_sched.LinearLR, 0.3, 0.9, 12),
         pair("multistep_lr", torch_sched.MultiStepLR, [3, 9], 0.5)], [20, 40]),
    "sequential_single": sequential([pair("exponential_lr", torch_sched.ExponentialLR, 0.97)], []),
    "chained_constant_exponential": chained(
        [pair("constant_lr", torch_sched.ConstantLR, 0.5, 4),
         pair("exponential_lr", torch_sched.ExponentialLR, 0.95)]),
    "chained_three": chained(
        [pair("linear_lr", torch_sched.LinearLR, 0.2, 1.0, 10),
         pair("step_lr", torch_sched.StepLR, 7, 0.5),
         pair("polynomial_lr", torch_sched.PolynomialLR, 40, 1.5)]),
    "chained_multiplicative_multistep_cosine": chained(
        [pair("multiplicative_lr", torch_sched.MultiplicativeLR, wobble),
         pair("multistep_lr", torch_sched.MultiStepLR, [5, 20], 0.3),
         pair("cosine_annealing_lr", torch_sched.CosineAnnealingLR, 60)]),
}  # fmt: skip


@pytest.mark.parametrize(
    "name, dtype, tolerance",
    [(name, "float64", 1e-12) for name in COMPOSED]
    + [(name, "float32", 1e-6) for name in ["sequential_three", "chained_three"]],
)
def test_composed_sequence_matches_torch(name, dtype, tolerance):
    ours_factory, torch_factory = COMPOSED[name]
    with precision(dtype):
        values = ours_values(ours_factory(LR), STEPS)
        assert values.dtype == np.dtype(dtype)
    assert_sequence_close(values, torch_values(torch_factory, STEPS)[0], tolerance)


def random_pair(rng):
    """A chainable scheduler with arguments drawn at random (``total_iters >= 1``; every
    kind, zero included, is drawn in ``test_lr_compose.py``)."""
    kind = int(rng.integers(0, 6))
    if kind == 0:
        return pair("step_lr", torch_sched.StepLR, int(rng.integers(1, 15)),
                    float(rng.uniform(0.1, 1.0)))  # fmt: skip
    if kind == 1:
        return pair("exponential_lr", torch_sched.ExponentialLR, float(rng.uniform(0.9, 1.0)))
    if kind == 2:
        return pair("linear_lr", torch_sched.LinearLR, float(rng.uniform(0.05, 1.0)),
                    float(rng.uniform(0.05, 1.0)), int(rng.integers(1, 30)))  # fmt: skip
    if kind == 3:
        return pair("constant_lr", torch_sched.ConstantLR, float(rng.uniform(0.05, 1.0)),
                    int(rng.integers(1, 30)))  # fmt: skip
    if kind == 4:
        return pair("polynomial_lr", torch_sched.PolynomialLR, int(rng.integers(1, 80)),
                    float(rng.uniform(0.2, 3.0)))  # fmt: skip
    milestones = sorted(int(m) for m in rng.integers(0, STEPS, size=3))
    return pair("multistep_lr", torch_sched.MultiStepLR, milestones, float(rng.uniform(0.1, 1)))


@pytest.mark.parametrize("seed", [0, 1])
def test_random_composed_match_torch(seed):
    rng = np.random.default_rng(seed)
    for _ in range(3):
        n = int(rng.integers(1, 4))
        pairs = [random_pair(rng) for _ in range(n)]
        milestones = sorted(int(m) for m in rng.integers(0, STEPS, size=n - 1))
        for ours_factory, torch_factory in (sequential(pairs, milestones), chained(pairs)):
            with precision("float64"):
                values = ours_values(ours_factory(LR), STEPS)
            assert_sequence_close(values, torch_values(torch_factory, STEPS)[0], 1e-12)


def test_sequential_sgd_parity_with_torch_scheduler():
    ours_factory, torch_factory = COMPOSED["sequential_warmup_cosine"]
    run_parity(
        jaxopt_adv.torch.sgd(ours_factory(LR), momentum=0.9),
        with_scheduler(torch.optim.SGD, torch_factory, lr=LR, momentum=0.9),
        num_steps=25,
        state_map={"trace": "momentum_buffer"},
    )


@pytest.mark.parametrize(
    "factory, args, error, message",
    [
        (sequential_lr, ([], []), ValueError, "at least one schedule"),
        (sequential_lr, ([0.1, 0.2], [3]), TypeError, r"schedules\[0\]"),
        (sequential_lr, ([geometric, geometric], []), ValueError, "one milestone fewer"),
        (sequential_lr, ([geometric, geometric], [3, 4]), ValueError, "one milestone fewer"),
        (sequential_lr, ([geometric] * 3, [5, 2]), ValueError, "non-decreasing"),
        (sequential_lr, ([geometric] * 2, [-1]), ValueError, "Invalid milestone"),
        (chained_scheduler, ([], 0.1), ValueError, "at least one schedule"),
        (chained_scheduler, ([None], 0.1), TypeError, r"schedules\[0\]"),
        (chained_scheduler, ([geometric], 0.0), ValueError, "learning_rate"),
    ],
)
def test_bad_composed_arguments(factory, args, error, message):
    with pytest.raises(error, match=message):
        factory(*args)


def test_torch_rejects_bad_composed_arguments():
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=LR)
    exp = torch_sched.ExponentialLR(optimizer, 0.9)
    with pytest.raises(ValueError, match="at least one"):
        torch_sched.SequentialLR(optimizer, [], [])
    with pytest.raises(ValueError, match="milestone"):
        torch_sched.SequentialLR(optimizer, [exp, exp], [])
    with pytest.raises(ValueError, match="at least one"):
        torch_sched.ChainedScheduler([])


# ---------------------------------------------------------------------------------- CyclicLR


def decay_scale(x):
    return 1.0 / (1.0 + 0.5 * x)


def slow_decay(x):
    return 0.99**x


# name -> CyclicLR keyword arguments (the same for ours and torch's)
CYCLIC = {
    "triangular": {"base_lr": 0.01, "max_lr": 0.1, "step_size_up": 5},
    "triangular_uneven": {"base_lr": 0.02, "max_lr": 0.3, "step_size_up": 4,
                          "step_size_down": 9},
    "triangular2": {"base_lr": 0.01, "max_lr": 0.1, "step_size_up": 3, "step_size_down": 7,
                    "mode": "triangular2"},
    "exp_range": {"base_lr": 0.001, "max_lr": 0.1, "step_size_up": 6, "mode": "exp_range",
                  "gamma": 0.97},
    "scale_fn_cycle": {"base_lr": 0.01, "max_lr": 0.2, "step_size_up": 4,
                       "scale_fn": decay_scale},
    "scale_fn_iterations": {"base_lr": 0.01, "max_lr": 0.2, "step_size_up": 4,
                            "step_size_down": 6, "scale_fn": slow_decay,
                            "scale_mode": "iterations", "mode": "ignored"},
    "sawtooth": {"base_lr": 0.01, "max_lr": 0.1, "step_size_up": 5, "step_size_down": 0},
    "fractional_steps": {"base_lr": 0.01, "max_lr": 0.1, "step_size_up": 2.5,
                         "step_size_down": 3.5, "mode": "triangular2"},
}  # fmt: skip

MOMENTA = {"base_momentum": 0.75, "max_momentum": 0.95}


def our_cyclic(kwargs, **momenta):
    """(lr schedule, momentum schedule) for CyclicLR's keyword arguments."""
    cycle = {k: v for k, v in kwargs.items() if k not in ("base_lr", "max_lr")}
    return (
        cyclic_lr(kwargs["base_lr"], kwargs["max_lr"], **cycle),
        cyclic_momentum(**cycle, **momenta),
    )


def check_cyclic(kwargs, dtype, tolerance, optimizer_cls=torch.optim.SGD, **optimizer_kwargs):
    lrs, momenta = torch_values(
        lambda o: torch_sched.CyclicLR(o, **kwargs, **MOMENTA),
        STEPS,
        optimizer_cls,
        **optimizer_kwargs,
    )
    lr_schedule, momentum_schedule = our_cyclic(kwargs, **MOMENTA)
    with precision(dtype):  # one compilation for both
        values = ours_values(lambda k: jnp.stack([lr_schedule(k), momentum_schedule(k)]), STEPS)
        assert values.dtype == np.dtype(dtype)
    assert_sequence_close(values[:, 0], lrs, tolerance)
    assert_sequence_close(values[:, 1], momenta, tolerance)
    assert np.min(momenta) < MOMENTA["max_momentum"]  # torch does cycle the momentum


@pytest.mark.parametrize(
    "name, dtype, tolerance",
    [(name, "float64", 1e-12) for name in CYCLIC]
    + [(name, "float32", 1e-6) for name in ["triangular2", "exp_range", "fractional_steps"]],
)
def test_cyclic_sequence_matches_torch(name, dtype, tolerance):
    check_cyclic(CYCLIC[name], dtype, tolerance, momentum=0.9)


def test_cyclic_adam_beta1_matches_torch():
    check_cyclic(CYCLIC["triangular_uneven"], "float64", 1e-12, torch.optim.Adam)


@pytest.mark.parametrize("seed", [0, 1])
def test_random_cyclic_match_torch(seed):
    rng = np.random.default_rng(seed)
    for _ in range(4):
        base = float(rng.uniform(0.0, 0.05))
        kwargs = {
            "base_lr": base,
            "max_lr": base + float(rng.uniform(0.0, 0.5)),
            "step_size_up": int(rng.integers(1, 12)),
            "step_size_down": [None, int(rng.integers(0, 12))][int(rng.integers(0, 2))],
            "mode": ["triangular", "triangular2", "exp_range"][int(rng.integers(0, 3))],
            "gamma": float(rng.uniform(0.9, 1.0)),
        }
        check_cyclic(kwargs, "float64", 1e-12, momentum=0.9)


def test_cyclic_sgd_momentum_parity():
    kwargs = CYCLIC["triangular2"]
    lr_schedule, momentum_schedule = our_cyclic(kwargs, **MOMENTA)
    ours_opt = optax.inject_hyperparams(jaxopt_adv.torch.sgd)(
        learning_rate=lr_schedule, momentum=momentum_schedule, weight_decay=1e-3
    )
    run_parity(
        ours_opt,
        with_scheduler(
            torch.optim.SGD,
            lambda o: torch_sched.CyclicLR(o, **kwargs, **MOMENTA),
            lr=LR,
            momentum=0.5,
            weight_decay=1e-3,
        ),
        num_steps=25,
        state_map={"trace": "momentum_buffer"},
    )


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        ({"base_lr": -0.1, "max_lr": 0.1}, ValueError, "base_lr"),
        ({"base_lr": 0.1, "max_lr": -1.0}, ValueError, "max_lr"),
        ({"base_lr": 0.1, "max_lr": 1.0, "step_size_up": 0}, ValueError, "step_size_up"),
        ({"base_lr": 0.1, "max_lr": 1.0, "step_size_down": -1}, ValueError, "step_size_down"),
        ({"base_lr": 0.1, "max_lr": 1.0, "mode": "square"}, ValueError, "Invalid mode"),
        ({"base_lr": 0.1, "max_lr": 1.0, "scale_fn": 2.0}, TypeError, "scale_fn"),
        ({"base_lr": 0.1, "max_lr": 1.0, "scale_mode": "epoch"}, ValueError, "scale_mode"),
        ({"base_lr": 0.1, "max_lr": 1.0, "gamma": -0.5}, ValueError, "Invalid gamma"),
    ],
)
def test_bad_cyclic_arguments(kwargs, error, message):
    with pytest.raises(error, match=message):
        cyclic_lr(**kwargs)
    momentum_kwargs = {k: v for k, v in kwargs.items() if k not in ("base_lr", "max_lr")}
    if momentum_kwargs:
        with pytest.raises(error, match=message):
            cyclic_momentum(**momentum_kwargs)


@pytest.mark.parametrize("name", ["base_momentum", "max_momentum"])
def test_bad_cyclic_momentum(name):
    with pytest.raises(ValueError, match=name):
        cyclic_momentum(**{name: -0.1})


def test_torch_cyclic_rejects_and_divides_by_zero():
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=LR, momentum=0.9)
    with pytest.raises(ValueError, match="mode is invalid"):
        torch_sched.CyclicLR(optimizer, 0.1, 1.0, mode="square")
    with pytest.raises(ZeroDivisionError):
        torch_sched.CyclicLR(optimizer, 0.1, 1.0, step_size_up=0)


# ----------------------------------------------- ReduceLROnPlateau after Rprop and ASGD

PLATEAU_KWARGS = {"factor": 0.5, "patience": 1, "threshold": 1e-2}


def plateau_run(optimizer_name, recipe, steps=40):
    """Max parameter error of ours against torch's optimizer + ReduceLROnPlateau.

    ``recipe=False``: ``optax.chain(optimizer, reduce_lr_on_plateau)``. ``recipe=True``:
    the documented exact form, the plateau's lr written into the optimizer's injected
    ``learning_rate`` (ASGD: one step late; Rprop: never).
    """
    make, torch_cls, kwargs = {
        "asgd": (jaxopt_adv.torch.asgd, torch.optim.ASGD,
                 {"lambd": 0.05, "alpha": 0.75, "t0": 5.0}),
        "rprop": (jaxopt_adv.torch.rprop, torch.optim.Rprop, {}),
    }[optimizer_name]  # fmt: skip
    losses, stream, start = plateau_losses(steps), gradient_stream(steps), make_params()
    names = list(start)
    plateau = reduce_lr_on_plateau(**PLATEAU_KWARGS)
    errors = []
    with precision("float64", torch_default="float32"):
        t_params = [torch.tensor(start[k]).requires_grad_(True) for k in names]
        optimizer = torch_cls(t_params, lr=LR, **kwargs)
        scheduler = torch_sched.ReduceLROnPlateau(optimizer, **PLATEAU_KWARGS)
        params = {k: jnp.asarray(v) for k, v in start.items()}
        if recipe:
            ours = optax.inject_hyperparams(make)(learning_rate=LR, **kwargs)
            plateau_state, scales = plateau.init(params), [1.0, 1.0]
        else:
            ours = optax.chain(make(LR, **kwargs), plateau)
        state = ours.init(params)
        for g, loss in zip(stream, losses, strict=True):
            grads = {k: jnp.asarray(v) for k, v in g.items()}
            if recipe:
                scale = scales[-2] if optimizer_name == "asgd" else 1.0
                hyperparams = {**state.hyperparams, "learning_rate": jnp.asarray(LR * scale)}
                updates, state = ours.update(grads, state._replace(hyperparams=hyperparams), params)
                _, plateau_state = plateau.update(grads, plateau_state, value=loss)
                scales.append(float(plateau_state.scale))
            else:
                updates, state = ours.update(grads, state, params, value=loss)
            params = optax.apply_updates(params, updates)
            for p, k in zip(t_params, names, strict=True):
                p.grad = torch.tensor(g[k])
            optimizer.step()
            scheduler.step(loss)
            errors.append(max(np.max(np.abs(np.asarray(params[k]) - p.detach().numpy()))
                              for p, k in zip(t_params, names, strict=True)))  # fmt: skip
    assert optimizer.param_groups[0]["lr"] < LR / 100  # the plateau did reduce the lr
    return max(errors) / max(np.max(np.abs(v)) for v in start.values())


@pytest.mark.parametrize("optimizer_name", ["asgd", "rprop"])
def test_reduce_lr_on_plateau_after_rprop_and_asgd(optimizer_name):
    """Scaling the updates is not torch for these two (documented in the docstring);
    the documented injected-lr form is exact."""
    assert plateau_run(optimizer_name, recipe=False) > 1e-2
    assert plateau_run(optimizer_name, recipe=True) <= 1e-12


def test_optax_schedules_that_return_float32_under_x64():
    """The list in the lr_scheduler docs: these optax schedules stay float32 with x64 on
    (ours return float64, checked in every float64 sequence test above)."""
    count = jnp.asarray(3, jnp.int32)
    float32_schedules = [
        optax.linear_schedule(0.1, 0.01, 10),
        optax.polynomial_schedule(0.1, 0.01, 2.0, 10),
        optax.exponential_decay(0.1, 5, 0.5),
        optax.warmup_cosine_decay_schedule(0.0, 0.1, 5, 20),
        optax.warmup_exponential_decay_schedule(0.0, 0.1, 5, 5, 0.5),
        optax.schedules.warmup_constant_schedule(0.0, 0.1, 5),
        optax.sgdr_schedule([{"init_value": 0.0, "peak_value": 0.1, "warmup_steps": 2,
                              "decay_steps": 10}]),
    ]  # fmt: skip
    with precision("float64"):
        assert [s(count).dtype for s in float32_schedules] == [jnp.float32] * 7
        assert optax.cosine_decay_schedule(0.1, 10)(count).dtype == jnp.float64
        assert polynomial_lr(0.1, 10, 2.0)(count).dtype == jnp.float64


def test_schedules_take_count_arrays():
    """A batch of counts gives a batch of values, a constant lambda included."""
    counts = jnp.arange(4, dtype=jnp.int32)
    schedules = [lambda_lr(LR, lambda k: 0.5), multiplicative_lr(LR, lambda k: 0.5),
                 constant_lr(LR, 0.5, 2), polynomial_lr(LR, 3),
                 cosine_annealing_warm_restarts(LR, 2, 2), cyclic_lr(0.01, LR, 2),
                 sequential_lr([constant_lr(LR, 0.5, 2), polynomial_lr(LR, 3)], [2]),
                 chained_scheduler([constant_lr(LR, 0.5, 2), exponential_lr(LR, 0.5)],
                                   LR)]  # fmt: skip
    for schedule in schedules:
        values = schedule(counts)
        assert values.shape == (4,) and values.dtype == jnp.float32
        np.testing.assert_allclose(values, [float(schedule(int(k))) for k in counts], rtol=1e-6)
