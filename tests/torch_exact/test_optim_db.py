"""torch's own optimizer test database (``optim_db``) as a parity matrix.

``torch.testing._internal.common_optimizers.optim_db`` lists, for each ``torch.optim``
optimizer, the configurations torch tests it with (``optim_inputs_func``) and the
arguments it must reject (``optim_error_inputs_func``). Every configuration of every
optimizer with a ``jaxopt_adv.torch`` twin runs here for 25 steps in float64 against
torch from identical parameters and gradients, torch under its default dtype float32 (as
users run it) and ours with its default ``torch_default_dtype``. The CUDA-only
configurations are included with ``capturable`` / ``foreach`` / ``fused`` dropped and
tensor ``lr`` / ``betas`` given as floats. torch's keyword arguments map to ours by name,
except ``lr`` -> ``learning_rate`` and ``betas`` -> ``b1``, ``b2``. A configuration torch
adds later is enumerated (and so tested) automatically.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from torch.testing._internal.common_optimizers import optim_db

import jaxopt_adv.torch as ours_torch
from tests.harness import (
    TOLERANCE,
    absolute_error,
    gradient_stream,
    make_params,
    max_abs,
    precision,
    run_parity,
)

NUM_STEPS = 25
# torch class name -> our factory's name in jaxopt_adv.torch
TWINS = {
    "Adadelta": "adadelta",
    "Adafactor": "adafactor",
    "Adagrad": "adagrad",
    "Adam": "adam",
    "AdamW": "adamw",
    "Adamax": "adamax",
    "ASGD": "asgd",
    "LBFGS": "lbfgs",
    "Muon": "muon",
    "NAdam": "nadam",
    "RAdam": "radam",
    "RMSprop": "rmsprop",
    "Rprop": "rprop",
    "SGD": "sgd",
    "SparseAdam": "sparse_adam",
}
# implementation switches of torch's (its kernels, not its arithmetic): dropped
IMPLEMENTATION = ("capturable", "foreach", "fused", "differentiable")
# torch's error inputs that have no counterpart here, by the start of torch's message:
# they concern torch's parameter groups, named parameters, sparse parameter tensors,
# or tensor-valued hyperparameters on its foreach kernels
TORCH_API_ERRORS = {
    "some parameters appear in more than one parameter group": "no parameter groups",
    "all optimizer params should be with/without names": "no named parameters",
    "all optimizer param groups should be with/without names": "no parameter groups",
    "SparseAdam requires dense parameter tensors": "JAX arrays are dense",
    "betas must be either both floats or both Tensors": "betas are given as floats",
    "lr as a Tensor is not supported for capturable=False and foreach=True": "no foreach",
    r"betas\[0\] as a Tensor is not supported for capturable=False": "no foreach",
}
# torch's ValueErrors that are another exception here, with the reason
OTHER_EXCEPTION = {
    # complex parameters are a dtype error (TypeError) at init for every optimizer here,
    # with a hint to optimise the real and imaginary parts as a real array
    "SparseAdam does not support complex parameters": TypeError,
}


def _as_float(value: Any) -> Any:
    """A tensor hyperparameter as a Python float (a tuple element by element)."""
    if isinstance(value, torch.Tensor):
        return float(value.item()) if value.numel() == 1 else np.asarray(value)
    if isinstance(value, tuple):
        return tuple(_as_float(v) for v in value)
    return value


def torch_kwargs(kwargs: dict[str, Any]) -> dict[str, Any]:
    """torch's keyword arguments without the implementation switches, tensors as floats."""
    return {k: _as_float(v) for k, v in kwargs.items() if k not in IMPLEMENTATION}


def our_kwargs(kwargs: dict[str, Any]) -> dict[str, Any]:
    """torch's keyword arguments under our names: ``lr`` -> ``learning_rate``,
    ``betas`` -> ``b1, b2``, the rest unchanged."""
    out = dict(kwargs)
    if "lr" in out:
        out["learning_rate"] = out.pop("lr")
    if "betas" in out:
        out["b1"], out["b2"] = out.pop("betas")
    return out


