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


def _fields(state_type: type, **names: str) -> tuple[Field, ...]:
    """A :class:`Field` of ``state_type`` for each ``torch_key=name``, in order."""
    return tuple(Field(torch_key, state_type, name) for torch_key, name in names.items())


def _tensor_step(
    fields: tuple[Field, ...], scalars: tuple[str, ...] = (), flags: dict[str, Any] = _CAPTURABLE
) -> Spec:
    """A torch class that keeps its ``step`` as a tensor (capturable by default)."""
    return Spec(fields, "tensor", scalars, flags)


_ADAM = _tensor_step(
    _fields(torch_exact.ScaleByAdamState, exp_avg="mu", exp_avg_sq="nu", max_exp_avg_sq="nu_max"),
    flags={**_CAPTURABLE, "fused": None},
)
SPECS: dict[str, Spec] = {
    "SGD": Spec(
        _fields(torch_exact.SgdMomentumState, momentum_buffer="trace"),
        "none",
        (),
        {**_FOREACH, "fused": None},
    ),
    "Adam": _ADAM,
    "AdamW": _ADAM,
    "Adamax": _tensor_step(_fields(optax.ScaleByAdamState, exp_avg="mu", exp_inf="nu")),
    "NAdam": _tensor_step(
        _fields(torch_exact.ScaleByNadamState, exp_avg="mu", exp_avg_sq="nu"), ("mu_product",)
    ),
    "RAdam": _tensor_step(_fields(torch_exact.ScaleByRadamState, exp_avg="mu", exp_avg_sq="nu")),
    "RMSprop": _tensor_step(
        (
            *_fields(optax.ScaleByRmsState, square_avg="nu"),
            *_fields(optax.ScaleByRStdDevState, square_avg="nu", grad_avg="mu"),
            *_fields(optax.TraceState, momentum_buffer="trace"),
        )
    ),
    "Adagrad": _tensor_step(
        _fields(torch_exact.ScaleByAdagradState, sum="sum_of_squares"),
        flags={**_FOREACH, "fused": None},
    ),
    "Adadelta": _tensor_step(
        _fields(optax.ScaleByAdaDeltaState, square_avg="e_g", acc_delta="e_x")
    ),
    "ASGD": _tensor_step(_fields(torch_exact.AsgdState, ax="ax"), ("eta", "mu")),
    "Rprop": _tensor_step(
        _fields(torch_exact.ScaleByRpropState, prev="prev", step_size="step_size")
    ),
    "Adafactor": _tensor_step(
        _fields(
            torch_exact.ScaleByAdafactorState,
            row_var="row_var",
            col_var="col_var",
            variance="variance",
        ),
        flags={"foreach": None},
    ),
    "SparseAdam": Spec(
        _fields(torch_exact.ScaleBySparseAdamState, exp_avg="mu", exp_avg_sq="nu"), "int", (), {}
    ),
    "Muon": Spec(
        _fields(torch_exact.ScaleByMuonState, momentum_buffer="momentum_buffer"), "none", (), {}
    ),
}
# our factory arguments that are not torch hyperparameters
OURS_ONLY = ("mu_dtype", "accumulator_dtype", "torch_default_dtype")
