r"""Localized learning with Hebbian rules (LoCal+SGD, Krithivasan et al., 2022).

The first ``T`` of an ordered list of candidate Dense layers learn with a local Hebbian
rule; the transition layer ``T`` and every later layer learn with a base optimizer from
the gradient. For a localized layer with input ``x`` ``[B, in]``, output ``y`` ``[B, out]``
(the post-activation output by default, ``post="pre"``: the pre-activation ``x K + b``)
and Flax kernel ``K`` ``[in, out]``::

  rule="hebb":  dK = x^T y / B                        db = mean_b y
  rule="oja":   dK = (x^T y - K diag(sum_b y_b^2)) / B   (per-neuron Oja; bias unchanged)
  normalize="layer":  dK <- dK / (1e-8 + max|dK|)
  eta_t = hebbian_lr * (1 + supervision_strength * tanh(L_t))        (weak supervision)
  update = +eta_t dK                                   (optax adds updates)

``legacy=True`` is the formulas of the ``advanced_optimizers`` torch package's
``LocalizedLearningOptimizer``: pre-activation ``y``, plain Hebb,
"layer" normalisation and the bias rule ``db = mean_b y``.

The model sows ``(x, pre, post)`` of every candidate layer and puts
``jax.lax.stop_gradient`` on the output of the last localized layer, so XLA drops the
backward pass through the localized prefix (:class:`LocalizedMLP`). A step::

  def loss_fn(model):
      logits, activations = model(x, num_localized=T)
      return cross_entropy(logits, y), activations

  (loss, activations), grads = nnx.value_and_grad(loss_fn, has_aux=True)(model)
  optimizer.update(model, grads, activations=activations, value=loss)

Boundary selection: *static*, ``T`` fixed (:func:`localized_learning`'s
``num_localized``) or set per epoch with :func:`set_boundary`; *dynamic*,
:func:`advance_boundary` at every epoch end moves ``T`` up by one when the transition
layer's update norm over the epoch fell below ``threshold`` times the previous epoch's.
The host reads ``T`` (:func:`get_boundary`) and passes it to the model as a static int
(one compilation per value).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal, NamedTuple

import chex
import jax
import jax.numpy as jnp
import optax
from flax import nnx

from jaxopt_adv._common import NO_PARAMS_MSG, check, check_interval, check_nonnegative
from jaxopt_adv._state import find_state, replace_state
from jaxopt_adv.models.layers import Linear
from jaxopt_adv.torch.sgd import sgd

__all__ = [
    "LocalizedMLP",
    "LocalizedState",
    "advance_boundary",
    "create_localized_optimizer",
    "get_boundary",
    "hebbian_delta",
    "localized_learning",
    "localized_state",
    "set_boundary",
]

RULES = ("oja", "hebb")
NORMALIZE = (None, "layer")
POSTS = ("activation", "pre")


class LocalizedState(NamedTuple):
    """State of :func:`localized_learning`."""

    count: chex.Array  # int32 scalar: steps taken
    num_localized: chex.Array  # int32 T: leading candidate layers now localized
    epoch_sq_norm: chex.Array  # [L] squared kernel-update norms summed over this epoch
    previous_sq_norm: chex.Array  # [L] the same for the previous epoch
    base_state: Any


def hebbian_delta(
    x: chex.Array,
    y: chex.Array,
    kernel: chex.Array,
    *,
    rule: Literal["oja", "hebb"] = "oja",
    normalize: Literal["layer"] | None = None,
) -> tuple[chex.Array, chex.Array]:
    """``(dK, db)`` of one Dense layer (see the module docstring); ``db`` is 0 for Oja.

    Example:
      >>> import jax.numpy as jnp
      >>> from jaxopt_adv.local import hebbian_delta
      >>> x, kernel = jnp.array([[1.0, 0.0, 2.0], [0.0, 1.0, -1.0]]), jnp.zeros((3, 2))
      >>> y = jnp.array([[0.7, -0.2], [-0.1, 0.1]])
      >>> dk, db = hebbian_delta(x, y, kernel, rule="hebb")
      >>> dk[:, 0]
      Array([ 0.35, -0.05,  0.75], dtype=float32)
    """
    batch = x.shape[0]
    delta = x.T @ y
    if rule == "oja":
        delta = delta - kernel * jnp.sum(y * y, axis=0)
        bias = jnp.zeros(y.shape[-1], y.dtype)
    else:
        bias = jnp.mean(y, axis=0)
    delta = delta / batch
    if normalize == "layer":
        delta = delta / (1e-8 + jnp.max(jnp.abs(delta)))
    return delta, bias


def _path_parts(path: tuple[Any, ...]) -> tuple[str, ...]:
    parts = (getattr(k, "key", getattr(k, "name", getattr(k, "idx", k))) for k in path)
    return tuple(str(p) for p in parts)


def _locate(path: tuple[Any, ...], layers: Sequence[tuple[str, ...]]) -> tuple[int, str]:
    """``(layer index, leaf name)`` of a parameter leaf, ``(-1, "")`` outside the candidates."""
    parts = _path_parts(path)
    for index, prefix in enumerate(layers):
        if parts[: len(prefix)] == prefix and len(parts) > len(prefix):
            return index, parts[len(prefix)]
    return -1, ""


def localized_state(opt_state: Any) -> LocalizedState:
    """The :class:`LocalizedState` inside an optimizer state.

    Raises:
      ValueError: when there is none.
    """
    return find_state(opt_state, LocalizedState, " (see localized_learning)")


def _candidate_kernels(tree: Any, layers: Sequence[tuple[str, ...]]) -> dict[int, chex.Array]:
    """Candidate index -> its ``kernel`` leaf in ``tree``.

    Raises:
      ValueError: when a candidate layer has no ``kernel``.
    """
    found = {}
    for path, leaf in jax.tree_util.tree_leaves_with_path(tree):
        index, name = _locate(path, layers)
        if name == "kernel":
            found[index] = leaf
    missing = ["/".join(layers[i]) for i in range(len(layers)) if i not in found]
    check(not missing, f"localized_layers {missing} have no 'kernel' parameter")
    return found


def _candidate_leaves(tree: Any, layers: Sequence[tuple[str, ...]]) -> list[dict[str, chex.Array]]:
    """Per candidate, its ``kernel`` and (if present) ``bias`` leaves in ``tree``."""
    found: list[dict[str, chex.Array]] = [{} for _ in layers]
    for path, leaf in jax.tree_util.tree_leaves_with_path(tree):
        index, name = _locate(path, layers)
        if name in ("kernel", "bias"):
            found[index][name] = leaf
    return found


def get_boundary(opt_state: Any) -> chex.Array:
    """``T``, the number of leading candidate layers that are localized (int32 scalar)."""
    return localized_state(opt_state).num_localized


def set_boundary(opt_state: Any, num_localized: Any) -> Any:
    """``opt_state`` with ``T`` set (a static schedule: call it at an epoch start).

    Example:
      >>> import jax.numpy as jnp, optax
      >>> from jaxopt_adv.local import get_boundary, localized_learning, set_boundary
      >>> tx = localized_learning(optax.sgd(0.1), hebbian_lr=1e-3, localized_layers=["a"])
      >>> state = set_boundary(tx.init({"a": {"kernel": jnp.zeros((2, 2))}}), 0)
      >>> int(get_boundary(state))
      0
    """
    state = localized_state(opt_state)
    size = state.epoch_sq_norm.shape[0]
    num_localized = jnp.clip(jnp.asarray(num_localized, jnp.int32), 0, size)
    return replace_state(opt_state, LocalizedState, num_localized=num_localized)


def advance_boundary(opt_state: Any, *, threshold: Any = 0.5) -> Any:
    """Dynamic selection, at an epoch end: ``T <- T + 1`` if the transition layer stabilised.

    With ``n_e`` the transition layer's (candidate ``T``) summed squared update norm over
    the epoch that ended, ``T`` grows by one when ``sqrt(n_e / n_{e-1}) < threshold``
    (never past the last candidate; never in the first epoch, which has no
    ``n_{e-1}``). The epoch accumulators then roll over. Jit-able; the host reads ``T``
    with :func:`get_boundary` to rebuild the model's static boundary.
    """
    state = localized_state(opt_state)
    size = state.epoch_sq_norm.shape[0]
    t = state.num_localized
    index = jnp.minimum(t, size - 1)
    now, before = state.epoch_sq_norm[index], state.previous_sq_norm[index]
    stable = (before > 0) & (now < threshold**2 * before) & (t < size)
    return replace_state(
        opt_state,
        LocalizedState,
        num_localized=t + stable.astype(jnp.int32),
        epoch_sq_norm=jnp.zeros_like(state.epoch_sq_norm),
        previous_sq_norm=state.epoch_sq_norm,
    )


def _check_localized_args(
    hebbian_lr: Any,
    localized_layers: Sequence[str],
    supervision_strength: Any,
    rule: str,
    normalize: Any,
    post: str,
    legacy: Any,
    num_localized: Any,
) -> None:
    check_nonnegative(hebbian_lr, "hebbian_lr")
    check_nonnegative(supervision_strength, "supervision_strength")
    check(
        not isinstance(localized_layers, str) and len(localized_layers) >= 1,
        "localized_layers must be a non-empty sequence of layer paths such as 'layers/0'",
    )
    check(rule in RULES, f"Invalid rule: {rule!r} (choose from {', '.join(RULES)})")
    check(normalize in NORMALIZE, f"Invalid normalize: {normalize!r} (None or 'layer')")
    check(post in POSTS, f"Invalid post: {post!r} (choose from {', '.join(POSTS)})")
    check(isinstance(legacy, bool), f"Invalid legacy: {legacy!r} (True or False)")
    if num_localized is not None:
        check_interval(num_localized, "num_localized", 0, len(localized_layers))


def _pre_and_post(name: str, recorded: Sequence[chex.Array], post: str) -> tuple[Any, Any]:
    """``(x, y)`` of a layer from its sowed ``(x, pre, post)`` (or ``(x, post)``).

    Raises:
      ValueError: for ``post="pre"`` without the pre-activation output.
    """
    check(
        len(recorded) in (2, 3),
        f"activations[{name!r}] must be (x, pre, post) or (x, post), got {len(recorded)} arrays",
    )
    if post == "pre":
        check(
            len(recorded) == 3,
            f"post='pre' needs activations[{name!r}] = (x, pre, post), got an (x, y) pair",
        )
        return recorded[0], recorded[1]
    return recorded[0], recorded[-1]


def localized_learning(
    base: optax.GradientTransformation,
    *,
    hebbian_lr: Any = 1e-3,
    localized_layers: Sequence[str],
    supervision_strength: Any = 0.1,
    rule: Literal["oja", "hebb"] = "oja",
    normalize: Literal["layer"] | None = None,
    post: Literal["activation", "pre"] = "activation",
    legacy: bool = False,
    num_localized: int | None = None,
) -> optax.GradientTransformationExtraArgs:
    r"""Hebbian updates for the first ``T`` candidate layers, ``base`` for all others.

    ``update(grads, state, params, *, activations, value)``: ``activations`` maps every
    candidate layer path to the ``(x, pre, post)`` it sowed (input ``[B, in]``,
    pre-activation and post-activation outputs ``[B, out]``; a pair ``(x, y)`` is read
    as ``(x, post)``), ``value`` is the batch loss (the weak supervision). With ``y`` the
    output that ``post`` names, the kernels and biases of candidates ``l < T`` get
    ``+eta_t dK`` (:func:`hebbian_delta`); every other leaf gets ``base``'s update.
    ``base`` runs on the whole tree (its updates of the localized leaves are discarded),
    so a layer that becomes localized keeps a consistent state.

    Args:
      base: the optimizer of the non-localized layers (the paper: SGD with momentum).
      hebbian_lr: ``eta >= 0``.
      localized_layers: static; candidate Dense layers in network order, as ``/``-joined
        parameter paths (``"layers/0"``); each holds ``kernel`` (and ``bias``).
      supervision_strength: ``lambda >= 0`` of ``1 + lambda tanh(L)``.
      rule: static; ``"oja"`` (bounded weights) or ``"hebb"``.
      normalize: static; ``None`` or ``"layer"`` (divide ``dK`` by its max magnitude).
      post: static; which output is the Hebbian ``y``: ``"activation"`` (after the
        non-linearity) or ``"pre"`` (``x K + b``, the torch package's choice; needs
        ``(x, pre, post)`` triples).
      legacy: static; the ``advanced_optimizers`` torch package's formulas: ``rule="hebb"``,
        ``normalize="layer"``, ``post="pre"``, which replace those three arguments:
        ``dW = eta (Y^T X / B) / max|Y^T X / B| (1 + lambda tanh L)`` and
        ``db = eta mean_b(Y) (1 + lambda tanh L)`` with ``Y`` the pre-activation.
      num_localized: initial ``T`` in ``[0, len(localized_layers)]`` (default: all).

    Returns:
      An ``optax.GradientTransformationExtraArgs`` with a :class:`LocalizedState`.

    Raises:
      ValueError: for an argument out of range; at ``update``, without ``params``,
        ``activations`` or ``value``, or with pairs for ``post="pre"``.

    Example:
      >>> import jax, jax.numpy as jnp, optax
      >>> from jaxopt_adv.local import localized_learning
      >>> tx = localized_learning(optax.sgd(0.1), hebbian_lr=0.01, localized_layers=["l0"])
      >>> params = {"l0": {"kernel": jnp.zeros((3, 2))}, "l1": {"kernel": jnp.ones((2, 1))}}
      >>> x, y = jnp.ones((4, 3)), jnp.ones((4, 2))
      >>> updates, state = tx.update(jax.tree.map(jnp.ones_like, params), tx.init(params),
      ...                            params, activations={"l0": (x, y)}, value=0.0)
      >>> updates["l0"]["kernel"][0], updates["l1"]["kernel"][0]
      (Array([0.01, 0.01], dtype=float32), Array([-0.1], dtype=float32))
      >>> legacy = localized_learning(optax.sgd(0.1), hebbian_lr=0.01, localized_layers=["l0"],
      ...                           supervision_strength=0.0, legacy=True)
      >>> pre = jnp.full((4, 2), -0.5)  # post = relu(pre) = 0; the legacy rule reads pre
      >>> updates, _ = legacy.update(params, legacy.init(params), params,
      ...                          activations={"l0": (x, pre, jax.nn.relu(pre))}, value=0.0)
      >>> updates["l0"]["kernel"][0]  # normalised to max |dK| = 1
      Array([-0.01, -0.01], dtype=float32)

    References:
      Krithivasan, Sen, Venkataramani, Raghunathan, "Accelerating DNN Training Through
      Selective Localized Learning", Frontiers in Neuroscience 2022. The Hebbian rule,
      the weak-supervision factor and the dynamic criterion are jaxopt_adv's concrete
      choices: the paper's exact formulas are not public.

    Warning:
      * Weak supervision ``1 + lambda tanh(L)`` is the torch package's rule, not a verified paper
        rule; for ``L >= 0`` it is nearly constant.
      * A non-finite gradient reaches only the non-localized leaves (through ``base``);
        non-finite activations or ``value`` make the Hebbian updates non-finite. Wrap in
        ``optax.apply_if_finite`` to skip such steps (it checks the gradients only).
    """
    _check_localized_args(
        hebbian_lr,
        localized_layers,
        supervision_strength,
        rule,
        normalize,
        post,
        legacy,
        num_localized,
    )
    if legacy:
        rule, normalize, post = "hebb", "layer", "pre"
    layers = [tuple(p.split("/")) for p in localized_layers]
    size = len(layers)
    start = size if num_localized is None else num_localized
    base = optax.with_extra_args_support(base)

    def init_fn(params: optax.Params) -> LocalizedState:
        dtype = jnp.promote_types(optax.tree.dtype(params, "promote"), jnp.float32)
        return LocalizedState(
            count=jnp.zeros([], jnp.int32),
            num_localized=jnp.asarray(start, jnp.int32),
            epoch_sq_norm=jnp.zeros(size, dtype),
            previous_sq_norm=jnp.zeros(size, dtype),
            base_state=base.init(params),
        )

    def update_fn(updates, state, params=None, *, activations=None, value=None, **extra_args):
        if params is None:
            raise ValueError(NO_PARAMS_MSG)
        if activations is None or value is None:
            raise ValueError("localized_learning needs the extra arguments activations= and value=")
        base_updates, base_state = base.update(updates, state.base_state, params, **extra_args)
        eta = hebbian_lr * (1 + supervision_strength * jnp.tanh(value))
        kernels = _candidate_kernels(params, layers)
        base_leaves = _candidate_leaves(base_updates, layers)

        def layer_update(index: int, name: str) -> dict[str, chex.Array]:
            base_leaf = base_leaves[index]
            x, y = _pre_and_post(name, activations[name], post)

            def hebbian() -> dict[str, chex.Array]:
                delta = hebbian_delta(x, y, kernels[index], rule=rule, normalize=normalize)
                hebb = dict(zip(("kernel", "bias"), delta, strict=True))
                return {k: (eta * hebb[k]).astype(v.dtype) for k, v in base_leaf.items()}

            # cond, not where: a non-localized candidate skips its Hebbian GEMM
            return jax.lax.cond(index < state.num_localized, hebbian, lambda: base_leaf)

        chosen = [layer_update(i, name) for i, name in enumerate(localized_layers)]

        def choose(path, base_update):
            index, leaf = _locate(path, layers)
            return chosen[index][leaf] if leaf in ("kernel", "bias") else base_update

        new_updates = jax.tree_util.tree_map_with_path(choose, base_updates)
        applied = _candidate_kernels(new_updates, layers)
        sq_norms = jnp.stack([jnp.sum(jnp.square(applied[i])) for i in range(size)])
        epoch_sq_norm = state.epoch_sq_norm + sq_norms.astype(state.epoch_sq_norm.dtype)
        new_state = LocalizedState(
            optax.safe_increment(state.count),
            state.num_localized,
            epoch_sq_norm,
            state.previous_sq_norm,
            base_state,
        )
        return new_updates, new_state

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)


class LocalizedMLP(nnx.Module):
    """An MLP (Linear + ReLU hidden layers, Linear head) for localized learning.

    ``model(x, num_localized=T)`` returns ``(logits, activations)`` with
    ``activations["layers/i"] = (x_i, z_i, relu(z_i))``, ``z_i = x_i K_i + b_i``, for
    every hidden layer (the candidates, :attr:`candidates`; all three stop-gradiented),
    and ``jax.lax.stop_gradient`` on the output of hidden layer ``T - 1``: the backward
    pass stops there. ``num_localized`` is static.

    Example:
      >>> import jax.numpy as jnp
      >>> from flax import nnx
      >>> from jaxopt_adv.local import LocalizedMLP
      >>> model = LocalizedMLP(4, [8, 8], 3, rngs=nnx.Rngs(0))
      >>> logits, activations = model(jnp.ones((2, 4)), num_localized=1)
      >>> logits.shape, sorted(activations), model.candidates
      ((2, 3), ['layers/0', 'layers/1'], ('layers/0', 'layers/1'))
    """

    def __init__(
        self,
        in_features: int,
        hidden: Sequence[int],
        num_classes: int,
        *,
        param_dtype: Any = jnp.float32,
        rngs: nnx.Rngs,
    ) -> None:
        dims = [in_features, *hidden]
        self.layers = nnx.List(
            [
                Linear(a, b, param_dtype=param_dtype, rngs=rngs)
                for a, b in zip(dims[:-1], dims[1:], strict=True)
            ]
        )
        self.head = Linear(dims[-1], num_classes, param_dtype=param_dtype, rngs=rngs)
        self.candidates = tuple(f"layers/{i}" for i in range(len(hidden)))

    def __call__(
        self, x: jax.Array, *, num_localized: int = 0
    ) -> tuple[jax.Array, dict[str, tuple[jax.Array, jax.Array, jax.Array]]]:
        activations = {}
        for i, layer in enumerate(self.layers):
            pre = layer(x)
            y = jax.nn.relu(pre)
            activations[f"layers/{i}"] = jax.lax.stop_gradient((x, pre, y))
            x = jax.lax.stop_gradient(y) if i + 1 == num_localized else y
        return self.head(x), activations


def create_localized_optimizer(
    model: LocalizedMLP,
    lr: optax.ScalarOrSchedule = 0.01,
    hebbian_lr: Any = 0.001,
    *,
    localized_layers: Sequence[str] | None = None,
    supervision_strength: Any = 0.1,
    momentum: Any = 0.9,
    rule: Literal["oja", "hebb"] = "oja",
    normalize: Literal["layer"] | None = None,
    post: Literal["activation", "pre"] = "activation",
    legacy: bool = False,
    num_localized: int | None = None,
) -> optax.GradientTransformationExtraArgs:
    """The ``advanced_optimizers`` torch package's ``create_localized_optimizer(model, lr, ...)``.

    :func:`localized_learning` over ``jaxopt_adv.torch.sgd(lr, momentum)`` (torch's SGD,
    the torch package's base) with the model's hidden layers as candidates by default.

    Raises:
      ValueError: when ``model`` is not a :class:`LocalizedMLP` or a layer is not one of
        its hidden layers (the head is never localized).

    Example:
      >>> from flax import nnx
      >>> from jaxopt_adv.local import LocalizedMLP, create_localized_optimizer
      >>> model = LocalizedMLP(784, [512, 256], 10, rngs=nnx.Rngs(0))
      >>> tx = create_localized_optimizer(model, lr=0.001, hebbian_lr=0.0001)

    References:
      see :func:`localized_learning`; the base mirrors ``torch.optim.SGD`` (torch 2.13).
    """
    check(
        isinstance(model, LocalizedMLP),
        f"create_localized_optimizer needs a LocalizedMLP, got {type(model).__name__}",
    )
    layers = list(model.candidates if localized_layers is None else localized_layers)
    unknown = [name for name in layers if name not in model.candidates]
    check(not unknown, f"localized_layers {unknown} are not hidden layers of the model")
    return localized_learning(
        sgd(lr, momentum=momentum),
        hebbian_lr=hebbian_lr,
        localized_layers=layers,
        supervision_strength=supervision_strength,
        rule=rule,
        normalize=normalize,
        post=post,
        legacy=legacy,
        num_localized=num_localized,
    )
