"""One fused pass per step: torch-exact optimizers as CPU kernels.

The kernels cover Adam/AdamW, SGD, RMSprop, Adagrad, Adadelta, Adamax, NAdam/NAdamW,
RAdam/RAdamW, Rprop, ASGD and SparseAdam.

``optax``'s contract returns *updates* that ``optax.apply_updates`` adds to the
parameters; XLA:CPU compiles ``update + apply_updates`` of Adam into three loops per
leaf (new ``mu``, new ``nu``, new params: 10 array passes where 7 suffice). A kernel that
returned updates could not be fused with the addition, so the fast path is a *step*:
``step(params, grads, state) -> (params, state)``, made of XLA FFI custom calls (one per
up to 16 leaves of a dtype) that read ``p, g`` and the state once and write ``p`` and
the state once, in place when the buffers are donated.

The state is the state of the matching optax transform (``jaxopt_adv.torch.adam(...)``
etc., or its ``optax.inject_hyperparams`` version): states are interchangeable and
checkpoints work. Every count and schedule step is computed by the transform itself
(its ``update`` is traced; XLA removes the per-element part the kernel replaces), and
the kernel's scalars are computed as the transform computes them, so results are
bit-identical to ``tx.update`` + ``optax.apply_updates`` under ``jax.jit``. XLA's
arithmetic for a leaf depends on its program (how many leaves share a bias correction,
how XLA splits a loop over threads, 0-d leaves); the plans below pick the kernel
variant that mirrors it, and a self-check (:mod:`.selfcheck`) confirms the mirror on
each host.

Where the kernels cannot be used -- no compiler, a non-CPU backend, more than one
device, a leaf that is not float32/float64, state in another dtype, a hyperparameter
whose dtype would promote the arithmetic, a configuration whose XLA arithmetic is not
mirrored, ``kernel=False`` or ``JAXOPT_ADV_FAST_DISABLE=1`` -- the whole step is
``tx.update`` + ``optax.apply_updates`` (leaving some leaves to XLA inside the kernel
program would change XLA's arithmetic for them).
"""

from __future__ import annotations

import inspect
import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxopt_adv._common import is_concrete_number, is_static_zero, scalar_dtype
from jaxopt_adv.fast import build, flat, selfcheck
from jaxopt_adv.fast.sparse_adam_plan import sparse_adam_plan
from jaxopt_adv.torch.adadelta import adadelta
from jaxopt_adv.torch.adagrad import ScaleByAdagradState, adagrad
from jaxopt_adv.torch.adam import ScaleByAdamState, adam, adam_bias_corrections, adamw
from jaxopt_adv.torch.adamax import adamax
from jaxopt_adv.torch.asgd import AsgdState, asgd, asgd_coefficients
from jaxopt_adv.torch.nadam import ScaleByNadamState, nadam, nadam_coefficients
from jaxopt_adv.torch.radam import ScaleByRadamState, radam, radam_scalars
from jaxopt_adv.torch.rmsprop import rmsprop
from jaxopt_adv.torch.rprop import ScaleByRpropState, rprop
from jaxopt_adv.torch.sgd import SgdMomentumState, sgd
from jaxopt_adv.torch.sparse_adam import sparse_adam

__all__ = ["SUPPORTED", "FusedOptimizer", "available", "fused", "jit_step", "unavailable_reason"]

# registered name -> (factory, kernel family)
SUPPORTED: dict[str, tuple[Callable[..., optax.GradientTransformation], str]] = {
    "torch.adam": (adam, "adam"),
    "torch.adamw": (adamw, "adam"),
    "torch.sgd": (sgd, "sgd"),
    "torch.rmsprop": (rmsprop, "rmsprop"),
    "torch.adagrad": (adagrad, "adagrad"),
    "torch.adamax": (adamax, "adamax"),
    "torch.nadam": (nadam, "nadam"),
    "torch.radam": (radam, "radam"),
    "torch.adadelta": (adadelta, "adadelta"),
    "torch.rprop": (rprop, "rprop"),
    "torch.asgd": (asgd, "asgd"),
    "torch.sparse_adam": (sparse_adam, "sparse_adam"),
}
_FLOATS = (np.dtype(np.float32), np.dtype(np.float64))
# XLA compiles one custom call with hundreds of aliased operands slowly (2 s for 200 Adam
# leaves, against 0.5 s in calls of up to 16); each call still splits its leaves into
# chunks for the thread pool.
_LEAVES_PER_CALL = 16


def unavailable_reason() -> str | None:
    """Why the kernels cannot be used in this process, or ``None`` when they can.

    The first call builds (or loads from the cache) the kernel library and checks, once
    per library and host (the outcome is cached next to it), that the kernels reproduce
    XLA's results bit for bit here: XLA's code generation (which products become fused
    multiply-adds, which divisions become reciprocals) is mirrored from this jaxlib's
    XLA:CPU, and a host where it differs gets the pure-JAX path.
    """
    reason = build.host_reason()
    if reason is None:
        reason = selfcheck.outcome(_probe_mismatches, selfcheck.KERNELS)
    return reason


def available() -> bool:
    """Whether :func:`fused` steps can run the CPU kernels here (see
    :func:`unavailable_reason`)."""
    return unavailable_reason() is None


# --------------------------------------------------------------------------- state access


def _is_state(node: Any) -> bool:
    return isinstance(node, tuple) and hasattr(node, "_fields")


def _find(state: Any, cls: type) -> Any:
    """The unique ``cls`` NamedTuple inside a (chained) optax state, or ``None``."""
    found = []

    def visit(node: Any) -> None:
        if isinstance(node, cls):
            found.append(node)
        elif isinstance(node, (tuple, list)):
            for child in node:
                visit(child)

    visit(state)
    if len(found) > 1:
        raise ValueError(f"{cls.__name__} occurs {len(found)} times in the state")
    return found[0] if found else None


def _replace(state: Any, cls: type, **fields: Any) -> Any:
    """``state`` with the fields of its ``cls`` NamedTuple replaced."""
    if isinstance(state, cls):
        return state._replace(**fields)
    if _is_state(state):
        return type(state)(*(_replace(child, cls, **fields) for child in state))
    if isinstance(state, tuple):
        return tuple(_replace(child, cls, **fields) for child in state)
    if isinstance(state, list):
        return [_replace(child, cls, **fields) for child in state]
    return state


# ------------------------------------------------------------------------------ scalars


def _cast(value: Any, dtype: np.dtype) -> jax.Array | None:
    """``value`` as a 0-d ``dtype`` array, exactly as XLA sees it in ``value * leaf``;
    ``None`` when the product would be computed in another dtype (a strongly typed
    hyperparameter of a wider dtype promotes the leaf)."""
    if is_concrete_number(value):
        return jnp.asarray(value, dtype=dtype)
    if jnp.result_type(value, dtype) != dtype:
        return None
    value = jnp.asarray(value)
    if value.shape != ():
        return None
    return value.astype(dtype)


def _power_of_two(value: float) -> bool:
    return value != 0 and math.isfinite(value) and math.frexp(abs(value))[0] == 0.5


