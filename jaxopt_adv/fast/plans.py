"""Per optimizer family, what the fused kernel needs: its target, the state fields it
updates, its scalar operands and its variant flags (a :class:`Plan`), and the fused
optimizers themselves (:data:`FUSED`, one :class:`~jaxopt_adv.fast.contracts.Fused`
declaration each; :data:`SUPPORTED` is derived from it).

Each plan mirrors what XLA:CPU generates for the transform's own program (see
:mod:`.scalars`), per group of leaves: the form of a bias correction by tree and leaf
size, which product LLVM contracts into a fused multiply-add, the constants XLA folds. A
configuration whose arithmetic is not mirrored gives a reason instead, and the step takes
the XLA path. A plan reads the hyperparameters from its family's record
(:mod:`.contracts`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxopt_adv._common import is_concrete_number, is_static_zero
from jaxopt_adv._state import find_state
from jaxopt_adv.fast import selfcheck
from jaxopt_adv.fast.contracts import (
    AdadeltaArgs,
    AdagradArgs,
    AdamArgs,
    AdamaxArgs,
    AsgdArgs,
    Family,
    Fused,
    NadamArgs,
    RadamArgs,
    RmspropArgs,
    RpropArgs,
    SgdArgs,
    SparseAdamArgs,
)
from jaxopt_adv.fast.scalars import (
    flag_bits,
    is_factored,
    is_static_one,
    learning_step,
    moment_scalars,
    scalar_list,
    xla_loop_is_ragged,
)
from jaxopt_adv.torch.adadelta import adadelta
from jaxopt_adv.torch.adagrad import ScaleByAdagradState, adagrad, adagrad_lr_scale
from jaxopt_adv.torch.adam import ScaleByAdamState, adam, adam_bias_corrections, adamw
from jaxopt_adv.torch.adamax import adamax, adamax_bias_correction
from jaxopt_adv.torch.asgd import AsgdState, asgd, asgd_coefficients
from jaxopt_adv.torch.nadam import ScaleByNadamState, nadam, nadam_coefficients
from jaxopt_adv.torch.radam import ScaleByRadamState, radam, radam_scalars
from jaxopt_adv.torch.rmsprop import rmsprop
from jaxopt_adv.torch.rprop import ScaleByRpropState, rprop
from jaxopt_adv.torch.sgd import SgdMomentumState, sgd
from jaxopt_adv.torch.sparse_adam import ScaleBySparseAdamState, sparse_adam, sparse_adam_factor

__all__ = ["BY_NAME", "CONSTANT_LEARNING_RATE", "FUSED", "SUPPORTED", "Plan"]


@dataclass
class Plan:
    """What one optimizer's kernel needs.

    Leaves are grouped by ``group(leaf, n_leaves)`` (their dtype, and for Adam the form
    XLA gives the bias corrections, see ``kernels.cc``); ``scalars(group)`` and
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


def _rooted_step(learning_rate: Any, old_inner: Any, eps: Any, dtype: np.dtype) -> Any:
    """``-lr`` (:func:`learning_step`) for a step that divides by ``sqrt(.) + eps``, or why
    the kernel cannot take it: with ``eps`` a static 0 XLA drops the ``+ 0`` and computes
    ``x / sqrt(v)`` as ``x * rsqrt(v)``, an approximate rsqrt not mirrored here."""
    step = learning_step(learning_rate, old_inner, dtype)
    if isinstance(step, str) or not is_static_zero(eps):
        return step
    return "eps 0 (XLA computes an approximate rsqrt)"


