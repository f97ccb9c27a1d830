"""The one case table the contract tests run over: every registered optimizer.

Each ``Case`` gives example hyperparameters that switch on the optimizer's optional
blocks (so the contract covers them), plus settings under which it must converge on a
quadratic and on Rosenbrock. ``INVALID`` lists, per optimizer, hyperparameter values its
factory must reject at construction. A new family adds its rows to both; ``test_registry``
fails when a registered name has no case or no invalid values.
"""

from __future__ import annotations

import dataclasses
import inspect
import math
import numbers
import re
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxopt_adv import get_optimizer
from jaxopt_adv.automagic import AutomagicConfig
from jaxopt_adv.mup import infer_infshapes
from tests.helpers.trees import as_matrices


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
    # hyperparameters that set shapes or are compared in Python at construction: they
    # stay Python numbers (``static_args`` of ``optax.inject_hyperparams``, which would
    # turn them into arrays, traced under jit); every other numeric one may be traced
    static_args: tuple[str, ...] = ()
    # the state holds flat vectors over all the params (torch.optim.LBFGS's layout) and
    # per-leaf scalars, so no state leaf is shaped like a param of one or more dimensions
    # (the sharding check asserts it)
    flat_state: bool = False
    # every param must be a matrix (torch.optim.Muon rejects other shapes): the tests
    # reshape their param trees with ``params``
    matrices_only: bool = False

    def params(self, tree: Any) -> Any:
        """The param tree (or single array) a test builds, as this optimizer takes it."""
        return as_matrices(tree) if self.matrices_only else tree

    def __str__(self) -> str:
        return self.name


def half_squared_norm(params: Any) -> jax.Array:
    """A loss defined on any param tree, for optimizers that evaluate one (LBFGS)."""
    return sum(0.5 * jnp.sum(jnp.square(leaf)) for leaf in jax.tree.leaves(params))


def closure_args(case: Case, loss: Any) -> dict[str, Any]:
    """The case's extra arguments for a test that minimises ``loss``: a ``value_fn`` in
    them (LBFGS's closure) becomes ``loss``."""
    if "value_fn" in case.extra_args:
        return {**case.extra_args, "value_fn": loss}
    return case.extra_args


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
        {"matrix": (2, 1), "vector": (1,), "conv": (2, 2, 1, 1), "scalar": (), "matrix2": (2, 1)},
        {"matrix": (4, 3), "vector": (3,), "conv": (2, 2, 3, 3), "scalar": (), "matrix2": (4, 3)},
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
        static_args=("num_classes", "num_samples", "memory_size"),
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
        {"learning_rate": 0.01, "weight_decay": 1e-3, "decoupled_weight_decay": False},
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
        "torch.adafactor",
        {"learning_rate": 0.05, "eps": (1e-10, 1e-3), "d": 1.5, "weight_decay": 1e-3},
        # steps relative to the parameters' RMS (at least eps[1] = 1e-3) slow down near 0
        Convergence({"learning_rate": 0.05}, 500, 2e-4),
        Convergence({"learning_rate": 0.05}, 3000, 5e-3),
        # the relative step is min(learning_rate, 1/sqrt(t)): a cap, not a factor
        learning_rate_scales_updates=False,
    ),
    Case(
        "torch.sparse_adam",
        {"learning_rate": 0.05, "b1": 0.8, "eps": 1e-6},
        Convergence({"learning_rate": 0.05}, 500, 1e-6),
        Convergence({"learning_rate": 0.02}, 3000, 1e-4),
    ),
    Case(
        "torch.lbfgs",
        {"learning_rate": 0.5, "max_iter": 4, "history_size": 3, "line_search_fn": "strong_wolfe"},
        Convergence({"learning_rate": 1.0, "max_iter": 5}, 10, 1e-6),
        Convergence({"learning_rate": 1.0, "line_search_fn": "strong_wolfe"}, 20, 1e-6),
        # the closure: a test that minimises a loss passes its own (see closure_args)
        extra_args={"value_fn": half_squared_norm},
        # one step is up to max_iter iterations and a line search: not linear in the lr
        learning_rate_scales_updates=False,
        static_args=("max_iter", "max_eval", "history_size"),
        flat_state=True,
    ),
    Case(
        "torch.muon",
        {
            "learning_rate": 0.02,
            "weight_decay": 1e-2,
            "momentum": 0.9,
            "ns_steps": 4,
            "adjust_lr_fn": "match_rms_adamw",
        },
        # an orthogonalized step has a norm of about the learning rate: it must decay
        Convergence({"learning_rate": optax.exponential_decay(0.2, 50, 0.5)}, 500, 1e-6),
        Convergence({"learning_rate": optax.exponential_decay(0.1, 300, 0.5)}, 3000, 1e-6),
        # the Newton-Schulz iteration count, an int that torch checks at construction
        static_args=("ns_steps",),
        matrices_only=True,
    ),
    Case(
        "torch.asgd",
        {"learning_rate": 0.05, "lambd": 1e-3, "t0": 2.0, "weight_decay": 1e-3},
        Convergence({"learning_rate": 0.05}, 500, 1e-6),
        Convergence({"learning_rate": 1e-3}, 3000, 1e-2),
    ),
]

