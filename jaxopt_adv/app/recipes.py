"""How ``jaxopt-adv compare`` trains each optimizer: its model, loss and update arguments.

Most optimizers need only gradients: they train the configured model (the MLP
784-512-256-10 or the small CNN, dropout off) on the mean cross-entropy. The others get
what they are built for, at the same widths:

* ``fer`` (Deng et al., AAAI 2022): the FER loss (:func:`jaxopt_adv.correction.fer_loss`),
  with the batch's logits, labels and dataset indices passed to ``update``;
* ``sigprop`` (Kohan et al., IEEE TNNLS 2023): a :class:`~jaxopt_adv.local.SigPropNet`
  of the same hidden widths trained on its local losses plus the head's cross-entropy;
* ``mu_adam``, ``mu_adamw``, ``mu_sgd`` (Tensor Programs V): the muP MLP
  (:class:`~jaxopt_adv.mup.MuMLP`, readout at zero, ``mup_rescale_init``) whose base
  shape has every hidden layer at the narrowest width;
* ``localized_learning`` (not a registry name: it wraps a base optimizer): a
  :class:`~jaxopt_adv.local.LocalizedMLP` trained as ``examples/local_rules.py`` does:
  every layer by SGD with momentum 0.9 for the first 80% of the epochs, then the first
  hidden layer by Oja's rule (``hebbian_lr`` 1e-4), the rest by SGD. LoCal+SGD localizes a
  layer once SGD has trained it; Oja's rule from the random initialisation drives the
  first layer's units towards the inputs' dominant direction, their outputs grow and the
  SGD layers above diverge (chance accuracy on mnist5k);
* ``torch.lbfgs``: full batch, as L-BFGS is meant to run: one ``torch.optim.LBFGS.step``
  per epoch, strong Wolfe line search, 5 iterations (``max_iter``; torch's 20 make each
  epoch cost some 20 passes over the data for each rate of a grid);
* ``torch.muon``: ``torch.optim.Muon`` on the 2-D leaves (the kernels), AdamW (lr 1e-3,
  weight decay 0.01) on the rest through ``optax.partition``, as Muon's users pair them.

A :class:`Recipe` is independent of the seed and of the learning rate, so that the
compiled training program of :mod:`jaxopt_adv.app.compare` serves every seed and every
rate of a grid.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from jaxopt_adv import torch as torch_exact
from jaxopt_adv.automagic import AutomagicConfig
from jaxopt_adv.correction import create_fer_optimizer, fer_loss
from jaxopt_adv.datasets import Dataset
from jaxopt_adv.local import (
    LocalizedMLP,
    SigPropNet,
    create_localized_optimizer,
    set_boundary,
    sigprop_optimizer,
)
from jaxopt_adv.models import MLP, SmallCNN
from jaxopt_adv.mup import MuMLP, infer_infshapes, mu_adam, mu_adamw, mu_sgd, mup_rescale_init
from jaxopt_adv.registry import describe, get_optimizer, list_optimizers

__all__ = [
    "EXTRA_ROWS",
    "MLP_HIDDEN",
    "Batch",
    "Recipe",
    "all_names",
    "cannot_run",
    "family",
    "make_recipe",
]

MLP_HIDDEN = (512, 256)  # 784-512-256-10, the classic MNIST MLP
# compare rows that are not registry names (or not yet): name -> family
EXTRA_ROWS = {
    "localized_learning": "local",
    "torch.lbfgs": "torch-exact",
}
MUP = {"mu_adam": mu_adam, "mu_adamw": mu_adamw, "mu_sgd": mu_sgd}
LBFGS_ITERATIONS = 5  # per step, one step per epoch
# localized_learning as examples/local_rules.py trains it: the first hidden layer switches
# from SGD to Oja's rule at this fraction of the epochs
LOCALIZED_SWITCH = 0.8
HEBBIAN_LEARNING_RATE = 1e-4
MLP_ONLY = ("localized_learning", *MUP)
# Settings other than the learning rate (the learning rate comes from compare's table or
# its grid). The LoRA preset's rank penalty of automagic_came_amp (an eigendecomposition
# per matrix per step) is for adapters, not for training a model from scratch.
SETTINGS: dict[str, dict[str, Any]] = {
    "torch.sgd": {"momentum": 0.9},
    "torch.adamw": {"weight_decay": 1e-2},
    "automagic_came_amp": {"config": AutomagicConfig(lora_rank_penalty=False)},
}

# (x, y, dataset indices, 0-based epoch) of one step
Batch = tuple[jax.Array, jax.Array, jax.Array, jax.Array]


@dataclasses.dataclass(frozen=True)
class Recipe:
    """What training one optimizer needs, for any seed and learning rate.

    Attributes:
      build: ``seed -> model`` with initial weights drawn from the seed (a fresh NNX module).
      optimizer: ``learning_rate -> transform`` (the rate may be traced: it is vmapped).
      loss: ``(model, opt_state, batch) -> (loss, aux)``; ``aux`` holds ``logits`` and
        whatever :attr:`extra_args` reads.
      logits: ``(model, x) -> logits`` for evaluation.
      extra_args: ``(loss, aux, batch, value_fn) -> kwargs`` of ``update``;
        ``value_fn(params)`` is the batch loss at other parameters (L-BFGS's closure).
      prepare: applied once to the initial parameters (muP's rescaled init).
      at_epoch_start: ``(opt_state, epoch) -> opt_state`` before every epoch (``epoch``
        0-based and traced: localized learning's boundary schedule).
      full_batch: one step per epoch on the whole training split.
    """

    build: Callable[[int], nnx.Module]
    optimizer: Callable[[Any], optax.GradientTransformation]
    loss: Callable[[nnx.Module, Any, Batch], tuple[jax.Array, dict[str, Any]]]
    logits: Callable[[nnx.Module, jax.Array], jax.Array]
    extra_args: Callable[..., dict[str, Any]]
    prepare: Callable[[Any], Any] = lambda params: params
    at_epoch_start: Callable[[Any, jax.Array], Any] = lambda opt_state, epoch: opt_state
    full_batch: bool = False


def family(name: str) -> str:
    """The family column of ``name`` (a registry name or one of :data:`EXTRA_ROWS`)."""
    return EXTRA_ROWS[name] if name in EXTRA_ROWS else describe(name).family


def all_names() -> list[str]:
    """Every name ``--optimizers all`` trains: the registry and :data:`EXTRA_ROWS`."""
    return sorted({*list_optimizers(), *EXTRA_ROWS})


def cannot_run(name: str, model: str) -> str | None:
    """Why ``name`` cannot train ``model`` (``None``: it can)."""
    if model != "mlp" and name in MLP_ONLY:
        return f"it trains an MLP of its own (run it with --model mlp, not {model})"
    return None


def cross_entropy(logits: jax.Array, y: jax.Array) -> jax.Array:
    """Mean cross-entropy (``F.cross_entropy``)."""
    return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()


def _plain_loss(model: nnx.Module, opt_state: Any, batch: Batch):
    logits = model(batch[0])
    return cross_entropy(logits, batch[1]), {"logits": logits}


def _value(loss, aux, batch, value_fn) -> dict[str, Any]:
    """The loss as ``value=`` (plateau schedules read it; the others ignore it)."""
    return {"value": loss}


def _model_inputs(data: Dataset, model: str) -> tuple[int, tuple[int, int] | None]:
    """(input features or channels, image size or ``None``) of the configured model."""
    if model == "mlp":
        return data.x_train.shape[1], None
    return 1, data.image_shape


def cnn_channels(data: Dataset) -> tuple[int, ...]:
    """Two conv blocks for 28x28 MNIST, one for 8x8 digits."""
    return (8, 16) if data.image_shape[0] >= 16 else (16,)


def _standard(name: str, data: Dataset, model: str) -> Recipe:
    """The configured model on the cross-entropy; ``name`` needs only gradients."""
    factory, settings = get_optimizer(name), SETTINGS.get(name, {})
    features, classes = data.x_train.shape[1], data.num_classes

    def build(seed: int) -> nnx.Module:
        rngs = nnx.Rngs(seed)
        if model == "mlp":
            return MLP(features, MLP_HIDDEN, classes, dropout_rate=0.0, rngs=rngs)
        size = data.image_shape[0]
        return SmallCNN(1, cnn_channels(data), classes, image_size=size, rngs=rngs)

    return Recipe(
        build=build,
        optimizer=lambda lr: factory(learning_rate=lr, **settings),
        loss=_plain_loss,
        logits=lambda m, x: m(x),
        extra_args=_value,
    )


def _fer(data: Dataset, model: str, num_samples: int, epochs: int) -> Recipe:
    plain = _standard("torch.adam", data, model)

    def loss(m: nnx.Module, opt_state: Any, batch: Batch):
        logits = m(batch[0])
        return fer_loss(logits, batch[1], batch[2], opt_state, epoch=batch[3]), {"logits": logits}

    def optimizer(lr: Any) -> optax.GradientTransformation:
        return create_fer_optimizer(
            lr, num_classes=data.num_classes, num_samples=num_samples, num_epochs=epochs
        )

    return dataclasses.replace(
        plain,
        optimizer=optimizer,
        loss=loss,
        extra_args=lambda loss, aux, b, f: {
            "logits": aux["logits"],
            "labels": b[1],
            "indices": b[2],
        },
    )


def _sigprop(data: Dataset, model: str) -> Recipe:
    features, size = _model_inputs(data, model)
    hidden = MLP_HIDDEN if size is None else cnn_channels(data)

    def build(seed: int) -> nnx.Module:
        return SigPropNet(features, hidden, data.num_classes, image_size=size, rngs=nnx.Rngs(seed))

    def loss(m: nnx.Module, opt_state: Any, batch: Batch):
        return m.loss(batch[0], batch[1]), {}

    return Recipe(
        build=build,
        optimizer=lambda lr: sigprop_optimizer(lr),
        loss=loss,
        logits=lambda m, x: m(x)[0],
        extra_args=_value,
    )


def _mup(name: str, data: Dataset) -> Recipe:
    features, classes = data.x_train.shape[1], data.num_classes
    base_width = min(MLP_HIDDEN)
    width_mult = MLP_HIDDEN[-1] / base_width

    def muMLP(hidden: tuple[int, ...], seed: int) -> MuMLP:  # noqa: N802
        return MuMLP(
            features, hidden, classes, width_mult=width_mult if hidden == MLP_HIDDEN else 1.0,
            readout_zero_init=True, rngs=nnx.Rngs(seed),
        )  # fmt: skip

    base = jax.eval_shape(lambda: nnx.state(muMLP((base_width,) * len(MLP_HIDDEN), 0), nnx.Param))
    target = jax.eval_shape(lambda: nnx.state(muMLP(MLP_HIDDEN, 0), nnx.Param))
    infshapes = infer_infshapes(base, target)
    factory = MUP[name]
    return Recipe(
        build=lambda seed: muMLP(MLP_HIDDEN, seed),
        optimizer=lambda lr: factory(lr, infshapes=infshapes),
        loss=_plain_loss,
        logits=lambda m, x: m(x),
        extra_args=_value,
        prepare=lambda params: mup_rescale_init(params, infshapes),
    )


def _localized(data: Dataset, epochs: int) -> Recipe:
    features, classes = data.x_train.shape[1], data.num_classes
    shape = LocalizedMLP(features, MLP_HIDDEN, classes, rngs=nnx.Rngs(0))
    switch_epoch = int(LOCALIZED_SWITCH * epochs)

    def loss(m: nnx.Module, opt_state: Any, batch: Batch):
        # the full backward pass: the optimizer discards layer 0's gradient once localized
        logits, activations = m(batch[0], num_localized=0)
        return cross_entropy(logits, batch[1]), {"logits": logits, "activations": activations}

    def optimizer(lr: Any) -> optax.GradientTransformation:
        return create_localized_optimizer(shape, lr, HEBBIAN_LEARNING_RATE, num_localized=0)

    return Recipe(
        build=lambda seed: LocalizedMLP(features, MLP_HIDDEN, classes, rngs=nnx.Rngs(seed)),
        optimizer=optimizer,
        loss=loss,
        logits=lambda m, x: m(x)[0],
        extra_args=lambda loss, aux, b, f: {"activations": aux["activations"], "value": loss},
        at_epoch_start=lambda opt_state, epoch: set_boundary(opt_state, epoch >= switch_epoch),
    )


def _lbfgs(data: Dataset, model: str) -> Recipe:
    plain = _standard("torch.sgd", data, model)
    return dataclasses.replace(
        plain,
        optimizer=lambda lr: torch_exact.lbfgs(
            lr, max_iter=LBFGS_ITERATIONS, line_search_fn="strong_wolfe"
        ),
        extra_args=lambda loss, aux, b, value_fn: {"value_fn": value_fn},
        full_batch=True,
    )


def _is_matrix(params: Any) -> Any:
    return jax.tree.map(lambda p: "muon" if jnp.ndim(p) == 2 else "adamw", params)


def _muon(data: Dataset, model: str) -> Recipe:
    plain = _standard("torch.sgd", data, model)

    def optimizer(lr: Any) -> optax.GradientTransformation:
        transforms = {
            "muon": torch_exact.muon(lr),
            "adamw": torch_exact.adamw(1e-3, weight_decay=1e-2),
        }
        return optax.partition(transforms, _is_matrix)

    return dataclasses.replace(plain, optimizer=optimizer)


def make_recipe(name: str, data: Dataset, model: str, num_samples: int, epochs: int) -> Recipe:
    """The :class:`Recipe` of ``name`` for the configured model on ``data``.

    Args:
      name: a registry name or one of :data:`EXTRA_ROWS`.
      data: the data set.
      model: ``"mlp"`` or ``"cnn"``.
      num_samples: the size of the training split (FER's memory).
      epochs: the length of the run (FER's schedule, localized learning's switch).

    Raises:
      ValueError: when ``name`` cannot train ``model`` (:func:`cannot_run`).
    """
    reason = cannot_run(name, model)
    if reason is not None:
        raise ValueError(reason)
    if name == "fer":
        return _fer(data, model, num_samples, epochs)
    if name == "sigprop":
        return _sigprop(data, model)
    if name in MUP:
        return _mup(name, data)
    if name == "localized_learning":
        return _localized(data, epochs)
    if name == "torch.lbfgs":
        return _lbfgs(data, model)
    if name == "torch.muon":
        return _muon(data, model)
    return _standard(name, data, model)
