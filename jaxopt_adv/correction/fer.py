r"""FER, flipping-error reduction (Deng et al., AAAI 2022): a loss and a per-sample memory.

A *wrongly flipped* sample is one misclassified now that was classified correctly in an
earlier epoch; the paper finds that most last-epoch errors are such flips. FER is a
loss-level regulariser, not an update rule: for every training sample ``i`` that has
ever been classified correctly it distils the model towards ``s_i``, an exponentially
weighted average of the model's own past *correct* softened outputs. With 0-based epoch
``k`` (the paper's ``e = k + 1``), batch size ``B``, temperature ``T``::

  lam   = fer_weight * (k + 1) / num_epochs   if k >= warmup_epochs else 0
  KD_b  = T^2 * ( - sum_c s[i_b, c] * log_softmax(z_b / T)_c )
  L     = (1/B) sum_b [ c[i_b] * ((1 - lam) CE_b + lam KD_b) + (1 - c[i_b]) CE_b ]
  # then, from stop_gradient(z), in every epoch:
  correct_b = argmax(z_b) == y_b;   c[i_b] |= correct_b
  for correct b:  w_b = 1 - exp(-consistency_threshold * softmax(z_b)[y_b])
                  s[i_b] = (1 - w_b) s[i_b] + w_b softmax(z_b / T)

``s`` starts at 0 and is never renormalised. The memory is a fixed ``[memory_size,
num_classes]`` buffer in the optimizer state, written by :func:`fer_memory` from the
extra arguments ``logits=``, ``labels=``, ``indices=`` (the dataset indices of the
batch); :func:`fer_loss` reads it, *before* the update, together with the loss's
hyperparameters, which the state carries so that loss and memory always agree. A step::

  def loss_fn(params):
      logits = apply(params, x)
      return fer_loss(logits, y, idx, opt_state, epoch=epoch), logits

  (loss, logits), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
  updates, opt_state = tx.update(grads, opt_state, params, logits=logits, labels=y,
                                 indices=idx)

The data pipeline must yield each batch's dataset indices, unique within the batch (a
permutation sampler), with a fixed batch size.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import chex
import jax
import jax.numpy as jnp
import optax

from jaxopt_adv._common import (
    check,
    check_count,
    check_interval,
    check_nonnegative,
    check_positive,
    concrete_scalar,
    fresh_array,
    scalar_dtype,
)
from jaxopt_adv._state import find_state
from jaxopt_adv.torch.adam import adam

__all__ = [
    "FERState",
    "create_fer_optimizer",
    "distillation_loss",
    "fer",
    "fer_loss",
    "fer_memory",
    "fer_state",
    "fer_weight_at",
    "get_fer_stats",
    "write_memory",
]


class FERState(NamedTuple):
    """State of :func:`fer_memory`: the per-sample memory and the loss's hyperparameters."""

    count: chex.Array  # int32 scalar: batches recorded
    memory: chex.Array  # s, [memory_size, num_classes]: past correct softened outputs
    ever_correct: chex.Array  # c, bool [memory_size]
    batch_flips: chex.Array  # int32: wrongly flipped samples of the last batch
    batch_wrong: chex.Array  # int32: misclassified samples of the last batch
    fer_weight: chex.Array  # the hyperparameters fer_loss reads (as of the last update)
    temperature: chex.Array
    warmup_epochs: chex.Array  # int32
    num_epochs: chex.Array  # int32


# ----------------------------------------------------------------------- pure pieces


def fer_weight_at(epoch: Any, fer_weight: Any, warmup_epochs: Any, num_epochs: Any) -> chex.Array:
    """The KD weight ``lam`` of 0-based ``epoch``: 0 in the warm-up, then a linear ramp.

    ``fer_weight * (epoch + 1) / num_epochs`` (the official code's per-epoch ramp, with
    ``fer_weight`` in the role of its ``1 - gamma``).

    Example:
      >>> from jaxopt_adv.correction.fer import fer_weight_at
      >>> float(fer_weight_at(0, 0.9, 1, 10)), float(fer_weight_at(1, 0.9, 1, 10))
      (0.0, 0.18)
    """
    ramp = fer_weight * (jnp.asarray(epoch) + 1) / num_epochs
    return jnp.where(jnp.asarray(epoch) >= warmup_epochs, ramp, 0)


