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
optimizers (:func:`sigprop_optimizer`). A step::

  def loss_fn(model):
      return model.loss(x, labels)

  loss, grads = nnx.value_and_grad(loss_fn)(model)
  optimizer.update(model, grads)            # optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from jaxopt_adv._common import (
    check,
    check_beta,
    check_count,
    check_learning_rate,
    check_nonnegative,
)
from jaxopt_adv.models.layers import Linear
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
BASES = ("adam", "sgd")


def _check_loss_kind(kind: str, k: Any) -> None:
    check(kind in LOSS_KINDS, f"Invalid kind: {kind!r} (choose from {', '.join(LOSS_KINDS)})")
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
    t_prev: jax.Array,
    *,
    kind: LossKind = "v14",
    k: int = 1,
) -> jax.Array:
    r"""SigProp's local loss of a block from its outputs and its target input.

    With :math:`Y = H_{l+1} T_{l+1}^\top` and :math:`YY = T_l T_l^\top` (both ``[B, B]``;
    for NHWC feature maps the mean over spatial positions of the per-position products):

    * ``"v14"`` (``v14_input_target_max_rand``): :math:`L = \mathrm{mean}_i\,
      \mathrm{CE}(Y_i, \arg\max_j YY_{ij})` (first maximum);
    * ``"v9"`` (``v9_input_target_max_all``): :math:`M_{ij} = [YY_{ij} = \max_j YY_{ij}]`,
      :math:`L = \mathrm{mean}_i \sum_j -M_{ij} \log\mathrm{softmax}(Y_i)_j`
      (``M`` not row-normalised);
    * ``"topk"`` (v15): ``M`` marks the ``k`` largest entries of each row of ``YY``, as v9.

    The targets are constants (``YY`` is not differentiated); the gradient flows through
    ``h_next`` *and* ``t_next``.

    Args:
      h_next: ``[B, ...]`` block output on the input stream.
      t_next: ``[B, ...]`` block output on the target stream.
      t_prev: ``[B, ...]`` block input on the target stream (``onehot(y)`` for the signal
        generator).
      kind: static; ``"v14"``, ``"v9"`` or ``"topk"``.
      k: static; entries per row for ``"topk"`` (an int ``>= 1``).

    Returns:
      The scalar loss.

    Raises:
      ValueError: for an unknown ``kind`` or a bad ``k``.

    Example:
      >>> import jax.numpy as jnp
      >>> from jaxopt_adv.sigprop import sigprop_local_loss
      >>> t0 = jnp.array([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]])
      >>> h1 = jnp.array([[0.4, 0.3], [0.3, -0.38], [0.34, 0.2]])
      >>> t1 = jnp.array([[0.5, 0.1], [-0.2, 0.4], [0.5, 0.1]])
      >>> sigprop_local_loss(h1, t1, t0, kind="v9")
      Array(1.829894..., dtype=float32)

    References:
      Kohan, Rietman, Siegelmann, "Signal Propagation: A Framework for Learning and
      Inference in a Forward Pass", IEEE TNNLS 2023 (arXiv 2204.01723); the losses of
      ``sigprop/loss/functional/input_target.py`` in ``amassivek/signalpropagation``.
    """
    _check_loss_kind(kind, k)
    log_probs = jax.nn.log_softmax(_similarity(h_next, t_next), axis=-1)
    target_sim = jax.lax.stop_gradient(_similarity(t_prev, t_prev))
    if kind == "v14":
        targets = jnp.argmax(target_sim, axis=-1)
        return -jnp.mean(jnp.take_along_axis(log_probs, targets[:, None], axis=-1))
    if kind == "v9":
        mask = target_sim == jnp.max(target_sim, axis=-1, keepdims=True)
    else:
        _, top = jax.lax.top_k(target_sim, min(k, target_sim.shape[-1]))
        mask = jnp.max(jax.nn.one_hot(top, target_sim.shape[-1], dtype=bool), axis=-2)
    return -jnp.mean(jnp.sum(jnp.where(mask, log_probs, 0), axis=-1))


