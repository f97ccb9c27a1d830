r"""Torque-aware momentum: TAM, AdaTAM, and the correlation rules Automagic-CameAMP uses.

TAM damps the momentum's reaction to gradients that disagree with it. Per leaf, with
momentum ``m``, smoothed alignment ``s`` and gradient ``g``:

.. math::
  c_t = \operatorname{corr}(m_{t-1}, g_t), \quad
  s_t = s_{t-1} + (1 - \gamma)(c_t - s_{t-1}), \quad
  d_t = \Big(\frac{1 + s_t}{2} + \epsilon\Big) g_t, \quad
  m_t = \beta_1 m_{t-1} + d_t

The reference (``pytorch_optimizer.TAM``) correlates elementwise:
``corr = normalize(m, dim=0) * normalize(g, dim=0)``; the Automagic-CameAMP file uses a
tensor cosine, a per-row cosine, or picks between them by size ("auto"). All four rules
are pure functions here, and :func:`torque_aware_momentum_update` is the per-leaf step
both :func:`scale_by_tam` / :func:`scale_by_adatam` and the composite call.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, NamedTuple

import chex
import jax.numpy as jnp
import optax

from jaxopt_adv._common import (
    check,
    check_interval,
    check_nonnegative,
    is_concrete_number,
    renamed_keywords,
    skip_at_static_zero,
    with_gradient_dtype,
)
from jaxopt_adv.grouping import leaf_slots, tree_map_grouped
from jaxopt_adv.torch._chain import torch_chain

__all__ = [
    "CORRELATIONS",
    "TAM_VARIANTS",
    "ScaleByAdaTamState",
    "ScaleByTamState",
    "adatam",
    "auto_correlation",
    "clamped_cosine_correlation",
    "cosine_correlation",
    "dim0_correlation",
    "normalize_dim0",
    "row_cosine_correlation",
    "scale_by_adatam",
    "scale_by_tam",
    "tam",
    "tam_chain",
    "tam_correlation",
    "torque_aware_momentum_update",
]

CORRELATIONS = ("dim0", "cosine", "row_cosine", "auto")
TAM_VARIANTS = ("fixed", "refactored")

_NORMALIZE_EPS = 1e-12  # torch.nn.functional.normalize's default clamp
_COSINE_EPS = 1e-10  # Automagic adds it to each norm of its hand-written cosines
_COSINE_SIMILARITY_EPS = 1e-8  # Automagic's F.cosine_similarity(eps=...) for big 1-D leaves
_COSINE_SIMILARITY_MIN_NUMEL = 1000  # hard-coded there, independent of the auto threshold


# --------------------------------------------------------------------------------------
# Correlation rules (pure, per leaf). Each returns an array shaped like ``m``.


def _norm(x: chex.Array, axis: Any = None, keepdims: bool = False) -> chex.Array:
    return jnp.sqrt(jnp.sum(x * x, axis=axis, keepdims=keepdims))


def normalize_dim0(x: chex.Array) -> chex.Array:
    """``torch.nn.functional.normalize(x, p=2, dim=0)``: ``x / max(||x||_dim0, 1e-12)``.

    For a 1-D ``x`` the norm is the whole vector's, for an N-d ``x`` one norm per
    "column" (over axis 0, for every index of the other axes), and for a 0-d ``x`` it is
    ``|x|`` (so the result is ``sign(x)``, 0 for 0), as in torch.

    Example:
      >>> import jax.numpy as jnp
      >>> from jaxopt_adv.tam.tam import normalize_dim0
      >>> normalize_dim0(jnp.array([[3.0, 0.0], [4.0, 0.0]]))
      Array([[0.6, 0. ],
             [0.8, 0. ]], dtype=float32)
    """
    norm = jnp.abs(x) if x.ndim == 0 else _norm(x, axis=0, keepdims=True)
    # XLA turns a division by a broadcast (the (1, ...) norms) into a product with the
    # reciprocal, which is not torch's quotient (x * (1 / x) is not 1 for ~14% of floats;
    # a column of one element must normalise to exactly +-1). "+ 0 * x" makes the divisor
    # full-shaped with the same values (NaN where x is, as torch's quotient is then).
    return x / (jnp.maximum(norm, _NORMALIZE_EPS) + 0 * x)


def dim0_correlation(m: chex.Array, g: chex.Array) -> chex.Array:
    """TAM's reference correlation ``normalize(m, dim=0) * normalize(g, dim=0)``, elementwise.

    Only its sums over axis 0 are cosines; each element lies in ``[-1, 1]``.
    """
    return normalize_dim0(m) * normalize_dim0(g)


def cosine_correlation(m: chex.Array, g: chex.Array) -> chex.Array:
    """One cosine per tensor, ``<m, g> / ((||m|| + 1e-10)(||g|| + 1e-10))``, broadcast."""
    cos = jnp.sum(m * g) / ((_norm(m) + _COSINE_EPS) * (_norm(g) + _COSINE_EPS))
    return jnp.broadcast_to(cos, m.shape)


def row_cosine_correlation(m: chex.Array, g: chex.Array) -> chex.Array:
    """One cosine per row over the last axis (additive 1e-10 per norm), broadcast.

    A leaf with fewer than two axes is a single row: the tensor cosine.
    """
    if m.ndim < 2:
        return cosine_correlation(m, g)
    dot = jnp.sum(m * g, axis=-1, keepdims=True)
    norms = (_norm(m, -1, True) + _COSINE_EPS) * (_norm(g, -1, True) + _COSINE_EPS)
    return jnp.broadcast_to(dot / norms, m.shape)


def clamped_cosine_correlation(m: chex.Array, g: chex.Array) -> chex.Array:
    """``F.cosine_similarity(m.flatten(), g.flatten(), eps=1e-8)``, broadcast.

    torch clamps each norm from below (``x / max(||x||, eps)``) instead of adding eps.
    """
    m_unit = m / jnp.maximum(_norm(m), _COSINE_SIMILARITY_EPS)
    g_unit = g / jnp.maximum(_norm(g), _COSINE_SIMILARITY_EPS)
    return jnp.broadcast_to(jnp.sum(m_unit * g_unit), m.shape)


def auto_correlation(m: chex.Array, g: chex.Array, threshold: Any = 1000) -> chex.Array:
    """Automagic-CameAMP's size rule for TAM's correlation.

    * ``numel <= threshold``: :func:`cosine_correlation` (one scalar);
    * else, ``ndim >= 2``: :func:`row_cosine_correlation`;
    * else (0-d/1-D): the global cosine -- :func:`clamped_cosine_correlation` when
      ``numel > 1000`` (the file hard-codes 1000 there), :func:`cosine_correlation`
      otherwise (only reachable with ``threshold < 1000``).

    ``threshold`` may be traced (then both sides are computed and selected).
    """
    small = cosine_correlation(m, g)
    if m.ndim >= 2:
        large = row_cosine_correlation(m, g)
    elif m.size > _COSINE_SIMILARITY_MIN_NUMEL:
        large = clamped_cosine_correlation(m, g)
    else:
        large = small
    if is_concrete_number(threshold):
        return small if m.size <= threshold else large
    return jnp.where(m.size <= threshold, small, large)


def tam_correlation(
    m: chex.Array, g: chex.Array, kind: str = "dim0", *, auto_threshold: Any = 1000
) -> chex.Array:
    """Dispatch to a correlation rule by name (one of :data:`CORRELATIONS`)."""
    if kind == "dim0":
        return dim0_correlation(m, g)
    if kind == "cosine":
        return cosine_correlation(m, g)
    if kind == "row_cosine":
        return row_cosine_correlation(m, g)
    if kind == "auto":
        return auto_correlation(m, g, auto_threshold)
    raise ValueError(f"Invalid correlation: {kind!r} (must be one of {CORRELATIONS})")


# --------------------------------------------------------------------------------------
# The TAM step (pure, per leaf).


def torque_aware_momentum_update(
    g: chex.Array,
    m: chex.Array,
    s: chex.Array,
    *,
    b1: Any = 0.9,
    decay_rate: Any = 0.9,
    eps: Any = 1e-8,
    correlation: str = "dim0",
    auto_threshold: Any = 1000,
    emphasis: Any = 1.0,
    variant: str = "fixed",
) -> tuple[chex.Array, chex.Array]:
    r"""One torque-aware momentum step for one leaf; returns ``(m_new, s_new)``.

    Both variants first compute :math:`c = \operatorname{corr}(m, g)` (``correlation``)
    and the smoothed correlation :math:`\bar s = s + (1-\gamma)(c - s)`
    (torch's ``s.lerp_(c, 1 - decay_rate)``), then, with emphasis :math:`e`:

    * ``"fixed"`` (pytorch_optimizer's TAM when :math:`e = 1`; the recommended
      Automagic variant): the state keeps the correlation and the emphasis scales it
      where the direction is formed::

        d = ((1 + e * s_bar) / 2 + eps) * g;   s_new = s_bar;   m_new = b1 * m + d

    * ``"refactored"`` (Automagic-CameAMP 863c5b5, faithful): the fused in-place ops
      overwrite the state ``s`` with the direction, and the emphasis scales the
      direction::

        d = e * ((1 + s_bar) / 2 + eps) * g;   s_new = d;   m_new = b1 * m + d

      so the next step smooths a correlation into a (gradient-sized) direction.

    With :math:`e = 1` and the same inputs the two return the same ``m_new`` and differ
    only in the stored ``s``, so their trajectories part from the second step on.

    Args:
      g: the incoming update (the gradient for TAM/AdaTAM, CAME's scaled gradient in the
        composite).
      m: the previous momentum (TAM starts it at the first gradient, AdaTAM and the
        composite at zero).
      s: the previous ``s`` state (zeros at the start).
      b1: momentum factor (torch ``momentum`` / ``betas[0]``).
      decay_rate: :math:`\gamma`, decay of the smoothed correlation.
      eps: added to the ``(1 + s)/2`` factor.
      correlation: static; one of :data:`CORRELATIONS`.
      auto_threshold: size threshold of ``correlation="auto"`` (may be traced).
      emphasis: :math:`e` (the composite's ``low_rank_emphasis`` on 2-D leaves, else 1).
      variant: static; ``"fixed"`` or ``"refactored"``.

    Returns:
      ``(m_new, s_new)`` in the promoted dtype of the inputs.

    Example:
      >>> import jax.numpy as jnp
      >>> from jaxopt_adv.tam.tam import torque_aware_momentum_update
      >>> g = jnp.array([1.0, -1.0])
      >>> m, s = torque_aware_momentum_update(g, g, jnp.zeros(2), eps=0.0)
      >>> m, s
      (Array([ 1.425, -1.425], dtype=float32), Array([0.05, 0.05], dtype=float32))
    """
    if variant not in TAM_VARIANTS:
        raise ValueError(f"Invalid variant: {variant!r} (must be one of {TAM_VARIANTS})")
    c = tam_correlation(m, g, correlation, auto_threshold=auto_threshold)
    s_bar = s + (1.0 - decay_rate) * (c - s)
    if variant == "fixed":
        d = ((1.0 + emphasis * s_bar) / 2.0 + eps) * g
        s_new = s_bar
    else:
        d = emphasis * (((1.0 + s_bar) / 2.0 + eps) * g)
        s_new = d
    return b1 * m + d, s_new


# --------------------------------------------------------------------------------------
# Blocks and aliases.


class ScaleByTamState(NamedTuple):
    """State of :func:`scale_by_tam`."""

    count: chex.Array  # int32 scalar
    mu: optax.Updates  # pytorch_optimizer ``momentum_buffer``
    s: optax.Updates  # smoothed correlation, pytorch_optimizer ``s``
    slots: optax.Updates  # int32 scalar per leaf: its place among the leaves of its shape


class ScaleByAdaTamState(NamedTuple):
    """State of :func:`scale_by_adatam`."""

    count: chex.Array  # int32 scalar
    mu: optax.Updates  # pytorch_optimizer ``exp_avg`` (a sum of d, not an average)
    nu: optax.Updates  # pytorch_optimizer ``exp_avg_sq``
    s: optax.Updates  # smoothed correlation, pytorch_optimizer ``s``
    slots: optax.Updates  # int32 scalar per leaf: its place among the leaves of its shape


def _checked_step(
    b1: Any, decay_rate: Any, eps: Any, correlation: str, auto_threshold: Any, b1_name: str
) -> Callable[[chex.Array, chex.Array, chex.Array], tuple[chex.Array, chex.Array]]:
    """The leaf step ``(g, m, s) -> (m_new, s_new)`` of TAM and AdaTAM
    (:func:`torque_aware_momentum_update` with these arguments), once they are checked
    (``b1_name``: torch's name of ``b1``)."""
    check_interval(b1, "b1", 0.0, 1.0, high_open=True, torch_name=b1_name)
    check_interval(decay_rate, "decay_rate", 0.0, 1.0, high_open=True)
    check_nonnegative(eps, "eps")
    check(
        correlation in CORRELATIONS,
        f"Invalid correlation: {correlation!r} (must be one of {CORRELATIONS})",
    )
    check_nonnegative(auto_threshold, "auto_threshold")
    return functools.partial(
        torque_aware_momentum_update,
        b1=b1,
        decay_rate=decay_rate,
        eps=eps,
        correlation=correlation,
        auto_threshold=auto_threshold,
    )


def _zero_state(params: optax.Params, mu_dtype: Any) -> dict[str, Any]:
    """The fields TAM's and AdaTAM's states share at the start (the momentum in
    ``mu_dtype``, ``s`` zero, each leaf's slot)."""
    return {
        "count": jnp.zeros([], jnp.int32),
        "mu": optax.tree.zeros_like(params, dtype=mu_dtype),
        "s": optax.tree.zeros_like(params),
        "slots": leaf_slots(params),
    }


def scale_by_tam(
    b1: Any = 0.9,
    decay_rate: Any = 0.9,
    eps: Any = 1e-8,
    *,
    correlation: str = "dim0",
    auto_threshold: Any = 1000,
    mu_dtype: Any = None,
) -> optax.GradientTransformationExtraArgs:
    r"""Torque-aware momentum (TAM) as ``pytorch_optimizer.TAM`` computes it.

    .. math::
      m_0 = g_1, \quad
      s_t = s_{t-1} + (1-\gamma)(c_t - s_{t-1}), \quad
      m_t = \beta_1 m_{t-1} + \Big(\frac{1 + s_t}{2} + \epsilon\Big) g_t, \quad
      \text{out}_t = m_t

    with :math:`c_t = \operatorname{normalize}(m_{t-1}, 0) \odot
    \operatorname{normalize}(g_t, 0)` by default. The momentum starts at the *first
    gradient* (so step 1 gives :math:`m_1 = \beta_1 g_1 + d_1`), and it is a sum, not an
    average: its scale is about :math:`1/(1-\beta_1)` times the gradient's.

    Args:
      b1: momentum factor (torch ``momentum``), in ``[0, 1)``.
      decay_rate: decay :math:`\gamma` of the smoothed correlation, in ``[0, 1)``.
      eps: added to the ``(1 + s)/2`` factor, ``>= 0``.
      correlation: static; ``"dim0"`` (the reference), ``"cosine"``, ``"row_cosine"`` or
        ``"auto"`` (see :func:`auto_correlation`).
      auto_threshold: numel threshold of ``"auto"`` (an int; may be injected).
      mu_dtype: optional dtype of the momentum.

    Returns:
      An ``optax.GradientTransformationExtraArgs``.

    Example:
      >>> import jax.numpy as jnp
      >>> from jaxopt_adv.tam.tam import scale_by_tam
      >>> tx = scale_by_tam(eps=0.0)
      >>> state = tx.init(jnp.zeros(2))
      >>> u, state = tx.update(jnp.array([1.0, -1.0]), state)
      >>> u
      Array([ 1.425, -1.425], dtype=float32)

    References:
      Malviya et al., "Torque-Aware Momentum", arXiv 2412.18790,
      2024; mirrors ``pytorch_optimizer.TAM`` (4.1.0).
    """
    step = _checked_step(b1, decay_rate, eps, correlation, auto_threshold, "momentum")
    mu_dtype = None if mu_dtype is None else jnp.dtype(mu_dtype)

    def init_fn(params: optax.Params) -> ScaleByTamState:
        return ScaleByTamState(**_zero_state(params, mu_dtype))

    def update_fn(updates, state, params=None, **extra_args):
        del params, extra_args
        first = state.count == 0

        def leaf(g, m, s):
            m = jnp.where(first, g.astype(m.dtype), m)  # torch: momentum_buffer = grad.clone()
            m_new, s_new = step(g, m, s)
            return m_new.astype(g.dtype), m_new.astype(m.dtype), s_new.astype(s.dtype)

        out, mu, s = tree_map_grouped(leaf, 3, state.slots, updates, state.mu, state.s)
        return out, ScaleByTamState(optax.safe_increment(state.count), mu, s, state.slots)

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def scale_by_adatam(
    b1: Any = 0.9,
    b2: Any = 0.999,
    decay_rate: Any = 0.9,
    eps: Any = 1e-8,
    *,
    correlation: str = "dim0",
    auto_threshold: Any = 1000,
    mu_dtype: Any = None,
) -> optax.GradientTransformationExtraArgs:
    r"""Adam-style TAM (AdaTAM) as ``pytorch_optimizer.AdaTAM`` computes it.

    .. math::
      m_0 = 0, \quad
      m_t = \beta_1 m_{t-1} + \Big(\frac{1 + s_t}{2} + \epsilon\Big) g_t, \quad
      v_t = \beta_2 v_{t-1} + (1-\beta_2) g_t^2, \quad
      \text{out}_t = \frac{m_t}{\sqrt{v_t} + \epsilon}

    with :math:`s_t` as in :func:`scale_by_tam`. There is no bias correction, and the
    same ``eps`` is used in the direction factor and in the denominator.

    Args:
      b1: momentum factor (torch ``betas[0]``), in ``[0, 1)``.
      b2: second-moment decay (torch ``betas[1]``), in ``[0, 1)``.
      decay_rate: decay of the smoothed correlation, in ``[0, 1)``.
      eps: ``>= 0``.
      correlation: static; see :func:`scale_by_tam`.
      auto_threshold: numel threshold of ``"auto"``.
      mu_dtype: optional dtype of the momentum.

    Returns:
      An ``optax.GradientTransformationExtraArgs``.

    Example:
      >>> import jax.numpy as jnp
      >>> from jaxopt_adv.tam.tam import scale_by_adatam
      >>> tx = scale_by_adatam(b2=0.75, eps=0.0)
      >>> state = tx.init(jnp.zeros(2))
      >>> u, state = tx.update(jnp.array([1.0, -1.0]), state)
      >>> u
      Array([ 1., -1.], dtype=float32)

    References:
      Malviya et al., "Torque-Aware Momentum", arXiv 2412.18790,
      2024; mirrors ``pytorch_optimizer.AdaTAM`` (4.1.0).

    Warning:
      ``m`` is a sum of directions (not an EMA) and nothing is bias-corrected: with the
      defaults the first update is :math:`0.5/\sqrt{1-\beta_2} \approx 15.8` per
      element (sign-like), and under a steady gradient :math:`|m_t/\sqrt{v_t}|` settles
      between :math:`0.5/(1-\beta_1)` and :math:`1/(1-\beta_1)` (5 to 10): use
      learning rates about 10x smaller than Adam's.
    """
    step = _checked_step(b1, decay_rate, eps, correlation, auto_threshold, "beta1")
    check_interval(b2, "b2", 0.0, 1.0, high_open=True, torch_name="beta2")
    mu_dtype = None if mu_dtype is None else jnp.dtype(mu_dtype)

    def init_fn(params: optax.Params) -> ScaleByAdaTamState:
        return ScaleByAdaTamState(nu=optax.tree.zeros_like(params), **_zero_state(params, mu_dtype))

    def update_fn(updates, state, params=None, **extra_args):
        del params, extra_args

        def leaf(g, m, v, s):
            m_new, s_new = step(g, m, s)
            v = (b2 * v + (1.0 - b2) * g * g).astype(v.dtype)
            out = m_new / (jnp.sqrt(v) + eps)
            return out.astype(g.dtype), m_new.astype(m.dtype), v, s_new.astype(s.dtype)

        out, mu, nu, s = tree_map_grouped(
            leaf, 4, state.slots, updates, state.mu, state.nu, state.s
        )
        count = optax.safe_increment(state.count)
        return out, ScaleByAdaTamState(count, mu, nu, s, state.slots)

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def tam_chain(
    core: optax.GradientTransformation,
    learning_rate: optax.ScalarOrSchedule,
    weight_decay: Any,
    *,
    decoupled_weight_decay: bool,
    fixed_decay: bool,
    maximize: bool,
) -> optax.GradientTransformationExtraArgs:
    """pytorch_optimizer's weight-decay placements around ``core`` (a TAM or AdaTAM
    scaling: :func:`tam` and :func:`adatam` are this chain around theirs).

    Coupled (``grad += wd p`` before ``core``) and decoupled (``p *= 1 - lr wd``, the
    same as adding ``wd p`` after ``core``) are torch's; ``fixed_decay`` (``p *= 1 - wd``)
    adds ``-wd p`` after the learning rate, which already turned the update negative.
    """
    if not fixed_decay:
        return torch_chain(
            core,
            learning_rate=learning_rate,
            weight_decay=weight_decay,
            decoupled_weight_decay=decoupled_weight_decay,
            maximize=maximize,
        )
    check(
        decoupled_weight_decay,
        "fixed_decay=True needs decoupled_weight_decay=True (decoupled decay)",
    )
    check_nonnegative(weight_decay, "weight_decay")
    chain = torch_chain(core, learning_rate=learning_rate, maximize=maximize)
    decay = skip_at_static_zero(weight_decay, optax.add_decayed_weights(-weight_decay))
    # the decay promotes to the params' dtype
    return with_gradient_dtype(optax.chain(chain, decay))


def tam(
    learning_rate: optax.ScalarOrSchedule = 1e-3,
    b1: Any = 0.9,
    decay_rate: Any = 0.9,
    eps: Any = 1e-8,
    weight_decay: Any = 0.0,
    *,
    fixed_decay: bool = False,
    maximize: bool = False,
    correlation: str = "dim0",
    auto_threshold: Any = 1000,
    mu_dtype: Any = None,
) -> optax.GradientTransformationExtraArgs:
    r"""TAM (SGD with torque-aware momentum), reproducing ``pytorch_optimizer.TAM``.

    .. math::
      \theta_t = \theta_{t-1}(1 - \eta_t\lambda) - \eta_t m_t

    with :math:`m_t` from :func:`scale_by_tam`; the decay uses the pre-update weights
    (``fixed_decay``: :math:`1 - \lambda` instead of :math:`1 - \eta_t\lambda`).

    Args:
      learning_rate: scalar or schedule (torch ``lr``), default ``1e-3``.
      b1: momentum factor (torch ``momentum``), in ``[0, 1)``.
      decay_rate: decay of the smoothed correlation, in ``[0, 1)``.
      eps: ``>= 0``.
      weight_decay: decoupled weight decay, ``>= 0``.
      fixed_decay: static; decay by ``weight_decay`` without the learning rate.
      maximize: static; ascend instead of descend (the momentum starts at ``-g``).
      correlation: static; see :func:`scale_by_tam`.
      auto_threshold: numel threshold of ``correlation="auto"``.
      mu_dtype: optional dtype of the momentum.

    Returns:
      An ``optax.GradientTransformationExtraArgs`` (it needs ``params`` when
      ``weight_decay`` is not a Python 0).

    Example:
      >>> import jax.numpy as jnp
      >>> from jaxopt_adv.tam.tam import tam
      >>> opt = tam(0.1, eps=0.0)
      >>> params = jnp.ones(2)
      >>> updates, state = opt.update(jnp.array([1.0, -1.0]), opt.init(params), params)
      >>> updates
      Array([-0.1425,  0.1425], dtype=float32)

    References:
      Malviya et al., "Torque-Aware Momentum", arXiv 2412.18790,
      2024; mirrors ``pytorch_optimizer.TAM`` (4.1.0).

    Warning:
      There is no coupled decay (``pytorch_optimizer.TAM``'s ``weight_decouple=False``):
      in ``pytorch_optimizer.TAM`` (4.1.0) it is added to the gradient *after* the
      momentum has consumed it, so it has no effect at all (``weight_decouple=False``
      with any ``weight_decay`` equals ``weight_decay=0``).
    """
    return tam_chain(
        scale_by_tam(
            b1,
            decay_rate,
            eps,
            correlation=correlation,
            auto_threshold=auto_threshold,
            mu_dtype=mu_dtype,
        ),
        learning_rate,
        weight_decay,
        decoupled_weight_decay=True,
        fixed_decay=fixed_decay,
        maximize=maximize,
    )


@renamed_keywords(weight_decouple="decoupled_weight_decay")
def adatam(
    learning_rate: optax.ScalarOrSchedule = 1e-3,
    b1: Any = 0.9,
    b2: Any = 0.999,
    decay_rate: Any = 0.9,
    eps: Any = 1e-8,
    weight_decay: Any = 0.0,
    *,
    decoupled_weight_decay: bool = True,
    fixed_decay: bool = False,
    maximize: bool = False,
    correlation: str = "dim0",
    auto_threshold: Any = 1000,
    mu_dtype: Any = None,
) -> optax.GradientTransformationExtraArgs:
    r"""AdaTAM, reproducing ``pytorch_optimizer.AdaTAM``.

    .. math::
      \theta_t = \theta_{t-1}(1 - \eta_t\lambda) - \eta_t \frac{m_t}{\sqrt{v_t} + \epsilon}

    with :math:`m_t, v_t` from :func:`scale_by_adatam`. With
    ``decoupled_weight_decay=False`` the decay is coupled instead (:math:`g_t \leftarrow g_t + \lambda\theta_{t-1}` before
    everything, so it also enters the correlation).

    Args:
      learning_rate: scalar or schedule (torch ``lr``), default ``1e-3``.
      b1: torch ``betas[0]``, in ``[0, 1)``.
      b2: torch ``betas[1]``, in ``[0, 1)``.
      decay_rate: decay of the smoothed correlation, in ``[0, 1)``.
      eps: ``>= 0``.
      weight_decay: weight decay, ``>= 0``.
      decoupled_weight_decay: static; decoupled (default, as the reference) or coupled
        L2 (torch's name; ``pytorch_optimizer``'s ``weight_decouple``, still accepted
        with a ``DeprecationWarning``).
      fixed_decay: static; decoupled decay without the learning rate (needs
        ``decoupled_weight_decay``).
      maximize: static; ascend instead of descend.
      correlation: static; see :func:`scale_by_tam`.
      auto_threshold: numel threshold of ``correlation="auto"``.
      mu_dtype: optional dtype of the momentum.

    Returns:
      An ``optax.GradientTransformationExtraArgs``.

    Example:
      >>> import jax.numpy as jnp
      >>> from jaxopt_adv.tam.tam import adatam
      >>> opt = adatam(0.1, b2=0.75, eps=0.0)
      >>> params = jnp.ones(2)
      >>> updates, state = opt.update(jnp.array([1.0, -1.0]), opt.init(params), params)
      >>> updates
      Array([-0.1,  0.1], dtype=float32)

    References:
      Malviya et al., "Torque-Aware Momentum", arXiv 2412.18790,
      2024; mirrors ``pytorch_optimizer.AdaTAM`` (4.1.0).

    Warning:
      See :func:`scale_by_adatam`: no bias correction, so the first steps are large.
      ``fixed_decay`` with ``decoupled_weight_decay=False`` raises here; the reference ignores
      ``fixed_decay`` then.
    """
    return tam_chain(
        scale_by_adatam(
            b1,
            b2,
            decay_rate,
            eps,
            correlation=correlation,
            auto_threshold=auto_threshold,
            mu_dtype=mu_dtype,
        ),
        learning_rate,
        weight_decay,
        decoupled_weight_decay=decoupled_weight_decay,
        fixed_decay=fixed_decay,
        maximize=maximize,
    )