def distillation_loss(logits: chex.Array, soft_targets: chex.Array, temperature: Any) -> chex.Array:
    r"""Per-sample soft-target cross-entropy :math:`T^2 (-\sum_c s_c \log\mathrm{softmax}(z/T)_c)`.

    Its gradient equals the KL divergence's (:math:`T(\mathrm{softmax}(z/T) \sum_c s_c - s)`);
    the targets need not sum to 1 (FER's memory starts at 0).
    """
    log_probs = jax.nn.log_softmax(logits / temperature, axis=-1)
    return -(temperature**2) * jnp.sum(soft_targets * log_probs, axis=-1)


def write_memory(
    memory: chex.Array,
    ever_correct: chex.Array,
    logits: chex.Array,
    labels: chex.Array,
    indices: chex.Array,
    *,
    consistency_threshold: Any,
    temperature: Any,
) -> tuple[chex.Array, chex.Array, chex.Array, chex.Array]:
    """Record a batch: ``(memory, ever_correct, flips, wrong)`` after it.

    ``flips`` counts the batch's samples that were ever correct before this batch and are
    wrong now (read before the flags are or-ed in), ``wrong`` its misclassified samples.
    A row of ``logits`` that is not finite counts as misclassified and writes nothing.
    Indices ``>= memory_size`` read an empty slot and write nothing (negative ones count
    from the end, as in NumPy).

    Example:
      >>> import jax.numpy as jnp
      >>> from jaxopt_adv.correction.fer import write_memory
      >>> memory, flags = jnp.zeros((4, 2)), jnp.zeros(4, bool)
      >>> logits, labels = jnp.array([[1.0, 0.0], [1.0, 0.0]]), jnp.array([0, 1])
      >>> memory, flags, flips, wrong = write_memory(
      ...     memory, flags, logits, labels, jnp.array([2, 0]),
      ...     consistency_threshold=0.9, temperature=1.0)
      >>> memory[2], int(wrong)
      (Array([0.3524..., 0.1296...], dtype=float32), 1)
      >>> flags
      Array([False, False,  True, False], dtype=bool)
    """
    z = jax.lax.stop_gradient(logits).astype(memory.dtype)
    correct = (jnp.argmax(z, axis=-1) == labels) & jnp.all(jnp.isfinite(z), axis=-1)
    flags = ever_correct.at[indices].get(mode="fill", fill_value=False)
    flips = jnp.sum(flags & ~correct, dtype=jnp.int32)
    wrong = jnp.sum(~correct, dtype=jnp.int32)
    p_label = jnp.take_along_axis(jax.nn.softmax(z, axis=-1), labels[:, None], axis=-1)
    write = -jnp.expm1(-consistency_threshold * p_label)  # w = 1 - exp(-mu p_y)
    rows = memory.at[indices].get(mode="fill", fill_value=0)
    blended = (1 - write) * rows + write * jax.nn.softmax(z / temperature, axis=-1)
    rows = jnp.where(correct[:, None], blended, rows).astype(memory.dtype)
    memory = memory.at[indices].set(rows, mode="drop")
    ever_correct = ever_correct.at[indices].set(flags | correct, mode="drop")
    return memory, ever_correct, flips, wrong


# ---------------------------------------------------------------------- state access


def fer_state(opt_state: Any) -> FERState:
    """The :class:`FERState` inside an optimizer state (``fer``, ``chain``, wrappers).

    Raises:
      ValueError: when there is none.
    """
    return find_state(opt_state, FERState, " (build it with jaxopt_adv.fer)")


def fer_loss(
    logits: chex.Array,
    labels: chex.Array,
    indices: chex.Array,
    opt_state: Any,
    *,
    epoch: Any,
) -> chex.Array:
    r"""The FER training loss of a batch, read from the memory before this step's update.

    .. math::
      L = \frac{1}{B} \sum_b \big[ c_{i_b} ((1 - \lambda) CE_b + \lambda KD_b)
          + (1 - c_{i_b}) CE_b \big]

    with :math:`\lambda` = :func:`fer_weight_at` and :math:`KD_b` =
    :func:`distillation_loss` of the memory rows (the module docstring has the whole
    rule). During the warm-up epochs it is the mean cross-entropy. The weights, the
    temperature and the epoch counts are the ones the optimizer was built with, held in
    its state (under ``optax.inject_hyperparams``: the values of the last update).
    Computed in the wider of the logits' and the memory's dtypes.

    Args:
      logits: ``[B, num_classes]`` logits of the batch (differentiate through them).
      labels: ``[B]`` integer labels.
      indices: ``[B]`` dataset indices of the batch, unique within it.
      opt_state: the state of a :func:`fer` optimizer (or its :class:`FERState`).
      epoch: 0-based index of the current epoch (may be traced).

    Returns:
      The scalar loss.

    Example:
      >>> import jax.numpy as jnp, optax
      >>> import jaxopt_adv
      >>> from jaxopt_adv.correction import fer_loss
      >>> tx = jaxopt_adv.fer(optax.sgd(0.1), num_classes=3, memory_size=10, num_epochs=5)
      >>> state = tx.init(jnp.zeros(2))
      >>> logits, labels, idx = jnp.array([[2.0, 0.5, -1.0]]), jnp.array([0]), jnp.array([3])
      >>> fer_loss(logits, labels, idx, state, epoch=0)
      Array(0.2413..., dtype=float32)
    """
    state = fer_state(opt_state)
    dtype = jnp.promote_types(jnp.result_type(logits), state.memory.dtype)
    z = logits.astype(dtype)
    targets = state.memory.at[indices].get(mode="fill", fill_value=0).astype(dtype)
    flags = state.ever_correct.at[indices].get(mode="fill", fill_value=False)
    lam = fer_weight_at(epoch, state.fer_weight, state.warmup_epochs, state.num_epochs)
    weight = jnp.where(flags, lam, 0).astype(dtype)
    ce = optax.softmax_cross_entropy_with_integer_labels(z, labels)
    kd = distillation_loss(z, targets, state.temperature.astype(dtype))
    return jnp.mean((1 - weight) * ce + weight * kd)