class SigPropNet(nnx.Module):
    r"""An MLP trained by SigProp: signal generator, locally trained blocks, head.

    * ``signal_in``: ``Linear(in_features, hidden[0]) + ReLU``, the input stream's
      ``f_x``;
    * ``signal_ctx``: ``Linear(num_classes, hidden[0], no bias) + LayerNorm + ReLU``, the
      target stream's ``f_c`` (the official ``ProjectionContextInput``);
    * ``blocks[l]``: ``Linear(hidden[l], hidden[l+1]) + ReLU``, run on both streams;
    * ``head``: ``Linear(hidden[-1], num_classes)`` on ``sg(h_L)``.

    Linear layers use torch's default initialisation (:class:`jaxopt_adv.models.Linear`),
    LayerNorm torch's ``eps=1e-5``.

    Args:
      in_features: input size.
      hidden: widths of the hidden representations (at least one).
      num_classes: number of classes ``C``.
      kind, k: the local loss (see :func:`sigprop_local_loss`); static.
      local_loss_weight: weight of the summed local losses in :meth:`loss` (only rescales
        the blocks' gradients; a no-op for Adam up to ``eps``).
      param_dtype: dtype of the parameters.
      rngs: the ``nnx.Rngs`` that draws the initial parameters.

    Example:
      >>> import jax.numpy as jnp
      >>> from flax import nnx
      >>> from jaxopt_adv.sigprop import SigPropNet
      >>> model = SigPropNet(4, [8, 6], 3, rngs=nnx.Rngs(0))
      >>> logits, local = model(jnp.ones((5, 4)), jnp.array([0, 1, 2, 0, 1]))
      >>> logits.shape, local.shape
      ((5, 3), (2,))

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
        local_loss_weight: float = 1.0,
        param_dtype: Any = jnp.float32,
        rngs: nnx.Rngs,
    ) -> None:
        check(len(hidden) >= 1, "SigPropNet needs at least one hidden width")
        _check_loss_kind(kind, k)
        check_nonnegative(local_loss_weight, "local_loss_weight")
        self.num_classes = num_classes
        self.kind, self.k, self.local_loss_weight = kind, k, local_loss_weight
        dims = {"param_dtype": param_dtype, "rngs": rngs}
        self.signal_in = Linear(in_features, hidden[0], **dims)
        self.signal_ctx = Linear(num_classes, hidden[0], use_bias=False, **dims)
        self.signal_norm = nnx.LayerNorm(
            hidden[0], epsilon=1e-5, param_dtype=param_dtype, rngs=rngs
        )
        self.blocks = nnx.List(
            [Linear(a, b, **dims) for a, b in zip(hidden[:-1], hidden[1:], strict=True)]
        )
        self.head = Linear(hidden[-1], num_classes, **dims)

    def _local(self, h_next: jax.Array, t_next: jax.Array, t_prev: jax.Array) -> jax.Array:
        return sigprop_local_loss(h_next, t_next, t_prev, kind=self.kind, k=self.k)

    def __call__(
        self, x: jax.Array, labels: jax.Array | None = None
    ) -> tuple[jax.Array, jax.Array | None]:
        """``(logits, local_losses)``; ``local_losses`` (``[1 + len(blocks)]``, signal first)
        is ``None`` when ``labels`` is ``None`` (inference runs the input stream only)."""
        h = jax.nn.relu(self.signal_in(x))
        if labels is None:
            for block in self.blocks:
                h = jax.nn.relu(block(h))
            return self.head(h), None
        t = jax.nn.one_hot(labels, self.num_classes, dtype=h.dtype)
        t_next = jax.nn.relu(self.signal_norm(self.signal_ctx(t)))
        losses = [self._local(h, t_next, t)]
        t = t_next
        for block in self.blocks:
            h_in, t_in = jax.lax.stop_gradient(h), jax.lax.stop_gradient(t)
            h, t = jax.nn.relu(block(h_in)), jax.nn.relu(block(t_in))
            losses.append(self._local(h, t, t_in))
        logits = self.head(jax.lax.stop_gradient(h))
        return logits, jnp.stack(losses)

    def loss(self, x: jax.Array, labels: jax.Array) -> jax.Array:
        """The training objective ``CE(logits, labels) + local_loss_weight * sum(local_losses)``."""
        logits, local = self(x, labels)
        ce = optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
        return ce + self.local_loss_weight * jnp.sum(local)


def _top_name(path: tuple[Any, ...]) -> Any:
    """The first key of a leaf's path (``""`` for a bare array: no name, no signal)."""
    if not path:
        return ""
    first = path[0]
    return getattr(first, "key", getattr(first, "name", first))


def sigprop_labels(params: Any) -> Any:
    """``"signal"`` for leaves under ``signal_ctx``/``signal_in``/``signal_norm``, else ``"net"``.

    Example:
      >>> from jaxopt_adv.sigprop import sigprop_labels
      >>> sigprop_labels({"signal_in": {"kernel": 0.0}, "head": {"kernel": 0.0}})
      {'head': {'kernel': 'net'}, 'signal_in': {'kernel': 'signal'}}
    """

    def label(path: tuple[Any, ...], _: Any) -> str:
        return "signal" if str(_top_name(path)).startswith("signal_") else "net"

    return jax.tree_util.tree_map_with_path(label, params)


