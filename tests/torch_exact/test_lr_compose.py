"""torch's ChainedScheduler and SequentialLR over any mix of schedulers.

Same method as ``test_lr_scheduler.py`` (torch's ``param_groups[0]["lr"]`` before each
step against our schedule under jit, float64, 1e-12 relative), over 70 steps: the
schedulers that overwrite the lr (LambdaLR, CyclicLR, OneCycleLR,
CosineAnnealingWarmRestarts) and the cosine's recursion inside a chain, MultiplicativeLR
and ``total_iters=0`` after a milestone, nested compositions and optax schedules.
"""

import numpy as np
import pytest
import torch
from torch.optim import lr_scheduler as torch_sched

from jaxopt_adv.torch import lr_scheduler as ours
from jaxopt_adv.torch.lr_compose import chained_scheduler, sequential_lr
from tests.harness import precision
from tests.helpers.lr_schedules import LR, assert_sequence_close, ours_values, torch_values

STEPS = 70


def inverse_sqrt(k):
    return 1.0 / (1.0 + 0.1 * k) ** 0.5


def wobble(k):
    return 1.0 - 0.02 * (k % 3)


def geometric(k):
    """An optax-style schedule (no torch rule): a chainable factor s(k) / s(k - 1)."""
    return LR * 0.95**k


def draw(rng):
    """``(our schedule, torch factory(optimizer))`` of any scheduler, arguments at random
    (OneCycleLR and CyclicLR keep the optimizer's lr as the shared base)."""
    u, i = lambda a, b: float(rng.uniform(a, b)), lambda a, b: int(rng.integers(a, b))
    kind = i(0, 12)
    if kind == 0:
        a = (i(1, 15), u(0.1, 1))
        return ours.step_lr(LR, *a), lambda o: torch_sched.StepLR(o, *a)
    if kind == 1:
        a = (u(0.9, 1),)
        return ours.exponential_lr(LR, *a), lambda o: torch_sched.ExponentialLR(o, *a)
    if kind == 2:
        a = (u(0.05, 1), u(0.05, 1), i(0, 30))
        return ours.linear_lr(LR, *a), lambda o: torch_sched.LinearLR(o, *a)
    if kind == 3:
        a = (u(0.05, 1), i(0, 30))
        return ours.constant_lr(LR, *a), lambda o: torch_sched.ConstantLR(o, *a)
    if kind == 4:
        a = (i(0, 80), u(0.2, 3))
        return ours.polynomial_lr(LR, *a), lambda o: torch_sched.PolynomialLR(o, *a)
    if kind == 5:
        a = (sorted(int(m) for m in rng.integers(0, STEPS, 3)), u(0.1, 1))
        return ours.multistep_lr(LR, *a), lambda o: torch_sched.MultiStepLR(o, *a)
    if kind == 6:
        return ours.multiplicative_lr(LR, wobble), lambda o: torch_sched.MultiplicativeLR(o, wobble)
    if kind == 7:
        a = (i(3, 30), LR * u(0, 0.5))
        return ours.cosine_annealing_lr(LR, *a), lambda o: torch_sched.CosineAnnealingLR(o, *a)
    if kind == 8:
        return ours.lambda_lr(LR, inverse_sqrt), lambda o: torch_sched.LambdaLR(o, inverse_sqrt)
    if kind == 9:
        a = (i(2, 9), i(1, 3), LR * u(0, 0.3))
        return (
            ours.cosine_annealing_warm_restarts(LR, *a),
            lambda o: torch_sched.CosineAnnealingWarmRestarts(o, *a),
        )
    if kind == 10:
        a = {"max_lr": LR * u(1.5, 4), "step_size_up": i(2, 10), "mode": "triangular2"}
        return ours.cyclic_lr(LR, **a), lambda o: torch_sched.CyclicLR(o, LR, **a)
    a = {"max_lr": LR * 25.0, "total_steps": STEPS + 5, "pct_start": u(0.1, 0.5)}
    return ours.one_cycle_lr(**a), lambda o: torch_sched.OneCycleLR(o, **a)


