r"""SigProp, forward signal propagation (Kohan, Rietman, Siegelmann, TNNLS 2023).

Every block is trained by a *local* loss that compares its output for the input with its
output for a forward-propagated *target signal*; no gradient crosses a block boundary.
For labels ``y`` with ``C`` classes, ``c = onehot(y)``:

  h_1 = f_x(x),  t_1 = f_c(c)                      signal generator, local loss L_0(h_1, t_1, c)
  h_{l+1} = f_l(sg(h_l)),  t_{l+1} = f_l(sg(t_l))   block l, local loss L_l(h_{l+1}, t_{l+1}, t_l)
  logits = f_out(sg(h_L))                           head, trained by cross-entropy only

with ``sg`` = ``jax.lax.stop_gradient`` and :func:`sigprop_local_loss` as ``L``. The same
parameters of block ``l`` run on both streams, and ``L_l`` reaches them through *both*
``h_{l+1}`` and ``t_{l+1}``. Because the parameter blocks are disjoint and every block
input is stopped, one ``jax.value_and_grad`` of

  J = CE(logits, y) + local_loss_weight * sum_l L_l

gives each block exactly the gradient of its own local loss (scaled by the weight), and
one elementwise optimizer over all parameters equals the official code's per-block
optimizers (:func:`sigprop_optimizer`). ``mode="hybrid"`` drops every ``sg``:
the cross-entropy backpropagates through all blocks and the weighted local losses are
auxiliary terms of the same ``J``. A step::

  def loss_fn(model):
      return model.loss(x, labels)

  loss, grads = nnx.value_and_grad(loss_fn)(model)
  optimizer.update(model, grads)            # optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)

With ``batch_norm=True`` or ``dropout > 0`` the mode follows NNX (``model.train()`` /
``model.eval()``, or ``train=`` at the call).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Literal

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from jaxopt_adv._common import (
    check,
    check_count,
    check_interval,
    check_learning_rate,
    check_nonnegative,
    concrete_scalar,
)
from jaxopt_adv.models.batchnorm import BatchNorm
from jaxopt_adv.models.layers import Conv2d, Linear
from jaxopt_adv.torch.adam import adam
from jaxopt_adv.torch.sgd import sgd

__all__ = [
    "SigPropNet",
    "create_sigprop_optimizer",
    "sigprop_labels",
    "sigprop_local_loss",
    "sigprop_optimizer",
]

LossKind = Literal["v14", "v9", "topk"]
LOSS_KINDS = ("v14", "v9", "topk")
TARGETS = ("signal", "labels")
MODES = ("sigprop", "hybrid")
BASES = ("adam", "sgd")
DEFAULT_LEARNING_RATE = 1e-3  # of the blocks and head under a named base


def _check_choice(value: Any, name: str, choices: Sequence[str]) -> None:
    check(value in choices, f"Invalid {name}: {value!r} (choose from {', '.join(choices)})")


def _check_loss_kind(kind: str, k: Any) -> None:
    _check_choice(kind, "kind", LOSS_KINDS)
    if kind == "topk":
        check_count(k, "k")


def _as_matrix(features: jax.Array) -> jax.Array:
    """``[B, ...]`` features as ``[B, D]`` (an NHWC map's positions join the features)."""
    return features.reshape(features.shape[0], -1)


def _similarity(a: jax.Array, b: jax.Array) -> jax.Array:
    """``[B, B]`` matrix ``a b^T``; for NHWC maps the mean over positions of per-position products."""
    if a.ndim == 4:
        positions = a.shape[1] * a.shape[2]
        return jnp.einsum("bhwc,dhwc->bd", a, b) / positions
    return _as_matrix(a) @ _as_matrix(b).T


def sigprop_local_loss(
    h_next: jax.Array,
    t_next: jax.Array,
    t_prev: jax.Array | None = None,
    *,
    kind: LossKind = "v14",
    k: int = 1,
    targets: Literal["signal", "labels"] = "signal",
    labels: jax.Array | None = None,
) -> jax.Array:
    r"""SigProp's local loss of a block from its outputs and its target input.

    With :math:`Y = H_{l+1} T_{l+1}^\top` and, for ``targets="signal"``,
    :math:`YY = T_l T_l^\top` (both ``[B, B]``; for NHWC feature maps the mean over
    spatial positions of the per-position products, as the official code's conv losses):

    * ``"v14"`` (``v14_input_target_max_rand``): :math:`L = \mathrm{mean}_i\,
      \mathrm{CE}(Y_i, \arg\max_j YY_{ij})` (first maximum);
    * ``"v9"`` (``v9_input_target_max_all``): :math:`M_{ij} = [YY_{ij} = \max_j YY_{ij}]`,
      :math:`L = \mathrm{mean}_i \sum_j -M_{ij} \log\mathrm{softmax}(Y_i)_j`
      (``M`` not row-normalised);
    * ``"topk"`` (v15): ``M`` marks the ``k`` largest entries of each row of ``YY``, as v9.

    ``targets="labels"`` replaces :math:`YY` by the label-equality matrix
    :math:`YY_{ij} = [y_i = y_j]`, so ``v9``'s mask is :math:`M_{ij} = [y_i = y_j]` and
    ``v14``'s target of row ``i`` is the first sample with label :math:`y_i` (``topk``
    breaks ties towards the lower index, as ``jax.lax.top_k``). It is what ``"signal"``
    gives when :math:`T_l = \mathrm{onehot}(y)` (the signal generator), and differs
    when target representations of one class are not the row maximum, e.g. when their
    norms differ.

    The targets are constants (``YY`` is not differentiated); the gradient flows through
    ``h_next`` *and* ``t_next``.

    Args:
      h_next: ``[B, ...]`` block output on the input stream.
      t_next: ``[B, ...]`` block output on the target stream.
      t_prev: ``[B, ...]`` block input on the target stream (``onehot(y)`` for the signal
        generator); needed by ``targets="signal"``, unused by ``"labels"``.
      kind: static; ``"v14"``, ``"v9"`` or ``"topk"``.
      k: static; entries per row for ``"topk"`` (an int ``>= 1``).
      targets: static; ``"signal"`` (the official code) or ``"labels"``.
      labels: ``[B]`` integer labels, needed by (and only allowed with)
        ``targets="labels"``.

    Returns:
      The scalar loss.

    Raises:
      ValueError: for an unknown ``kind`` or ``targets``, a bad ``k``, or a missing (or
        unused) ``t_prev`` / ``labels``.

    Example:
      >>> import jax.numpy as jnp
      >>> from jaxopt_adv.local import sigprop_local_loss
      >>> t0 = jnp.array([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]])
      >>> h1 = jnp.array([[0.4, 0.3], [0.3, -0.38], [0.34, 0.2]])
      >>> t1 = jnp.array([[0.5, 0.1], [-0.2, 0.4], [0.5, 0.1]])
      >>> sigprop_local_loss(h1, t1, t0, kind="v9")
      Array(1.829894..., dtype=float32)
      >>> sigprop_local_loss(h1, t1, kind="v9", targets="labels", labels=jnp.array([0, 1, 0]))
      Array(1.829894..., dtype=float32)

    References:
      Kohan, Rietman, Siegelmann, "Signal Propagation: A Framework for Learning and
      Inference in a Forward Pass", IEEE TNNLS 2023 (arXiv 2204.01723); the losses of
      ``sigprop/loss/functional/input_target.py`` in ``amassivek/signalpropagation``.
    """
    _check_loss_kind(kind, k)
    _check_choice(targets, "targets", TARGETS)
    log_probs = jax.nn.log_softmax(_similarity(h_next, t_next), axis=-1)
    if targets == "labels":
        check(labels is not None, "targets='labels' needs labels= (the [B] integer labels)")
        target_sim = (labels[:, None] == labels[None, :]).astype(log_probs.dtype)
    else:
        check(t_prev is not None, "targets='signal' needs t_prev (the target-stream input)")
        check(labels is None, "labels= is used only with targets='labels'")
        target_sim = jax.lax.stop_gradient(_similarity(t_prev, t_prev))
    if kind == "v14":
        targets_index = jnp.argmax(target_sim, axis=-1)
        return -jnp.mean(jnp.take_along_axis(log_probs, targets_index[:, None], axis=-1))
    if kind == "v9":
        mask = target_sim == jnp.max(target_sim, axis=-1, keepdims=True)
    else:
        _, top = jax.lax.top_k(target_sim, min(k, target_sim.shape[-1]))
        mask = jnp.max(jax.nn.one_hot(top, target_sim.shape[-1], dtype=bool), axis=-2)
    return -jnp.mean(jnp.sum(jnp.where(mask, log_probs, 0), axis=-1))


class SigPropNet(nnx.Module):
    r"""An MLP or a 3x3-conv net trained by SigProp: signal generator, blocks, head.

    MLP (``image_size=None``), inputs ``[B, in_features]``:

    * ``signal_in``: ``Linear(in_features, hidden[0])`` (+ ``BatchNorm``) + ReLU, the
      input stream's ``f_x``;
    * ``signal_ctx``: ``Linear(num_classes, hidden[0], no bias) + LayerNorm + ReLU``, the
      target stream's ``f_c`` (the official ``ProjectionContextInput``);
    * ``blocks[l]``: ``Linear(hidden[l], hidden[l+1])`` (+ ``block_norms[l]``) + ReLU,
      run on both streams (the input stream first);
    * ``head``: ``Linear(hidden[-1], num_classes)`` on ``sg(h_L)``.

    Conv net (``image_size=(H, W)``), NHWC inputs ``[B, H, W, in_features]`` (the
    official examples' Conv3x3 + BN + ReLU): ``signal_in`` and ``blocks`` are
    ``Conv2d(kernel 3, padding 1)`` with ``hidden`` channels (the map keeps its size);
    ``signal_ctx`` projects to ``H * W * hidden[0]`` features (LayerNorm over all of
    them) reshaped to ``[B, H, W, hidden[0]]``; the head reads the flattened map. The
    local losses then compare maps per position (see :func:`sigprop_local_loss`).

    With ``dropout > 0`` an ``nnx.Dropout`` (no parameters, a fresh mask per call)
    follows the signal generator and every block on both streams; the local loss of a
    block sees its output before the dropout. ``BatchNorm`` has torch's running
    statistics (:class:`jaxopt_adv.models.BatchNorm`); a block runs on the input stream
    and then on the target stream, so in training its running statistics are updated
    twice per step in that order, as torch's per-block calls do.

    Linear and conv layers use torch's default initialisation
    (:class:`jaxopt_adv.models.Linear`), LayerNorm torch's ``eps=1e-5``.

    Args:
      in_features: input size (input channels for a conv net).
      hidden: widths (channels) of the hidden representations (at least one).
      num_classes: number of classes ``C``.
      kind, k: the local loss (see :func:`sigprop_local_loss`); static.
      targets: static; ``"signal"`` (``YY = T_l T_l^T``, the official code) or
        ``"labels"`` (the label-equality mask in every local loss).
      mode: static; ``"sigprop"`` (stop-gradient at every block input and at the head)
        or ``"hybrid"`` (no stop-gradient: global backprop of the cross-entropy plus the
        weighted local losses as auxiliaries).
      local_loss_weight: ``lambda >= 0``, weight of the summed local losses in
        :meth:`loss`. In ``"sigprop"`` mode it only rescales the blocks' gradients (a
        no-op for Adam up to ``eps``); in ``"hybrid"`` mode it balances them against the
        cross-entropy.
      batch_norm: static; a :class:`~jaxopt_adv.models.BatchNorm` after ``signal_in``
        and after every block's layer, which then have no bias (BatchNorm removes it).
      dropout: drop probability in ``[0, 1)`` between blocks (0: none).
      image_size: static; ``(H, W)`` for the conv net, ``None`` for the MLP.
      param_dtype: dtype of the parameters (and of the batch statistics).
      rngs: the ``nnx.Rngs`` that draws the initial parameters (and dropout masks).

    Example:
      >>> import jax.numpy as jnp
      >>> from flax import nnx
      >>> from jaxopt_adv.local import SigPropNet
      >>> model = SigPropNet(4, [8, 6], 3, dropout=0.1, rngs=nnx.Rngs(0))
      >>> logits, local = model(jnp.ones((5, 4)), jnp.array([0, 1, 2, 0, 1]))
      >>> logits.shape, local.shape
      ((5, 3), (2,))
      >>> model.eval()  # no dropout (and BatchNorm's running statistics)
      >>> model(jnp.ones((5, 4)))[0].shape
      (5, 3)

    References:
      Kohan, Rietman, Siegelmann, "Signal Propagation: A Framework for Learning and
      Inference in a Forward Pass", IEEE TNNLS 2023; ``amassivek/signalpropagation``
      (``signals/generators.py``, ``propagators/learn.py``).
    """

    def __init__(
        self,
        in_features: int,
        hidden: Sequence[int],
        num_classes: int,
        *,
        kind: LossKind = "v14",
        k: int = 1,
        targets: Literal["signal", "labels"] = "signal",
        mode: Literal["sigprop", "hybrid"] = "sigprop",
        local_loss_weight: float = 1.0,
        batch_norm: bool = False,
        dropout: float = 0.0,
        image_size: tuple[int, int] | None = None,
        param_dtype: Any = jnp.float32,
        rngs: nnx.Rngs,
    ) -> None:
        check(len(hidden) >= 1, "SigPropNet needs at least one hidden width")
        _check_loss_kind(kind, k)
        _check_choice(targets, "targets", TARGETS)
        _check_choice(mode, "mode", MODES)
        check_nonnegative(local_loss_weight, "local_loss_weight")
        check_interval(dropout, "dropout", 0.0, 1.0, high_open=True)
        if image_size is not None:
            check(
                isinstance(image_size, (tuple, list))
                and len(image_size) == 2
                and all(isinstance(n, int) and n >= 1 for n in image_size),
                f"Invalid image_size: {image_size!r} (a pair of ints >= 1, or None)",
            )
        self.num_classes = num_classes
        self.kind, self.k, self.targets, self.mode = kind, k, targets, mode
        self.local_loss_weight = local_loss_weight
        dims = {"param_dtype": param_dtype, "rngs": rngs}
        if image_size is None:
            positions = 1

            def layer(a: int, b: int) -> nnx.Module:
                return Linear(a, b, use_bias=not batch_norm, **dims)
        else:
            positions = image_size[0] * image_size[1]

            def layer(a: int, b: int) -> nnx.Module:
                return Conv2d(a, b, 3, padding=1, use_bias=not batch_norm, **dims)

        self.signal_in = layer(in_features, hidden[0])
        self.signal_ctx = Linear(num_classes, positions * hidden[0], use_bias=False, **dims)
        self.signal_norm = nnx.LayerNorm(
            positions * hidden[0], epsilon=1e-5, param_dtype=param_dtype, rngs=rngs
        )
        self.blocks = nnx.List([layer(a, b) for a, b in zip(hidden[:-1], hidden[1:], strict=True)])
        self.head = Linear(positions * hidden[-1], num_classes, **dims)
        if batch_norm:
            self.signal_in_norm = BatchNorm(hidden[0], param_dtype=param_dtype)
            self.block_norms = nnx.List([BatchNorm(b, param_dtype=param_dtype) for b in hidden[1:]])
        else:
            self.signal_in_norm = None
            self.block_norms = nnx.List([])
        # Created last so that the parameters draw the same numbers with or without it.
        self.dropout = nnx.Dropout(dropout, rngs=rngs if dropout > 0 else None)

    def _local(
        self, h_next: jax.Array, t_next: jax.Array, t_prev: jax.Array, labels: jax.Array
    ) -> jax.Array:
        if self.targets == "labels":
            return sigprop_local_loss(
                h_next, t_next, kind=self.kind, k=self.k, targets="labels", labels=labels
            )
        return sigprop_local_loss(h_next, t_next, t_prev, kind=self.kind, k=self.k)

    def _layer(self, layer: nnx.Module, norm: Any, x: jax.Array, train: bool | None) -> jax.Array:
        """``relu(norm(layer(x)))``: one block (or the input signal) on one stream."""
        out = layer(x)
        if norm is not None:
            out = norm(out, None if train is None else not train)
        return jax.nn.relu(out)

    def _drop(self, x: jax.Array, train: bool | None) -> jax.Array:
        return self.dropout(x, deterministic=None if train is None else not train)

    def _block(self, index: int, x: jax.Array, train: bool | None) -> jax.Array:
        norm = self.block_norms[index] if self.block_norms else None
        return self._layer(self.blocks[index], norm, x, train)

    def __call__(
        self, x: jax.Array, labels: jax.Array | None = None, *, train: bool | None = None
    ) -> tuple[jax.Array, jax.Array | None]:
        """``(logits, local_losses)``; ``local_losses`` (``[1 + len(blocks)]``, signal first)
        is ``None`` when ``labels`` is ``None`` (inference runs the input stream only).

        ``train`` (static) overrides the module's mode (``model.train()`` /
        ``model.eval()``) for BatchNorm and dropout; ``None`` keeps it."""
        h = self._layer(self.signal_in, self.signal_in_norm, x, train)
        if labels is None:
            for index in range(len(self.blocks)):
                h = self._block(index, self._drop(h, train), train)
            return self.head(_as_matrix(self._drop(h, train))), None
        c = jax.nn.one_hot(labels, self.num_classes, dtype=h.dtype)
        t = jax.nn.relu(self.signal_norm(self.signal_ctx(c))).reshape(h.shape)
        losses = [self._local(h, t, c, labels)]
        stop = jax.lax.stop_gradient if self.mode == "sigprop" else (lambda a: a)
        for index in range(len(self.blocks)):
            h_in, t_in = stop(self._drop(h, train)), stop(self._drop(t, train))
            h = self._block(index, h_in, train)  # input stream first: torch's BatchNorm order
            t = self._block(index, t_in, train)
            losses.append(self._local(h, t, t_in, labels))
        logits = self.head(_as_matrix(stop(self._drop(h, train))))
        return logits, jnp.stack(losses)

    def loss(self, x: jax.Array, labels: jax.Array, *, train: bool | None = None) -> jax.Array:
        """The training objective ``CE(logits, labels) + local_loss_weight * sum(local_losses)``."""
        logits, local = self(x, labels, train=train)
        ce = optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
        return ce + self.local_loss_weight * jnp.sum(local)


def _top_name(path: tuple[Any, ...]) -> Any:
    """The first key of a leaf's path (``""`` for a bare array: no name, no signal)."""
    if not path:
        return ""
    first = path[0]
    return getattr(first, "key", getattr(first, "name", first))


def sigprop_labels(params: Any) -> Any:
    """``"signal"`` for leaves under a top-level ``signal_*`` name, else ``"net"``.

    :class:`SigPropNet`'s signal generator is ``signal_in`` (with ``signal_in_norm``),
    ``signal_ctx`` and ``signal_norm``.

    Example:
      >>> from jaxopt_adv.local import sigprop_labels
      >>> sigprop_labels({"signal_in": {"kernel": 0.0}, "head": {"kernel": 0.0}})
      {'head': {'kernel': 'net'}, 'signal_in': {'kernel': 'signal'}}
    """

    def label(path: tuple[Any, ...], _: Any) -> str:
        return "signal" if str(_top_name(path)).startswith("signal_") else "net"

    return jax.tree_util.tree_map_with_path(label, params)


def _base_transforms(
    base: str | optax.GradientTransformation,
    learning_rate: optax.ScalarOrSchedule,
    signal_lr: optax.ScalarOrSchedule,
    signal_momentum: Any,
) -> dict[str, optax.GradientTransformation]:
    """``{"signal": ..., "net": ...}``: the signal generator's and the rest's optimizers."""
    if isinstance(base, optax.GradientTransformation):
        value = concrete_scalar(learning_rate)  # traced (injected): checked at init
        check(
            not callable(learning_rate)
            and (value is None or math.isclose(value, DEFAULT_LEARNING_RATE, rel_tol=1e-6)),
            "Invalid learning_rate: a base transform carries its own learning rate; leave "
            f"learning_rate at its default (base={type(base).__name__}, "
            f"learning_rate={learning_rate!r})",
        )
        return {"signal": adam(signal_lr, b1=signal_momentum), "net": base}
    if not isinstance(base, str):
        raise TypeError(
            f"base must be one of {', '.join(BASES)} or an optax transform, got "
            f"{type(base).__name__}"
        )
    check(base in BASES, f"Invalid base: {base!r} (choose from {', '.join(BASES)})")
    if base == "adam":
        return {"signal": adam(signal_lr, b1=signal_momentum), "net": adam(learning_rate)}
    return {"signal": sgd(signal_lr, momentum=signal_momentum), "net": sgd(learning_rate)}


def sigprop_optimizer(
    learning_rate: optax.ScalarOrSchedule = DEFAULT_LEARNING_RATE,
    signal_lr: optax.ScalarOrSchedule = 1e-3,
    signal_momentum: Any = 0.9,
    *,
    base: Literal["adam", "sgd"] | optax.GradientTransformation = "adam",
) -> optax.GradientTransformationExtraArgs:
    """SigProp's optimizers: one for the signal generator, one for the blocks and head.

    ``optax.partition({"signal": ..., "net": ...}, sigprop_labels)`` with, for
    ``base="adam"``, ``adam(signal_lr, b1=signal_momentum)`` on the signal generator and
    ``adam(learning_rate)`` on the rest; for ``base="sgd"``, ``sgd(signal_lr,
    momentum=signal_momentum)`` and ``sgd(learning_rate)``. Both are the torch-exact
    :mod:`jaxopt_adv.torch` versions, elementwise, so one transform over all blocks equals
    the official per-block optimizers. ``base`` may also be any optax transform (as the
    ``base`` of :func:`jaxopt_adv.correction.fer` or
    :func:`jaxopt_adv.correction.gradient_correction`): it updates the blocks and the
    head with its own learning rate, and the signal generator keeps
    ``adam(signal_lr, b1=signal_momentum)``. Feed it the gradient of
    :meth:`SigPropNet.loss`; unknown extra arguments (the ``advanced_optimizers`` torch
    package's ``model_output=``, ``loss=``) are ignored.

    Args:
      learning_rate: lr of the blocks and the head under a ``"adam"`` / ``"sgd"`` base
        (the paper's Adam uses 5e-4 for conv nets; 1e-3 suits MLPs); with a transform
        ``base``, which has its own, it must stay at its default.
      signal_lr: lr of the signal generator.
      signal_momentum: Adam's ``b1`` (or SGD's momentum) of the signal generator, in
        ``[0, 1)``.
      base: static; ``"adam"``, ``"sgd"`` or an optax transform for the blocks and head.

    Returns:
      An ``optax.GradientTransformationExtraArgs``.

    Raises:
      ValueError: a bad hyperparameter, an unknown base name, or a ``learning_rate``
        other than the default with a transform ``base``.
      TypeError: a ``base`` that is neither a name nor an optax transform.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from flax import nnx
      >>> from jaxopt_adv.local import SigPropNet, sigprop_optimizer
      >>> model = SigPropNet(4, [8, 6], 3, rngs=nnx.Rngs(0))
      >>> optimizer = nnx.Optimizer(model, sigprop_optimizer(1e-3, 1e-3, 0.9), wrt=nnx.Param)
      >>> @nnx.jit
      ... def step(model, optimizer, x, y):
      ...     loss, grads = nnx.value_and_grad(lambda m: m.loss(x, y))(model)
      ...     optimizer.update(model, grads)
      ...     return loss
      >>> float(step(model, optimizer, jnp.ones((5, 4)), jnp.array([0, 1, 2, 0, 1]))) > 0
      True
      >>> import optax
      >>> tx = sigprop_optimizer(signal_lr=1e-3, base=optax.lion(1e-4))  # any optax base

    References:
      Kohan, Rietman, Siegelmann, IEEE TNNLS 2023 (arXiv 2204.01723); the per-block
      ``torch.optim.Adam`` of ``amassivek/signalpropagation`` (torch 2.13).
    """
    check_learning_rate(learning_rate)
    check_learning_rate(signal_lr, "signal_lr")
    check_interval(signal_momentum, "signal_momentum", 0.0, 1.0, high_open=True)
    transforms = _base_transforms(base, learning_rate, signal_lr, signal_momentum)
    return optax.partition(transforms, sigprop_labels)


def create_sigprop_optimizer(
    model: SigPropNet,
    lr: optax.ScalarOrSchedule = 0.01,
    signal_lr: optax.ScalarOrSchedule = 0.001,
    *,
    signal_momentum: Any = 0.9,
    base: Literal["adam", "sgd"] = "adam",
) -> optax.GradientTransformationExtraArgs:
    """The ``advanced_optimizers`` ``create_sigprop_optimizer(model, lr, ...)``: :func:`sigprop_optimizer`.

    ``model`` must be a :class:`SigPropNet` (SigProp lives in the model: two streams,
    stop-gradients, local losses); its ``local_loss_weight`` replaces the torch
    factory's keyword of that name (the ``advanced_optimizers`` package).

    Raises:
      ValueError: when ``model`` is not a :class:`SigPropNet`, or for a bad argument.

    Example:
      >>> from flax import nnx
      >>> from jaxopt_adv.local import SigPropNet, create_sigprop_optimizer
      >>> model = SigPropNet(784, [512, 256], 10, rngs=nnx.Rngs(0))
      >>> tx = create_sigprop_optimizer(model, lr=0.001, signal_lr=0.001)

    References:
      see :func:`sigprop_optimizer`.

    Warning:
      The torch factory's default ``lr=0.01`` is high for Adam; its optimizer applied
      each gradient twice and ignored ``local_loss_weight``, which is not reproduced.
    """
    check(
        isinstance(model, SigPropNet),
        f"create_sigprop_optimizer needs a SigPropNet, got {type(model).__name__}",
    )
    return sigprop_optimizer(lr, signal_lr, signal_momentum, base=base)
