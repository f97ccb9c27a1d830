r"""muP optimizers: torch-exact Adam, AdamW and SGD with per-parameter width multipliers.

**The optimizer alone is not muP.** These transforms implement muP's learning-rate and
weight-decay rules; muP also changes the model: the readout layer must be a
:class:`~jaxopt_adv.mup.MuReadout` (its input divided by the width multiplier), hidden
biases and the readout must be rescaled once at initialisation
(:func:`~jaxopt_adv.mup.mup_rescale_init`), and attention must use ``1/d`` scores
(:func:`~jaxopt_adv.mup.mup_attention_scale`). ``mu_adam`` on an unmodified model does
not transfer hyperparameters across widths.

The per-parameter rules of PyPI ``mup==1.0.0`` (``MuAdam``, ``MuAdamW``, ``MuSGD``), with
:math:`m_{in}, m_{out}` the fan-in / fan-out width multipliers and :math:`m` the
multiplier of mup's main axis, the last width axis of the torch tensor
(:attr:`~jaxopt_adv.mup.InfShape.width_mult`: :math:`m_{in}` for a weight whose fan-in and
fan-out are widths, the unique width of a vector-like parameter):

=====================  ========================  ========================================
parameter class        Adam / AdamW              SGD
=====================  ========================  ========================================
matrix-like (hidden)   lr / m, wd * m            lr / (m_in / m_out), wd * (m_in / m_out)
vector-like            lr, wd                    lr * m, wd / m
scalar-like            lr, wd                    lr, wd
=====================  ========================  ========================================

The weight-decay multiplier is always the inverse of the learning-rate multiplier, so
:math:`\eta \lambda` is unchanged per parameter (for AdamW, the decay
:math:`\theta (1 - \eta\lambda)` does not scale with width). ``decoupled_wd=True`` (the
later ``mup`` option, absent from the 1.0.0 upload) leaves the weight decay unscaled.

Each optimizer is a chain of the torch-exact blocks of :mod:`jaxopt_adv.torch` with two
stateless blocks: :func:`add_mup_decayed_weights` (``wd * wd_mult * param``) and
:func:`scale_by_mup` (``lr_mult * update``, after the learning rate). The multipliers are
static Python floats computed from the infshapes at construction; parameters are matched
to their infshapes by path (:func:`~jaxopt_adv.mup.infshape.param_path`), so an
``nnx.State`` and the plain dict ``nnx.Optimizer`` passes to ``update`` are the same, and
entries for parameters a call does not see are ignored.

References:
  Yang et al., "Tensor Programs V: Tuning Large Neural Networks via Zero-Shot
  Hyperparameter Transfer", NeurIPS 2021 (arXiv 2203.03466); mirrors ``mup.optim``
  (``mup==1.0.0``) over ``torch.optim.Adam``, ``AdamW`` and ``SGD`` (torch 2.13).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import optax

from jaxopt_adv._common import NO_PARAMS_MSG, check, check_nonnegative, skip_at_static_zero
from jaxopt_adv.mup.infshape import InfShape, param_path, paths_and_leaves
from jaxopt_adv.torch._chain import torch_chain
from jaxopt_adv.torch.adam import adam as torch_adam
from jaxopt_adv.torch.adam import scale_by_adam
from jaxopt_adv.torch.sgd import sgd as torch_sgd

__all__ = [
    "SCALINGS",
    "MupMultipliers",
    "add_mup_decayed_weights",
    "mu_adam",
    "mu_adamw",
    "mu_sgd",
    "mup_multipliers",
    "scale_by_mup",
]

# "adam": Adam-like optimizers that normalise the gradient entrywise (Adam, RMSprop,
# Adagrad...); "sgd": SGD-like ones (mup.optim's two families).
SCALINGS = ("adam", "sgd")


class MupMultipliers(NamedTuple):
    """Static per-parameter factors on the learning rate and on the weight decay."""

    learning_rate: float
    weight_decay: float


def mup_multipliers(
    infshape: InfShape, scaling: str = "adam", *, decoupled_wd: bool = False
) -> MupMultipliers:
    r"""The learning-rate and weight-decay multipliers of one parameter.

    The table of :mod:`jaxopt_adv.mup.optim`: for matrix-like parameters the learning
    rate is divided by the main axis's multiplier ``m`` (Adam; ``m_in`` for a weight whose
    fan-in and fan-out are widths) or by ``m_in / m_out`` (SGD) and the weight decay
    multiplied by it; for vector-like ones under SGD the learning rate is multiplied by
    their width multiplier ``m`` and the weight decay divided by it; everything else is 1.

    Args:
      infshape: the parameter's :class:`~jaxopt_adv.mup.InfShape`.
      scaling: static; ``"adam"`` (``MuAdam`` / ``MuAdamW``) or ``"sgd"`` (``MuSGD``).
      decoupled_wd: static; leave the weight decay unscaled (multiplier 1).

    Returns:
      ``MupMultipliers(learning_rate, weight_decay)``.

    Example:
      >>> from jaxopt_adv.mup import InfShape, mup_multipliers
      >>> hidden = InfShape((64, 64), (256, 256), "hidden")
      >>> mup_multipliers(hidden, "adam")
      MupMultipliers(learning_rate=0.25, weight_decay=4.0)
      >>> readout = InfShape((64, None), (256, 10), "output")
      >>> mup_multipliers(readout, "sgd")
      MupMultipliers(learning_rate=4.0, weight_decay=0.25)
    """
    check(scaling in SCALINGS, f"Invalid scaling: {scaling!r} (must be one of {SCALINGS})")
    param_class = infshape.param_class
    if param_class == "matrix":  # mup: lr /= ratio, wd *= ratio
        if scaling == "sgd":
            ratio = infshape.fan_in_mult / infshape.fan_out_mult
        else:
            ratio = infshape.width_mult
        learning_rate, weight_decay = 1.0 / ratio, ratio
    elif param_class == "vector" and scaling == "sgd":  # mup: lr *= m, wd /= m
        learning_rate, weight_decay = infshape.width_mult, 1.0 / infshape.width_mult
    else:
        learning_rate, weight_decay = 1.0, 1.0
    return MupMultipliers(learning_rate, 1.0 if decoupled_wd else weight_decay)


def _multiplier_table(
    infshapes: Any, scaling: str, decoupled_wd: bool
) -> dict[str, MupMultipliers]:
    """``{param path: multipliers}``; validates ``infshapes`` (every leaf an InfShape)."""
    paths, leaves, _ = paths_and_leaves(infshapes)
    bad = [path for path, leaf in zip(paths, leaves, strict=True) if not isinstance(leaf, InfShape)]
    check(
        not bad and bool(leaves),
        "infshapes must be a non-empty pytree of InfShape leaves (see infer_infshapes); "
        f"other leaves at {bad}",
    )
    return {
        path: mup_multipliers(leaf, scaling, decoupled_wd=decoupled_wd)
        for path, leaf in zip(paths, leaves, strict=True)
    }


def _lookup(table: dict[str, MupMultipliers], path: str) -> MupMultipliers:
    if path not in table:
        raise ValueError(
            f"no infshape for parameter {path!r}; infshapes cover {sorted(table)} "
            "(build them with infer_infshapes from these parameters)"
        )
    return table[path]


def _check_covered(table: dict[str, MupMultipliers], params: Any) -> optax.EmptyState:
    """``init``: every parameter must have multipliers (fails before the first step)."""
    for path in paths_and_leaves(params)[0]:
        _lookup(table, path)
    return optax.EmptyState()


def _map_with_table(fn, table: dict[str, MupMultipliers], tree: Any, *rest: Any) -> Any:
    """``fn(multipliers, leaf, *rest_leaves)`` over ``tree``, multipliers found by path."""

    def leaf(path, *args):
        return fn(_lookup(table, param_path(path)), *args)

    return jax.tree_util.tree_map_with_path(leaf, tree, *rest)


def scale_by_mup(infshapes: Any, *, scaling: str = "adam") -> optax.GradientTransformationExtraArgs:
    r"""Multiply each parameter's update by its muP learning-rate multiplier.

    .. math::
      u \leftarrow \text{lr\_mult}(\text{param}) \cdot u

    Stateless; put it after ``optax.scale_by_learning_rate`` (the multipliers are
    static, so it composes with schedules and ``optax.inject_hyperparams``).

    Args:
      infshapes: static; a pytree of :class:`~jaxopt_adv.mup.InfShape` covering the
        parameters (:func:`~jaxopt_adv.mup.infer_infshapes`).
      scaling: static; ``"adam"`` or ``"sgd"`` (see :func:`mup_multipliers`).

    Returns:
      An ``optax.GradientTransformationExtraArgs``.

    Example:
      >>> import jax.numpy as jnp
      >>> from jaxopt_adv.mup import infer_infshapes, scale_by_mup
      >>> shapes = infer_infshapes({"w": jnp.zeros((2, 2))}, {"w": jnp.zeros((8, 8))})
      >>> tx = scale_by_mup(shapes)
      >>> updates, _ = tx.update({"w": jnp.ones((8, 8))}, tx.init({"w": jnp.zeros((8, 8))}))
      >>> updates["w"][0, 0]
      Array(0.25, dtype=float32)

    References:
      Yang et al., "Tensor Programs V", NeurIPS 2021; ``mup.optim`` (``mup==1.0.0``).
    """
    table = _multiplier_table(infshapes, scaling, False)

    def update_fn(updates, state, params=None, **extra_args):
        del params, extra_args
        scaled = _map_with_table(lambda m, u: u * m.learning_rate, table, updates)
        return scaled, state

    return optax.GradientTransformationExtraArgs(
        lambda params: _check_covered(table, params), update_fn
    )


def add_mup_decayed_weights(
    weight_decay: Any,
    infshapes: Any,
    *,
    scaling: str = "adam",
    decoupled_wd: bool = False,
) -> optax.GradientTransformationExtraArgs:
    r"""Add ``weight_decay * wd_mult * param`` to each update (muP's per-parameter decay).

    .. math::
      u \leftarrow u + \lambda \cdot \text{wd\_mult}(\text{param}) \cdot \theta

    Before the Adam/SGD block this is torch's coupled L2 (``Adam``, ``SGD``); after it,
    AdamW's decoupled decay. Stateless; needs ``params``.

    Args:
      weight_decay: :math:`\lambda`, ``>= 0`` (may be injected).
      infshapes: static; a pytree of :class:`~jaxopt_adv.mup.InfShape`.
      scaling: static; ``"adam"`` or ``"sgd"``.
      decoupled_wd: static; ``wd_mult = 1`` for every parameter.

    Returns:
      An ``optax.GradientTransformationExtraArgs``.

    Example:
      >>> import jax.numpy as jnp
      >>> from jaxopt_adv.mup import add_mup_decayed_weights, infer_infshapes
      >>> params = {"w": jnp.ones((8, 8))}
      >>> tx = add_mup_decayed_weights(0.1, infer_infshapes({"w": jnp.zeros((2, 2))}, params))
      >>> updates, _ = tx.update({"w": jnp.zeros((8, 8))}, tx.init(params), params)
      >>> updates["w"][0, 0]
      Array(0.4, dtype=float32)

    References:
      Yang et al., "Tensor Programs V", NeurIPS 2021; ``mup.optim`` (``mup==1.0.0``).
    """
    check_nonnegative(weight_decay, "weight_decay")
    table = _multiplier_table(infshapes, scaling, decoupled_wd)

    def update_fn(updates, state, params=None, **extra_args):
        del extra_args
        if params is None:
            raise ValueError(NO_PARAMS_MSG)

        def decay(m, u, p):
            return (u + weight_decay * m.weight_decay * p).astype(u.dtype)

        return _map_with_table(decay, table, updates, params), state

    return optax.GradientTransformationExtraArgs(
        lambda params: _check_covered(table, params), update_fn
    )


def _decay(
    weight_decay: Any, infshapes: Any, scaling: str, decoupled_wd: bool = False
) -> optax.GradientTransformationExtraArgs:
    """The decay block, a pass-through at a static zero (so ``params`` are not needed)
    that keeps the state's structure independent of the value."""
    check_nonnegative(weight_decay, "weight_decay")
    block = add_mup_decayed_weights(
        weight_decay, infshapes, scaling=scaling, decoupled_wd=decoupled_wd
    )
    return skip_at_static_zero(weight_decay, block)


def mu_adam(
    learning_rate: optax.ScalarOrSchedule,
    *,
    infshapes: Any,
    b1: Any = 0.9,
    b2: Any = 0.999,
    eps: Any = 1e-8,
    weight_decay: Any = 0.0,
) -> optax.GradientTransformationExtraArgs:
    r"""muP Adam: ``torch.optim.Adam`` (coupled L2) with muP's per-parameter multipliers.

    .. math::
      g \leftarrow g + \lambda\, \text{wd\_mult}\, \theta, \quad
      \theta \leftarrow \theta - \eta\, \text{lr\_mult}\,
        \frac{m_t/(1-\beta_1^t)}{\sqrt{v_t/(1-\beta_2^t)} + \epsilon}

    with ``lr_mult = 1/m`` and ``wd_mult = m`` for matrix-like parameters (``m``: mup's
    main-axis multiplier, ``m_in`` for a hidden weight), 1 for the others (:func:`mup_multipliers`). **Not muP on its own**: the model needs a
    :class:`~jaxopt_adv.mup.MuReadout` and :func:`~jaxopt_adv.mup.mup_rescale_init`.

    Args:
      learning_rate: scalar or schedule :math:`\eta` at the base width (torch ``lr``).
      infshapes: static; a pytree of :class:`~jaxopt_adv.mup.InfShape` for the params.
      b1: torch ``betas[0]``, in ``[0, 1)``.
      b2: torch ``betas[1]``, in ``[0, 1)``.
      eps: added outside the square root, ``>= 0``.
      weight_decay: coupled L2 coefficient, ``>= 0`` (default 0, as ``mup.MuAdam``).

    Returns:
      An ``optax.GradientTransformationExtraArgs``.

    Example:
      >>> import jax.numpy as jnp
      >>> from jaxopt_adv.mup import infer_infshapes, mu_adam
      >>> params = {"hidden": jnp.ones((256, 256)), "bias": jnp.ones(256)}
      >>> base = {"hidden": jnp.ones((64, 64)), "bias": jnp.ones(64)}
      >>> opt = mu_adam(1e-3, infshapes=infer_infshapes(base, params))
      >>> updates, _ = opt.update(params, opt.init(params), params)
      >>> float(updates["hidden"][0, 0]), float(updates["bias"][0])
      (-0.00025, -0.001)

    References:
      Yang et al., "Tensor Programs V", NeurIPS 2021; mirrors ``mup.MuAdam``
      (``mup==1.0.0``) over ``torch.optim.Adam`` (torch 2.13).
    """
    return optax.chain(
        _decay(weight_decay, infshapes, "adam"),
        torch_adam(learning_rate, b1, b2, eps),
        scale_by_mup(infshapes, scaling="adam"),
    )


def mu_adamw(
    learning_rate: optax.ScalarOrSchedule,
    *,
    infshapes: Any,
    b1: Any = 0.9,
    b2: Any = 0.999,
    eps: Any = 1e-8,
    weight_decay: Any = 0.0,
    decoupled_wd: bool = False,
) -> optax.GradientTransformationExtraArgs:
    r"""muP AdamW: ``torch.optim.AdamW`` with muP's per-parameter multipliers.

    .. math::
      \theta \leftarrow \theta\,(1 - \eta\,\text{lr\_mult}\,\lambda\,\text{wd\_mult})
        - \eta\,\text{lr\_mult}\,\frac{m_t/(1-\beta_1^t)}{\sqrt{v_t/(1-\beta_2^t)} + \epsilon}

    Matrix-like parameters get ``lr_mult = 1/m``, ``wd_mult = m`` (``m`` as in
    :func:`mu_adam`; the decay factor is then width-independent), or ``wd_mult = 1``
    with ``decoupled_wd``. **Not muP on its own**: see :func:`mu_adam`.

    Args:
      learning_rate: scalar or schedule at the base width (torch ``lr``).
      infshapes: static; a pytree of :class:`~jaxopt_adv.mup.InfShape` for the params.
      b1: torch ``betas[0]``, in ``[0, 1)``.
      b2: torch ``betas[1]``, in ``[0, 1)``.
      eps: added outside the square root, ``>= 0``.
      weight_decay: decoupled decay, ``>= 0``; default 0, as ``mup.MuAdamW`` (which,
        unlike ``torch.optim.AdamW``, does not inherit torch's 1e-2).
      decoupled_wd: static; do not scale the weight decay with width. ``False``
        reproduces PyPI ``mup==1.0.0``, whose ``MuAdamW`` always multiplies it by m.

    Returns:
      An ``optax.GradientTransformationExtraArgs``; it needs ``params`` when
      ``weight_decay`` is not a Python 0.

    Example:
      >>> import jax.numpy as jnp
      >>> from jaxopt_adv.mup import infer_infshapes, mu_adamw
      >>> params = {"hidden": jnp.ones((256, 256))}
      >>> opt = mu_adamw(1e-3, weight_decay=0.01,
      ...                infshapes=infer_infshapes({"hidden": jnp.ones((64, 64))}, params))
      >>> updates, _ = opt.update(params, opt.init(params), params)
      >>> round(1.0 + float(updates["hidden"][0, 0]), 8)  # spec 5.6: 0.99974
      0.99974

    References:
      Yang et al., "Tensor Programs V", NeurIPS 2021; Loshchilov, Hutter, "Decoupled
      Weight Decay Regularization", ICLR 2019; mirrors ``mup.MuAdamW`` (``mup==1.0.0``)
      over ``torch.optim.AdamW`` (torch 2.13).
    """
    return optax.chain(
        torch_chain(
            scale_by_adam(b1, b2, eps),
            _decay(weight_decay, infshapes, "adam", decoupled_wd),
            learning_rate=learning_rate,
        ),
        scale_by_mup(infshapes, scaling="adam"),
    )


def mu_sgd(
    learning_rate: optax.ScalarOrSchedule,
    *,
    infshapes: Any,
    momentum: Any = None,
    dampening: Any = 0.0,
    nesterov: bool = False,
    weight_decay: Any = 0.0,
) -> optax.GradientTransformationExtraArgs:
    r"""muP SGD: ``torch.optim.SGD`` (momentum, dampening, Nesterov) with muP multipliers.

    .. math::
      g \leftarrow g + \lambda\,\text{wd\_mult}\,\theta, \quad
      \theta \leftarrow \theta - \eta\,\text{lr\_mult}\,\text{torch momentum}(g)

    ``lr_mult`` is ``m_out/m_in`` for matrix-like parameters, ``m`` for vector-like ones
    (input weights, biases, the readout weight) and 1 for scalar-like ones; ``wd_mult``
    is its inverse. **Not muP on its own**: see :func:`mu_adam`.

    Args:
      learning_rate: scalar or schedule at the base width (torch ``lr``).
      infshapes: static; a pytree of :class:`~jaxopt_adv.mup.InfShape` for the params.
      momentum: momentum factor, ``>= 0``, or ``None`` (default): no buffer (a number,
        0 included, keeps one; see :func:`jaxopt_adv.torch.sgd`).
      dampening: dampening of the momentum.
      nesterov: static; Nesterov momentum (needs ``momentum > 0``, ``dampening == 0``).
      weight_decay: coupled L2 coefficient, ``>= 0``.

    Returns:
      An ``optax.GradientTransformationExtraArgs``.

    Example:
      >>> import jax.numpy as jnp
      >>> from jaxopt_adv.mup import infer_infshapes, mu_sgd
      >>> params = {"input": jnp.ones((10, 256)), "hidden": jnp.ones((256, 256))}
      >>> base = {"input": jnp.ones((10, 64)), "hidden": jnp.ones((64, 64))}
      >>> opt = mu_sgd(0.1, infshapes=infer_infshapes(base, params))
      >>> grads = {"input": jnp.full((10, 256), 0.5), "hidden": jnp.full((256, 256), 0.5)}
      >>> updates, _ = opt.update(grads, opt.init(params), params)
      >>> float(updates["input"][0, 0]), float(updates["hidden"][0, 0])  # spec 5.6
      (-0.2, -0.05)

    References:
      Yang et al., "Tensor Programs V", NeurIPS 2021; mirrors ``mup.MuSGD``
      (``mup==1.0.0``) over ``torch.optim.SGD`` (torch 2.13).
    """
    return optax.chain(
        _decay(weight_decay, infshapes, "sgd"),
        torch_sgd(learning_rate, momentum, dampening, nesterov=nesterov),
        scale_by_mup(infshapes, scaling="sgd"),
    )