# the kernel-backed twins in jaxopt_adv.fast take their algorithm's arguments and state:
# they must pass its cases (and reject its invalid values, below)
FAST_TWINS = {"fast.came": "came", "fast.tam": "tam", "fast.adatam": "adatam"}
CASES_BY_NAME = {case.name: case for case in CASES}
CASES += [dataclasses.replace(CASES_BY_NAME[name], name=twin) for twin, name in FAST_TWINS.items()]
CASES_BY_NAME = {case.name: case for case in CASES}


def numeric_arguments(name: str) -> dict[str, Any]:
    """{keyword: value} of every numeric hyperparameter (case value, else default),
    tuples of numbers included, static ones left out."""
    case = CASES_BY_NAME[name]
    found = {}
    for param in inspect.signature(get_optimizer(name)).parameters.values():
        value = case.kwargs.get(param.name, param.default)
        values = value if isinstance(value, tuple) else (value,)
        numeric = all(isinstance(v, numbers.Real) and not isinstance(v, bool) for v in values)
        if numeric and values and param.name not in case.static_args:
            found[param.name] = value
    return found


# ------------------------------------------------------------------ invalid hyperparameters


@dataclasses.dataclass(frozen=True)
class Invalid:
    """``argument=value`` (on top of the case's kwargs and ``also``) must raise a
    ``ValueError`` whose message matches ``match`` when the optimizer is built.

    ``argument`` is a factory keyword, or ``"config.<field>"`` for a field of the
    factory's ``config`` dataclass (validated when the config is built).
    """

    argument: str
    value: Any
    match: str  # a regex naming the argument and its allowed range
    also: dict[str, Any] = dataclasses.field(default_factory=dict)

    def __str__(self) -> str:
        extra = "".join(f",{k}={v!r}" for k, v in self.also.items())
        return f"{self.argument}={self.value!r}{extra}"


_NAN, _INF = math.nan, math.inf


def _rejects(argument: str, values: tuple, match: str, **also: Any) -> list[Invalid]:
    return [Invalid(argument, value, match, also) for value in values]


def _learning_rate(name: str = "learning_rate") -> list[Invalid]:
    """torch's ``lr >= 0``, made finite."""
    match = rf"Invalid learning rate: .* \({name} must be in \[0, inf\)\)"
    return _rejects(name, (-1e-3, _NAN, _INF), match)


def _nonnegative(name: str, torch_name: str | None = None) -> list[Invalid]:
    prefix = re.escape(torch_name or name)
    match = rf"Invalid {prefix} value: .* \({re.escape(name)} must be in \[0, inf\)\)"
    return _rejects(name, (-1.0, _NAN, _INF), match)


def _beta(name: str, index: int) -> list[Invalid]:
    """torch's ``betas[index]`` in ``[0, 1)``, with torch's wording."""
    match = (
        rf"Invalid beta parameter at index {index}: .* \({re.escape(name)} must be in \[0, 1\)\)"
    )
    return _rejects(name, (-0.1, 1.0, 1.5, _NAN), match)


def _interval(name: str, interval: str, values: tuple, torch_name: str | None = None):
    prefix = re.escape(torch_name or name)
    match = rf"Invalid {prefix} value: .* \({re.escape(name)} must be in {re.escape(interval)}\)"
    return _rejects(name, values, match)