def _factored(a: Any, b: Any, dtype: np.dtype) -> bool:
    """XLA rewrites ``x * a + y * b`` into ``(x + y) * a`` when ``a`` and ``b`` are the
    same constant power of two (e.g. ``beta = 1 - beta = 0.5``)."""
    if not (is_concrete_number(a) and is_concrete_number(b)):
        return False
    a, b = np.asarray(a, dtype), np.asarray(b, dtype)
    return bool(a == b) and _power_of_two(float(a))


def _is_static_one(value: Any, dtype: np.dtype) -> bool:
    """Whether ``value`` is a Python number that becomes 1 in ``dtype``: a constant XLA's
    code generation multiplies away (``x * 1 -> x``, ``x * -1 -> -x``), which changes
    which products LLVM contracts into fused multiply-adds."""
    return is_concrete_number(value) and bool(np.asarray(value, dtype) == 1)


def _learning_step(learning_rate: Any, old_inner: Any, dtype: np.dtype) -> jax.Array | str:
    """``-lr`` as ``optax.scale_by_learning_rate`` multiplies the update by it, or why it
    cannot be had (see :func:`_cast`)."""
    if callable(learning_rate):  # optax.scale_by_schedule, evaluated at its old count
        schedule_state = _find(old_inner, optax.ScaleByScheduleState)
        return jnp.array(-1 * learning_rate(schedule_state.count), dtype=dtype)
    step = _cast(-1 * learning_rate, dtype)
    return f"the learning rate would promote the {dtype} arithmetic" if step is None else step


# -------------------------------------------------------------------------------- plans


@dataclass
class _Plan:
    """What one optimizer's kernel needs.

    Leaves are grouped by ``group(leaf, n_leaves)`` (their dtype, and for Adam the form
    XLA gives the bias corrections, see ``csrc/adam.cc``); ``scalars(group)`` and
    ``flags(group)`` give each group's operands and ``flags`` attribute.
    """

    target: str
    # (state class, field) of each per-leaf state array, in the kernel's order
    fields: list[tuple[type, str]]
    # group -> the kernel's scalar operands, or the reason they cannot be had
    scalars: Callable[[tuple], list[jax.Array] | str]
    # group -> the kernel's `flags` attribute
    flags: Callable[[tuple], int]
    # the dtype the transform keeps its state in (None: the leaf's)
    state_dtype: Any = None
    group: Callable[[Any, int], tuple] = lambda leaf, n_leaves: (np.dtype(leaf.dtype),)


def _scalar_list(named: list[tuple[str, Any]], dtype: np.dtype) -> list[jax.Array] | str:
    """The hyperparameters as 0-d ``dtype`` arrays (see :func:`_cast`), or why not."""
    out = []
    for name, value in named:
        cast = _cast(value, dtype)
        if cast is None:
            return f"hyperparameter {name} would promote the {dtype} arithmetic"
        out.append(cast)
    return out


def _moment_scalars(wd: Any, b1: Any, b2: Any, eps: Any, dtype: np.dtype) -> list | str:
    """Adam's and NAdam's operands after the step: weight decay, b1, 1 - b1, b2, 1 - b2
    and eps (see :func:`_scalar_list`), or why not."""
    for name, beta in (("b1", b1), ("b2", b2)):
        if _is_static_one(beta, dtype):  # e.g. b2 = 1 - 1e-9 in float32
            return f"hyperparameter {name} rounds to 1 in {dtype} (XLA multiplies it away)"
    named = [("weight_decay", wd), ("b1", b1), ("1 - b1", 1 - b1)]
    named += [("b2", b2), ("1 - b2", 1 - b2), ("eps", eps)]
    return _scalar_list(named, dtype)


def _bits(maximize: bool, *variant: bool) -> int:
    """The kernels' ``flags``: bit 0 maximize, then one bit per variant option."""
    flags = 1 if maximize else 0
    for position, on in enumerate(variant):
        flags |= int(bool(on)) << (position + 1)
    return flags


def _adam_plan(hp: dict, old_inner: Any, new_inner: Any, checked: Callable) -> _Plan:
    b1, b2, eps, wd = hp["b1"], hp["b2"], hp["eps"], hp["weight_decay"]
    decay = not is_static_zero(wd)
    decoupled = decay and hp.get("decoupled_weight_decay", False)
    amsgrad = bool(hp["amsgrad"])
    c1 = 1 - b1
    count = _find(new_inner, ScaleByAdamState).count
    bc1, bc2 = adam_bias_corrections(b1, b2, count, hp["torch_default_dtype"])
    sqrt_bc2 = jnp.sqrt(bc2)

    def group(leaf, n_leaves):
        # scale_by_adam divides by bc1.astype(dtype) and sqrt_bc2.astype(dtype): a real
        # convert is a fresh scalar per leaf (one use); otherwise every leaf shares one.
        dtype = np.dtype(leaf.dtype)
        own1, own2 = dtype != bc1.dtype, dtype != sqrt_bc2.dtype
        if math.prod(jnp.shape(leaf)) == 1:
            # no broadcast: (m / bc1) / d -> m / (bc1 * d); with maximize XLA folds the
            # negations of (1 - b2) * (-g) * (-g) into (g * g) * (1 - b2)
            square_first = hp["maximize"] and not (decay and not decoupled)
            square_first = square_first and is_concrete_number(b2)
            return dtype, False, not own2 and n_leaves == 1, square_first
        return dtype, own1 or n_leaves == 1, own2 or n_leaves == 1, False

    def scalars(key):
        dtype, reciprocal1, reciprocal2, _ = key
        step = _learning_step(hp["learning_rate"], old_inner, dtype)
        if isinstance(step, str):
            return step
        if is_static_zero(eps):
            # XLA drops the + 0 and rewrites the division by the root (with 1-element
            # leaves, for every leaf); not mirrored here
            return "eps 0 (XLA drops the addition and rewrites the division)"
        s1 = 1 / bc1.astype(dtype) if reciprocal1 else bc1.astype(dtype)
        if not reciprocal2:
            s2 = sqrt_bc2.astype(dtype)
        elif dtype != sqrt_bc2.dtype:
            s2 = 1 / sqrt_bc2.astype(dtype)
        else:  # XLA: x / sqrt(y) -> x * rsqrt(y) while the sqrt has one use
            s2 = jax.lax.rsqrt(bc2)
        rest = _moment_scalars(wd if decay else 0.0, b1, b2, eps, dtype)
        return rest if isinstance(rest, str) else [step, *rest, s1, s2]

    def flags(key):
        dtype, reciprocal1, reciprocal2, square_first = key
        coupled = decay and not decoupled
        factored = _factored(b1, c1, dtype)
        variant = (coupled, decoupled, amsgrad, factored, reciprocal1, reciprocal2, square_first)
        return _bits(hp["maximize"], *variant)

    fields = [(ScaleByAdamState, "mu"), (ScaleByAdamState, "nu")]
    if amsgrad:
        fields.append((ScaleByAdamState, "nu_max"))
    return _Plan("jaxopt_adv_adam", fields, scalars, flags, hp.get("mu_dtype"), group)


