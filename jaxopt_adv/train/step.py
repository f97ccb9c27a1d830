"""A jitted, donated train step for Flax NNX models.

The model is split once (``nnx.split``) into a static graph definition, its parameters
and the rest of its state (BatchNorm statistics, RNG counters); the step is a pure
function of ``TrainState`` that merges them back inside ``jax.jit``. The whole state is
donated, so parameters and optimizer state are updated in place (a jitted optax step
without donation is several times slower on CPU); ``keep_unused=True`` keeps the
donation of state leaves the step does not read.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import chex
import jax
import jax.numpy as jnp
import optax
from flax import nnx
from flax.nnx.filterlib import Filter

from jaxopt_adv.fast import FusedOptimizer

__all__ = [
    "TrainState",
    "init_train_state",
    "make_eval_step",
    "make_train_step",
    "merge_into",
    "split_model",
]

LossFn = Callable[[nnx.Module, Any], tuple[jax.Array, dict[str, jax.Array]]]


class TrainState(NamedTuple):
    """Everything a training run carries from step to step (all arrays)."""

    step: chex.Array  # int32 scalar: updates taken
    params: Any  # the model's nnx.Param state, as a pure tree
    rest: Any  # the model's other state (batch statistics, RNG state), as a pure tree
    opt_state: optax.OptState


def split_model(model: nnx.Module, wrt: Filter = nnx.Param) -> tuple[nnx.GraphDef, Any, Any]:
    """``(graphdef, params, rest)`` with params and rest as pure array trees.

    ``wrt`` selects the trained variables (default every ``nnx.Param``; ``nnx.LoRAParam``
    trains only LoRA adapters and leaves the base weights in ``rest``, frozen).
    """
    graphdef, params, rest = nnx.split(model, wrt, ...)
    return graphdef, nnx.as_pure(params), nnx.as_pure(rest)


def init_train_state(
    model: nnx.Module, tx: optax.GradientTransformation | FusedOptimizer, wrt: Filter = nnx.Param
) -> TrainState:
    """The initial ``TrainState`` of ``model`` under optimizer ``tx``, training ``wrt``.

    The state holds copies of the model's arrays: the train step donates (deletes) its
    input state, and the model must stay usable until :func:`merge_into` writes back.
    """
    _, params, rest = jax.tree.map(jnp.copy, split_model(model, wrt))
    return TrainState(jnp.zeros([], jnp.int32), params, rest, tx.init(params))


def merge_into(model: nnx.Module, state: TrainState) -> None:
    """Write the state's parameters and other model state back into ``model``."""
    nnx.update(model, state.params, state.rest)


def _find_learning_rate(opt_state: Any) -> jax.Array | None:
    """The ``learning_rate`` hyperparameter of an ``inject_hyperparams`` state, if any."""

    def injected(node: Any) -> bool:
        return isinstance(getattr(node, "hyperparams", None), dict)

    for node in jax.tree.leaves(opt_state, is_leaf=injected):
        if injected(node) and "learning_rate" in node.hyperparams:
            return node.hyperparams["learning_rate"]
    return None


def make_train_step(
    graphdef: nnx.GraphDef,
    loss_fn: LossFn,
    tx: optax.GradientTransformation | FusedOptimizer,
    *,
    learning_rate: optax.ScalarOrSchedule | None = None,
    wrt: Filter = nnx.Param,
) -> Callable[[TrainState, Any], tuple[TrainState, dict[str, jax.Array]]]:
    """Build ``step(state, batch) -> (state, metrics)``, jitted with the state donated.

    Args:
      graphdef: the model's graph definition (from :func:`split_model`).
      loss_fn: ``loss_fn(model, batch) -> (loss, aux)`` where ``aux`` is a dict of
        scalar metrics (e.g. ``accuracy``); the model is in whatever train/eval mode it
        was split in.
      tx: the optimizer. It receives the loss as the extra argument ``value=`` (used by
        plateau schedulers, ignored by the others). Prepend a clipping transform with
        ``optax.chain`` to clip. A :class:`jaxopt_adv.fast.FusedOptimizer` (from
        ``jaxopt_adv.fast.fused``) applies its update in one fused pass per leaf,
        bit-identical to its optax transform.
      learning_rate: optional scalar or schedule, only to report ``lr`` in the metrics
        (otherwise it is read from an ``optax.inject_hyperparams`` state when present).
      wrt: the filter the state was split with (see :func:`split_model`).

    Returns:
      The jitted step. ``metrics`` holds ``loss``, ``grad_norm`` (global L2 norm of the
      raw gradients), ``lr`` (NaN when unknown) and the entries of ``aux``.

    Example:
      >>> import jax.numpy as jnp, optax
      >>> from flax import nnx
      >>> from jaxopt_adv.train import init_train_state, make_train_step, split_model
      >>> model = nnx.Linear(2, 1, rngs=nnx.Rngs(0))
      >>> tx = optax.sgd(0.1)
      >>> def loss_fn(m, batch):
      ...     x, y = batch
      ...     return jnp.mean((m(x) - y) ** 2), {}
      >>> step = make_train_step(split_model(model)[0], loss_fn, tx)
      >>> state, metrics = step(init_train_state(model, tx), (jnp.ones((4, 2)), jnp.zeros((4, 1))))
      >>> int(state.step), sorted(metrics)
      (1, ['grad_norm', 'loss', 'lr'])
    """

    def step(state: TrainState, batch: Any) -> tuple[TrainState, dict[str, jax.Array]]:
        def compute_loss(params):
            model = nnx.merge(graphdef, params, state.rest)
            loss, aux = loss_fn(model, batch)
            _, _, rest = split_model(model, wrt)
            return loss, (aux, rest)

        (loss, (aux, rest)), grads = jax.value_and_grad(compute_loss, has_aux=True)(state.params)
        if isinstance(tx, FusedOptimizer):
            params, opt_state = tx.step(state.params, grads, state.opt_state)
        else:
            updates, opt_state = tx.update(grads, state.opt_state, state.params, value=loss)
            params = optax.apply_updates(state.params, updates)
        if learning_rate is None:
            lr = _find_learning_rate(opt_state)  # holds the value this update used
        else:
            lr = learning_rate(state.step) if callable(learning_rate) else learning_rate
        metrics = {
            "loss": loss,
            "grad_norm": optax.tree.norm(grads),
            "lr": jnp.asarray(jnp.nan if lr is None else lr, jnp.float32),
            **aux,
        }
        new_state = TrainState(optax.safe_increment(state.step), params, rest, opt_state)
        return new_state, metrics

    return jax.jit(step, donate_argnums=0, keep_unused=True)


def make_eval_step(
    graphdef: nnx.GraphDef, loss_fn: LossFn
) -> Callable[[TrainState, Any], dict[str, jax.Array]]:
    """Build a jitted ``eval_step(state, batch) -> metrics`` (no update, no donation).

    The model is merged and switched to evaluation mode (``model.eval()``: dropout off,
    BatchNorm on running statistics) before ``loss_fn`` runs.
    """

    def step(state: TrainState, batch: Any) -> dict[str, jax.Array]:
        model = nnx.merge(graphdef, state.params, state.rest)
        model.eval()
        loss, aux = loss_fn(model, batch)
        return {"loss": loss, **aux}

    return jax.jit(step)