def _unit_open(name: str, torch_name: str | None = None) -> list[Invalid]:
    """A decay in ``[0, 1)``."""
    return _interval(name, "[0, 1)", (-0.1, 1.0, 1.5, _NAN), torch_name)


def _positive(name: str, torch_name: str | None = None) -> list[Invalid]:
    """A finite number ``> 0``."""
    return _interval(name, "(0, inf)", (0.0, -1.0, _NAN, _INF), torch_name)


def _count(name: str, minimum: int = 1) -> list[Invalid]:
    match = rf"Invalid {name} value: .* \({name} must be an int >= {minimum}\)"
    return _rejects(name, (minimum - 1, -5, 2.5, _NAN), match)


def _one_of(name: str, value: str) -> list[Invalid]:
    return [Invalid(name, value, rf"Invalid {name}.*{re.escape(repr(value))}.*(one of|choose)")]


_ADAM = [
    *_learning_rate(),
    *_beta("b1", 0),
    *_beta("b2", 1),
    *_nonnegative("eps", "epsilon"),
    *_nonnegative("weight_decay"),
]

_SGD = [
    *_learning_rate(),
    *_nonnegative("momentum"),
    *_interval("dampening", "[0, 1]", (-0.1, 1.5, _NAN)),
    *_nonnegative("weight_decay"),
    # torch: Nesterov needs a momentum and zero dampening
    Invalid(
        "nesterov",
        True,
        r"Nesterov momentum requires momentum > 0 \(nesterov=True, momentum=0.0\)",
        {"momentum": 0.0, "dampening": 0.0},
    ),
    Invalid(  # the default: no momentum at all
        "nesterov",
        True,
        r"Nesterov momentum requires momentum > 0 \(nesterov=True, momentum=None\)",
        {"momentum": None, "dampening": 0.0},
    ),
    Invalid(
        "nesterov",
        True,
        r"Nesterov momentum requires dampening == 0 \(nesterov=True, dampening=0.1\)",
        {"dampening": 0.1},
    ),
]

_TAM = [
    *_learning_rate(),
    *_unit_open("decay_rate"),
    *_nonnegative("eps"),
    *_nonnegative("weight_decay"),
    *_nonnegative("auto_threshold"),
    *_one_of("correlation", "pearson"),
]

_CAME = [
    *_learning_rate(),
    *_beta("b1", 0),
    *_beta("b2", 1),
    *_beta("b3", 2),
    *_nonnegative("eps1"),
    *_nonnegative("eps2"),
    *_positive("clip_threshold"),
    *_nonnegative("weight_decay"),
]
_AUTOMAGIC_INVALID = [
    *_positive("learning_rate", "learning rate"),
    *[
        Invalid(f"config.{entry.argument}", entry.value, entry.match)
        for entry in [
            *_rejects("betas", ((0.8, 0.999),), r"Invalid betas value: .*must be a tuple of 3"),
            *_rejects(
                "betas",
                ((0.8, 1.0, 0.9999), (0.8, 0.999, _NAN)),
                r"Invalid beta parameter at index [12]: .* \(betas\[[12]\] must be in \[0, 1\)\)",
            ),
            *_rejects("eps", ((1e-30,),), r"Invalid eps value: .*must be a tuple of 2"),
            *_rejects(
                "eps",
                ((-1e-30, 1e-16), (1e-30, _INF)),
                r"Invalid eps\[[01]\] value: .* \(eps\[[01]\] must be in \[0, inf\)\)",
            ),
            *_positive("min_lr"),
            *_rejects(  # the case's min_lr is 1e-4
                "max_lr", (1e-4, 1e-7), r"Invalid max_lr value: .* \(max_lr must be > min_lr = "
            ),
            *_nonnegative("max_lr"),
            *_nonnegative("lr_bump"),
            *_positive("clip_threshold"),
            *_interval("beta1_decay", "(0, 1]", (0.0, 1.5, _NAN)),
            *_unit_open("beta1_floor"),
            *_unit_open("tam_momentum"),
            *_unit_open("tam_decay"),
            *_count("tam_large_tensor_threshold", minimum=0),
            *_positive("low_rank_emphasis"),
            *_count("warmup_steps"),
            *_count("frequency_every"),
            *_count("rank_every"),
            *_nonnegative("weight_decay"),
            *_interval("edge_threshold", "(0, 1)", (0.0, 1.0, _NAN)),
            *_nonnegative("edge_penalty"),
            *_nonnegative("frequency_penalty"),
            *_nonnegative("detail_preservation"),
            *_nonnegative("rank_penalty_strength"),
            *_one_of("tam_correlation", "pearson"),
            *_one_of("spd_anchor", "previous"),
            *_one_of("layout", "torch"),
            *_one_of("mask_dtype", "float16"),
        ]
    ],
]