def _adam_plan(args: AdamArgs, old_inner: Any, new_inner: Any, checked: Callable) -> Plan:
    b1, b2, eps, wd = args.b1, args.b2, args.eps, args.weight_decay
    decay = not is_static_zero(wd)
    decoupled = decay and args.decoupled_weight_decay
    amsgrad = bool(args.amsgrad)
    c1 = 1 - b1
    count = find_state(new_inner, ScaleByAdamState).count
    bc1, bc2 = adam_bias_corrections(b1, b2, count, args.torch_default_dtype)
    sqrt_bc2 = jnp.sqrt(bc2)

    def group(leaf, n_leaves):
        # scale_by_adam divides by bc1.astype(dtype) and sqrt_bc2.astype(dtype): a real
        # convert is a fresh scalar per leaf (one use); otherwise every leaf shares one.
        dtype = np.dtype(leaf.dtype)
        own1, own2 = dtype != bc1.dtype, dtype != sqrt_bc2.dtype
        if math.prod(jnp.shape(leaf)) == 1:
            # no broadcast: (m / bc1) / d -> m / (bc1 * d); with maximize XLA folds the
            # negations of (1 - b2) * (-g) * (-g) into (g * g) * (1 - b2)
            square_first = args.maximize and not (decay and not decoupled)
            square_first = square_first and is_concrete_number(b2)
            return dtype, False, not own2 and n_leaves == 1, square_first
        return dtype, own1 or n_leaves == 1, own2 or n_leaves == 1, False

    def scalars(key):
        dtype, reciprocal1, reciprocal2, _ = key
        step = learning_step(args.learning_rate, old_inner, dtype)
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
        rest = moment_scalars(wd if decay else 0.0, b1, b2, eps, dtype)
        return rest if isinstance(rest, str) else [step, *rest, s1, s2]

    def flags(key):
        dtype, reciprocal1, reciprocal2, square_first = key
        coupled = decay and not decoupled
        factored = is_factored(b1, c1, dtype)
        variant = (coupled, decoupled, amsgrad, factored, reciprocal1, reciprocal2, square_first)
        return flag_bits(args.maximize, *variant)

    fields = [(ScaleByAdamState, "mu"), (ScaleByAdamState, "nu")]
    if amsgrad:
        fields.append((ScaleByAdamState, "nu_max"))
    return Plan("jaxopt_adv_adam", fields, scalars, flags, args.mu_dtype, group)


def _sgd_plan(args: SgdArgs, old_inner: Any, new_inner: Any, checked: Callable) -> Plan:
    dampening, wd = args.dampening, args.weight_decay
    has_momentum = args.momentum is not None
    momentum = args.momentum if has_momentum else 0.0  # no buffer: a constant 0 operand
    decay = not is_static_zero(wd)
    may_be_zero = not (is_concrete_number(momentum) and momentum != 0)
    coef = None
    if has_momentum:
        old_count = find_state(old_inner, SgdMomentumState).count
        coef = jnp.where(old_count == 0, 1, 1 - dampening)

    def scalars(key):
        (dtype,) = key
        step = learning_step(args.learning_rate, old_inner, dtype)
        if isinstance(step, str):
            return step
        if has_momentum and is_concrete_number(momentum) and np.asarray(momentum, dtype) == 1:
            # XLA drops `1 * buf`, and LLVM then fuses the other product
            return "momentum 1 (XLA folds the multiplication away)"
        named = [("weight_decay", wd if decay else 0.0)]
        named += [("momentum", momentum)]
        rest = scalar_list(named, dtype)
        if isinstance(rest, str):
            return rest
        # scale_by_sgd_momentum casts its coefficient to the gradient's dtype
        grad_coef = jnp.zeros((), dtype) if coef is None else coef.astype(dtype)
        return [step, *rest, grad_coef]

    def flags(key):
        nesterov = has_momentum and args.nesterov
        return flag_bits(args.maximize, decay, has_momentum, nesterov, has_momentum and may_be_zero)

    fields = [(SgdMomentumState, "trace")] if has_momentum else []
    return Plan("jaxopt_adv_sgd", fields, scalars, flags, args.accumulator_dtype)


