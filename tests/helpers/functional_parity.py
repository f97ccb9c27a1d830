"""The torch.nn.functional parity harness (values and one random VJP compared with torch,
a weight's gradient with torch's finite differences) that tests/torch_exact/
test_functional.py, test_losses.py and test_losses_ctc.py share.

The error of a quantity is ``max|ours - torch| / max|torch|`` over its finite elements;
``nan`` and ``inf`` must sit at the same places (with the same signs) in both.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from tests.harness import precision

TOLERANCE = {"float64": 1e-12, "float32": 2e-6}
DTYPES = ["float64", "float32"]
REDUCTIONS = ["mean", "sum", "none"]


def precisions(reductions: list[str]) -> list:
    """(dtype, reduction) pairs: every reduction in float64; float32 leaves out 'sum' (the
    'mean' runs the same sum) to keep the file fast."""
    return [
        pytest.param(dtype, reduction, id=f"{reduction}-{dtype}")
        for dtype in DTYPES
        for reduction in reductions
        if (dtype, reduction) != ("float32", "sum")
    ]


PRECISIONS = precisions(REDUCTIONS)


def relative_error(value, reference) -> float:
    """max|value - reference| / max|reference| over finite entries; non-finite must agree."""
    value = np.asarray(value, np.float64)
    reference = np.asarray(reference, np.float64)
    assert value.shape == reference.shape, (value.shape, reference.shape)
    np.testing.assert_array_equal(np.isnan(value), np.isnan(reference), "nan positions differ")
    infinite = np.isinf(reference)
    np.testing.assert_array_equal(value[infinite], reference[infinite], "inf entries differ")
    assert not np.isinf(value[~infinite]).any(), "inf where torch is finite"
    finite = np.isfinite(reference)
    if not finite.any():
        return 0.0
    scale = np.max(np.abs(reference[finite]))
    error = np.max(np.abs(value[finite] - reference[finite]))
    return float(error / scale) if scale > 0 else float(error)


def elementwise_error(value, reference) -> float:
    """max over entries of |value - reference| / |reference| (0 only when equal)."""
    value = np.asarray(value, np.float64)
    reference = np.asarray(reference, np.float64)
    relative_error(value, reference)  # shape and non-finite checks
    finite = np.isfinite(reference)
    diff = np.abs(value[finite] - reference[finite])
    scale = np.abs(reference[finite])
    return float(np.max(np.where(diff == 0, 0.0, diff / np.maximum(scale, 1e-300)), initial=0))


@dataclasses.dataclass
class Parity:
    """Errors of one comparison, with our value and gradients (as NumPy arrays)."""

    errors: dict[str, float]
    value: np.ndarray
    grads: dict[str, np.ndarray]


def is_float(x) -> bool:
    return np.issubdtype(np.asarray(x).dtype, np.floating)


def run_parity(
    our_fn,
    torch_fn,
    arrays: dict,
    *,
    diff: tuple[str, ...] = ("input",),
    dtype: str = "float64",
    options: dict | None = None,
    metric=relative_error,
) -> Parity:
    """Value and VJP of ``our_fn`` and ``torch_fn`` on the same data, compared.

    ``arrays`` maps argument names to float64 (cast to ``dtype``) or integer NumPy arrays;
    ``diff`` names the arguments whose gradients are compared.
    """
    options = options or {}
    rng = np.random.default_rng(7)
    with precision(dtype):
        torch_dtype = getattr(torch, dtype)
        jax_args = {  # cast on the host: no conversion kernels to compile
            k: jnp.asarray(np.asarray(v, dtype if is_float(v) else np.int32))
            for k, v in arrays.items()
        }
        torch_args = {
            k: torch.tensor(v, dtype=torch_dtype if is_float(v) else torch.int64)
            for k, v in arrays.items()
        }
        for k in diff:
            torch_args[k].requires_grad_(True)
        reference = torch_fn(**torch_args, **options)
        cotangent = rng.normal(size=tuple(reference.shape))
        reference.backward(torch.tensor(cotangent, dtype=torch_dtype))

        def loss(*values):
            return our_fn(**{**jax_args, **dict(zip(diff, values, strict=True))}, **options)

        value, vjp = jax.vjp(loss, *[jax_args[k] for k in diff])
        assert value.dtype == jnp.dtype(dtype), value.dtype
        grads = dict(zip(diff, vjp(jnp.asarray(np.asarray(cotangent, dtype))), strict=True))
        errors = {"value": metric(value, reference.detach().numpy())}
        for k, g in grads.items():
            errors[f"grad:{k}"] = metric(g, torch_args[k].grad.numpy())
    worst = max(errors, key=errors.get)
    assert errors[worst] <= TOLERANCE[dtype], f"{worst}: {errors[worst]:.3e} ({errors})"
    return Parity(errors, np.asarray(value), {k: np.asarray(g) for k, g in grads.items()})


def torch_finite_difference(torch_fn, arrays: dict, name: str, options: dict) -> np.ndarray:
    """Central differences of torch's float64 loss with respect to ``arrays[name]``."""
    tensors = {
        k: torch.tensor(v, dtype=torch.float64 if is_float(v) else torch.int64)
        for k, v in arrays.items()
    }
    base = tensors[name]
    grad = np.zeros(base.shape)
    for index in np.ndindex(*base.shape):
        h = 1e-6 * max(1.0, abs(float(base[index])))
        values = []
        for sign in (1, -1):
            shifted = base.clone()
            shifted[index] += sign * h
            values.append(float(torch_fn(**{**tensors, name: shifted}, **options)))
        grad[index] = (values[0] - values[1]) / (2 * h)
    return grad


def check_weight_gradient(our_fn, torch_fn, arrays: dict, name: str, options: dict) -> None:
    """Our gradient w.r.t. a weight torch does not differentiate == torch's loss slope."""
    reference = torch_finite_difference(torch_fn, arrays, name, options)
    with precision("float64"):
        args = {k: jnp.asarray(v) for k, v in arrays.items()}

        def loss(w):
            return our_fn(**{**args, name: w}, **options)

        grad = jax.grad(loss)(args[name])
    np.testing.assert_allclose(grad, reference, rtol=1e-7, atol=1e-9)