def _sgd_plan(hp: dict, old_inner: Any, new_inner: Any, checked: Callable) -> _Plan:
    dampening, wd = hp["dampening"], hp["weight_decay"]
    has_momentum = hp["momentum"] is not None
    momentum = hp["momentum"] if has_momentum else 0.0  # no buffer: a constant 0 operand
    decay = not is_static_zero(wd)
    may_be_zero = not (is_concrete_number(momentum) and momentum != 0)
    coef = None
    if has_momentum:
        old_count = _find(old_inner, SgdMomentumState).count
        coef = jnp.where(old_count == 0, 1, 1 - dampening)

    def scalars(key):
        (dtype,) = key
        step = _learning_step(hp["learning_rate"], old_inner, dtype)
        if isinstance(step, str):
            return step
        if has_momentum and is_concrete_number(momentum) and np.asarray(momentum, dtype) == 1:
            # XLA drops `1 * buf`, and LLVM then fuses the other product
            return "momentum 1 (XLA folds the multiplication away)"
        named = [("weight_decay", wd if decay else 0.0)]
        named += [("momentum", momentum)]
        rest = _scalar_list(named, dtype)
        if isinstance(rest, str):
            return rest
        # scale_by_sgd_momentum casts its coefficient to the gradient's dtype
        grad_coef = jnp.zeros((), dtype) if coef is None else coef.astype(dtype)
        return [step, *rest, grad_coef]

    def flags(key):
        nesterov = has_momentum and hp["nesterov"]
        return _bits(hp["maximize"], decay, has_momentum, nesterov, has_momentum and may_be_zero)

    fields = [(SgdMomentumState, "trace")] if has_momentum else []
    return _Plan("jaxopt_adv_sgd", fields, scalars, flags, hp.get("accumulator_dtype"))


def _rmsprop_plan(hp: dict, old_inner: Any, new_inner: Any, checked: Callable) -> _Plan:
    """``checked(family)``: why a self-check family failed on this host, or ``None``."""
    alpha, eps, wd = hp["alpha"], hp["eps"], hp["weight_decay"]
    has_momentum = hp["momentum"] is not None
    momentum = hp["momentum"] if has_momentum else 0.0  # no buffer: a constant 0 operand
    decay = not is_static_zero(wd)
    centered = bool(hp["centered"])
    c = 1 - alpha
    rms_cls = optax.ScaleByRStdDevState if centered else optax.ScaleByRmsState
    traced = not all(is_concrete_number(v) for v in (alpha, eps, wd, momentum))
    all_traced = not any(is_concrete_number(v) for v in (alpha, eps, wd, momentum))

    def scalars(key):
        dtype = key[0]
        step = _learning_step(hp["learning_rate"], old_inner, dtype)
        if isinstance(step, str):
            return step
        if is_static_zero(eps):
            # 1 / (sqrt(nu) + 0) -> rsqrt(nu): XLA's approximate rsqrt, not mirrored here
            return "eps 0 (XLA computes an approximate rsqrt)"
        named = [("weight_decay", wd if decay else 0.0), ("alpha", alpha), ("1 - alpha", c)]
        named += [("eps", eps), ("momentum", momentum)]
        rest = _scalar_list(named, dtype)
        return rest if isinstance(rest, str) else [step, *rest]

    def flags(key):
        dtype, fuse_momentum_product = key
        factored = _factored(alpha, c, dtype)
        unit_step = _is_static_one(hp["learning_rate"], dtype)
        fuse_mean_product = centered and hp["maximize"] and not decay
        variant = (decay, centered, has_momentum, factored, fuse_momentum_product, unit_step)
        return _bits(hp["maximize"], *variant, fuse_mean_product)

    def group(leaf, n_leaves):
        # Of `scale * g + momentum * buf` LLVM fuses one product into an FMA, the one
        # the operand order of XLA's emitted add puts in reach: with a constant momentum
        # the momentum product, for every leaf; with a traced one it depends on how
        # XLA:CPU splits the loop (_xla_loop_is_ragged), and for 1-element leaves it is
        # not mirrored here.
        size = math.prod(jnp.shape(leaf))
        if size == 1 and traced:
            return "RMSprop with injected hyperparameters and a 1-element leaf"
        if is_concrete_number(momentum):
            # a momentum of 1 is multiplied away, which leaves the other product to LLVM
            return np.dtype(leaf.dtype), not _is_static_one(momentum, np.dtype(leaf.dtype))
        if not all_traced:
            return "RMSprop with a traced momentum outside optax.inject_hyperparams"
        if (mismatch := checked(selfcheck.TRACED_MOMENTUM)) is not None:
            return mismatch
        # inject_hyperparams keeps a weight-decay block, so XLA materializes g + wd * p
        # and the trace's loop reads buf, g', nu (and mu, centered) and writes buf
        arrays = 5 if centered else 4
        ragged = _xla_loop_is_ragged(jnp.shape(leaf), np.dtype(leaf.dtype), arrays, 2)
        return np.dtype(leaf.dtype), not ragged

    fields = [(rms_cls, "nu")]
    if centered:
        fields.append((rms_cls, "mu"))
    if has_momentum:
        fields.append((optax.TraceState, "trace"))
    return _Plan("jaxopt_adv_rmsprop", fields, scalars, flags, group=group)


def _adagrad_plan(hp: dict, old_inner: Any, new_inner: Any, checked: Callable) -> _Plan:
    lr_decay, eps, wd = hp["lr_decay"], hp["eps"], hp["weight_decay"]
    decay = not is_static_zero(wd)
    # scale_by_adagrad's learning-rate decay, from the old count, as the transform has it
    count = _find(old_inner, ScaleByAdagradState).count
    lr_scale = 1 / (1 + count.astype(scalar_dtype()) * lr_decay)

    def scalars(key):
        (dtype,) = key
        step = _learning_step(hp["learning_rate"], old_inner, dtype)
        if isinstance(step, str):
            return step
        if is_static_zero(eps):
            # g / (sqrt(S) + 0) -> g * rsqrt(S): XLA's approximate rsqrt, not mirrored here
            return "eps 0 (XLA computes an approximate rsqrt)"
        if (mismatch := checked(selfcheck.ADAGRAD)) is not None:
            return mismatch
        rest = _scalar_list([("weight_decay", wd if decay else 0.0), ("eps", eps)], dtype)
        # scale_by_adagrad casts the decay to the gradient's dtype
        return rest if isinstance(rest, str) else [step, *rest, lr_scale.astype(dtype)]

    def flags(key):
        return _bits(hp["maximize"], decay)

    fields = [(ScaleByAdagradState, "sum_of_squares")]
    return _Plan("jaxopt_adv_adagrad", fields, scalars, flags)