def get_fer_stats(opt_state: Any) -> dict[str, chex.Array]:
    """Diagnostics of a FER optimizer state, as jnp scalars (no printing, jit-able).

    Returns:
      * ``frac_ever_correct``: fraction of memory slots ever classified correctly;
      * ``memory_confidence``: mean over slots of ``max_c s`` (never-written slots count
        as 0, so it grows with coverage too);
      * ``batch_wrongly_flipped``: the last batch's wrongly flipped samples;
      * ``flip_rate``: those over the last batch's misclassified samples (at least 1),
        the batch analogue of the paper's relative flipping error.
    """
    state = fer_state(opt_state)
    return {
        "frac_ever_correct": jnp.mean(state.ever_correct.astype(state.memory.dtype)),
        "memory_confidence": jnp.mean(jnp.max(state.memory, axis=-1)),
        "batch_wrongly_flipped": state.batch_flips,
        "flip_rate": state.batch_flips / jnp.maximum(state.batch_wrong, 1),
    }


# -------------------------------------------------------------------------- blocks


def _check_fer_args(
    num_classes: Any,
    memory_size: Any,
    num_samples: Any,
    num_epochs: Any,
    fer_weight: Any,
    consistency_threshold: Any,
    temperature: Any,
    warmup_epochs: Any,
) -> None:
    check_count(num_classes, "num_classes")
    if num_samples is not None:  # first: memory_size defaults to it
        check_count(num_samples, "num_samples")
    check_count(memory_size, "memory_size")
    check_count(num_epochs, "num_epochs")
    check_interval(fer_weight, "fer_weight", 0.0, 1.0)
    check_nonnegative(consistency_threshold, "consistency_threshold")
    check_positive(temperature, "temperature")
    check_count(warmup_epochs, "warmup_epochs", minimum=0)
    epochs = concrete_scalar(num_epochs)
    if epochs is not None:  # a warm-up of every epoch would leave FER off
        check_interval(warmup_epochs, "warmup_epochs", 0, epochs, high_open=True)
    if concrete_scalar(num_samples) is not None and concrete_scalar(memory_size) is not None:
        check(
            memory_size >= num_samples,
            f"memory_size={memory_size} is smaller than the dataset ({num_samples} "
            "samples): FER keeps one memory slot per training sample (memory_size must be "
            ">= num_samples)",
        )