def compare(schedule, torch_factory):
    with precision("float64"):
        values = ours_values(schedule(), STEPS)
    return assert_sequence_close(values, torch_values(torch_factory, STEPS)[0], 1e-12)


@pytest.mark.parametrize("seed", range(4))
def test_random_mixes_match_torch(seed):
    """Chains and sequences of 1 to 3 schedulers of every kind; where torch divides by
    zero (a total_iters=0 restart) ours refuses at construction."""
    rng = np.random.default_rng(seed)
    for _ in range(4):
        items = [draw(rng) for _ in range(int(rng.integers(1, 4)))]
        milestones = sorted(int(m) for m in rng.integers(0, STEPS, len(items) - 1))
        compare(
            lambda items=items: chained_scheduler([s for s, _ in items], LR),
            lambda o, items=items: torch_sched.ChainedScheduler([make(o) for _, make in items]),
        )

        def torch_sequential(o, items=items, milestones=milestones):
            return torch_sched.SequentialLR(o, [make(o) for _, make in items], milestones)

        try:
            reference = torch_values(torch_sequential, STEPS)[0]
        except ZeroDivisionError:
            with pytest.raises(ValueError, match="divides by zero"):
                sequential_lr([s for s, _ in items], milestones)
            continue
        with precision("float64"):
            values = ours_values(sequential_lr([s for s, _ in items], milestones), STEPS)
        assert_sequence_close(values, reference, 1e-12)