def _configurations() -> list[tuple[str, dict[str, Any]]]:
    """``(torch class name, torch kwargs)`` of every configuration of optim_db with a twin,
    CPU and CUDA ones, without duplicates (a CUDA one often differs only by ``capturable``)."""
    found: dict[str, tuple[str, dict[str, Any]]] = {}
    for info in optim_db:
        name = info.optim_cls.__name__
        if name not in TWINS:
            continue
        for device in ("cpu", "cuda"):
            for optim_input in info.optim_inputs_func(device=device):
                kwargs = torch_kwargs(optim_input.kwargs)
                found.setdefault(f"{name}-{sorted(kwargs.items())}", (name, kwargs))
    return list(found.values())


def _error_inputs() -> list[tuple[str, Any, dict[str, Any], str]]:
    """``(class name, params, torch kwargs, message)`` of every ValueError torch lists."""
    found = []
    for info in optim_db:
        name = info.optim_cls.__name__
        if name not in TWINS:
            continue
        for error in info.optim_error_inputs_func(device="cpu", dtype=torch.float32):
            if error.error_type is ValueError:
                optim_input = error.optimizer_error_input
                message = str(error.error_regex)
                found.append((name, optim_input.params, optim_input.kwargs, message))
    return found


CONFIGURATIONS = _configurations()
ERROR_INPUTS = _error_inputs()


def _config_id(config: tuple[str, dict[str, Any]]) -> str:
    name, kwargs = config
    return f"{name}-" + ",".join(f"{k}={v}" for k, v in sorted(kwargs.items()))


def _factory(name: str):
    return getattr(ours_torch, TWINS[name])


class SparseGrads:
    """A torch optimizer whose dense gradients are made sparse (their nonzero elements)
    before each ``step``, as ``torch.optim.SparseAdam`` requires."""

    def __init__(self, optimizer: torch.optim.Optimizer):
        self.optimizer = optimizer
        self.param_groups = optimizer.param_groups
        self.state = optimizer.state

    def step(self) -> None:
        for group in self.param_groups:
            for p in group["params"]:
                p.grad = p.grad.to_sparse()
        self.optimizer.step()


def _sparse_stream() -> list[dict[str, np.ndarray]]:
    """The harness's gradients with about half their elements exactly zero."""
    rng = np.random.default_rng(2)
    return [
        {k: np.where(rng.uniform(size=np.shape(v)) < 0.5, 0.0, v) for k, v in g.items()}
        for g in gradient_stream(NUM_STEPS)
    ]


def _lbfgs_loss(params: dict[str, Any], lib: Any) -> Any:
    """A smooth, non-quadratic loss of the harness's parameters (a softplus of each
    element plus a quartic term), which L-BFGS does not solve in one step."""
    total = 0.0
    for k in sorted(params):
        x = params[k]
        softplus = lib.log1p(lib.exp(-abs(x))) + lib.maximum(x, 0 * x)
        total = total + (softplus - 0.3 * x).sum() + 0.05 * (x**4).sum()
    return total


def run_lbfgs(kwargs: dict[str, Any], tol: float) -> float:
    """25 ``step(closure)`` calls of torch's LBFGS and 25 updates of ours (``value_fn``):
    parameters compared after every step; returns the largest relative error."""
    start = {k: v for k, v in make_params().items() if k != "scalar"}
    names = sorted(start)
    errors: dict[str, float] = {}
    scales = {k: max_abs(v) for k, v in start.items()}
    with precision("float64", torch_default="float32"):
        tx = ours_torch.lbfgs(**our_kwargs(kwargs))

        def value_fn(p):
            return _lbfgs_loss(p, jnp)

        @jax.jit
        def step(params, state):
            updates, state = tx.update(jax.grad(value_fn)(params), state, params, value_fn=value_fn)
            return jax.tree.map(jnp.add, params, updates), state

        params = {k: jnp.asarray(v) for k, v in start.items()}
        state = tx.init(params)
        tp = {k: torch.tensor(start[k], requires_grad=True) for k in names}
        optimizer = torch.optim.LBFGS([tp[k] for k in names], **kwargs)

        def closure():
            optimizer.zero_grad()
            loss = _lbfgs_loss(tp, torch)
            loss.backward()
            return loss

        for t in range(NUM_STEPS):
            params, state = step(params, state)
            optimizer.step(closure)
            for k in names:
                reference = tp[k].detach().numpy()
                scales[k] = max(scales[k], max_abs(reference))
                error = absolute_error(params[k], reference) / scales[k]
                errors[k] = max(errors.get(k, 0.0), error)
            assert max(errors.values()) <= tol, (t + 1, errors)
    return max(errors.values())