def _rmsprop_plan(args: RmspropArgs, old_inner: Any, new_inner: Any, checked: Callable) -> Plan:
    """``checked(family)``: why a self-check family failed on this host, or ``None``."""
    alpha, eps, wd = args.alpha, args.eps, args.weight_decay
    has_momentum = args.momentum is not None
    momentum = args.momentum if has_momentum else 0.0  # no buffer: a constant 0 operand
    decay = not is_static_zero(wd)
    centered = bool(args.centered)
    c = 1 - alpha
    rms_cls = optax.ScaleByRStdDevState if centered else optax.ScaleByRmsState
    traced = not all(is_concrete_number(v) for v in (alpha, eps, wd, momentum))
    all_traced = not any(is_concrete_number(v) for v in (alpha, eps, wd, momentum))

    def scalars(key):
        dtype = key[0]
        step = _rooted_step(args.learning_rate, old_inner, eps, dtype)
        if isinstance(step, str):
            return step
        named = [("weight_decay", wd if decay else 0.0), ("alpha", alpha), ("1 - alpha", c)]
        named += [("eps", eps), ("momentum", momentum)]
        rest = scalar_list(named, dtype)
        return rest if isinstance(rest, str) else [step, *rest]

    def flags(key):
        dtype, fuse_momentum_product = key
        factored = is_factored(alpha, c, dtype)
        unit_step = is_static_one(args.learning_rate, dtype)
        fuse_mean_product = centered and args.maximize and not decay
        variant = (decay, centered, has_momentum, factored, fuse_momentum_product, unit_step)
        return flag_bits(args.maximize, *variant, fuse_mean_product)

    def group(leaf, n_leaves):
        # Of `scale * g + momentum * buf` LLVM fuses one product into an FMA, the one
        # the operand order of XLA's emitted add puts in reach: with a constant momentum
        # the momentum product, for every leaf; with a traced one it depends on how
        # XLA:CPU splits the loop (xla_loop_is_ragged), and for 1-element leaves it is
        # not mirrored here.
        size = math.prod(jnp.shape(leaf))
        if size == 1 and traced:
            return "RMSprop with injected hyperparameters and a 1-element leaf"
        if is_concrete_number(momentum):
            # a momentum of 1 is multiplied away, which leaves the other product to LLVM
            return np.dtype(leaf.dtype), not is_static_one(momentum, np.dtype(leaf.dtype))
        if not all_traced:
            return "RMSprop with a traced momentum outside optax.inject_hyperparams"
        if (mismatch := checked(selfcheck.TRACED_MOMENTUM)) is not None:
            return mismatch
        # inject_hyperparams keeps a weight-decay block, so XLA materializes g + wd * p
        # and the trace's loop reads buf, g', nu (and mu, centered) and writes buf
        arrays = 5 if centered else 4
        ragged = xla_loop_is_ragged(jnp.shape(leaf), np.dtype(leaf.dtype), arrays, 2)
        return np.dtype(leaf.dtype), not ragged

    fields = [(rms_cls, "nu")]
    if centered:
        fields.append((rms_cls, "mu"))
    if has_momentum:
        fields.append((optax.TraceState, "trace"))
    return Plan("jaxopt_adv_rmsprop", fields, scalars, flags, group=group)


def _adagrad_plan(args: AdagradArgs, old_inner: Any, new_inner: Any, checked: Callable) -> Plan:
    lr_decay, eps, wd = args.lr_decay, args.eps, args.weight_decay
    decay = not is_static_zero(wd)
    # scale_by_adagrad's learning-rate decay, from the old count, as the transform has it
    count = find_state(old_inner, ScaleByAdagradState).count
    lr_scale = adagrad_lr_scale(lr_decay, count, args.torch_default_dtype)

    def scalars(key):
        (dtype,) = key
        step = _rooted_step(args.learning_rate, old_inner, eps, dtype)
        if isinstance(step, str):
            return step
        if (mismatch := checked(selfcheck.ADAGRAD)) is not None:
            return mismatch
        rest = scalar_list([("weight_decay", wd if decay else 0.0), ("eps", eps)], dtype)
        # scale_by_adagrad casts the decay to the gradient's dtype
        return rest if isinstance(rest, str) else [step, *rest, lr_scale.astype(dtype)]

    def flags(key):
        return flag_bits(args.maximize, decay)

    fields = [(ScaleByAdagradState, "sum_of_squares")]
    return Plan("jaxopt_adv_adagrad", fields, scalars, flags)


