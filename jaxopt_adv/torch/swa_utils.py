r"""Weight averaging (SWA, EMA), the SWALR schedule and ``update_bn``, as in
``torch.optim.swa_utils``.

**Averaged weights.** torch's ``AveragedModel`` wraps a copy of the model and updates its
weights in place. Here the averaged weights are a small pure state kept *beside* the
model, as Flax users keep EMA parameters: :func:`averaged_model` returns a pair of pure
functions ``init(params, buffers=None)`` / ``update(state, params, buffers=None)`` over
any pytree (e.g. ``nnx.state(model, nnx.Param)`` and ``nnx.state(model, nnx.BatchStat)``),
and :class:`AveragedModelState` holds the averages and torch's ``n_averaged`` counter.
It is not an optax transformation: ``optax.ema`` averages *updates*, and a transformation
only sees the parameters before the step, while SWA/EMA average the parameters after it.

A training loop with ``jax.jit`` and donation::

    ema = averaged_model(multi_avg_fn=get_ema_multi_avg_fn(0.999))
    ema_state = ema.init(params)

    @functools.partial(jax.jit, donate_argnums=(0, 1, 2))
    def train_step(params, opt_state, ema_state, batch):
        grads = jax.grad(loss_fn)(params, batch)
        updates, opt_state = tx.update(grads, opt_state, params)
        params = optax.apply_updates(params, updates)
        return params, opt_state, ema.update(ema_state, params)

``init`` copies the params, so donating them later never invalidates the averages. The
averaged weights are ``ema_state.params``; for an NNX model,
``nnx.update(eval_model, ema_state.params)``.

**Schedule.** :func:`swa_lr` is ``SWALR`` as a schedule ``count -> lr`` like those of
:mod:`jaxopt_adv.torch.lr_scheduler`; after a base schedule it is composed with
:func:`~jaxopt_adv.torch.lr_compose.sequential_lr` (see its docstring).

**BatchNorm.** :func:`update_bn` recomputes the running statistics of the
:class:`jaxopt_adv.models.BatchNorm` (and ``nnx.BatchNorm``) layers of an NNX model with
one pass over the data, as a cumulative average (torch's ``momentum=None``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Literal, NamedTuple

import jax
import jax.numpy as jnp
from flax import nnx

from jaxopt_adv._common import check, check_interval, check_learning_rate, scalar_dtype
from jaxopt_adv.models.batchnorm import BatchNorm
from jaxopt_adv.torch._schedule import Schedule, TorchRule, as_count, check_count, with_rule

__all__ = [
    "AveragedModel",
    "AveragedModelState",
    "averaged_model",
    "get_ema_avg_fn",
    "get_ema_multi_avg_fn",
    "get_swa_avg_fn",
    "get_swa_multi_avg_fn",
    "swa_lr",
    "update_bn",
]

AvgFn = Callable[[jax.Array, jax.Array, jax.Array], jax.Array]
MultiAvgFn = Callable[[list[jax.Array], list[jax.Array], jax.Array], Sequence[jax.Array]]


# ------------------------------------------------------------------ averaging functions


def _lerp(start: jax.Array, end: jax.Array, weight: Any) -> jax.Array:
    """torch's ``lerp``: ``start + w (end - start)`` for ``|w| < 0.5``, else
    ``end - (end - start)(1 - w)`` (exact at ``w = 1``)."""
    weight = jnp.asarray(weight, start.dtype)
    diff = end - start
    return jnp.where(jnp.abs(weight) < 0.5, start + weight * diff, end - diff * (1 - weight))


def _check_decay(decay: Any) -> None:
    check_interval(decay, "decay", 0.0, 1.0)


def get_ema_multi_avg_fn(decay: float = 0.999) -> MultiAvgFn:
    r"""Exponential moving average of several leaves (torch's ``get_ema_multi_avg_fn``).

    .. math::
      W^{\text{EMA}}_{t+1} = \text{decay}\, W^{\text{EMA}}_t
        + (1 - \text{decay})\, W^{\text{model}}_{t+1}

    computed as torch's ``_foreach_lerp_`` with weight ``1 - decay``.

    Args:
      decay: in ``[0, 1]`` (default 0.999).

    Returns:
      ``multi_avg_fn(averaged, current, n_averaged) -> new averaged`` (lists of arrays),
      for :func:`averaged_model`.

    Example:
      >>> import jax.numpy as jnp
      >>> fn = get_ema_multi_avg_fn(0.75)
      >>> fn([jnp.zeros(2)], [jnp.ones(2)], jnp.asarray(1))
      [Array([0.25, 0.25], dtype=float32)]
    """
    _check_decay(decay)
    weight = 1 - decay

    def ema_update(averaged, current, n_averaged):
        del n_averaged
        return [_lerp(a, c, weight) for a, c in zip(averaged, current, strict=True)]

    return ema_update


def get_swa_multi_avg_fn(*, weight_dtype: Any = jnp.float32) -> MultiAvgFn:
    r"""Equal average of several leaves (torch's ``get_swa_multi_avg_fn``).

    .. math::
      W^{\text{SWA}}_{n+1} = W^{\text{SWA}}_n + \tfrac{1}{n + 1}
        \big(W^{\text{model}} - W^{\text{SWA}}_n\big)

    computed as torch's ``_foreach_lerp_`` with the weight ``1 / (n_averaged + 1)``, a
    tensor of torch's default dtype: float32 unless ``torch.set_default_dtype`` changed it,
    so torch's float64 average is off the exact mean by up to 1e-8 relative. This
    reproduces it by default; ``weight_dtype=jnp.float64`` (with x64 on) is torch under
    default dtype float64. torch's ``AveragedModel`` uses this function by default on GPU;
    on CPU it uses :func:`get_swa_avg_fn` (the default of :func:`averaged_model`).

    Args:
      weight_dtype: static; the dtype the weight is rounded to (default float32).

    Returns:
      ``multi_avg_fn(averaged, current, n_averaged) -> new averaged``.

    Example:
      >>> import jax.numpy as jnp
      >>> fn = get_swa_multi_avg_fn()
      >>> fn([jnp.zeros(2)], [jnp.ones(2)], jnp.asarray(3))
      [Array([0.25, 0.25], dtype=float32)]
    """
    weight_dtype = jnp.dtype(weight_dtype)
    if not jnp.issubdtype(weight_dtype, jnp.floating):
        raise TypeError(f"weight_dtype must be a floating-point dtype, got {weight_dtype}")

    def swa_update(averaged, current, n_averaged):
        weight = 1 / (jnp.asarray(n_averaged) + 1).astype(weight_dtype)
        return [_lerp(a, c, weight) for a, c in zip(averaged, current, strict=True)]

    return swa_update


def get_ema_avg_fn(decay: float = 0.999) -> AvgFn:
    r"""Exponential moving average of one leaf (torch's ``get_ema_avg_fn``):
    ``decay * averaged + (1 - decay) * current``.

    Args:
      decay: in ``[0, 1]`` (default 0.999).

    Returns:
      ``avg_fn(averaged, current, n_averaged) -> new averaged``.

    Example:
      >>> import jax.numpy as jnp
      >>> get_ema_avg_fn(0.5)(jnp.zeros(2), jnp.ones(2), jnp.asarray(1))
      Array([0.5, 0.5], dtype=float32)
    """
    _check_decay(decay)

    def ema_update(averaged, current, n_averaged):
        del n_averaged
        return decay * averaged + (1 - decay) * current

    return ema_update


def get_swa_avg_fn() -> AvgFn:
    r"""Equal average of one leaf (torch's ``get_swa_avg_fn``):
    ``averaged + (current - averaged) / (n_averaged + 1)``, in the leaf's dtype.

    Returns:
      ``avg_fn(averaged, current, n_averaged) -> new averaged``.

    Example:
      >>> import jax.numpy as jnp
      >>> get_swa_avg_fn()(jnp.zeros(2), jnp.ones(2), jnp.asarray(3))
      Array([0.25, 0.25], dtype=float32)
    """

    def swa_update(averaged, current, n_averaged):
        count = (jnp.asarray(n_averaged) + 1).astype(averaged.dtype)
        return averaged + (current - averaged) / count

    return swa_update


# ------------------------------------------------------------------------ averaged model


class AveragedModelState(NamedTuple):
    """The averaged weights of :func:`averaged_model`."""

    params: Any  # the averaged params (a copy of the model's until the first update)
    buffers: Any  # averaged (``use_buffers``) or copied buffers; None without buffers
    n_averaged: jax.Array  # int scalar: updates so far (torch's ``n_averaged``, a long)


class AveragedModel(NamedTuple):
    """Pure ``init`` / ``update`` functions of :func:`averaged_model`."""

    init: Callable[..., AveragedModelState]
    update: Callable[..., AveragedModelState]


def _check_floating(tree: Any, name: str) -> None:
    for path, leaf in jax.tree_util.tree_leaves_with_path(tree):
        if not jnp.issubdtype(jnp.result_type(leaf), jnp.floating):
            raise TypeError(
                f"averaged_model averages floating-point leaves, but {name}"
                f"{jax.tree_util.keystr(path)} has dtype {jnp.result_type(leaf)}"
            )


def _check_like(tree: Any, reference: Any, name: str) -> None:
    if jax.tree.structure(tree) != jax.tree.structure(reference):
        raise ValueError(
            f"{name} must have the tree structure given to init: "
            f"{jax.tree.structure(reference)}, got {jax.tree.structure(tree)}"
        )
    pairs = zip(jax.tree_util.tree_leaves_with_path(tree), jax.tree.leaves(reference), strict=True)
    for (path, new), old in pairs:
        if jnp.shape(new) != jnp.shape(old):
            raise ValueError(
                f"{name}{jax.tree_util.keystr(path)} has shape {jnp.shape(new)}, "
                f"but {jnp.shape(old)} at init"
            )


def _by_dtype(leaves: list[jax.Array]) -> dict[Any, list[int]]:
    """Leaf indices grouped by dtype, groups in order of first appearance (torch's
    ``_group_tensors_by_device_and_dtype`` on one device)."""
    groups: dict[Any, list[int]] = {}
    for index, leaf in enumerate(leaves):
        groups.setdefault(jnp.result_type(leaf), []).append(index)
    return groups


def _average(
    averaged: list[jax.Array],
    current: list[jax.Array],
    n_averaged: jax.Array,
    avg_fn: AvgFn | None,
    multi_avg_fn: MultiAvgFn | None,
) -> list[jax.Array]:
    """One averaging step over flat leaf lists, as ``AveragedModel.update_parameters``
    after its first call; results in the leaves' dtypes (torch's in-place ``copy_``)."""
    if multi_avg_fn is None:
        fn = avg_fn or get_swa_avg_fn()
        out = [fn(a, c, n_averaged) for a, c in zip(averaged, current, strict=True)]
    else:
        out = list(averaged)
        for indices in _by_dtype(averaged).values():
            new = list(multi_avg_fn([averaged[i] for i in indices],
                                    [current[i] for i in indices], n_averaged))  # fmt: skip
            if len(new) != len(indices):
                raise ValueError(
                    f"multi_avg_fn returned {len(new)} arrays for {len(indices)} leaves"
                )
            for i, value in zip(indices, new, strict=True):
                out[i] = value
    return [jnp.asarray(o).astype(a.dtype) for o, a in zip(out, averaged, strict=True)]


def averaged_model(
    avg_fn: AvgFn | None = None,
    multi_avg_fn: MultiAvgFn | None = None,
    use_buffers: bool = False,
) -> AveragedModel:
    r"""SWA / EMA averages of a model's weights (``torch.optim.swa_utils.AveragedModel``).

    ``init(params, buffers=None)`` copies the weights (torch deep-copies the model) with
    ``n_averaged = 0``. ``update(state, params, buffers=None)`` is torch's
    ``update_parameters(model)``: the first call copies the model's weights, every later
    call averages them in with ``avg_fn`` / ``multi_avg_fn``; then ``n_averaged`` grows by
    one. Without either function it is the equal (SWA) average
    :math:`W \leftarrow W + (W^{\text{model}} - W) / (n + 1)` in the leaf's dtype (torch on
    CPU; on GPU torch uses :func:`get_swa_multi_avg_fn`, pass it to get that rounding).

    ``buffers`` are the model's non-trainable state (BatchNorm statistics:
    ``nnx.state(model, nnx.BatchStat)``). With ``use_buffers`` they are averaged with the
    params (and given to ``multi_avg_fn`` together with them, grouped by dtype as in
    torch); without it each update copies the model's buffers, as torch keeps them in
    sync. Both functions are pure and jit-able; ``update`` keeps the leaves' dtypes and
    shardings.

    Args:
      avg_fn: static; ``(averaged, current, n_averaged) -> new averaged`` for one leaf
        (e.g. :func:`get_ema_avg_fn`), written with ``jax.numpy``.
      multi_avg_fn: static; ``(averaged list, current list, n_averaged) -> new averaged
        list`` for the leaves of one dtype (e.g. :func:`get_ema_multi_avg_fn`); it returns
        the new values (torch's updates them in place).
      use_buffers: static; average the buffers too (default ``False``).

    Returns:
      :class:`AveragedModel` ``(init, update)``; the state is an
      :class:`AveragedModelState` (averaged ``params``, ``buffers``, ``n_averaged``:
      int64 with x64 on, as torch's long, else int32).

    Raises:
      ValueError: both ``avg_fn`` and ``multi_avg_fn`` given (torch: an assertion).
      TypeError: an averaging function that is not callable; at ``init``, a
        non-floating leaf in ``params`` (or ``buffers`` with ``use_buffers``).

    Example:
      >>> import jax.numpy as jnp
      >>> swa = averaged_model()
      >>> state = swa.init({"w": jnp.zeros(2)})
      >>> for value in (1.0, 2.0, 6.0):
      ...     state = swa.update(state, {"w": jnp.full(2, value)})
      >>> state.params["w"], state.n_averaged
      (Array([3., 3.], dtype=float32), Array(3, dtype=int32))

    References:
      Izmailov et al., "Averaging Weights Leads to Wider Optima and Better
      Generalization", UAI 2018; mirrors ``torch.optim.swa_utils.AveragedModel``
      (torch 2.13).
    """
    if avg_fn is not None and multi_avg_fn is not None:
        raise ValueError("Only one of avg_fn and multi_avg_fn should be provided")
    for name, fn in (("avg_fn", avg_fn), ("multi_avg_fn", multi_avg_fn)):
        if fn is not None and not callable(fn):
            raise TypeError(f"{name} should be a function, but got {type(fn).__name__}")
    if not isinstance(use_buffers, bool):
        raise TypeError(f"use_buffers should be a bool, but got {type(use_buffers).__name__}")

    def init_fn(params: Any, buffers: Any = None) -> AveragedModelState:
        _check_floating(params, "params")
        if use_buffers:
            _check_floating(buffers, "buffers")
        return AveragedModelState(
            params=jax.tree.map(jnp.copy, params),
            buffers=jax.tree.map(jnp.copy, buffers),
            n_averaged=jnp.zeros([], jnp.result_type(int)),
        )

    def update_fn(
        state: AveragedModelState, params: Any, buffers: Any = None
    ) -> AveragedModelState:
        _check_like(params, state.params, "params")
        _check_like(buffers, state.buffers, "buffers")
        averaged_trees = (state.params, state.buffers) if use_buffers else (state.params,)
        model_trees = (params, buffers) if use_buffers else (params,)
        averaged, treedef = jax.tree.flatten(averaged_trees)
        current = [jnp.asarray(c).astype(a.dtype)
                   for a, c in zip(averaged, jax.tree.leaves(model_trees), strict=True)]  # fmt: skip
        n = state.n_averaged
        new = jax.lax.cond(
            n == 0,
            lambda: current,
            lambda: _average(averaged, current, n, avg_fn, multi_avg_fn),
        )
        new_trees = jax.tree.unflatten(treedef, new)
        new_buffers = new_trees[1] if use_buffers else jax.tree.map(jnp.copy, buffers)
        return AveragedModelState(new_trees[0], new_buffers, n + 1)

    return AveragedModel(init_fn, update_fn)


# --------------------------------------------------------------------------------- SWALR


def _anneal(strategy: str, t: jax.Array) -> jax.Array:
    if strategy == "cos":
        return (1 - jnp.cos(math.pi * t)) / 2
    return t


def swa_lr(
    learning_rate: Any,
    swa_lr: Any,
    anneal_epochs: int = 10,
    anneal_strategy: Literal["cos", "linear"] = "cos",
) -> Schedule:
    r"""Anneal the lr to a fixed value (``torch.optim.swa_utils.SWALR``).

    With :math:`\eta_0` = ``learning_rate`` (the lr when SWALR starts stepping),
    :math:`\eta_s` = ``swa_lr`` and :math:`A` = ``anneal_epochs``:

    .. math::
      \eta_k = \eta_s\, \alpha_k + \eta_0 (1 - \alpha_k), \qquad
      \alpha_k = a\big(\min(1, k / \max(1, A))\big)

    with :math:`a(t) = (1 - \cos \pi t) / 2` (``"cos"``) or :math:`a(t) = t`
    (``"linear"``); with ``anneal_epochs=0`` the lr is :math:`\eta_s` from ``k = 0`` on,
    as torch sets it when the scheduler is built. ``schedule(k)`` is
    ``param_groups[0]["lr"]`` after ``k`` calls of ``SWALR.step()`` (torch recovers
    :math:`\eta_0` from the current lr at each step; the closed form agrees with it to
    4e-15 relative in float64). torch's ``swa_lr`` list (one value per param group) is one
    schedule per group here, e.g. per ``optax.partition`` label.

    SWALR usually takes over from a base schedule: torch's loop
    ``if epoch > swa_start: swa_scheduler.step() else: scheduler.step()`` (both stepped
    once per epoch, SWALR built on the same optimizer) is, with ``m = swa_start + 1``::

        optax.join_schedules([base, swa_lr(base(m), swa_lr=0.05)], boundaries=[m])

    called with the epoch count (``count // steps_per_epoch``). Inside
    :func:`~jaxopt_adv.torch.lr_compose.sequential_lr` it is torch's
    ``SequentialLR([..., SWALR])``: after a milestone it anneals from the lr it finds there
    (its ``learning_rate`` is not used), and in a
    :func:`~jaxopt_adv.torch.lr_compose.chained_scheduler` it anneals from the lr it finds
    at every step, as torch's SWALR.

    Args:
      learning_rate: the lr :math:`\eta_0` to anneal from, a number ``>= 0`` (not a
        schedule: compose as above).
      swa_lr: the final lr :math:`\eta_s`, ``>= 0``.
      anneal_epochs: static; steps of the annealing, an integer ``>= 0`` (default 10).
      anneal_strategy: static; ``"cos"`` (default) or ``"linear"``.

    Returns:
      A schedule ``count -> lr`` (float64 with x64 on).

    Example:
      >>> schedule = swa_lr(1.0, 0.5, anneal_epochs=2, anneal_strategy="linear")
      >>> [float(schedule(k)) for k in range(4)]
      [1.0, 0.75, 0.5, 0.5]

    References:
      Izmailov et al., "Averaging Weights Leads to Wider Optima and Better
      Generalization", UAI 2018; mirrors ``torch.optim.swa_utils.SWALR`` (torch 2.13).
    """
    if callable(learning_rate):
        raise TypeError(
            "swa_lr: learning_rate is the lr SWALR anneals from, a number; to follow a "
            "base schedule, compose with optax.join_schedules([base, swa_lr(base(m), ...)], [m])"
        )
    if callable(swa_lr):
        raise TypeError("swa_lr must be a number, not a schedule")
    check_learning_rate(learning_rate)
    check_learning_rate(swa_lr, "swa_lr")
    check(
        anneal_strategy in ("cos", "linear"),
        f"anneal_strategy must be one of 'cos' or 'linear', instead got {anneal_strategy!r}",
    )
    check_count(anneal_epochs, "anneal_epochs", 0)
    span = max(1, anneal_epochs)

    def schedule(count):
        k, _ = as_count(count)
        if anneal_epochs == 0:
            k = jnp.maximum(k, 1)
        t = jnp.clip(k.astype(scalar_dtype()) / span, 0.0, 1.0)
        alpha = _anneal(anneal_strategy, t)
        return swa_lr * alpha + learning_rate * (1 - alpha)

    def step(k: jax.Array, lr: jax.Array) -> jax.Array:
        # SWALR.get_lr: recover the lr it started from out of the current one, then anneal
        k = (jnp.maximum(k, 1) if anneal_epochs == 0 else k).astype(lr.dtype)
        before = _anneal(anneal_strategy, jnp.clip((k - 1) / span, 0.0, 1.0))
        done = before == 1
        start = jnp.where(done, swa_lr, (lr - before * swa_lr) / jnp.where(done, 1.0, 1 - before))
        alpha = _anneal(anneal_strategy, jnp.clip(k / span, 0.0, 1.0))
        return swa_lr * alpha + start * (1 - alpha)

    def restart(j: jax.Array, lr: jax.Array) -> jax.Array:
        # SequentialLR restarts SWALR at a milestone: it anneals from the lr it finds there
        j = (jnp.maximum(j, 1) if anneal_epochs == 0 else j).astype(lr.dtype)
        alpha = _anneal(anneal_strategy, jnp.clip(j / span, 0.0, 1.0))
        return swa_lr * alpha + lr * (1 - alpha)

    # in a chained_scheduler torch's SWALR moves the lr it finds (affinely), step by step;
    # after a milestone of a sequential_lr it anneals from the lr it finds there
    return with_rule(schedule, TorchRule("SWALR", step, product=False, restart=restart))


# ------------------------------------------------------------------------------ update_bn

_MODE_ATTRIBUTES = ("deterministic", "use_running_average")


def _batchnorm_layers(model: nnx.Module) -> list[nnx.Module]:
    return [
        node for _, node in nnx.iter_graph(model) if isinstance(node, (BatchNorm, nnx.BatchNorm))
    ]


def _overwrite_momentum(layer: nnx.Module) -> float:
    """The momentum that sets a layer's running statistics to the batch's: torch's
    convention (weight of the new value) for ours, the old value's weight for nnx's."""
    return 1.0 if isinstance(layer, BatchNorm) else 0.0


@nnx.jit
def _forward(model: nnx.Module, x: jax.Array) -> None:
    model(x)


def _statistics(layer: nnx.Module) -> tuple[jax.Array, jax.Array]:
    return layer.mean[...], layer.var[...]


def update_bn(loader: Iterable[Any], model: nnx.Module) -> None:
    r"""Recompute the BatchNorm running statistics with one pass over the data
    (``torch.optim.swa_utils.update_bn``).

    Every :class:`jaxopt_adv.models.BatchNorm` (and ``nnx.BatchNorm``) layer's running
    mean and variance are reset (0 and 1), then set to the cumulative average of the
    batch statistics of every batch in ``loader``, in training mode:
    :math:`r_i = (1 - 1/i)\, r_{i-1} + (1/i)\, s_i` (torch's ``momentum=None``; the
    variance averaged is each layer's own running one: unbiased for ours, biased for
    ``nnx.BatchNorm``). The model runs in training mode (``model.train()``, Dropout
    included, as in torch) and every layer's mode and momentum are restored afterwards.
    A model without BatchNorm is left untouched and not run. The forward pass is
    ``nnx.jit``-compiled (once per batch shape).

    Use it on the model that holds the averaged weights, e.g. after
    ``nnx.update(model, swa_state.params)``.

    Args:
      loader: an iterable of batches: arrays, or tuples/lists whose first element is the
        model's input.
      model: the NNX model, modified in place.

    Returns:
      ``None``.

    Example:
      >>> import jax.numpy as jnp
      >>> from flax import nnx
      >>> from jaxopt_adv.models import BatchNorm
      >>> bn = BatchNorm(1)
      >>> update_bn([jnp.array([[0.0], [2.0]]), (jnp.array([[4.0], [6.0]]), None)], bn)
      >>> bn.mean[...], bn.var[...]  # means 1 and 5, unbiased variances 2 and 2
      (Array([3.], dtype=float32), Array([2.], dtype=float32))
    """
    if not isinstance(model, nnx.Module):
        raise TypeError(f"model should be an nnx.Module, but got {type(model).__name__}")
    layers = _batchnorm_layers(model)
    if not layers:
        return
    modes = [
        (node, name, getattr(node, name))
        for _, node in nnx.iter_graph(model)
        if isinstance(node, nnx.Module)
        for name in _MODE_ATTRIBUTES
        if hasattr(node, name)
    ]
    momenta = [layer.momentum for layer in layers]
    for layer in layers:
        layer.mean[...] = jnp.zeros_like(layer.mean[...])
        layer.var[...] = jnp.ones_like(layer.var[...])
    averages = [_statistics(layer) for layer in layers]
    try:
        model.train()
        for layer in layers:
            layer.momentum = _overwrite_momentum(layer)
        for count, batch in enumerate(loader, start=1):
            x = batch[0] if isinstance(batch, (tuple, list)) else batch
            _forward(model, x)
            factor = 1.0 / count
            averages = [
                tuple((1 - factor) * old + factor * new
                      for old, new in zip(average, _statistics(layer), strict=True))
                for average, layer in zip(averages, layers, strict=True)
            ]  # fmt: skip
    finally:
        for layer, momentum, (mean, var) in zip(layers, momenta, averages, strict=True):
            layer.momentum = momentum
            layer.mean[...] = mean.astype(layer.mean[...].dtype)
            layer.var[...] = var.astype(layer.var[...].dtype)
        for node, name, value in modes:
            setattr(node, name, value)