def _adadelta_plan(hp: dict, old_inner: Any, new_inner: Any, checked: Callable) -> _Plan:
    """``checked(family)``: why a self-check family failed on this host, or ``None``."""
    rho, eps, wd = hp["rho"], hp["eps"], hp["weight_decay"]
    decay = not is_static_zero(wd)

    def group(leaf, n_leaves):
        # 1-element leaves under maximize: XLA folds the negations of (1 - rho) (-g) (-g)
        # into (g g) (1 - rho), as for Adam
        square_first = math.prod(jnp.shape(leaf)) == 1 and hp["maximize"] and not decay
        return np.dtype(leaf.dtype), square_first and is_concrete_number(rho)

    def scalars(key):
        dtype, _ = key
        step = _learning_step(hp["learning_rate"], old_inner, dtype)
        if isinstance(step, str):
            return step
        if (mismatch := checked(selfcheck.ADADELTA)) is not None:
            return mismatch
        named = [("weight_decay", wd if decay else 0.0), ("rho", rho), ("1 - rho", 1 - rho)]
        rest = _scalar_list([*named, ("eps", eps)], dtype)
        return rest if isinstance(rest, str) else [step, *rest]

    def flags(key):
        dtype, square_first = key
        unit_step = _is_static_one(hp["learning_rate"], dtype)
        return _bits(hp["maximize"], decay, square_first, unit_step)

    fields = [(optax.ScaleByAdaDeltaState, "e_g"), (optax.ScaleByAdaDeltaState, "e_x")]
    return _Plan("jaxopt_adv_adadelta", fields, scalars, flags, group=group)


def _adamax_plan(hp: dict, old_inner: Any, new_inner: Any, checked: Callable) -> _Plan:
    """``checked(family)``: why a self-check family failed on this host, or ``None``."""
    b1, b2, eps, wd = hp["b1"], hp["b2"], hp["eps"], hp["weight_decay"]
    decay = not is_static_zero(wd)
    maximize = bool(hp["maximize"])
    c1 = 1 - b1
    traced = not all(is_concrete_number(v) for v in (b1, b2, eps, wd))
    all_traced = not any(is_concrete_number(v) for v in (b1, b2, eps, wd))
    # optax.scale_by_adamax's bias correction (optax.tree.bias_correction), from the new
    # count, with the same ops
    count = _find(new_inner, optax.ScaleByAdamState).count
    bc1 = 1 - b1**count

    def group(leaf, n_leaves):
        dtype = np.dtype(leaf.dtype)
        if traced and not all_traced:
            return "Adamax with traced hyperparameters outside optax.inject_hyperparams"
        # As Adam's mu: m / bc1.astype(dtype) becomes m * (1 / bc1) while the converted
        # scalar has one use, else (m / bc1) / u becomes m / (bc1 * u); 1-element leaves
        # (no broadcast) always take the second form.
        # Of `(1 - b1) * g + b1 * mu` LLVM fuses the gradient's product into an FMA, and
        # under maximize the moment's -- except, with traced hyperparameters, where XLA
        # splits the leaf's one-dimensional loop into unequal parallel tasks
        # (_xla_loop_is_ragged, as for RMSprop's trace). A 1-element leaf fuses the
        # gradient's product only without maximize and without a weight-decay block
        # (measured on this jaxlib; the ADAMAX self-check confirms it on each host).
        if math.prod(jnp.shape(leaf)) == 1:
            if _is_static_one(wd, dtype):  # the decay block folds to p + g: not mirrored
                return "Adamax with weight decay 1 and a 1-element leaf"
            return dtype, False, not (maximize or decay)
        reciprocal = dtype != bc1.dtype or n_leaves == 1
        # a weight decay of 1 is multiplied away (p - g): LLVM fuses the gradient's
        # product as without maximize
        if not maximize or _is_static_one(wd, dtype):
            return dtype, reciprocal, True
        if not traced:
            return dtype, reciprocal, False
        if (mismatch := checked(selfcheck.ADAMAX)) is not None:
            return mismatch
        # the moment's loop reads mu, g and p (inject_hyperparams keeps a weight-decay
        # block) and writes mu; its scalars are b1 and the weight decay
        ragged = _xla_loop_is_ragged(jnp.shape(leaf), dtype, 4, 2)
        return dtype, reciprocal, ragged

    def scalars(key):
        dtype, reciprocal, _ = key
        step = _learning_step(hp["learning_rate"], old_inner, dtype)
        if isinstance(step, str):
            return step
        if (mismatch := checked(selfcheck.ADAMAX)) is not None:
            return mismatch
        named = [("weight_decay", wd if decay else 0.0), ("b1", b1), ("1 - b1", c1)]
        named += [("b2", b2), ("eps", eps)]
        rest = _scalar_list(named, dtype)
        if isinstance(rest, str):
            return rest
        s1 = 1 / bc1.astype(dtype) if reciprocal else bc1.astype(dtype)
        return [step, *rest, s1]

    def flags(key):
        dtype, reciprocal, fuse_grad = key
        return _bits(maximize, decay, _factored(b1, c1, dtype), reciprocal, fuse_grad)

    fields = [(optax.ScaleByAdamState, "mu"), (optax.ScaleByAdamState, "nu")]
    return _Plan("jaxopt_adv_adamax", fields, scalars, flags, group=group)


def _nadam_plan(hp: dict, old_inner: Any, new_inner: Any, checked: Callable) -> _Plan:
    """``checked(family)``: why a self-check family failed on this host, or ``None``."""
    b1, b2, eps, wd = hp["b1"], hp["b2"], hp["eps"], hp["weight_decay"]
    decay = not is_static_zero(wd)
    decoupled = decay and hp["decoupled_weight_decay"]
    coupled = decay and not decoupled
    c1 = 1 - b1
    # the transform's scalars, from the old state, with the transform's own ops
    old = _find(old_inner, ScaleByNadamState)
    count = _find(new_inner, ScaleByNadamState).count
    _, grad_coef, mom_coef, bc2 = nadam_coefficients(
        b1, b2, hp["momentum_decay"], count, old.mu_product, hp["torch_default_dtype"]
    )

    def group(leaf, n_leaves):
        dtype = np.dtype(leaf.dtype)
        own = dtype != bc2.dtype
        if math.prod(jnp.shape(leaf)) == 1:
            if decoupled and hp["maximize"] and not is_concrete_number(wd):
                return "NAdamW with injected hyperparameters, maximize and a 1-element leaf"
            # no broadcast: as Adam's sqrt(bc2), the reciprocal only for an unconverted
            # scalar of a one-leaf tree; under maximize XLA folds the negations of
            # (1 - b2) (-g) (-g) into (g g) (1 - b2)
            return dtype, not own and n_leaves == 1, hp["maximize"] and not coupled
        # v / bc2.astype(dtype) becomes v * (1 / bc2) while the scalar has one use
        return dtype, own or n_leaves == 1, False

    def scalars(key):
        dtype, reciprocal, _ = key
        step = _learning_step(hp["learning_rate"], old_inner, dtype)
        if isinstance(step, str):
            return step
        if is_static_zero(eps):
            # x / (sqrt(v) + 0) -> x * rsqrt(v): XLA's approximate rsqrt, not mirrored here
            return "eps 0 (XLA computes an approximate rsqrt)"
        if (mismatch := checked(selfcheck.NADAM)) is not None:
            return mismatch
        rest = _moment_scalars(wd if decay else 0.0, b1, b2, eps, dtype)
        if isinstance(rest, str):
            return rest
        s2 = 1 / bc2.astype(dtype) if reciprocal else bc2.astype(dtype)
        return [step, *rest, s2, grad_coef.astype(dtype), mom_coef.astype(dtype)]

    def flags(key):
        dtype, reciprocal, square_first = key
        # under maximize XLA folds the gradient's negation into its coefficient, and LLVM
        # then fuses the moment's product (unless a weight-decay block comes first)
        fuse_grad = not (hp["maximize"] and not coupled)
        factored = _factored(b1, c1, dtype)
        variant = (coupled, decoupled, factored, reciprocal, fuse_grad, square_first)
        return _bits(hp["maximize"], *variant)

    fields = [(ScaleByNadamState, "mu"), (ScaleByNadamState, "nu")]
    return _Plan("jaxopt_adv_nadam", fields, scalars, flags, hp.get("mu_dtype"), group)


