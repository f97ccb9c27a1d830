"""The one case table the contract tests run over: every registered optimizer.

Each ``Case`` gives example hyperparameters that switch on the optimizer's optional
blocks (so the contract covers them), plus settings under which it must converge on a
quadratic and on Rosenbrock. A new family adds its rows here; ``test_registry`` fails
when a registered name has no case.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxopt_adv.came import AutomagicConfig
from jaxopt_adv.mup import infer_infshapes


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


def _mup_infshapes(base: dict, target: dict):
    """infshapes from {name: shape} dicts (leaves are shapes; no arrays are built)."""

    def struct(shapes):
        return {k: jax.ShapeDtypeStruct(s, jnp.float32) for k, s in shapes.items()}

    return infer_infshapes(struct(base), struct(target))


# Every parameter tree the contract tests use, by path: make_params (matrix [in, out] with
# m_in 2 != m_out 3, vector m = 3, HWIO conv m = 3, scalar) and _Model under nnx.Optimizer.
_MUP_INFSHAPES = {
    **_mup_infshapes(
        {"matrix": (2, 1), "vector": (1,), "conv": (2, 2, 1, 1), "scalar": ()},
        {"matrix": (4, 3), "vector": (3,), "conv": (2, 2, 3, 3), "scalar": ()},
    ),
    "hidden": _mup_infshapes({"kernel": (3, 2), "bias": (2,)}, {"kernel": (3, 4), "bias": (4,)}),
    "out": _mup_infshapes({"kernel": (2, 2), "bias": (2,)}, {"kernel": (4, 2), "bias": (2,)}),
}
# the quadratic's x0 (6,) and Rosenbrock's (2,) are single arrays: vector-like, m = 2
_MUP_QUADRATIC = infer_infshapes(
    jax.ShapeDtypeStruct((3,), jnp.float32), jax.ShapeDtypeStruct((6,), jnp.float32)
)
_MUP_ROSENBROCK = infer_infshapes(
    jax.ShapeDtypeStruct((1,), jnp.float32), jax.ShapeDtypeStruct((2,), jnp.float32)
)

CASES = [
    Case(
        "mu_adam",
        {"learning_rate": 0.05, "infshapes": _MUP_INFSHAPES, "weight_decay": 1e-3},
        Convergence({"learning_rate": 0.05, "infshapes": _MUP_QUADRATIC}, 500, 1e-6),
        Convergence({"learning_rate": 0.02, "infshapes": _MUP_ROSENBROCK}, 3000, 1e-4),
    ),
    Case(
        "mu_adamw",
        {"learning_rate": 0.05, "infshapes": _MUP_INFSHAPES, "weight_decay": 1e-2},
        Convergence({"learning_rate": 0.05, "infshapes": _MUP_QUADRATIC}, 500, 1e-6),
        Convergence(
            {"learning_rate": 0.02, "infshapes": _MUP_ROSENBROCK, "weight_decay": 1e-4}, 3000, 1e-3
        ),
    ),
    Case(
        "mu_sgd",
        {
            "learning_rate": 0.05,
            "infshapes": _MUP_INFSHAPES,
            "momentum": 0.9,
            "dampening": 0.1,
            "weight_decay": 1e-3,
        },
        Convergence(
            {"learning_rate": 0.025, "infshapes": _MUP_QUADRATIC, "momentum": 0.9}, 500, 1e-6
        ),
        Convergence(
            {"learning_rate": 5e-4, "infshapes": _MUP_ROSENBROCK, "momentum": 0.9}, 3000, 1e-6
        ),
    ),
    Case(
        "fer",
        {
            "learning_rate": 0.05,
            "fer_weight": 0.5,
            "num_classes": 3,
            "num_samples": 4,
            "num_epochs": 3,
        },
        Convergence(
            {"learning_rate": 0.05, "num_classes": 3, "num_samples": 4, "num_epochs": 3}, 500, 1e-6
        ),
        Convergence(
            {"learning_rate": 0.02, "num_classes": 3, "num_samples": 4, "num_epochs": 3}, 3000, 1e-4
        ),
        extra_args={
            "logits": np.array([[2.0, 0.5, -1.0], [0.2, 0.1, 1.5]], np.float32),
            "labels": np.array([0, 1], np.int32),
            "indices": np.array([3, 1], np.int32),
        },
    ),
    Case(
        "sigprop",
        {"learning_rate": 0.05, "signal_lr": 0.05, "signal_momentum": 0.9},
        Convergence({"learning_rate": 0.05, "signal_lr": 0.05, "signal_momentum": 0.9}, 500, 1e-6),
        Convergence({"learning_rate": 0.02, "signal_lr": 0.02, "signal_momentum": 0.9}, 3000, 1e-4),
    ),
    Case(
        "gradient_correction",
        {"learning_rate": 0.05, "gcw_lr": 0.05, "gcode_alpha": 0.3},
        Convergence({"learning_rate": 0.05}, 500, 1e-6),
        Convergence({"learning_rate": 0.02}, 3000, 1e-4),
    ),
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
