"""torch.optim's state keys and group flags for each :mod:`jaxopt_adv.torch` optimizer.

For :mod:`jaxopt_adv.torch_state`: which field of which of our state classes holds each
per-parameter tensor of a torch ``state_dict``, how torch keeps its ``step``, and the
torch-only entries of its ``param_groups`` (implementation switches such as ``foreach``).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import optax

from jaxopt_adv import torch as torch_exact

__all__ = ["OURS_ONLY", "SPECS", "Field", "Spec"]


class Field(NamedTuple):
    """One per-parameter tensor: torch's key, the state class and field holding it."""

    torch_key: str
    state_type: type
    name: str


class Spec(NamedTuple):
    """How one torch class's state maps onto ours."""

    fields: tuple[Field, ...]
    step: str  # torch's "step": "tensor", "int" (SparseAdam) or "none" (SGD, Muon)
    scalars: tuple[str, ...]  # per-parameter scalar tensors computed from the count
    flags: dict[str, Any]  # torch-only group entries (implementation switches)


_FOREACH = {"foreach": None, "differentiable": False}
_CAPTURABLE = {**_FOREACH, "capturable": False}
_ADAM_FIELDS = (
    Field("exp_avg", torch_exact.ScaleByAdamState, "mu"),
    Field("exp_avg_sq", torch_exact.ScaleByAdamState, "nu"),
    Field("max_exp_avg_sq", torch_exact.ScaleByAdamState, "nu_max"),
)
_ADAM = Spec(_ADAM_FIELDS, "tensor", (), {**_CAPTURABLE, "fused": None})
SPECS: dict[str, Spec] = {
    "SGD": Spec(
        (Field("momentum_buffer", torch_exact.SgdMomentumState, "trace"),),
        "none",
        (),
        {**_FOREACH, "fused": None},
    ),
    "Adam": _ADAM,
    "AdamW": _ADAM,
    "Adamax": Spec(
        (
            Field("exp_avg", optax.ScaleByAdamState, "mu"),
            Field("exp_inf", optax.ScaleByAdamState, "nu"),
        ),
        "tensor",
        (),
        _CAPTURABLE,
    ),
    "NAdam": Spec(
        (
            Field("exp_avg", torch_exact.ScaleByNadamState, "mu"),
            Field("exp_avg_sq", torch_exact.ScaleByNadamState, "nu"),
        ),
        "tensor",
        ("mu_product",),
        _CAPTURABLE,
    ),
    "RAdam": Spec(
        (
            Field("exp_avg", torch_exact.ScaleByRadamState, "mu"),
            Field("exp_avg_sq", torch_exact.ScaleByRadamState, "nu"),
        ),
        "tensor",
        (),
        _CAPTURABLE,
    ),
    "RMSprop": Spec(
        (
            Field("square_avg", optax.ScaleByRmsState, "nu"),
            Field("square_avg", optax.ScaleByRStdDevState, "nu"),
            Field("grad_avg", optax.ScaleByRStdDevState, "mu"),
            Field("momentum_buffer", optax.TraceState, "trace"),
        ),
        "tensor",
        (),
        _CAPTURABLE,
    ),
    "Adagrad": Spec(
        (Field("sum", torch_exact.ScaleByAdagradState, "sum_of_squares"),),
        "tensor",
        (),
        {**_FOREACH, "fused": None},
    ),
    "Adadelta": Spec(
        (
            Field("square_avg", optax.ScaleByAdaDeltaState, "e_g"),
            Field("acc_delta", optax.ScaleByAdaDeltaState, "e_x"),
        ),
        "tensor",
        (),
        _CAPTURABLE,
    ),
    "ASGD": Spec((Field("ax", torch_exact.AsgdState, "ax"),), "tensor", ("eta", "mu"), _CAPTURABLE),
    "Rprop": Spec(
        (
            Field("prev", torch_exact.ScaleByRpropState, "prev"),
            Field("step_size", torch_exact.ScaleByRpropState, "step_size"),
        ),
        "tensor",
        (),
        _CAPTURABLE,
    ),
    "Adafactor": Spec(
        (
            Field("row_var", torch_exact.ScaleByAdafactorState, "row_var"),
            Field("col_var", torch_exact.ScaleByAdafactorState, "col_var"),
            Field("variance", torch_exact.ScaleByAdafactorState, "variance"),
        ),
        "tensor",
        (),
        {"foreach": None},
    ),
    "SparseAdam": Spec(
        (
            Field("exp_avg", torch_exact.ScaleBySparseAdamState, "mu"),
            Field("exp_avg_sq", torch_exact.ScaleBySparseAdamState, "nu"),
        ),
        "int",
        (),
        {},
    ),
    "Muon": Spec(
        (Field("momentum_buffer", torch_exact.ScaleByMuonState, "momentum_buffer"),),
        "none",
        (),
        {},
    ),
}
# our factory arguments that are not torch hyperparameters
OURS_ONLY = ("mu_dtype", "accumulator_dtype", "torch_default_dtype")
