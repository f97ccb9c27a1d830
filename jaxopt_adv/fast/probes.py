"""The fused kernels' self-check probes: fixed configurations and random draws.

The self-check (:mod:`.selfcheck`, run by :func:`jaxopt_adv.fast.step.unavailable_reason`)
steps each configuration of :func:`probe_table` through the kernels and through XLA and
compares them bit for bit; :func:`random_hyperparameters` draws the hyperparameters of
one optimizer (the tests draw from it too).
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable
from typing import Any

import numpy as np
import optax

from jaxopt_adv.fast import selfcheck
from jaxopt_adv.fast.plans import BY_NAME, FUSED

__all__ = ["PROBES", "PROBE_STEPS", "probe_table", "random_hyperparameters"]

PROBES: dict[str, list[tuple[str, bool, dict[str, Any], dict[str, tuple[int, ...]]]]] = {
    # the arithmetic every kernel relies on (FMA contraction, XLA's rewrites by tree)
    selfcheck.KERNELS: [
        ("torch.adam", False, {"learning_rate": 0.05}, {"a": (40001,)}),
        (
            "torch.adam",
            False,
            {"learning_rate": 0.05, "weight_decay": 0.1, "amsgrad": True, "maximize": True},
            {"a": (40001,), "b": (40000,), "c": (3, 5), "s": ()},
        ),
        ("torch.adamw", True, {"learning_rate": 0.05}, {"a": (33, 7), "b": (40001,)}),
        (
            "torch.sgd",
            False,
            {"learning_rate": 0.05, "momentum": 0.9, "dampening": 0.2, "weight_decay": 0.1},
            {"a": (40001,), "c": (3, 5)},
        ),
        (
            "torch.sgd",
            True,
            {"learning_rate": 0.05, "momentum": 0.9, "nesterov": True},
            {"a": (7,)},
        ),
        (
            "torch.rmsprop",
            False,
            {"learning_rate": 0.05, "momentum": 0.9, "centered": True, "alpha": 0.5},
            {"a": (40001,), "c": (3, 5)},
        ),
    ],
    # RMSprop's trace with a traced momentum follows XLA's parallel split of the loop
    # (_xla_loop_is_ragged): sizes that split evenly and unevenly into 2, 3 or 4 tasks
    selfcheck.TRACED_MOMENTUM: [
        (
            "torch.rmsprop",
            True,
            {"learning_rate": 0.05, "momentum": 0.9},
            {"a": (100001,), "b": (100002,), "c": (3, 40001), "d": (40001, 1)},
        ),
        (
            "torch.rmsprop",
            True,
            {"learning_rate": 0.05, "momentum": 0.9, "centered": True},
            {"a": (26215,), "b": (100001,)},
        ),
    ],
    selfcheck.ADAGRAD: [
        (
            "torch.adagrad",
            False,
            {"learning_rate": 0.05, "lr_decay": 0.1, "weight_decay": 0.1, "maximize": True},
            {"a": (40001,), "c": (3, 5), "s": ()},
        ),
        (
            "torch.adagrad",
            True,
            {"learning_rate": 0.05, "lr_decay": 0.1},
            {"a": (33, 7), "o": (1,)},
        ),
    ],
    # Adamax's first moment: which product LLVM fuses (maximize; traced hyperparameters
    # on loops that XLA splits evenly and unevenly)
    selfcheck.ADAMAX: [
        (
            "torch.adamax",
            False,
            {"learning_rate": 0.05, "weight_decay": 0.1, "maximize": True},
            {"a": (40001,), "c": (3, 5), "s": ()},
        ),
        ("torch.adamax", False, {"learning_rate": 0.05}, {"a": (33, 7)}),
        (
            "torch.adamax",
            True,
            {"learning_rate": 0.05, "maximize": True},
            {"a": (100001,), "b": (100002,), "c": (3, 40001), "o": (1,)},
        ),
    ],
    # NAdam: the reciprocal and division forms of 1 - b2^t, weight decays, maximize,
    # injected hyperparameters
    selfcheck.NADAM: [
        (
            "torch.nadam",
            False,
            {"learning_rate": 0.05, "weight_decay": 0.1, "maximize": True},
            {"a": (40001,), "c": (3, 5)},
        ),
        ("torch.nadam", False, {"learning_rate": 0.05}, {"a": (40001,)}),
        ("torch.nadam", False, {"learning_rate": 0.05, "maximize": True}, {"a": (7,), "s": ()}),
        (
            "torch.nadam",
            True,
            {"learning_rate": 0.05, "weight_decay": 0.1, "decoupled_weight_decay": True},
            {"a": (33, 7)},
        ),
    ],
    # RAdam: before and after rectification, weight decays, maximize, 0-d and 1-element
    # leaves, injected hyperparameters
    selfcheck.RADAM: [
        (
            "torch.radam",
            False,
            {"learning_rate": 0.05, "weight_decay": 0.1, "maximize": True, "b2": 0.9},
            {"a": (40001,), "c": (3, 5), "s": ()},
        ),
        ("torch.radam", False, {"learning_rate": 0.05, "b2": 0.9}, {"a": (40001,)}),
        ("torch.radam", False, {"learning_rate": 0.05, "maximize": True}, {"o": (1,)}),
        (
            "torch.radam",
            True,
            {"learning_rate": 0.05, "weight_decay": 0.1, "decoupled_weight_decay": True},
            {"a": (33, 7)},
        ),
    ],
    # Adadelta: weight decay, maximize, rho = 1/2, a 0-d leaf, injected hyperparameters
    selfcheck.ADADELTA: [
        (
            "torch.adadelta",
            False,
            {"learning_rate": 0.5, "weight_decay": 0.1, "maximize": True},
            {"a": (40001,), "c": (3, 5), "s": ()},
        ),
        ("torch.adadelta", False, {"learning_rate": 0.5, "rho": 0.5}, {"a": (40001,)}),
        ("torch.adadelta", False, {"learning_rate": 0.5, "maximize": True}, {"s": (), "o": (1,)}),
        ("torch.adadelta", True, {"learning_rate": 0.5, "eps": 1e-3}, {"a": (33, 7)}),
    ],
    # Rprop: sign agreement, clamping, maximize, a 0-d leaf, injected hyperparameters
    selfcheck.RPROP: [
        (
            "torch.rprop",
            False,
            {"learning_rate": 0.05, "maximize": True, "step_sizes": (0.01, 0.08)},
            {"a": (40001,), "c": (3, 5), "s": ()},
        ),
        ("torch.rprop", True, {"learning_rate": 0.05, "etas": (0.25, 2.0)}, {"a": (33, 7)}),
    ],
    # ASGD: weight decay, maximize, averaging from the start (t0 = 0) and from step 3,
    # a 0-d leaf, injected hyperparameters
    selfcheck.ASGD: [
        (
            "torch.asgd",
            False,
            {"learning_rate": 0.05, "weight_decay": 0.1, "maximize": True, "t0": 3.0},
            {"a": (40001,), "c": (3, 5), "s": ()},
        ),
        ("torch.asgd", False, {"learning_rate": 0.05, "lambd": 0.01, "t0": 0.0}, {"a": (7,)}),
        ("torch.asgd", True, {"learning_rate": 0.05, "t0": 2.0}, {"a": (33, 7), "o": (1,)}),
    ],
    # SparseAdam (a traced learning rate: injected, a schedule): maximize, b1 = 1/2, leaves
    # of odd and even sizes, a 0-d and a 1-element leaf
    selfcheck.SPARSE_ADAM: [
        (
            "torch.sparse_adam",
            True,
            {"learning_rate": 0.05, "maximize": True, "b1": 0.5},
            {"a": (40001,), "c": (3, 5), "s": ()},
        ),
        (
            "torch.sparse_adam",
            False,
            {"learning_rate": optax.exponential_decay(0.05, 1, 0.9)},
            {"a": (33, 7), "b": (40000,), "o": (1,)},
        ),
    ],
}


def _log_uniform(low: float, high: float) -> Callable[[np.random.Generator], float]:
    return lambda rng: float(np.exp(rng.uniform(math.log(low), math.log(high))))


def _near_one(rng: np.random.Generator) -> float:
    """A decay rate in (0, 1), as often close to 1 as not."""
    return float(1 - np.exp(rng.uniform(math.log(1e-4), 0.0)))


# hyperparameter -> (the values XLA and LLVM may simplify: 0, 1, powers of two and the
# bounds of its range; a draw from the rest of the range)
_DRAWS: dict[str, tuple[tuple[float, ...], Callable[[np.random.Generator], float]]] = {
    "learning_rate": ((0.0, 1.0, 0.5, 2.0), _log_uniform(1e-4, 4.0)),
    "b1": ((0.0, 0.5), _near_one),
    "b2": ((0.0, 0.5), _near_one),
    "rho": ((0.0, 0.5, 1.0), _near_one),
    "alpha": ((0.0, 0.5, 1.0), _near_one),  # RMSprop's smoothing constant
    "momentum": ((0.0, 0.5, 1.0), _near_one),
    "dampening": ((0.0, 0.5, 1.0), _near_one),
    "eps": ((0.0, 1.0), _log_uniform(1e-12, 2.0)),
    "weight_decay": ((0.0, 1.0, 0.5), _log_uniform(1e-4, 2.0)),
    "lr_decay": ((0.0, 1.0), _log_uniform(1e-4, 2.0)),
    "initial_accumulator_value": ((0.0, 1.0), _log_uniform(1e-4, 2.0)),
    "momentum_decay": ((0.0, 1.0), _log_uniform(1e-4, 2.0)),
    "lambd": ((0.0, 1.0), _log_uniform(1e-5, 1.0)),
    "t0": ((0.0, 1.0), lambda rng: float(rng.integers(2, 6))),
}
# (optimizer, hyperparameter) -> its draws where they differ from _DRAWS: ASGD's alpha is
# an exponent (>= 0), not RMSprop's constant in [0, 1]; SparseAdam takes lr, eps > 0
_OWN_DRAWS = {
    ("torch.asgd", "alpha"): ((0.0, 1.0, 0.5), _log_uniform(1e-2, 2.0)),
    ("torch.sparse_adam", "learning_rate"): ((1.0, 0.5, 2.0), _log_uniform(1e-4, 4.0)),
    ("torch.sparse_adam", "eps"): ((1.0,), _log_uniform(1e-12, 2.0)),
}
_OPTIONS = ("amsgrad", "maximize", "centered", "nesterov", "decoupled_weight_decay")


def random_hyperparameters(name: str, rng: np.random.Generator) -> dict[str, Any]:
    """Hyperparameters of the fused optimizer ``name`` drawn at random from their valid ranges:
    each numeric one a special value (0, 1, 1/2, a bound: where XLA's and LLVM's
    simplifications change the arithmetic) or a random one, each boolean option on or
    off (the self-check and the tests draw from here)."""
    factory = BY_NAME[name].factory
    parameters = inspect.signature(factory).parameters
    out: dict[str, Any] = {}
    for key in parameters:
        draws = _OWN_DRAWS.get((name, key), _DRAWS.get(key))
        if draws is not None:
            special, draw = draws
            out[key] = float(rng.choice(special)) if rng.random() < 0.5 else draw(rng)
        elif key in _OPTIONS:
            out[key] = bool(rng.random() < 0.5)
    if "nesterov" in out and out["nesterov"]:  # torch: a momentum and no dampening
        out["momentum"] = out["momentum"] or 0.9
        out["dampening"] = 0.0
    if "etas" in parameters:
        out["etas"] = (
            0.5 if rng.random() < 0.5 else float(rng.uniform(0.05, 0.95)),
            2.0 if rng.random() < 0.5 else float(rng.uniform(1.05, 3.0)),
        )
        low = 0.0 if rng.random() < 0.5 else _log_uniform(1e-6, 1e-2)(rng)
        high = math.inf if rng.random() < 0.5 else _log_uniform(1e-2, 10.0)(rng)
        out["step_sizes"] = (low, high)
    return out


# steps per probe: enough for RAdam, which rectifies from step 6 on (b2 = 0.9 there)
PROBE_STEPS = 8


def probe_table(rng: np.random.Generator) -> dict[str, list]:
    """:data:`PROBES` and, per optimizer, one configuration of hyperparameters drawn by
    :func:`random_hyperparameters` (constants or injected) on a 257 x 129 leaf."""
    table = {family: list(probes) for family, probes in PROBES.items()}
    for fused in FUSED:
        hyperparams = random_hyperparameters(fused.name, rng)
        inject = bool(rng.random() < 0.5)
        table[fused.family.check].append((fused.name, inject, hyperparams, {"a": (257, 129)}))
    return table