CASES = {
    # the overwriting scheduler last: the exponential decay is lost
    "exponential_then_lambda": (
        lambda: chained_scheduler(
            [ours.exponential_lr(LR, 0.9), ours.lambda_lr(LR, inverse_sqrt)], LR
        ),
        lambda o: torch_sched.ChainedScheduler(
            [torch_sched.ExponentialLR(o, 0.9), torch_sched.LambdaLR(o, inverse_sqrt)]
        ),
    ),
    # ... first: one factor of 0.9 at every step after the first, not 0.9**k
    "lambda_then_exponential_and_cosine": (
        lambda: chained_scheduler(
            [
                ours.lambda_lr(LR, inverse_sqrt),
                ours.exponential_lr(LR, 0.9),
                ours.cosine_annealing_lr(LR, 9, 0.01),
            ],
            LR,
        ),
        lambda o: torch_sched.ChainedScheduler(
            [
                torch_sched.LambdaLR(o, inverse_sqrt),
                torch_sched.ExponentialLR(o, 0.9),
                torch_sched.CosineAnnealingLR(o, 9, 0.01),
            ]
        ),
    ),
    # the cosine's additions after each minimum, the recursion run step by step
    "cosine_past_its_minimum_with_exponential": (
        lambda: chained_scheduler(
            [ours.cosine_annealing_lr(LR, 12), ours.exponential_lr(LR, 0.97)], LR
        ),
        lambda o: torch_sched.ChainedScheduler(
            [torch_sched.CosineAnnealingLR(o, 12), torch_sched.ExponentialLR(o, 0.97)]
        ),
    ),
    # an optax schedule scales by s(k) / s(k - 1), in every path
    "optax_after_cyclic": (
        lambda: chained_scheduler([ours.cyclic_lr(LR, 0.3, 4), geometric], LR),
        lambda o: torch_sched.ChainedScheduler(
            [torch_sched.CyclicLR(o, LR, 0.3, 4), torch_sched.ExponentialLR(o, 0.95)]
        ),
    ),
    "optax_with_cosine": (
        lambda: chained_scheduler([ours.cosine_annealing_lr(LR, 10, 0.02), geometric], LR),
        lambda o: torch_sched.ChainedScheduler(
            [torch_sched.CosineAnnealingLR(o, 10, 0.02), torch_sched.ExponentialLR(o, 0.95)]
        ),
    ),
    # compositions inside a chain (torch builds a composition's schedulers right before it)
    "sequential_inside_chain": (
        lambda: chained_scheduler(
            [
                ours.exponential_lr(LR, 0.97),
                sequential_lr(
                    [ours.linear_lr(LR, 0.2, 1.0, 5), ours.cosine_annealing_lr(LR, 20, 0.01)],
                    [5],
                ),
                ours.step_lr(LR, 9, 0.5),
            ],
            LR,
        ),
        lambda o: torch_sched.ChainedScheduler(
            [
                torch_sched.ExponentialLR(o, 0.97),
                torch_sched.SequentialLR(
                    o,
                    [
                        torch_sched.LinearLR(o, 0.2, 1.0, 5),
                        torch_sched.CosineAnnealingLR(o, 20, 0.01),
                    ],
                    [5],
                ),
                torch_sched.StepLR(o, 9, 0.5),
            ]
        ),
    ),
    "chain_inside_chain": (
        lambda: chained_scheduler(
            [
                chained_scheduler(
                    [ours.exponential_lr(LR, 0.97), ours.cosine_annealing_lr(LR, 15)], LR
                ),
                ours.multiplicative_lr(LR, wobble),
            ],
            LR,
        ),
        lambda o: torch_sched.ChainedScheduler(
            [
                torch_sched.ChainedScheduler(
                    [torch_sched.ExponentialLR(o, 0.97), torch_sched.CosineAnnealingLR(o, 15)]
                ),
                torch_sched.MultiplicativeLR(o, wobble),
            ]
        ),
    ),
    # after a milestone MultiplicativeLR multiplies the lr it finds, from lambda(0) on
    "sequential_multiplicative_restarts": (
        lambda: sequential_lr(
            [
                ours.cosine_annealing_lr(LR, 5),
                ours.multiplicative_lr(LR, wobble),
                ours.multiplicative_lr(LR, lambda k: 0.97),
            ],
            [7, 30],
        ),
        lambda o: torch_sched.SequentialLR(
            o,
            [
                torch_sched.CosineAnnealingLR(o, 5),
                torch_sched.MultiplicativeLR(o, wobble),
                torch_sched.MultiplicativeLR(o, lambda k: 0.97),
            ],
            [7, 30],
        ),
    ),
    # ... and ConstantLR(total_iters=0) gives the base lr (its closed form), not factor * lr
    "sequential_constant_zero_restart": (
        lambda: sequential_lr([ours.exponential_lr(LR, 0.9), ours.constant_lr(LR, 0.3, 0)], [4]),
        lambda o: torch_sched.SequentialLR(
            o, [torch_sched.ExponentialLR(o, 0.9), torch_sched.ConstantLR(o, 0.3, 0)], [4]
        ),
    ),
    # an empty phase never restarts: LinearLR(total_iters=0) is fine there
    "sequential_empty_phase": (
        lambda: sequential_lr(
            [
                ours.exponential_lr(LR, 0.9),
                ours.linear_lr(LR, 0.3, 1.0, 0),
                ours.exponential_lr(LR, 0.8),
            ],
            [5, 5],
        ),
        lambda o: torch_sched.SequentialLR(
            o,
            [
                torch_sched.ExponentialLR(o, 0.9),
                torch_sched.LinearLR(o, 0.3, 1.0, 0),
                torch_sched.ExponentialLR(o, 0.8),
            ],
            [5, 5],
        ),
    ),
}


@pytest.mark.parametrize("name", CASES)
def test_composition_matches_torch(name):
    compare(*CASES[name])


@pytest.mark.parametrize(
    "make, torch_cls, args",
    [
        (ours.linear_lr, torch_sched.LinearLR, (0.3, 1.0, 0)),
        (ours.polynomial_lr, torch_sched.PolynomialLR, (0, 2.0)),
    ],
)
def test_zero_total_iters_after_a_milestone_is_refused(make, torch_cls, args):
    """torch divides by zero when it restarts these with their closed form."""
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=LR)
    scheduler = torch_sched.SequentialLR(
        optimizer, [torch_sched.ExponentialLR(optimizer, 0.9), torch_cls(optimizer, *args)], [2]
    )
    optimizer.step()
    scheduler.step()
    with pytest.raises(ZeroDivisionError):
        scheduler.step()
    with pytest.raises(ValueError, match=r"schedules\[1\] cannot start after a milestone"):
        sequential_lr([ours.exponential_lr(LR, 0.9), make(LR, *args)], [2])
    sequential_lr([make(LR, *args), ours.exponential_lr(LR, 0.9)], [2])  # first: fine


