"""The one case table the contract tests run over: every registered optimizer.

Each ``Case`` gives example hyperparameters that switch on the optimizer's optional
blocks (so the contract covers them), plus settings under which it must converge on a
quadratic and on Rosenbrock. A new family adds its rows here; ``test_registry`` fails
when a registered name has no case.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from jaxopt_adv.came import AutomagicConfig


@dataclasses.dataclass(frozen=True)
class Convergence:
    """Run ``steps`` steps with ``kwargs``; the loss must fall below ``ratio`` x its start."""

    kwargs: dict[str, Any]
    steps: int
    ratio: float


@dataclasses.dataclass(frozen=True)
class Case:
    name: str  # registry name
    kwargs: dict[str, Any]  # example hyperparameters; must include ``learning_rate``
    quadratic: Convergence
    rosenbrock: Convergence
    extra_args: dict[str, Any] = dataclasses.field(default_factory=dict)
    # False where the learning rate is not a plain factor on the update (Rprop reads it
    # once, at init; Automagic's per-element rates start at it and then adapt)
    learning_rate_scales_updates: bool = True

    def __str__(self) -> str:
        return self.name


_AUTOMAGIC = AutomagicConfig(min_lr=1e-5, max_lr=0.5, lr_bump=1e-2, warmup_steps=50)

CASES = [
    Case(
        "automagic_came_amp",
        {"learning_rate": 0.05, "config": AutomagicConfig(min_lr=1e-4, max_lr=0.5, warmup_steps=4)},
        Convergence({"learning_rate": 0.05, "config": _AUTOMAGIC}, 500, 1e-2),
        Convergence({"learning_rate": 0.05, "config": _AUTOMAGIC}, 3000, 5e-2),
        learning_rate_scales_updates=False,
    ),
    Case(
        "tam",
        {"learning_rate": 0.01, "weight_decay": 1e-3, "correlation": "auto", "auto_threshold": 12},
        Convergence({"learning_rate": 0.01}, 500, 1e-6),
        Convergence({"learning_rate": 1e-3}, 3000, 1e-4),
    ),
    Case(
        "adatam",
        {"learning_rate": 0.01, "weight_decay": 1e-3, "weight_decouple": False},
        Convergence({"learning_rate": 0.01}, 500, 1e-6),
        Convergence({"learning_rate": 0.01}, 3000, 1e-4),
    ),
    Case(
        "came",
        {"learning_rate": 0.05, "weight_decay": 1e-2},
        Convergence({"learning_rate": 0.05}, 500, 1e-6),
        Convergence({"learning_rate": 0.02}, 3000, 1e-5),
    ),
    Case(
        "torch.sgd",
        {"learning_rate": 0.05, "momentum": 0.9, "dampening": 0.1, "weight_decay": 1e-3},
        Convergence({"learning_rate": 0.05, "momentum": 0.9}, 500, 1e-6),
        Convergence({"learning_rate": 1e-3, "momentum": 0.9}, 3000, 1e-6),
    ),
    Case(
        "torch.adam",
        {"learning_rate": 0.05, "weight_decay": 1e-3, "amsgrad": True},
        Convergence({"learning_rate": 0.05}, 500, 1e-6),
        Convergence({"learning_rate": 0.02}, 3000, 1e-4),
    ),
    Case(
        "torch.adamw",
        {"learning_rate": 0.05, "weight_decay": 1e-2},
        Convergence({"learning_rate": 0.05}, 500, 1e-6),
        Convergence({"learning_rate": 0.02, "weight_decay": 1e-4}, 3000, 1e-3),
    ),
    Case(
        "torch.adamax",
        {"learning_rate": 0.05, "weight_decay": 1e-3},
        Convergence({"learning_rate": 0.05}, 500, 1e-6),
        Convergence({"learning_rate": 0.02}, 3000, 1e-2),
    ),
    Case(
        "torch.nadam",
        {"learning_rate": 0.05, "weight_decay": 1e-3, "decoupled_weight_decay": True},
        Convergence({"learning_rate": 0.05}, 500, 1e-6),
        Convergence({"learning_rate": 0.02}, 3000, 1e-4),
    ),
    Case(
        "torch.radam",
        {"learning_rate": 0.05, "weight_decay": 1e-3},
        Convergence({"learning_rate": 0.05}, 500, 1e-6),
        Convergence({"learning_rate": 3e-3}, 3000, 0.2),
    ),
    Case(
        "torch.rmsprop",
        {"learning_rate": 0.01, "momentum": 0.5, "centered": True, "weight_decay": 1e-3},
        Convergence({"learning_rate": 0.01}, 500, 1e-4),
        Convergence({"learning_rate": 1e-3, "momentum": 0.9}, 3000, 1e-4),
    ),
    Case(
        "torch.adagrad",
        {"learning_rate": 0.1, "lr_decay": 1e-2, "initial_accumulator_value": 0.1},
        Convergence({"learning_rate": 0.5}, 500, 1e-6),
        Convergence({"learning_rate": 0.5}, 3000, 1e-2),
    ),
    Case(
        "torch.adadelta",
        {"learning_rate": 1.0, "rho": 0.8, "weight_decay": 1e-3},
        Convergence({"learning_rate": 0.05, "eps": 1e-2}, 500, 1e-6),
        Convergence({"learning_rate": 0.05, "eps": 1e-2}, 3000, 0.1),
    ),
    Case(
        "torch.rprop",
        {"learning_rate": 0.01, "etas": (0.4, 1.3), "step_sizes": (1e-5, 1.0)},
        Convergence({"learning_rate": 0.01}, 500, 1e-6),
        Convergence({"learning_rate": 0.01}, 3000, 1e-4),
        learning_rate_scales_updates=False,
    ),
    Case(
        "torch.asgd",
        {"learning_rate": 0.05, "lambd": 1e-3, "t0": 2.0, "weight_decay": 1e-3},
        Convergence({"learning_rate": 0.05}, 500, 1e-6),
        Convergence({"learning_rate": 1e-3}, 3000, 1e-2),
    ),
]

CASES_BY_NAME = {case.name: case for case in CASES}