def _adadelta_plan(args: AdadeltaArgs, old_inner: Any, new_inner: Any, checked: Callable) -> Plan:
    """``checked(family)``: why a self-check family failed on this host, or ``None``."""
    rho, eps, wd = args.rho, args.eps, args.weight_decay
    decay = not is_static_zero(wd)

    def group(leaf, n_leaves):
        # 1-element leaves under maximize: XLA folds the negations of (1 - rho) (-g) (-g)
        # into (g g) (1 - rho), as for Adam
        square_first = math.prod(jnp.shape(leaf)) == 1 and args.maximize and not decay
        return np.dtype(leaf.dtype), square_first and is_concrete_number(rho)

    def scalars(key):
        dtype, _ = key
        step = learning_step(args.learning_rate, old_inner, dtype)
        if isinstance(step, str):
            return step
        if (mismatch := checked(selfcheck.ADADELTA)) is not None:
            return mismatch
        named = [("weight_decay", wd if decay else 0.0), ("rho", rho), ("1 - rho", 1 - rho)]
        rest = scalar_list([*named, ("eps", eps)], dtype)
        return rest if isinstance(rest, str) else [step, *rest]

    def flags(key):
        dtype, square_first = key
        unit_step = is_static_one(args.learning_rate, dtype)
        return flag_bits(args.maximize, decay, square_first, unit_step)

    fields = [(optax.ScaleByAdaDeltaState, "e_g"), (optax.ScaleByAdaDeltaState, "e_x")]
    return Plan("jaxopt_adv_adadelta", fields, scalars, flags, group=group)


def _adamax_plan(args: AdamaxArgs, old_inner: Any, new_inner: Any, checked: Callable) -> Plan:
    """``checked(family)``: why a self-check family failed on this host, or ``None``."""
    b1, b2, eps, wd = args.b1, args.b2, args.eps, args.weight_decay
    decay = not is_static_zero(wd)
    maximize = bool(args.maximize)
    c1 = 1 - b1
    traced = not all(is_concrete_number(v) for v in (b1, b2, eps, wd))
    all_traced = not any(is_concrete_number(v) for v in (b1, b2, eps, wd))
    # scale_by_adamax's bias correction, from the new count, with the same ops
    count = find_state(new_inner, optax.ScaleByAdamState).count
    bc1 = adamax_bias_correction(b1, count, args.torch_default_dtype)

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
        # (xla_loop_is_ragged, as for RMSprop's trace). A 1-element leaf fuses the
        # gradient's product only without maximize and without a weight-decay block
        # (measured on this jaxlib; the ADAMAX self-check confirms it on each host).
        if math.prod(jnp.shape(leaf)) == 1:
            if is_static_one(wd, dtype):  # the decay block folds to p + g: not mirrored
                return "Adamax with weight decay 1 and a 1-element leaf"
            return dtype, False, not (maximize or decay)
        reciprocal = dtype != bc1.dtype or n_leaves == 1
        # a weight decay of 1 is multiplied away (p - g): LLVM fuses the gradient's
        # product as without maximize
        if not maximize or is_static_one(wd, dtype):
            return dtype, reciprocal, True
        if not traced:
            return dtype, reciprocal, False
        if (mismatch := checked(selfcheck.ADAMAX)) is not None:
            return mismatch
        # the moment's loop reads mu, g and p (inject_hyperparams keeps a weight-decay
        # block) and writes mu; its scalars are b1 and the weight decay
        ragged = xla_loop_is_ragged(jnp.shape(leaf), dtype, 4, 2)
        return dtype, reciprocal, ragged

    def scalars(key):
        dtype, reciprocal, _ = key
        step = learning_step(args.learning_rate, old_inner, dtype)
        if isinstance(step, str):
            return step
        if (mismatch := checked(selfcheck.ADAMAX)) is not None:
            return mismatch
        named = [("weight_decay", wd if decay else 0.0), ("b1", b1), ("1 - b1", c1)]
        named += [("b2", b2), ("eps", eps)]
        rest = scalar_list(named, dtype)
        if isinstance(rest, str):
            return rest
        s1 = 1 / bc1.astype(dtype) if reciprocal else bc1.astype(dtype)
        return [step, *rest, s1]

    def flags(key):
        dtype, reciprocal, fuse_grad = key
        return flag_bits(maximize, decay, is_factored(b1, c1, dtype), reciprocal, fuse_grad)

    fields = [(optax.ScaleByAdamState, "mu"), (optax.ScaleByAdamState, "nu")]
    return Plan("jaxopt_adv_adamax", fields, scalars, flags, group=group)