@pytest.mark.parametrize("composed", ["sequential", "chained"])
def test_nested_composition_in_sequential_is_refused(composed):
    """torch's SequentialLR cannot restart a composition (it has no ``get_lr``)."""
    inner_torch = {"sequential": lambda o: torch_sched.SequentialLR(
        o, [torch_sched.ExponentialLR(o, 0.9)], []),
        "chained": lambda o: torch_sched.ChainedScheduler([torch_sched.ExponentialLR(o, 0.9)]),
    }[composed]  # fmt: skip
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=LR)
    scheduler = torch_sched.SequentialLR(
        optimizer, [torch_sched.ExponentialLR(optimizer, 0.8), inner_torch(optimizer)], [1]
    )
    optimizer.step()
    with pytest.raises(NotImplementedError):
        scheduler.step()
    inner = {
        "sequential": sequential_lr([ours.exponential_lr(LR, 0.9)], []),
        "chained": chained_scheduler([ours.exponential_lr(LR, 0.9)], LR),
    }[composed]
    with pytest.raises(ValueError, match=r"schedules\[1\] is a (SequentialLR|ChainedScheduler)"):
        sequential_lr([ours.exponential_lr(LR, 0.8), inner], [1])


@pytest.mark.parametrize(
    "name",
    [
        "lambda_then_exponential_and_cosine",
        "cosine_past_its_minimum_with_exponential",
        "chain_inside_chain",
    ],
)
def test_float32_recursion_keeps_float32_accuracy(name):
    """Without doubles the step-by-step recursion accumulates float32 rounding (a few
    ulps per step); the cosine's ratio is taken as sin^2 of exact integer distances, which
    keeps it accurate near the minima (torch's ratio of two small cosines was 6.5e-6 off)."""
    schedule, torch_factory = CASES[name]
    with precision("float32"):
        values = ours_values(schedule(), STEPS)
        assert values.dtype == np.float32
    assert_sequence_close(values, torch_values(torch_factory, STEPS)[0], 3e-6)


@pytest.mark.parametrize("strategy", ["cos", "linear"])
@pytest.mark.parametrize("anneal_epochs", [0, 1, 7])
@pytest.mark.parametrize("swa_first", [False, True])
def test_swa_lr_in_a_chain_moves_the_lr_it_finds(strategy, anneal_epochs, swa_first):
    """torch's SWALR recovers its start from the current lr at every step, so after a
    decay in the same chain it anneals from the decayed lr, not from the base."""
    from torch.optim.swa_utils import SWALR

    from jaxopt_adv.torch.swa_utils import swa_lr

    def ours_chain():
        items = [ours.exponential_lr(LR, 0.9), swa_lr(LR, 0.05, anneal_epochs, strategy)]
        return chained_scheduler(items[::-1] if swa_first else items, LR)

    def torch_chain(o):
        items = [
            lambda: torch_sched.ExponentialLR(o, 0.9),
            lambda: SWALR(o, 0.05, anneal_epochs, strategy),
        ]
        return torch_sched.ChainedScheduler(
            [make() for make in (items[::-1] if swa_first else items)]
        )

    compare(ours_chain, torch_chain)


@pytest.mark.parametrize("strategy", ["cos", "linear"])
@pytest.mark.parametrize("anneal_epochs", [0, 1, 7])
@pytest.mark.parametrize("milestone", [1, 9])
def test_swa_lr_after_a_milestone_anneals_from_the_lr_it_finds(strategy, anneal_epochs, milestone):
    """torch's SequentialLR restarts SWALR at a milestone; SWALR recovers its start from
    the lr it finds there (here ExponentialLR's), not from the base lr."""
    from torch.optim.swa_utils import SWALR

    from jaxopt_adv.torch.swa_utils import swa_lr

    compare(
        lambda: sequential_lr(
            [ours.exponential_lr(LR, 0.9), swa_lr(LR, 0.05, anneal_epochs, strategy)],
            [milestone],
        ),
        lambda o: torch_sched.SequentialLR(
            o,
            [torch_sched.ExponentialLR(o, 0.9), SWALR(o, 0.05, anneal_epochs, strategy)],
            [milestone],
        ),
    )
