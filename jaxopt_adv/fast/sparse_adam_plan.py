"""The fused CPU step's plan for ``jaxopt_adv.torch.sparse_adam`` (``csrc/sparse_adam.cc``).

An element takes part in a step where its gradient is nonzero: the kernel computes every
element's step and keeps the old moments and parameter elsewhere, as XLA's select does.
The kernel runs with a traced learning rate (a schedule of the step count,
``inject_hyperparams=True``, under ``jax.jit``); a constant one (a number, or a schedule
that returns one) and a ``mask=`` argument take the XLA path
(:meth:`~jaxopt_adv.fast.FusedOptimizer.explain` says why).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import optax

from jaxopt_adv.fast import selfcheck
from jaxopt_adv.torch.sparse_adam import ScaleBySparseAdamState, sparse_adam_factor

CONSTANT_LEARNING_RATE = (
    "SparseAdam with a constant learning rate (XLA's rounding of the step varies by leaf "
    "shape; a schedule of the step count or inject_hyperparams runs the kernel)"
)


def sparse_adam_plan(hp: dict, old_inner: Any, new_inner: Any, checked: Callable) -> Any:
    """``checked(family)``: why a self-check family failed on this host, or ``None``."""
    # step.py registers this plan: import its helpers when a step is traced
    from jaxopt_adv.fast.step import _bits, _find, _learning_step, _Plan, _scalar_list

    b1, b2 = hp["b1"], hp["b2"]
    learning_rate = hp["learning_rate"]
    if callable(learning_rate):  # the value optax.scale_by_schedule multiplies by
        learning_rate = learning_rate(_find(old_inner, optax.ScaleByScheduleState).count)
    # a number, or an array that is not traced (a schedule returning one): an XLA constant
    constant_learning_rate = not isinstance(learning_rate, jax.core.Tracer)
    # the transform's factor, from the new count, with the same ops
    count = _find(new_inner, ScaleBySparseAdamState).count
    factor = sparse_adam_factor(b1, b2, count, hp["torch_default_dtype"])

    def scalars(key):
        (dtype,) = key
        if constant_learning_rate:
            # XLA computes p + select(active, u, 0) * (-lr); LLVM folds a constant product
            # into the select's arms in some loops of a leaf and not in others (by shape),
            # so whether it is one FMA varies; a traced one is always fused (the kernel's)
            return CONSTANT_LEARNING_RATE
        step = _learning_step(hp["learning_rate"], old_inner, dtype)
        if isinstance(step, str):
            return step
        if (mismatch := checked(selfcheck.SPARSE_ADAM)) is not None:
            return mismatch
        named = [("1 - b1", 1 - b1), ("1 - b2", 1 - b2), ("eps", hp["eps"])]
        rest = _scalar_list(named, dtype)
        # scale_by_sparse_adam casts the factor to the moments' (the leaf's) dtype
        return rest if isinstance(rest, str) else [step, *rest, factor.astype(dtype)]

    def flags(key):
        return _bits(hp["maximize"])

    fields = [(ScaleBySparseAdamState, "mu"), (ScaleBySparseAdamState, "nu")]
    return _Plan("jaxopt_adv_sparse_adam", fields, scalars, flags)