def _nadam_plan(args: NadamArgs, old_inner: Any, new_inner: Any, checked: Callable) -> Plan:
    """``checked(family)``: why a self-check family failed on this host, or ``None``."""
    b1, b2, eps, wd = args.b1, args.b2, args.eps, args.weight_decay
    decay = not is_static_zero(wd)
    decoupled = decay and args.decoupled_weight_decay
    coupled = decay and not decoupled
    c1 = 1 - b1
    # the transform's scalars, from the old state, with the transform's own ops
    old = find_state(old_inner, ScaleByNadamState)
    count = find_state(new_inner, ScaleByNadamState).count
    _, grad_coef, mom_coef, bc2 = nadam_coefficients(
        b1, b2, args.momentum_decay, count, old.mu_product, args.torch_default_dtype
    )

    def group(leaf, n_leaves):
        dtype = np.dtype(leaf.dtype)
        own = dtype != bc2.dtype
        if math.prod(jnp.shape(leaf)) == 1:
            if decoupled and args.maximize and not is_concrete_number(wd):
                return "NAdamW with injected hyperparameters, maximize and a 1-element leaf"
            # no broadcast: as Adam's sqrt(bc2), the reciprocal only for an unconverted
            # scalar of a one-leaf tree; under maximize XLA folds the negations of
            # (1 - b2) (-g) (-g) into (g g) (1 - b2)
            return dtype, not own and n_leaves == 1, args.maximize and not coupled
        # v / bc2.astype(dtype) becomes v * (1 / bc2) while the scalar has one use
        return dtype, own or n_leaves == 1, False

    def scalars(key):
        dtype, reciprocal, _ = key
        step = _rooted_step(args.learning_rate, old_inner, eps, dtype)
        if isinstance(step, str):
            return step
        if (mismatch := checked(selfcheck.NADAM)) is not None:
            return mismatch
        rest = moment_scalars(wd if decay else 0.0, b1, b2, eps, dtype)
        if isinstance(rest, str):
            return rest
        s2 = 1 / bc2.astype(dtype) if reciprocal else bc2.astype(dtype)
        return [step, *rest, s2, grad_coef.astype(dtype), mom_coef.astype(dtype)]

    def flags(key):
        dtype, reciprocal, square_first = key
        # under maximize XLA folds the gradient's negation into its coefficient, and LLVM
        # then fuses the moment's product (unless a weight-decay block comes first)
        fuse_grad = not (args.maximize and not coupled)
        factored = is_factored(b1, c1, dtype)
        variant = (coupled, decoupled, factored, reciprocal, fuse_grad, square_first)
        return flag_bits(args.maximize, *variant)

    fields = [(ScaleByNadamState, "mu"), (ScaleByNadamState, "nu")]
    return Plan("jaxopt_adv_nadam", fields, scalars, flags, args.mu_dtype, group)


def _radam_plan(args: RadamArgs, old_inner: Any, new_inner: Any, checked: Callable) -> Plan:
    """``checked(family)``: why a self-check family failed on this host, or ``None``."""
    b1, b2, eps, wd = args.b1, args.b2, args.eps, args.weight_decay
    decay = not is_static_zero(wd)
    decoupled = decay and args.decoupled_weight_decay
    coupled = decay and not decoupled
    c1 = 1 - b1
    # the transform's scalars, with its ops (XLA computes them outside the leaves' loops:
    # see jaxopt_adv.torch.radam.rectification)
    count = find_state(new_inner, ScaleByRadamState).count
    bc1, rect, scale = radam_scalars(b1, b2, count, args.torch_default_dtype)

    def group(leaf, n_leaves):
        # m / bc1.astype(dtype) as for Adam's first moment: a multiplication by the
        # reciprocal while the scalar has one use (one leaf, or converted for this
        # leaf's dtype), a division for 1-element leaves (no broadcast)
        dtype = np.dtype(leaf.dtype)
        if math.prod(jnp.shape(leaf)) == 1:
            square_first = args.maximize and not coupled and is_concrete_number(b2)
            return dtype, False, square_first
        return dtype, dtype != bc1.dtype or n_leaves == 1, False

    def scalars(key):
        dtype, reciprocal, _ = key
        step = _rooted_step(args.learning_rate, old_inner, eps, dtype)
        if isinstance(step, str):
            return step
        if decoupled and is_static_one(wd, dtype):
            # wd * p + u -> p + u, and LLVM then contracts u's product: not mirrored here
            return "decoupled weight decay 1 (XLA multiplies it away)"
        if (mismatch := checked(selfcheck.RADAM)) is not None:
            return mismatch
        rest = moment_scalars(wd if decay else 0.0, b1, b2, eps, dtype)
        if isinstance(rest, str):
            return rest
        s1 = 1 / bc1.astype(dtype) if reciprocal else bc1.astype(dtype)
        return [step, *rest, s1, rect.astype(dtype), scale.astype(dtype)]

    def flags(key):
        dtype, reciprocal, square_first = key
        factored = is_factored(b1, c1, dtype)
        unit_step = is_static_one(args.learning_rate, dtype)
        variant = (coupled, decoupled, factored, reciprocal, square_first, unit_step)
        return flag_bits(args.maximize, *variant)

    fields = [(ScaleByRadamState, "mu"), (ScaleByRadamState, "nu")]
    return Plan("jaxopt_adv_radam", fields, scalars, flags, args.mu_dtype, group)