def _radam_plan(hp: dict, old_inner: Any, new_inner: Any, checked: Callable) -> _Plan:
    """``checked(family)``: why a self-check family failed on this host, or ``None``."""
    b1, b2, eps, wd = hp["b1"], hp["b2"], hp["eps"], hp["weight_decay"]
    decay = not is_static_zero(wd)
    decoupled = decay and hp["decoupled_weight_decay"]
    coupled = decay and not decoupled
    c1 = 1 - b1
    # the transform's scalars, with its ops (XLA computes them outside the leaves' loops:
    # see jaxopt_adv.torch.radam.rectification)
    count = _find(new_inner, ScaleByRadamState).count
    bc1, rect, scale = radam_scalars(b1, b2, count, hp["torch_default_dtype"])

    def group(leaf, n_leaves):
        # m / bc1.astype(dtype) as for Adam's first moment: a multiplication by the
        # reciprocal while the scalar has one use (one leaf, or converted for this
        # leaf's dtype), a division for 1-element leaves (no broadcast)
        dtype = np.dtype(leaf.dtype)
        if math.prod(jnp.shape(leaf)) == 1:
            square_first = hp["maximize"] and not coupled and is_concrete_number(b2)
            return dtype, False, square_first
        return dtype, dtype != bc1.dtype or n_leaves == 1, False

    def scalars(key):
        dtype, reciprocal, _ = key
        step = _learning_step(hp["learning_rate"], old_inner, dtype)
        if isinstance(step, str):
            return step
        if is_static_zero(eps):
            # x / (sqrt(v) + 0) -> x * rsqrt(v): XLA's approximate rsqrt, not mirrored here
            return "eps 0 (XLA computes an approximate rsqrt)"
        if decoupled and _is_static_one(wd, dtype):
            # wd * p + u -> p + u, and LLVM then contracts u's product: not mirrored here
            return "decoupled weight decay 1 (XLA multiplies it away)"
        if (mismatch := checked(selfcheck.RADAM)) is not None:
            return mismatch
        rest = _moment_scalars(wd if decay else 0.0, b1, b2, eps, dtype)
        if isinstance(rest, str):
            return rest
        s1 = 1 / bc1.astype(dtype) if reciprocal else bc1.astype(dtype)
        return [step, *rest, s1, rect.astype(dtype), scale.astype(dtype)]

    def flags(key):
        dtype, reciprocal, square_first = key
        factored = _factored(b1, c1, dtype)
        unit_step = _is_static_one(hp["learning_rate"], dtype)
        variant = (coupled, decoupled, factored, reciprocal, square_first, unit_step)
        return _bits(hp["maximize"], *variant)

    fields = [(ScaleByRadamState, "mu"), (ScaleByRadamState, "nu")]
    return _Plan("jaxopt_adv_radam", fields, scalars, flags, hp.get("mu_dtype"), group)


def _rprop_plan(hp: dict, old_inner: Any, new_inner: Any, checked: Callable) -> _Plan:
    """``checked(family)``: why a self-check family failed on this host, or ``None``."""
    (eta_minus, eta_plus), (step_min, step_max) = hp["etas"], hp["step_sizes"]

    def scalars(key):
        (dtype,) = key
        if (mismatch := checked(selfcheck.RPROP)) is not None:
            return mismatch
        named = [("etas[0]", eta_minus), ("etas[1]", eta_plus)]
        named += [("step_sizes[0]", step_min), ("step_sizes[1]", step_max)]
        return _scalar_list(named, dtype)

    def flags(key):
        return _bits(hp["maximize"])

    fields = [(ScaleByRpropState, "prev"), (ScaleByRpropState, "step_size")]
    return _Plan("jaxopt_adv_rprop", fields, scalars, flags)


def _asgd_plan(hp: dict, old_inner: Any, new_inner: Any, checked: Callable) -> _Plan:
    """``checked(family)``: why a self-check family failed on this host, or ``None``."""
    lambd, wd = hp["lambd"], hp["weight_decay"]
    decay = not is_static_zero(wd)
    old_count = _find(old_inner, AsgdState).count
    eta, mu = asgd_coefficients(
        hp["learning_rate"], lambd, hp["alpha"], hp["t0"], old_count, hp["torch_default_dtype"]
    )

    def group(leaf, n_leaves):
        # of p * shrink - e * g LLVM fuses the parameter's product in a loop and in a 0-d
        # leaf's code, the gradient's in a 1-element array's (in both of XLA's copies of
        # the new parameters: for the parameters and inside the average)
        shape = jnp.shape(leaf)
        return np.dtype(leaf.dtype), len(shape) > 0 and math.prod(shape) == 1

    def scalars(key):
        dtype, _ = key
        if hp["maximize"] and not decay:
            # XLA moves the sign into the step's constants where it can (a schedule, x64,
            # a converted or an injected scalar change where), and LLVM then contracts
            # its two copies of the new parameters differently, by leaf size
            return "ASGD with maximize and no weight decay (XLA's contraction varies)"
        if is_static_zero(hp["alpha"]) or is_static_zero(lambd):
            # (1 + lambd lr t)^0 -> 1 and 0 * x fold the step size's constants differently
            return "ASGD with alpha 0 or lambd 0 (XLA folds the step size)"
        if (mismatch := checked(selfcheck.ASGD)) is not None:
            return mismatch
        wd_scalar = _scalar_list([("weight_decay", wd if decay else 0.0)], dtype)
        if isinstance(wd_scalar, str):
            return wd_scalar
        # the transform's leaf: e = eta.astype(dtype), then p * (1 - lambd * e) - e * g
        e = eta.astype(dtype)
        shrink = 1 - lambd * e
        if shrink.dtype != dtype:
            return f"hyperparameter lambd would promote the {dtype} arithmetic"
        whole = (mu == 1).astype(dtype)
        return [*wd_scalar, shrink, e, mu.astype(dtype), whole]

    def flags(key):
        _, fuse_grad_product = key
        return _bits(hp["maximize"], decay, fuse_grad_product)

    fields = [(AsgdState, "ax")]
    return _Plan("jaxopt_adv_asgd", fields, scalars, flags, group=group)


_PLANNERS = {
    "adam": _adam_plan,
    "sgd": _sgd_plan,
    "rmsprop": _rmsprop_plan,
    "adagrad": _adagrad_plan,
    "adadelta": _adadelta_plan,
    "adamax": _adamax_plan,
    "nadam": _nadam_plan,
    "radam": _radam_plan,
    "rprop": _rprop_plan,
    "asgd": _asgd_plan,
    "sparse_adam": sparse_adam_plan,
}