def fer_memory(
    num_classes: int,
    memory_size: int,
    *,
    num_epochs: int,
    fer_weight: Any = 0.1,
    consistency_threshold: Any = 0.9,
    temperature: Any = 5.0,
    warmup_epochs: int = 1,
    num_samples: int | None = None,
    memory_dtype: Any = None,
) -> optax.GradientTransformationExtraArgs:
    """FER's per-sample memory as a pass-through block (updates leave it unchanged).

    ``update(updates, state, params=None, *, logits, labels, indices)`` records the batch
    with :func:`write_memory` and stores the loss's hyperparameters for :func:`fer_loss`.
    :func:`fer` chains it after a base optimizer; see there for the arguments.

    Example:
      >>> import jax.numpy as jnp
      >>> from jaxopt_adv.correction import fer_memory
      >>> block = fer_memory(3, 10, num_epochs=5)
      >>> state = block.init({"w": jnp.zeros(2)})
      >>> state.memory.shape, state.ever_correct.shape
      ((10, 3), (10,))
    """
    _check_fer_args(
        num_classes,
        memory_size,
        num_samples,
        num_epochs,
        fer_weight,
        consistency_threshold,
        temperature,
        warmup_epochs,
    )
    memory_dtype = None if memory_dtype is None else jnp.dtype(memory_dtype)

    def loss_hyperparams(dtype: Any) -> dict[str, chex.Array]:
        return {
            "fer_weight": fresh_array(fer_weight, dtype),
            "temperature": fresh_array(temperature, dtype),
            "warmup_epochs": fresh_array(warmup_epochs, jnp.int32),
            "num_epochs": fresh_array(num_epochs, jnp.int32),
        }

    def init_fn(params: optax.Params) -> FERState:
        dtype = memory_dtype
        if dtype is None:
            dtype = scalar_dtype(optax.tree.dtype(params, "promote"))
        return FERState(
            count=jnp.zeros([], jnp.int32),
            memory=jnp.zeros((int(memory_size), int(num_classes)), dtype),
            ever_correct=jnp.zeros(int(memory_size), bool),
            batch_flips=jnp.zeros([], jnp.int32),
            batch_wrong=jnp.zeros([], jnp.int32),
            **loss_hyperparams(scalar_dtype(dtype)),
        )

    def update_fn(
        updates, state, params=None, *, logits=None, labels=None, indices=None, **extra_args
    ):
        del params, extra_args
        if logits is None or labels is None or indices is None:
            raise ValueError("fer needs the extra arguments logits=, labels= and indices=")
        memory, ever_correct, flips, wrong = write_memory(
            state.memory,
            state.ever_correct,
            logits,
            labels,
            indices,
            consistency_threshold=consistency_threshold,
            temperature=temperature,
        )
        new_state = FERState(
            optax.safe_increment(state.count),
            memory,
            ever_correct,
            flips,
            wrong,
            **loss_hyperparams(state.fer_weight.dtype),
        )
        return updates, new_state

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def fer(
    base: optax.GradientTransformation,
    *,
    num_classes: int,
    memory_size: int,
    num_epochs: int,
    fer_weight: Any = 0.1,
    consistency_threshold: Any = 0.9,
    temperature: Any = 5.0,
    warmup_epochs: int = 1,
    num_samples: int | None = None,
    memory_dtype: Any = None,
) -> optax.GradientTransformationExtraArgs:
    """FER: ``base`` unchanged, plus the per-sample memory that :func:`fer_loss` reads.

    ``optax.chain(base, fer_memory(...))``. Its ``update`` needs the extra arguments
    ``logits=`` (the batch's logits from the train-mode forward pass that gave the
    gradients), ``labels=`` and ``indices=`` (dataset indices, unique in the batch), and
    raises ``ValueError`` without them. The memory is written in every epoch, the warm-up
    included.

    Args:
      base: the optimizer that turns gradients into updates.
      num_classes: static; number of classes ``C``.
      memory_size: static; slots ``N`` of the ``[N, C]`` memory, ``>=`` the number of
        training samples (indices index it).
      num_epochs: the training run's epochs ``E`` (the ramp reaches ``fer_weight`` at
        the last epoch).
      fer_weight: final KD weight ``lam_max`` in ``[0, 1]``; the paper's setting is 0.9
        (its ``1 - gamma``), the ``advanced_optimizers`` torch package's default 0.1
        is a 9x weaker variant.
      consistency_threshold: memory write strength ``mu >= 0``:
        ``w = 1 - exp(-mu p_y)`` (the paper's ``mu``, default 0.9).
      temperature: softening temperature ``T > 0`` (the paper's ``kd_T``, 5).
      warmup_epochs: epochs of plain cross-entropy first (the paper's ``init``, 1), in
        ``[0, num_epochs)``.
      num_samples: static, optional; the training set's size, to check ``memory_size``.
      memory_dtype: dtype of the memory (default float32, float64 for float64 params).

    Returns:
      An ``optax.GradientTransformationExtraArgs``; its state is ``(base_state,
      FERState)``.

    Raises:
      ValueError: for an argument out of range, or ``memory_size < num_samples``.

    Example:
      >>> import jax.numpy as jnp, optax
      >>> import jaxopt_adv
      >>> tx = jaxopt_adv.fer(optax.adam(1e-3), num_classes=3, memory_size=10, num_epochs=5)
      >>> state = tx.init({"w": jnp.zeros(2)})
      >>> logits, labels, idx = jnp.array([[2.0, 0.5, -1.0]]), jnp.array([0]), jnp.array([3])
      >>> updates, state = tx.update({"w": jnp.ones(2)}, state, logits=logits, labels=labels,
      ...                            indices=idx)
      >>> jaxopt_adv.correction.get_fer_stats(state)["frac_ever_correct"]
      Array(0.1, dtype=float32)

    References:
      Deng, Xiao, Long, Zhang, "Reducing Flipping Errors in Deep Neural Networks",
      AAAI 2022 (arXiv 2203.08390); the math of ``train_fer`` in the official code,
      ``Xiang-Deng-DL/FER`` (``helper/loops.py``).

    Warning:
      * A NaN/Inf gradient goes through ``base`` as it would without FER (non-finite
        updates and base state); the memory is written from the logits alone. Under
        ``optax.apply_if_finite`` such a step is skipped and the whole state, memory
        included, is left unchanged: that batch is not recorded.
      * Under ``optax.MultiSteps(k)`` only every k-th mini-batch reaches the memory.
      * The "FER" of the ``advanced_optimizers`` torch package (cosines against a memory
        of past gradients) is a different, unrelated heuristic and is not reproduced.
    """
    return optax.chain(
        base,
        fer_memory(
            num_classes,
            memory_size,
            num_epochs=num_epochs,
            fer_weight=fer_weight,
            consistency_threshold=consistency_threshold,
            temperature=temperature,
            warmup_epochs=warmup_epochs,
            num_samples=num_samples,
            memory_dtype=memory_dtype,
        ),
    )