def _rprop_plan(args: RpropArgs, old_inner: Any, new_inner: Any, checked: Callable) -> Plan:
    """``checked(family)``: why a self-check family failed on this host, or ``None``."""
    (eta_minus, eta_plus), (step_min, step_max) = args.etas, args.step_sizes

    def scalars(key):
        (dtype,) = key
        if (mismatch := checked(selfcheck.RPROP)) is not None:
            return mismatch
        named = [("etas[0]", eta_minus), ("etas[1]", eta_plus)]
        named += [("step_sizes[0]", step_min), ("step_sizes[1]", step_max)]
        return scalar_list(named, dtype)

    def flags(key):
        return flag_bits(args.maximize)

    fields = [(ScaleByRpropState, "prev"), (ScaleByRpropState, "step_size")]
    return Plan("jaxopt_adv_rprop", fields, scalars, flags)


def _asgd_plan(args: AsgdArgs, old_inner: Any, new_inner: Any, checked: Callable) -> Plan:
    """``checked(family)``: why a self-check family failed on this host, or ``None``."""
    lambd, wd = args.lambd, args.weight_decay
    decay = not is_static_zero(wd)
    old_count = find_state(old_inner, AsgdState).count
    eta, mu = asgd_coefficients(
        args.learning_rate, lambd, args.alpha, args.t0, old_count, args.torch_default_dtype
    )

    def group(leaf, n_leaves):
        # of p * shrink - e * g LLVM fuses the parameter's product in a loop and in a 0-d
        # leaf's code, the gradient's in a 1-element array's (in both of XLA's copies of
        # the new parameters: for the parameters and inside the average)
        shape = jnp.shape(leaf)
        return np.dtype(leaf.dtype), len(shape) > 0 and math.prod(shape) == 1

    def scalars(key):
        dtype, _ = key
        if args.maximize and not decay:
            # XLA moves the sign into the step's constants where it can (a schedule, x64,
            # a converted or an injected scalar change where), and LLVM then contracts
            # its two copies of the new parameters differently, by leaf size
            return "ASGD with maximize and no weight decay (XLA's contraction varies)"
        if is_static_zero(args.alpha) or is_static_zero(lambd):
            # (1 + lambd lr t)^0 -> 1 and 0 * x fold the step size's constants differently
            return "ASGD with alpha 0 or lambd 0 (XLA folds the step size)"
        if (mismatch := checked(selfcheck.ASGD)) is not None:
            return mismatch
        wd_scalar = scalar_list([("weight_decay", wd if decay else 0.0)], dtype)
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
        return flag_bits(args.maximize, decay, fuse_grad_product)

    fields = [(AsgdState, "ax")]
    return Plan("jaxopt_adv_asgd", fields, scalars, flags, group=group)


CONSTANT_LEARNING_RATE = (
    "SparseAdam with a constant learning rate (XLA's rounding of the step varies by leaf "
    "shape; a schedule of the step count or inject_hyperparams runs the kernel)"
)