@pytest.mark.parametrize("config", CONFIGURATIONS, ids=[_config_id(c) for c in CONFIGURATIONS])
def test_optim_db_configuration(config):
    name, kwargs = config
    tol = TOLERANCE["float64"]
    if name == "LBFGS":
        run_lbfgs(kwargs, tol)
        return
    params, stream = make_params(), gradient_stream(NUM_STEPS)
    torch_cls = getattr(torch.optim, name)

    def factory(p):
        return torch_cls(p, **kwargs)

    if name == "Muon":  # 2-D parameters only
        params = {"matrix": params["matrix"], "wide": np.random.default_rng(3).normal(size=(3, 6))}
        stream = [
            {k: np.random.default_rng(100 + t).normal(size=v.shape) for k, v in params.items()}
            for t in range(NUM_STEPS)
        ]
    elif name == "SparseAdam":
        stream = _sparse_stream()

        def factory(p):
            return SparseGrads(torch_cls(p, **kwargs))

    run_parity(
        _factory(name)(**our_kwargs(kwargs)),
        factory,
        dtype="float64",
        params=params,
        stream=stream,
        tolerance=tol,
        torch_default="float32",
    )


# each optimizer's configuration with the most options, other than ``lr`` first, the last
# listed among equals (L-BFGS: its strong-Wolfe line search)
RICHEST = [
    max(
        reversed([c for c in CONFIGURATIONS if c[0] == name]),
        key=lambda c: (len(c[1]), "lr" not in c[1]),
    )
    for name in TWINS
]


@pytest.mark.usefixtures("default_compilation")
@pytest.mark.parametrize("config", RICHEST, ids=[_config_id(c) for c in RICHEST])
def test_optim_db_configuration_with_xlas_default_compilation(config):
    """The package compiles quickly (``conftest.py``); each optimizer's configuration with
    the most options also runs compiled with XLA's default settings, the code users run."""
    test_optim_db_configuration(config)


def test_optim_db_is_enumerated():
    """Every twin has configurations; the CUDA-only ones bring more than the CPU's 91."""
    assert {name for name, _ in CONFIGURATIONS} == set(TWINS)
    assert len(CONFIGURATIONS) > 91


CHECKED_ERRORS = [
    e for e in ERROR_INPUTS if not any(e[3].startswith(prefix) for prefix in TORCH_API_ERRORS)
]


@pytest.mark.parametrize(
    "error_input", CHECKED_ERRORS, ids=[f"{e[0]}-{e[3][:40]}" for e in CHECKED_ERRORS]
)
def test_optim_db_value_error(error_input):
    """torch's ValueError inputs raise ValueError here: at construction for
    hyperparameters, at ``init`` for parameters (the first moment we see them)."""
    name, params, kwargs, message = error_input
    kwargs = our_kwargs({k: _as_float(v) for k, v in kwargs.items() if k not in IMPLEMENTATION})
    with pytest.raises(OTHER_EXCEPTION.get(message, ValueError)):
        tx = _factory(name)(**kwargs)
        if params is not None:
            tx.init({str(i): jnp.asarray(p.detach().numpy()) for i, p in enumerate(params)})


def test_torch_api_table_is_used():
    """Every entry of the table of torch-only errors still matches a message torch lists."""
    messages = [m for _, _, _, m in ERROR_INPUTS]
    for prefix in [*TORCH_API_ERRORS, *OTHER_EXCEPTION]:
        assert any(m.startswith(prefix) for m in messages), prefix