def create_fer_optimizer(
    learning_rate: optax.ScalarOrSchedule = 1e-3,
    fer_weight: Any = 0.1,
    *,
    num_classes: int,
    num_samples: int,
    num_epochs: int,
    base_optimizer: Callable[[optax.ScalarOrSchedule], optax.GradientTransformation] | None = None,
    memory_size: int | None = None,
    consistency_threshold: Any = 0.9,
    temperature: Any = 5.0,
    warmup_epochs: int = 1,
    memory_dtype: Any = None,
) -> optax.GradientTransformationExtraArgs:
    """FER around a base optimizer built from ``learning_rate`` (a torch factory's shape).

    ``fer(base_optimizer(learning_rate), ...)`` with one memory slot per training sample
    (``memory_size`` defaults to ``num_samples``); train with :func:`fer_loss` and pass
    ``logits=``, ``labels=``, ``indices=`` to ``update`` (see the module docstring).

    Args:
      learning_rate: scalar or schedule of the base optimizer (torch's ``lr``).
      fer_weight: see :func:`fer`.
      num_classes: static; number of classes.
      num_samples: static; size of the training set.
      num_epochs: epochs of the training run.
      base_optimizer: ``learning_rate -> optax transform`` (the torch
        factory's ``base_optimizer_class``); default ``jaxopt_adv.torch.adam``, i.e.
        ``torch.optim.Adam``, the torch factory's documented default.
      memory_size: static; at least ``num_samples`` (default: ``num_samples``).
      consistency_threshold, temperature, warmup_epochs, memory_dtype: see :func:`fer`.

    Returns:
      The :func:`fer` transform.

    Raises:
      ValueError: ``memory_size < num_samples`` (the torch factory's default of 1000
        slots is too small for MNIST), or another argument out of range.

    Example:
      >>> import jaxopt_adv
      >>> tx = jaxopt_adv.create_fer_optimizer(
      ...     1e-3, 0.1, num_classes=10, num_samples=4000, num_epochs=5)
      >>> jaxopt_adv.create_fer_optimizer(
      ...     num_classes=10, num_samples=60000, num_epochs=5, memory_size=1000)
      Traceback (most recent call last):
      ...
      ValueError: memory_size=1000 is smaller than the dataset (60000 samples): ...

    References:
      Deng et al., "Reducing Flipping Errors in Deep Neural Networks", AAAI 2022 (see
      :func:`fer`); the default base mirrors ``torch.optim.Adam`` (torch 2.13).

    Warning:
      The ``advanced_optimizers`` torch package's ``create_fer_optimizer(params,
      base_optimizer_class, lr, fer_weight, ...)`` takes the parameters: in JAX they go to
      ``init``. Its default of 1000 memory slots holds a memory of past *gradients*; here
      ``memory_size`` counts training samples.
    """
    base = adam if base_optimizer is None else base_optimizer
    return fer(
        base(learning_rate),
        num_classes=num_classes,
        memory_size=num_samples if memory_size is None else memory_size,
        num_epochs=num_epochs,
        fer_weight=fer_weight,
        consistency_threshold=consistency_threshold,
        temperature=temperature,
        warmup_epochs=warmup_epochs,
        num_samples=num_samples,
        memory_dtype=memory_dtype,
    )