def _xla_loop_is_ragged(shape: tuple, dtype: np.dtype, arrays: int, scalars: int) -> bool:
    """Whether XLA:CPU splits a memory-bound loop fusion over ``shape`` into parallel
    tasks of unequal size.

    XLA's parallel task assignment gives a fusion that moves ``bytes`` (``arrays``
    arrays and ``scalars`` scalars) ``min(ceil(sqrt(cpus)), bytes // 256 KiB)`` tasks,
    in tiles of ``ceil(n / tasks)`` elements; for a loop over one (non-unit) dimension
    whose last tile is short XLA emits the loop differently (measured on this jaxlib;
    loops over several dimensions keep the usual form).
    """
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cpus = os.cpu_count() or 1
    size = math.prod(shape)
    bytes_accessed = dtype.itemsize * (size * arrays + scalars)
    tasks = min(cpus, math.ceil(math.sqrt(cpus)), max(1, bytes_accessed // (256 << 10)))
    dims = [d for d in shape if d != 1]  # XLA drops unit dimensions
    if tasks <= 1 or len(dims) > 1:  # loops over several dimensions: the usual order
        return False
    tile = -(-size // tasks)
    return size % tile != 0


# ---------------------------------------------------------------------------- the step


class FusedOptimizer:
    """A torch-exact optimizer whose step is one fused pass per leaf on CPU.

    Build it with :func:`fused`. ``init`` is the optax transform's ``init`` (same state;
    with ``flat_state=True`` its per-parameter fields raveled into one array each, see
    :mod:`.flat`), ``step(params, grads, state) -> (params, state)`` applies one update,
    and ``tx`` is the optax transform itself.
    """

    def __init__(
        self,
        name: str,
        hyperparams: dict[str, Any],
        *,
        inject_hyperparams: bool = False,
        kernel: bool = True,
        flat_state: bool = False,
    ):
        if not isinstance(flat_state, bool):
            raise TypeError(f"flat_state must be True or False, not {flat_state!r}")
        factory, family = SUPPORTED[name]
        self._probe = False  # set on the self-check's own optimizers
        self.name = name
        self.family = family
        self.kernel = kernel
        self.flat_state = flat_state
        self.inject_hyperparams = inject_hyperparams
        if inject_hyperparams:
            self.tx = optax.inject_hyperparams(factory)(**hyperparams)
        else:
            self.tx = factory(**hyperparams)
        bound = inspect.signature(factory).bind(**hyperparams)
        bound.apply_defaults()
        self._hyperparams = dict(bound.arguments)
        if factory is adamw:
            self._hyperparams["decoupled_weight_decay"] = True

    def __repr__(self) -> str:
        flat_state = ", flat_state=True" if self.flat_state else ""
        return f"FusedOptimizer({self.name!r}, kernel={self.kernel}{flat_state})"

    def init(self, params: optax.Params) -> optax.OptState:
        """The optax transform's initial state (in the flat layout with ``flat_state``)."""
        return self.from_tree_state(self.tx.init(params), params)

    def to_tree_state(self, state: optax.OptState, params: optax.Params) -> optax.OptState:
        """The optax transform's own state (``state`` itself unless ``flat_state``).

        Example:
          >>> import jax, jax.numpy as jnp, optax
          >>> from jaxopt_adv import fast
          >>> opt = fast.fused("torch.adam", flat_state=True)
          >>> params = {"b": jnp.zeros(2), "w": jnp.ones((2, 3))}
          >>> state = opt.init(params)
          >>> [x.shape for x in jax.tree.leaves(state)]  # count, mu, nu
          [(), (8,), (8,)]
          >>> optax.tree.get(opt.to_tree_state(state, params), "mu")["w"].shape
          (2, 3)
        """
        if not self.flat_state:
            return state
        return flat.unflatten(state, jax.eval_shape(self.tx.init, params), params)

    def from_tree_state(self, state: optax.OptState, params: optax.Params) -> optax.OptState:
        """This optimizer's layout of the optax transform's ``state`` (the inverse of
        :meth:`to_tree_state`)."""
        if not self.flat_state:
            return state
        return flat.flatten(state, jax.eval_shape(self.tx.init, params), params)

    def step(
        self, params: optax.Params, grads: optax.Updates, state: optax.OptState, **extra_args
    ) -> tuple[optax.Params, optax.OptState]:
        """One optimizer step: ``(new_params, new_state)``; ``extra_args`` (SparseAdam's
        ``mask``) go to the transform's ``update``, and a step given one that holds an
        array takes the XLA path."""
        return self._step(params, grads, state, None, extra_args)

    def explain(
        self, params: optax.Params, grads: optax.Updates, state: optax.OptState, **extra_args
    ) -> str | None:
        """``None`` when every leaf of ``params`` would go through the kernel, else why not
        (abstract evaluation: nothing is computed)."""
        reasons: list[str] = []
        jax.eval_shape(
            lambda p, g, s, e: self._step(p, g, s, reasons, e), params, grads, state, extra_args
        )
        return "; ".join(dict.fromkeys(reasons)) or None

    # ------------------------------------------------------------------------------

    def _step(self, params, grads, state, report: list[str] | None, extra_args: dict):
        given = state
        template = None
        if self.flat_state and flat.applies(params):
            template = jax.eval_shape(self.tx.init, params)
            state = flat.unflatten(state, template, params)
        updates, new_state = self.tx.update(grads, state, params, **extra_args)

        def finish(new_params, new_state):
            if template is not None:
                new_state = flat.flatten(new_state, template, params)
            return new_params, new_state

        def reference(reason: str):
            if report is not None:
                report.append(reason)
            return finish(optax.apply_updates(params, updates), new_state)

        if not self.kernel:
            return reference("kernel=False")
        if extra := sorted(k for k, v in extra_args.items() if jax.tree.leaves(v)):
            return reference(f"the argument {', '.join(extra)} (the kernels take none)")
        reason = build.host_reason() if self._probe else unavailable_reason()
        if reason is not None:
            return reference(reason)

        hp = dict(self._hyperparams)
        old_inner, new_inner = state, new_state
        if self.inject_hyperparams:
            hp.update(new_state.hyperparams)
            old_inner, new_inner = state.inner_state, new_state.inner_state

        def checked(family: str) -> str | None:
            return None if self._probe else selfcheck.outcome(_probe_mismatches, family)

        plan = _PLANNERS[self.family](hp, old_inner, new_inner, checked)

        p_leaves, treedef = jax.tree.flatten(params)
        g_leaves = treedef.flatten_up_to(grads)
        old_fields = [getattr(_find(old_inner, cls), name) for cls, name in plan.fields]
        old_state_leaves = [treedef.flatten_up_to(tree) for tree in old_fields]

        # All leaves or none: XLA's arithmetic for one leaf depends on the rest of the
        # program (how many leaves share a scalar), so a leaf left to XLA inside this
        # program would not reproduce the transform's own program bit for bit.
        # XLA removes the computations of zero-size leaves: they use no shared scalar.
        n_leaves = sum(math.prod(jnp.shape(p)) > 0 for p in p_leaves)
        groups: dict[tuple, list[int]] = {}
        for i, (p, g) in enumerate(zip(p_leaves, g_leaves, strict=True)):
            state_arrays = [leaves[i] for leaves in old_state_leaves]
            why = self._leaf_reason(p, g, state_arrays, plan)
            key = plan.group(p, n_leaves) if why is None else why
            if isinstance(key, str):
                return reference(key)
            groups.setdefault(key, []).append(i)
        operands = {}
        for key in groups:
            operands[key] = plan.scalars(key)
            if isinstance(operands[key], str):
                return reference(operands[key])

        out_p = list(p_leaves)
        if template is not None and plan.fields:
            # the flat layout: each call updates its leaves' parts of the flat arrays
            given_inner = given.inner_state if self.inject_hyperparams else given
            flats = [getattr(_find(given_inner, cls), name) for cls, name in plan.fields]
            starts = flat.offsets(params)
            for key, indices in groups.items():
                for start in range(0, len(indices), _LEAVES_PER_CALL):
                    batch = indices[start : start + _LEAVES_PER_CALL]
                    pairs = [(p_leaves[i], g_leaves[i]) for i in batch]
                    where = [starts[i] for i in batch]
                    new_p, flats = _call_flat(
                        plan.target, plan.flags(key), operands[key], pairs, flats, where
                    )
                    for i, p in zip(batch, new_p, strict=True):
                        out_p[i] = p
            new_fields = flats
        else:
            out_state = [list(leaves) for leaves in old_state_leaves]
            for key, indices in groups.items():
                items = [
                    (p_leaves[i], g_leaves[i], [leaves[i] for leaves in old_state_leaves])
                    for i in indices
                ]
                results = []
                for start in range(0, len(items), _LEAVES_PER_CALL):
                    batch = items[start : start + _LEAVES_PER_CALL]
                    results += _call(plan.target, plan.flags(key), operands[key], batch)
                for i, (p, state_arrays) in zip(indices, results, strict=True):
                    out_p[i] = p
                    for k, array in enumerate(state_arrays):
                        out_state[k][i] = array
            new_fields = [treedef.unflatten(leaves) for leaves in out_state]

        for (cls, name), value in zip(plan.fields, new_fields, strict=True):
            new_inner = _replace(new_inner, cls, **{name: value})
        if self.inject_hyperparams:
            new_state = new_state._replace(inner_state=new_inner)
        else:
            new_state = new_inner
        return finish(treedef.unflatten(out_p), new_state)

    @staticmethod
    def _leaf_reason(p, g, state_arrays, plan: _Plan) -> str | None:
        dtype = np.dtype(p.dtype)
        if dtype not in _FLOATS:
            return f"leaf dtype {dtype} (the kernels take float32 and float64)"
        if np.dtype(g.dtype) != dtype or jnp.shape(g) != jnp.shape(p):
            return "a gradient differs in dtype or shape from its parameter"
        if plan.state_dtype is not None and np.dtype(plan.state_dtype) != dtype:
            return f"state dtype {np.dtype(plan.state_dtype)} differs from the leaf's {dtype}"
        for array in state_arrays:
            if np.dtype(array.dtype) != dtype or jnp.shape(array) != jnp.shape(p):
                return "a state array differs in dtype or shape from its parameter"
        return None


def _call(target: str, flags: int, scalars: list[jax.Array], leaves: list[tuple]) -> list:
    """One custom call over ``leaves`` = ``[(p, g, [state arrays]), ...]``; returns
    ``[(new_p, [new state arrays]), ...]``."""
    operands = list(scalars)
    out_types = []
    aliases = {}
    for p, g, state_arrays in leaves:
        base = len(operands)
        operands += [p, g, *state_arrays]
        aliases[base] = len(out_types)
        out_types.append(jax.ShapeDtypeStruct(jnp.shape(p), p.dtype))
        for k, array in enumerate(state_arrays):
            aliases[base + 2 + k] = len(out_types)
            out_types.append(jax.ShapeDtypeStruct(jnp.shape(array), array.dtype))
    call = jax.ffi.ffi_call(
        target, out_types, input_output_aliases=aliases, vmap_method="sequential"
    )
    outputs = call(*operands, flags=np.int64(flags))
    results, position = [], 0
    for _, _, state_arrays in leaves:
        width = 1 + len(state_arrays)
        chunk = outputs[position : position + width]
        results.append((chunk[0], list(chunk[1:])))
        position += width
    return results


def _call_flat(
    target: str,
    flags: int,
    scalars: list[jax.Array],
    pairs: list[tuple],
    flats: list[jax.Array],
    offsets: list[int],
) -> tuple[list, list]:
    """One custom call over the leaves ``pairs = [(p, g), ...]`` whose state arrays are the
    parts of ``flats`` starting at ``offsets``; returns ``(new ps, new flats)``."""
    words = np.asarray(offsets, np.uint64)
    packed = np.stack([words & 0xFFFFFFFF, words >> 32], axis=-1).astype(np.uint32).ravel()
    operands = [*scalars, *(x for pair in pairs for x in pair), *flats, packed]
    first = len(scalars)
    aliases = {first + 2 * k: k for k in range(len(pairs))}
    aliases.update({first + 2 * len(pairs) + j: len(pairs) + j for j in range(len(flats))})
    out_types = [jax.ShapeDtypeStruct(jnp.shape(p), p.dtype) for p, _ in pairs]
    out_types += [jax.ShapeDtypeStruct(jnp.shape(f), f.dtype) for f in flats]
    call = jax.ffi.ffi_call(
        target, out_types, input_output_aliases=aliases, vmap_method="sequential"
    )
    outputs = call(*operands, flags=np.int64(flags))
    return list(outputs[: len(pairs)]), list(outputs[len(pairs) :])


# The self-check's configurations: every kernel, the forms XLA picks by tree and leaf
# size (one leaf / several; odd sizes above 2^15; a traced momentum), constants and
# injected hyperparameters.
_PROBES: dict[str, list[tuple[str, bool, dict[str, Any], dict[str, tuple[int, ...]]]]] = {
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
    """Hyperparameters of ``SUPPORTED[name]`` drawn at random from their valid ranges:
    each numeric one a special value (0, 1, 1/2, a bound: where XLA's and LLVM's
    simplifications change the arithmetic) or a random one, each boolean option on or
    off (the self-check and the tests draw from here)."""
    factory = SUPPORTED[name][0]
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
_PROBE_STEPS = 8


# the self-check family of each kernel family (the others are gated by KERNELS)
_CHECKED_BY = {
    "adagrad": selfcheck.ADAGRAD,
    "adadelta": selfcheck.ADADELTA,
    "adamax": selfcheck.ADAMAX,
    "nadam": selfcheck.NADAM,
    "radam": selfcheck.RADAM,
    "rprop": selfcheck.RPROP,
    "asgd": selfcheck.ASGD,
    "sparse_adam": selfcheck.SPARSE_ADAM,
}


def _probe_table(rng: np.random.Generator) -> dict[str, list]:
    """:data:`_PROBES` and, per optimizer, one configuration of hyperparameters drawn by
    :func:`random_hyperparameters` (constants or injected) on a 257 x 129 leaf."""
    table = {family: list(probes) for family, probes in _PROBES.items()}
    for name, (_, kernel_family) in SUPPORTED.items():
        hyperparams = random_hyperparameters(name, rng)
        inject = bool(rng.random() < 0.5)
        family = _CHECKED_BY.get(kernel_family, selfcheck.KERNELS)
        table[family].append((name, inject, hyperparams, {"a": (257, 129)}))
    return table


def _probe_mismatches() -> dict[str, str | None]:
    """Run every probe through the kernels and through XLA: per family, the first
    configuration that differs (``None``: none does)."""
    rng = np.random.default_rng(0)
    outcome: dict[str, str | None] = {}
    for family, probes in _probe_table(np.random.default_rng(1)).items():
        outcome[family] = None
        for name, inject, hyperparams, shapes in probes:
            if _probe_differs(rng, name, inject, hyperparams, shapes):
                outcome[family] = f"{name} {hyperparams} (injected: {inject})"
                break
    return outcome


def _probe_differs(rng, name, inject, hyperparams, shapes) -> bool:
    kernel = FusedOptimizer(name, hyperparams, inject_hyperparams=inject)
    kernel._probe = True
    reference = FusedOptimizer(name, hyperparams, inject_hyperparams=inject, kernel=False)
    params = {k: jnp.asarray(rng.standard_normal(s), jnp.float32) for k, s in shapes.items()}
    state = reference.init(params)
    ours, theirs = (params, state), (params, state)
    step_ours, step_theirs = jax.jit(kernel.step), jax.jit(reference.step)
    for _ in range(_PROBE_STEPS):
        grads = {k: jnp.asarray(rng.standard_normal(s), jnp.float32) for k, s in shapes.items()}
        ours = step_ours(ours[0], grads, ours[1])
        theirs = step_theirs(theirs[0], grads, theirs[1])
        for a, b in zip(jax.tree.leaves(ours), jax.tree.leaves(theirs), strict=True):
            if not np.array_equal(np.asarray(a), np.asarray(b), equal_nan=True):
                return True
    return False


def _resolve(optimizer: Any) -> str:
    if isinstance(optimizer, str):
        name = optimizer if optimizer.startswith("torch.") else f"torch.{optimizer}"
        if name in SUPPORTED:
            return name
    else:
        for name, (factory, _) in SUPPORTED.items():
            if optimizer is factory:
                return name
    names = ", ".join(SUPPORTED)
    raise ValueError(f"fused() supports {names} (or their factories), not {optimizer!r}")


def fused(
    optimizer: str | Callable[..., optax.GradientTransformation],
    /,
    *,
    inject_hyperparams: bool = False,
    kernel: bool = True,
    flat_state: bool = False,
    **hyperparams: Any,
) -> FusedOptimizer:
    """A torch-exact optimizer whose step runs as one fused pass per leaf on CPU.

    ``fused("torch.adam", learning_rate=1e-3)`` is ``jaxopt_adv.torch.adam(1e-3)`` with
    a ``step(params, grads, state) -> (params, state)`` that computes, bit for bit, what
    ``tx.update`` followed by ``optax.apply_updates`` computes under ``jax.jit``, for any
    hyperparameter values, in one C++ kernel that reads and writes each array once (10
    array passes become 7 for Adam); the few constant values whose XLA arithmetic the
    kernels do not mirror (an eps of 0, ...) send the step to that path
    (:meth:`FusedOptimizer.explain` says why). The state is the transform's own, so it can be checkpointed, inspected, or
    handed to the plain optax transform (``.tx``).

    Args:
      optimizer: ``"torch.adam"``, ``"torch.adamw"``, ``"torch.sgd"``,
        ``"torch.rmsprop"``, ``"torch.adagrad"``, ``"torch.adadelta"``,
        ``"torch.adamax"``, ``"torch.nadam"``, ``"torch.radam"``, ``"torch.rprop"``,
        ``"torch.asgd"``, ``"torch.sparse_adam"`` (the ``torch.`` prefix may be left
        out), or one of the factories ``jaxopt_adv.torch.adam`` / ``adamw`` / ``sgd`` /
        ``rmsprop`` / ``adagrad`` / ``adadelta`` / ``adamax`` / ``nadam`` / ``radam`` /
        ``rprop`` / ``asgd`` / ``sparse_adam``.
      inject_hyperparams: static; build the transform with
        ``optax.inject_hyperparams`` (hyperparameters live in the state and can be
        changed between steps without recompiling).
      kernel: static; ``False`` always takes the pure-JAX path (for comparisons).
      flat_state: static; keep each per-parameter state field (Adam's ``mu`` and ``nu``,
        ...) as one 1-D array over all leaves (:mod:`jaxopt_adv.fast.flat`), which
        halves the arrays a jitted step passes in and out of a many-leaf tree (200
        Adam leaves: 1,400 to 600). Bit-identical to the tree layout where the
        kernels run (the XLA fallback agrees to rounding); a one-leaf tree keeps its
        state as it is; :meth:`FusedOptimizer.to_tree_state` gives the transform's own
        state back.
      **hyperparams: the factory's arguments (learning rate, betas, momentum, ...).

    Returns:
      A :class:`FusedOptimizer`; jit its step with :func:`jit_step`.

    Example:
      >>> import jax.numpy as jnp
      >>> from jaxopt_adv import fast
      >>> opt = fast.fused("torch.adam", learning_rate=0.1)
      >>> params = {"w": jnp.ones(3)}
      >>> state = opt.init(params)
      >>> step = fast.jit_step(opt)
      >>> params, state = step(params, {"w": jnp.ones(3)}, state)
      >>> params["w"]
      Array([0.9, 0.9, 0.9], dtype=float32)

    References:
      ``torch.optim.Adam`` / ``AdamW`` / ``SGD`` / ``RMSprop`` / ``Adagrad`` /
      ``Adadelta`` / ``Adamax`` / ``NAdam`` / ``RAdam`` / ``Rprop`` / ``ASGD`` /
      ``SparseAdam`` (torch 2.13, with ``fused=True`` where torch has it) are the
      one-pass kernels this mirrors; the arithmetic is ``jaxopt_adv.torch``'s.

    Warning:
      The kernels run on the CPU backend of a single-device process. Elsewhere (GPU,
      ``--xla_force_host_platform_device_count`` > 1, sharded arrays) and for other
      dtypes the step silently takes the pure-JAX path; :meth:`FusedOptimizer.explain`
      and :func:`unavailable_reason` say why.
    """
    return FusedOptimizer(
        _resolve(optimizer),
        hyperparams,
        inject_hyperparams=inject_hyperparams,
        kernel=kernel,
        flat_state=flat_state,
    )


def jit_step(
    optimizer: FusedOptimizer,
) -> Callable[[optax.Params, optax.Updates, optax.OptState], tuple]:
    """``jax.jit(optimizer.step)`` with the params and the state donated.

    Donation lets the kernel update the buffers in place (without it XLA copies every
    array first); ``keep_unused=True`` keeps the donation of state leaves a step does
    not read. The arrays passed in are invalid after the call.

    Example:
      >>> import jax.numpy as jnp
      >>> from jaxopt_adv import fast
      >>> opt = fast.fused("torch.sgd", learning_rate=0.5, momentum=0.9)
      >>> step = fast.jit_step(opt)
      >>> params = jnp.zeros(2)
      >>> params, state = step(params, jnp.ones(2), opt.init(params))
      >>> params
      Array([-0.5, -0.5], dtype=float32)
    """
    return jax.jit(optimizer.step, donate_argnums=(0, 2), keep_unused=True)