INVALID: dict[str, list[Invalid]] = {
    "adatam": [
        *_TAM,
        *_unit_open("b1", "beta1"),
        *_unit_open("b2", "beta2"),
        Invalid(
            "fixed_decay",
            True,
            r"fixed_decay=True needs decoupled_weight_decay=True",
            {"decoupled_weight_decay": False},
        ),
    ],
    "automagic_came_amp": _AUTOMAGIC_INVALID,
    "came": _CAME,
    "fer": [
        *_learning_rate(),
        *_interval("fer_weight", "[0, 1]", (-0.1, 1.5, _NAN, _INF)),
        *_count("num_classes"),
        *_count("num_samples"),
        *_count("num_epochs"),
        *_count("memory_size"),
        Invalid(
            "memory_size",
            3,
            r"memory_size=3 is smaller than the dataset \(4 samples\).*"
            r"memory_size must be >= num_samples",
        ),
        *_nonnegative("consistency_threshold"),
        *_positive("temperature"),
        *_count("warmup_epochs", minimum=0),
        *_interval("warmup_epochs", "[0, 3)", (3, 4)),  # num_epochs=3: FER would never start
    ],
    "gradient_correction": [
        *_learning_rate(),
        *_nonnegative("gcw_lr"),
        *_nonnegative("gcode_alpha"),
        *_nonnegative("eps"),
        *_rejects("gcw_bounds", ((0.5,), 0.5), r"Invalid gcw_bounds value: .*must be a tuple of 2"),
        *_rejects(
            "gcw_bounds",
            ((0.1, 0.5), (-1.0, 0.5), (_NAN, 0.5)),
            r"Invalid gcw_bounds\[0\] value: .* \(gcw_bounds\[0\] must be in \(-1, 0\]\)",
        ),
        *_rejects(
            "gcw_bounds",
            ((-0.5, -0.1), (-0.5, _INF), (-0.5, _NAN)),
            r"Invalid gcw_bounds\[1\] value: .* \(gcw_bounds\[1\] must be in \[0, inf\)\)",
        ),
    ],
    "mu_adam": _ADAM,
    "mu_adamw": _ADAM,
    "mu_sgd": _SGD,
    "sigprop": [
        *_learning_rate(),
        *_learning_rate("signal_lr"),
        *_unit_open("signal_momentum"),
        *_one_of("base", "rmsprop"),
    ],
    "tam": [*_TAM, *_unit_open("b1", "momentum")],
    "torch.adadelta": [
        *_learning_rate(),
        *_interval("rho", "[0, 1]", (-0.1, 1.5, _NAN)),
        *_nonnegative("eps", "epsilon"),
        *_nonnegative("weight_decay"),
    ],
    "torch.adafactor": [
        *_learning_rate(),
        *_interval("beta2_decay", "(-inf, 0]", (0.5, _NAN)),
        *_rejects("eps", ((1e-30,), 1e-3), r"Invalid eps value: .*must be a tuple of 2"),
        *_rejects(
            "eps",
            ((-1e-30, 1e-3), (_NAN, 1e-3), (_INF, 1e-3)),
            r"Invalid eps\[0\] value: .* \(eps\[0\] must be in \[0, inf\)\)",
        ),
        *_rejects(
            "eps",
            ((None, -1e-3), (None, _NAN)),
            r"Invalid eps\[1\] value: .* \(eps\[1\] must be in \[0, inf\)\)",
        ),
        *_interval("d", "[1, inf)", (0.5, _NAN, _INF)),
        *_nonnegative("weight_decay"),
    ],
    "torch.adagrad": [
        *_learning_rate(),
        *_nonnegative("lr_decay"),
        *_nonnegative("weight_decay"),
        *_nonnegative("initial_accumulator_value"),
        *_nonnegative("eps", "epsilon"),
    ],
    "torch.adam": _ADAM,
    "torch.adamax": _ADAM,
    "torch.adamw": _ADAM,
    "torch.asgd": [
        *_learning_rate(),
        *_nonnegative("lambd"),
        *_nonnegative("alpha"),
        # inf is allowed (no averaging, as in torch)
        *_interval("t0", "[0, inf]", (-1.0, _NAN)),
        *_nonnegative("weight_decay"),
    ],
    "torch.lbfgs": [
        *_learning_rate(),
        *_count("max_iter"),
        *_count("max_eval"),
        *_interval("tolerance_grad", "[0, inf]", (-1.0, _NAN)),
        *_interval("tolerance_change", "[0, inf]", (-1.0, _NAN)),
        *_count("history_size"),
        *_one_of("line_search_fn", "wolfe"),
    ],
    "torch.nadam": [*_ADAM, *_nonnegative("momentum_decay")],
    "torch.radam": _ADAM,
    "torch.rmsprop": [
        *_learning_rate(),
        *_interval("alpha", "[0, 1]", (-0.1, 1.5, _NAN)),
        *_nonnegative("eps", "epsilon"),
        *_nonnegative("weight_decay"),
        *_nonnegative("momentum"),
    ],
    "torch.rprop": [
        *_learning_rate(),
        *_rejects("etas", ((0.5,), (0.5, 1.2, 2.0)), r"Invalid etas value: .*must be a tuple of 2"),
        *_rejects(
            "etas",
            ((1.2, 0.5), (0.0, 1.2), (1.0, 1.2), (_NAN, 1.2)),
            r"Invalid etas\[0\] value: .* \(etas\[0\] must be in \(0, 1\)\)",
        ),
        *_rejects(
            "etas",
            ((0.5, 1.0), (0.5, _INF), (0.5, _NAN)),
            r"Invalid etas\[1\] value: .* \(etas\[1\] must be in \(1, inf\)\)",
        ),
        *_rejects("step_sizes", (1e-6,), r"Invalid step_sizes value: .*must be a tuple of 2"),
        *_rejects(
            "step_sizes",
            ((-1e-6, 1.0), (_NAN, 1.0), (_INF, _INF)),
            r"Invalid step_sizes\[0\] value: .* \(step_sizes\[0\] must be in \[0, inf\)\)",
        ),
        *_rejects(
            "step_sizes",
            ((1.0, 0.1), (1e-6, _NAN)),
            r"Invalid step_sizes\[1\] value: .* \(step_sizes\[1\] must be in \[(1|1e-06), inf\]\)",
        ),
    ],
    "torch.sgd": _SGD,
    "torch.muon": [
        *_learning_rate(),
        *_nonnegative("weight_decay"),
        *_nonnegative("momentum"),
        *_nonnegative("eps", "epsilon"),
        *_count("ns_steps", minimum=0),
        *_rejects(
            "ns_steps",
            (100,),
            r"Invalid ns_steps value: 100 \(ns_steps must be an int >= 0 and < 100\)",
        ),
        *_rejects(
            "ns_coefficients",
            ((3.4, -4.7), 3.4),
            r"Invalid ns_coefficients value: .*must be a tuple of 3",
        ),
        *_rejects(
            "ns_coefficients",
            ((3.4, _NAN, 2.0), (3.4, -4.7, _INF)),
            r"Invalid ns_coefficients\[[12]\] value: .* \(ns_coefficients\[[12]\] must be in "
            r"\(-inf, inf\)\)",
        ),
        *_one_of("adjust_lr_fn", "foo"),
    ],
    "torch.sparse_adam": [
        *_positive("learning_rate", "learning rate"),
        *_beta("b1", 0),
        *_beta("b2", 1),
        *_positive("eps", "epsilon"),
    ],
}


INVALID |= {twin: INVALID[name] for twin, name in FAST_TWINS.items()}