def _sparse_adam_plan(
    args: SparseAdamArgs, old_inner: Any, new_inner: Any, checked: Callable
) -> Plan:
    """An element takes part in a step where its gradient is nonzero: the kernel computes
    every element's step and keeps the old moments and parameter elsewhere, as XLA's
    select does. It runs with a traced learning rate (a schedule of the step count,
    ``inject_hyperparams=True``, under ``jax.jit``); a constant one takes the XLA path."""
    b1, b2 = args.b1, args.b2
    learning_rate = args.learning_rate
    if callable(learning_rate):  # the value optax.scale_by_schedule multiplies by
        learning_rate = learning_rate(find_state(old_inner, optax.ScaleByScheduleState).count)
    # a number, or an array that is not traced (a schedule returning one): an XLA constant
    constant_learning_rate = not isinstance(learning_rate, jax.core.Tracer)
    # the transform's factor, from the new count, with the same ops
    count = find_state(new_inner, ScaleBySparseAdamState).count
    factor = sparse_adam_factor(b1, b2, count, args.torch_default_dtype)

    def scalars(key):
        (dtype,) = key
        if constant_learning_rate:
            # XLA computes p + select(active, u, 0) * (-lr); LLVM folds a constant product
            # into the select's arms in some loops of a leaf and not in others (by shape),
            # so whether it is one FMA varies; a traced one is always fused (the kernel's)
            return CONSTANT_LEARNING_RATE
        step = learning_step(args.learning_rate, old_inner, dtype)
        if isinstance(step, str):
            return step
        if (mismatch := checked(selfcheck.SPARSE_ADAM)) is not None:
            return mismatch
        named = [("1 - b1", 1 - b1), ("1 - b2", 1 - b2), ("eps", args.eps)]
        rest = scalar_list(named, dtype)
        # scale_by_sparse_adam casts the factor to the moments' (the leaf's) dtype
        return rest if isinstance(rest, str) else [step, *rest, factor.astype(dtype)]

    def flags(key):
        return flag_bits(args.maximize)

    fields = [(ScaleBySparseAdamState, "mu"), (ScaleBySparseAdamState, "nu")]
    return Plan("jaxopt_adv_sparse_adam", fields, scalars, flags)


# ------------------------------------------------------------------ the fused optimizers

_INITIAL_STATE = "fills the state at init (tx.init); the kernel reads the state"

ADAM = Family("adam", AdamArgs, _adam_plan, selfcheck.KERNELS)
SGD = Family("sgd", SgdArgs, _sgd_plan, selfcheck.KERNELS)
RMSPROP = Family("rmsprop", RmspropArgs, _rmsprop_plan, selfcheck.KERNELS)
ADAGRAD = Family(
    "adagrad",
    AdagradArgs,
    _adagrad_plan,
    selfcheck.ADAGRAD,
    {"initial_accumulator_value": _INITIAL_STATE},
)
ADADELTA = Family("adadelta", AdadeltaArgs, _adadelta_plan, selfcheck.ADADELTA)
ADAMAX = Family("adamax", AdamaxArgs, _adamax_plan, selfcheck.ADAMAX)
NADAM = Family("nadam", NadamArgs, _nadam_plan, selfcheck.NADAM)
RADAM = Family("radam", RadamArgs, _radam_plan, selfcheck.RADAM)
RPROP = Family(
    "rprop",
    RpropArgs,
    _rprop_plan,
    selfcheck.RPROP,
    {"learning_rate": f"the initial step size: {_INITIAL_STATE}"},
)
ASGD = Family("asgd", AsgdArgs, _asgd_plan, selfcheck.ASGD)
SPARSE_ADAM = Family("sparse_adam", SparseAdamArgs, _sparse_adam_plan, selfcheck.SPARSE_ADAM)

# one declaration per fused optimizer (checked against its factory's signature here)
FUSED: tuple[Fused, ...] = (
    Fused("torch.adam", adam, ADAM),
    Fused("torch.adamw", adamw, ADAM, {"decoupled_weight_decay": True}),
    Fused("torch.sgd", sgd, SGD),
    Fused("torch.rmsprop", rmsprop, RMSPROP),
    Fused("torch.adagrad", adagrad, ADAGRAD),
    Fused("torch.adamax", adamax, ADAMAX),
    Fused("torch.nadam", nadam, NADAM),
    Fused("torch.radam", radam, RADAM),
    Fused("torch.adadelta", adadelta, ADADELTA),
    Fused("torch.rprop", rprop, RPROP),
    Fused("torch.asgd", asgd, ASGD),
    Fused("torch.sparse_adam", sparse_adam, SPARSE_ADAM),
)
BY_NAME: dict[str, Fused] = {fused.name: fused for fused in FUSED}
# registered name -> (factory, kernel family name)
SUPPORTED: dict[str, tuple[Callable[..., optax.GradientTransformation], str]] = {
    fused.name: (fused.factory, fused.family.name) for fused in FUSED
}