def sigprop_optimizer(
    learning_rate: optax.ScalarOrSchedule = 1e-3,
    signal_lr: optax.ScalarOrSchedule = 1e-3,
    signal_momentum: Any = 0.9,
    *,
    base: Literal["adam", "sgd"] = "adam",
) -> optax.GradientTransformationExtraArgs:
    """SigProp's optimizers: one for the signal generator, one for the blocks and head.

    ``optax.partition({"signal": ..., "net": ...}, sigprop_labels)`` with, for
    ``base="adam"``, ``adam(signal_lr, b1=signal_momentum)`` on the signal generator and
    ``adam(learning_rate)`` on the rest; for ``base="sgd"``, ``sgd(signal_lr,
    momentum=signal_momentum)`` and ``sgd(learning_rate)``. Both are the torch-exact
    :mod:`jaxopt_adv.torch` versions, elementwise, so one transform over all blocks equals
    the official per-block optimizers. Feed it the gradient of :meth:`SigPropNet.loss`;
    unknown extra arguments (the seed's ``model_output=``, ``loss=``) are ignored.

    Args:
      learning_rate: lr of the blocks and the head (the paper's Adam uses 5e-4 for conv
        nets; 1e-3 suits MLPs).
      signal_lr: lr of the signal generator.
      signal_momentum: Adam's ``b1`` (or SGD's momentum) of the signal generator, in
        ``[0, 1)``.
      base: static; ``"adam"`` or ``"sgd"``.

    Returns:
      An ``optax.GradientTransformationExtraArgs``.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from flax import nnx
      >>> from jaxopt_adv.sigprop import SigPropNet, sigprop_optimizer
      >>> model = SigPropNet(4, [8], 3, rngs=nnx.Rngs(0))
      >>> optimizer = nnx.Optimizer(model, sigprop_optimizer(1e-3, 1e-3, 0.9), wrt=nnx.Param)
      >>> x, y = jnp.ones((5, 4)), jnp.array([0, 1, 2, 0, 1])
      >>> loss, grads = nnx.value_and_grad(lambda m: m.loss(x, y))(model)
      >>> _ = optimizer.update(model, grads)
      >>> float(loss) > 0
      True

    References:
      Kohan, Rietman, Siegelmann, IEEE TNNLS 2023 (arXiv 2204.01723); the per-block
      ``torch.optim.Adam`` of ``amassivek/signalpropagation`` (torch 2.13).
    """
    check_learning_rate(learning_rate)
    check_learning_rate(signal_lr)
    check_beta(signal_momentum, 0, "signal_momentum")
    check(base in BASES, f"Invalid base: {base!r} (choose from {', '.join(BASES)})")
    if base == "adam":
        transforms = {"signal": adam(signal_lr, b1=signal_momentum), "net": adam(learning_rate)}
    else:
        transforms = {
            "signal": sgd(signal_lr, momentum=signal_momentum),
            "net": sgd(learning_rate),
        }
    return optax.partition(transforms, sigprop_labels)


def create_sigprop_optimizer(
    model: SigPropNet,
    lr: optax.ScalarOrSchedule = 0.01,
    signal_lr: optax.ScalarOrSchedule = 0.001,
    *,
    signal_momentum: Any = 0.9,
    base: Literal["adam", "sgd"] = "adam",
) -> optax.GradientTransformationExtraArgs:
    """The seed's ``create_sigprop_optimizer(model, lr, signal_lr, ...)``: :func:`sigprop_optimizer`.

    ``model`` must be a :class:`SigPropNet` (SigProp lives in the model: two streams,
    stop-gradients, local losses); its ``local_loss_weight`` replaces the seed's
    keyword of that name.

    Raises:
      ValueError: when ``model`` is not a :class:`SigPropNet`, or for a bad argument.

    Example:
      >>> from flax import nnx
      >>> from jaxopt_adv.sigprop import SigPropNet, create_sigprop_optimizer
      >>> model = SigPropNet(784, [512, 256], 10, rngs=nnx.Rngs(0))
      >>> tx = create_sigprop_optimizer(model, lr=0.001, signal_lr=0.001)

    References:
      see :func:`sigprop_optimizer`.

    Warning:
      The seed's default ``lr=0.01`` is high for Adam; the seed's torch optimizer applied
      each gradient twice and ignored ``local_loss_weight`` (spec §3.7), which is not
      reproduced.
    """
    check(
        isinstance(model, SigPropNet),
        f"create_sigprop_optimizer needs a SigPropNet, got {type(model).__name__}",
    )
    return sigprop_optimizer(lr, signal_lr, signal_momentum, base=base)
