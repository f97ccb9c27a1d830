"""Automagic-CameAMP: CAME with torque-aware momentum, direction control, an Automagic
per-element learning rate and selective projection decay, as one ``optax`` chain.

The original implementation (hinablue's "refactored" Automagic_CameAMP for kohya's
sd-scripts, commit 863c5b5) was deleted upstream as "not work": its confidence term is
``(m - m)^2 = 0``, which makes the first update about 1e10 times too large, and several
of its features are no-ops. This module builds a corrected ("fixed") version of it from
the blocks of :mod:`jaxopt_adv.automagic`:

.. code-block:: text

  pre  = agr(scope="tree", edge) -> frequency_penalty (high-pass) -> low_rank_penalty
  body = automagic CAME (scaling -> TAM in the early phase, else decaying EMA -> confidence)
         -> direction (early: Grams + edge damping + OrthoGrad; else: Cautious + background)
         -> automagic_lr_mask -> scale(-1) -> selective_projection_decay (fixed anchor)

``with_reference_grads(pre, body)`` hands the pre-processed gradient (``ref_grads``) and
the raw one (``raw_grads``) to the body. The four phases (EARLY ``t < w//2``, LATE
``t < w``, STABLE ``t < 2w``, MATURE) come from the step counter in the state with
``jnp.where``, so one compilation serves the whole run. The two expensive penalties are
gated: the frequency penalty runs on the steps with ``count % frequency_every == 0`` and
the rank penalty on those with ``count % rank_every == 0`` (``count``: the steps taken
before this one; default 10 for both), under ``lax.cond``, with nothing cached in between,
as the original's later commit 733d821 did with its ``step % k`` gating.

Differences from the original, all deliberate:
confidence is CAME's ``(u - m)^2`` (factored over the last two axes by default, which also
cuts the state to ~17 bytes per element in the LoRA preset); TAM keeps its smoothed
correlation in ``s`` and puts the low-rank emphasis on it; SPD decays toward a fixed
anchor (zeros for LoRA, the initial weights for a full fine-tune) instead of the
previous iterate (a no-op after step 1 in the original); a learning-rate schedule rescales
the mask persistently instead of for one step; the frequency penalty is a true
high-pass; the rank penalty shrinks the singular values beyond rank 10 instead of adding
``0.01 p``; AGR's ``alpha`` is capped below 1 (``agr(cap_alpha=True)``). Unused options
of the original (``eta``/ALLoRA row scaling, ``verbose``, the buffer caches) are not
reproduced; diagnostics are in the state (:func:`automagic_stats`).

Why AGR's cap: the original multiplies AGR's ``alpha = |g| / S`` by ``1 + E`` with ``E``
the Laplacian edge strength, which is not bounded: on stiff entries (large, rapidly
varying gradients) ``alpha`` exceeds 1 and ``g (1 - alpha)`` points the other way. Grams
(early phase) and Cautious (later) take their direction from that processed gradient, so
exactly the stiff entries stepped uphill: on a quadratic of condition 1e6 the loss
climbed from 770 to 1.3e7 in 5,000 steps, and converged with ``edge_suppression=False``.
Capping ``alpha`` at ``1 - 1/n`` keeps AGR a shrinkage (its intent: damp the entries that
dominate the gradient, and more so at edges) without ever reversing a sign; the presets
then converge there (loss down more than 1e4x).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any, NamedTuple

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxopt_adv._common import (
    check,
    check_beta,
    check_count,
    check_interval,
    check_nonnegative,
    check_tuple,
    concrete_scalar,
    decay_power,
    filled_like,
    requires_float_params,
    scalar_dtype,
)
from jaxopt_adv._grouping import tree_map_grouped
from jaxopt_adv._state import find_state
from jaxopt_adv.automagic.agr import agr
from jaxopt_adv.automagic.composition import EARLY, phase_of, with_reference_grads
from jaxopt_adv.automagic.direction import (
    cautious_update,
    edge_damping_update,
    grams_update,
    orthogonalize,
)
from jaxopt_adv.automagic.lr_mask import AutomagicLrMaskState, automagic_lr_mask
from jaxopt_adv.automagic.penalties import frequency_penalty, low_rank_penalty
from jaxopt_adv.automagic.spd import selective_projection_decay
from jaxopt_adv.came.came import (
    came_confidence,
    came_precondition,
    init_second_moments,
    rms_clip,
)
from jaxopt_adv.tam.tam import CORRELATIONS, torque_aware_momentum_update

__all__ = [
    "AutomagicCameState",
    "AutomagicConfig",
    "AutomagicDirectionState",
    "automagic_came_amp",
    "automagic_direction",
    "automagic_stats",
    "create_full_finetune_optimizer",
    "create_lora_optimizer",
    "full_finetune_config",
    "lora_config",
    "scale_by_automagic_came",
    "with_torch_layout",
]

_RANK = 10  # the original's rank threshold: singular values beyond the 10th are penalised
_ANCHORS = (None, "zeros", "init")
_LAYOUTS = ("native", "flax")
_MASK_DTYPES = ("float32", "float64", "bfloat16")


@dataclasses.dataclass(frozen=True)
class AutomagicConfig:
    """The options of Automagic-CameAMP (the original's ``OptimizerConfig``, minus dead ones).

    Structural options (bools, strings, ``warmup_steps``) are static; the numbers are
    Python floats. ``learning_rate`` is not here: it is the first argument of
    :func:`automagic_came_amp` (the original's ``lr``: the initial per-element rate, and the
    reference for a schedule).
    """

    # learning-rate mask (Automagic)
    min_lr: float = 1e-7
    max_lr: float = 1e-3
    lr_bump: float = 3e-6
    mask_dtype: str = "float32"
    # CAME
    betas: tuple[float, float, float] = (0.8, 0.999, 0.9999)  # EMA b1; second moment; residual
    eps: tuple[float, float] = (1e-30, 1e-16)  # eps1 (second moment, TAM), eps2 (residual)
    clip_threshold: float = 1.0
    factored: bool = True
    came_enabled: bool = True
    beta1_decay: float = 0.9995  # b1_t = max(b1 * decay^t, floor) after the early phase
    beta1_floor: float = 0.4
    # torque-aware momentum (early phase)
    tam_momentum: float = 0.9
    tam_decay: float = 0.9
    tam_correlation: str = "auto"
    tam_large_tensor_threshold: int = 1000
    low_rank_emphasis: float = 1.2
    # phases
    warmup_steps: int = 500
    # selective projection decay
    weight_decay: float = 5e-4
    spd_anchor: str | None = None  # None: "init" for a full fine-tune, else "zeros"
    full_finetune: bool = False
    # regularisers
    edge_suppression: bool = True
    edge_threshold: float = 0.6
    edge_penalty: float = 0.1
    background_regularization: bool = True
    spatial_awareness: bool = True
    frequency_penalty: float = 0.05
    detail_preservation: float = 0.8
    lora_rank_penalty: bool = True
    rank_penalty_strength: float = 0.01
    # the frequency / rank penalty runs on the steps with count % every == 0 (count: the
    # steps taken before this one, so the first step is always penalised); 1: every step
    frequency_every: int = 10
    rank_every: int = 10
    # parameter layout: "native" works on the arrays as given (rows = second-to-last axis);
    # "flax" maps Dense kernels (in, out) and Conv kernels HWIO to torch's (out, in) / OIHW
    layout: str = "native"

    def __post_init__(self) -> None:
        check_tuple(self.betas, "betas", 3)
        for i, beta in enumerate(self.betas):
            check_beta(beta, i, f"betas[{i}]")
        check_tuple(self.eps, "eps", 2)
        for i, eps in enumerate(self.eps):
            check_nonnegative(eps, f"eps[{i}]")
        check_interval(self.min_lr, "min_lr", 0.0, math.inf, low_open=True, high_open=True)
        check_nonnegative(self.max_lr, "max_lr")
        if concrete_scalar(self.min_lr) is not None and concrete_scalar(self.max_lr) is not None:
            check(
                self.max_lr > self.min_lr,
                f"Invalid max_lr value: {self.max_lr} (max_lr must be > min_lr = {self.min_lr})",
            )
        check_nonnegative(self.lr_bump, "lr_bump")
        check_count(self.warmup_steps, "warmup_steps")
        check_count(self.frequency_every, "frequency_every")
        check_count(self.rank_every, "rank_every")
        check_interval(
            self.edge_threshold, "edge_threshold", 0.0, 1.0, low_open=True, high_open=True
        )
        check_interval(
            self.clip_threshold, "clip_threshold", 0.0, math.inf, low_open=True, high_open=True
        )
        check_interval(self.beta1_decay, "beta1_decay", 0.0, 1.0, low_open=True)
        check_interval(self.beta1_floor, "beta1_floor", 0.0, 1.0, high_open=True)
        check_interval(self.tam_momentum, "tam_momentum", 0.0, 1.0, high_open=True)
        check_interval(self.tam_decay, "tam_decay", 0.0, 1.0, high_open=True)
        check_count(self.tam_large_tensor_threshold, "tam_large_tensor_threshold", minimum=0)
        check_interval(
            self.low_rank_emphasis,
            "low_rank_emphasis",
            0.0,
            math.inf,
            low_open=True,
            high_open=True,
        )
        for name in (
            "weight_decay",
            "edge_penalty",
            "frequency_penalty",
            "detail_preservation",
            "rank_penalty_strength",
        ):
            check_nonnegative(getattr(self, name), name)
        for name, allowed in (
            ("tam_correlation", CORRELATIONS),
            ("spd_anchor", _ANCHORS),
            ("layout", _LAYOUTS),
            ("mask_dtype", _MASK_DTYPES),
        ):
            value = getattr(self, name)
            check(
                value in allowed,
                f"Invalid {name} value: {value!r} ({name} must be one of {allowed})",
            )

    @property
    def anchor(self) -> str:
        """The SPD anchor: ``spd_anchor``, or ``"init"`` / ``"zeros"`` by ``full_finetune``."""
        if self.spd_anchor is not None:
            return self.spd_anchor
        return "init" if self.full_finetune else "zeros"


# ------------------------------------------------------------------ CAME with phases


class AutomagicCameState(NamedTuple):
    """State of :func:`scale_by_automagic_came`."""

    count: chex.Array  # int32 scalar
    mu: optax.Updates  # momentum m
    s: optax.Updates  # TAM's smoothed correlation, at its true size (see _correlation_axes)
    v_row: optax.Updates  # factored second moment (ndim >= 2), else (0,)
    v_col: optax.Updates
    v: optax.Updates  # elementwise second moment (ndim < 2, or factored=False)
    r_row: optax.Updates  # factored residual (confidence), ndim >= 2
    r_col: optax.Updates
    r: optax.Updates  # elementwise residual (factored=False), else (0,)


def _stat_dtype(dtype: Any) -> Any:
    return jnp.promote_types(jnp.float32, dtype)


def _placeholder(p: chex.Array) -> chex.Array:
    return jnp.zeros((0,), _stat_dtype(p.dtype))


def _correlation_axes(shape: tuple[int, ...], config: AutomagicConfig) -> tuple[int | None, ...]:
    """The param axes TAM's smoothed correlation really has (it is broadcast elsewhere).

    ``"dim0"`` is elementwise; ``"cosine"`` one scalar; ``"row_cosine"`` one per row;
    ``"auto"`` a scalar up to ``tam_large_tensor_threshold`` elements or for 0-d/1-D
    leaves, else one per row. Storing ``s`` at that size is exact and saves 4 bytes per
    element for every leaf but the ``"dim0"`` rule. In :func:`filled_like`'s ``axes``
    form (``None``: a kept axis of size 1), so ``s`` is sharded like the param's rows.
    """
    rule, ndim = config.tam_correlation, len(shape)
    per_row = (*range(ndim - 1), None) if ndim >= 2 else ()
    if rule == "dim0":
        return tuple(range(ndim))
    if rule == "cosine":
        return ()
    if rule == "row_cosine":
        return per_row
    return () if math.prod(shape) <= config.tam_large_tensor_threshold else per_row


def _compact(x: chex.Array, shape: tuple[int, ...]) -> chex.Array:
    """``x`` (constant along the axes ``shape`` lacks) reduced down to ``shape``.

    A max over constant values is exact, and unlike slicing it works on explicitly
    sharded axes.
    """
    if x.shape == shape:
        return x
    if shape == ():
        return jnp.max(x, initial=0.0) if x.size == 0 else jnp.max(x)
    return jnp.max(x, axis=-1, keepdims=True)


def scale_by_automagic_came(config: AutomagicConfig) -> optax.GradientTransformationExtraArgs:
    r"""CAME's scaling and confidence around Automagic's phased momentum.

    .. math::
      u = \operatorname{clip}_{\mathrm{rms}}\bigl(g / \sqrt{v}\bigr), \qquad
      m = \begin{cases} \text{TAM}(m, s, u) & t < w/2 \\
          \beta_{1,t} m + (1 - \beta_{1,t}) u,\ \beta_{1,t} = \max(\beta_1 \delta^t, f)
          & \text{else} \end{cases}, \qquad
      U = m \big/ \sqrt{r},\ r \leftarrow \mathrm{EMA}_{\beta_3}\bigl((u - m)^2 + \epsilon_2\bigr)

    with :math:`v` and :math:`r` factored over the last two axes (``factored=True``; no
    confidence for leaves with fewer than two axes, as official CAME) or elementwise.
    TAM is :func:`~jaxopt_adv.tam.tam.torque_aware_momentum_update` (``variant="fixed"``,
    emphasis ``low_rank_emphasis`` on 2-D leaves when ``lora_rank_penalty``).
    ``came_enabled=False`` skips the second-moment scaling (``u = g``).

    Args:
      config: the :class:`AutomagicConfig`.

    Returns:
      An ``optax.GradientTransformationExtraArgs`` (no learning rate, ascent direction).
    """
    b1, b2, b3 = config.betas
    eps1, eps2 = config.eps
    factored, enabled = config.factored, config.came_enabled
    w = config.warmup_steps

    def init_fn(params: optax.Params) -> AutomagicCameState:
        def placeholders():
            return jax.tree.map(_placeholder, params)

        def elementwise():
            return jax.tree.map(lambda p: filled_like(p, 0.0, _stat_dtype(p.dtype)), params)

        if factored:
            v_row, v_col, v, r_row, r_col = init_second_moments(params)
            if not enabled:  # no second moment: only the confidence factors
                v_row, v_col, v = placeholders(), placeholders(), placeholders()
            r = placeholders()
        else:
            v_row, v_col, r_row, r_col = (placeholders() for _ in range(4))
            v = elementwise() if enabled else placeholders()
            r = elementwise()
        return AutomagicCameState(
            count=jnp.zeros([], jnp.int32),
            mu=optax.tree.zeros_like(params),
            s=jax.tree.map(
                lambda p: filled_like(p, 0.0, p.dtype, axes=_correlation_axes(p.shape, config)),
                params,
            ),
            v_row=v_row,
            v_col=v_col,
            v=v,
            r_row=r_row,
            r_col=r_col,
            r=r,
        )

    def update_fn(updates, state, params=None, **extra_args):
        del params, extra_args
        count = optax.safe_increment(state.count)
        early = phase_of(state.count, w) == EARLY
        t = count.astype(scalar_dtype())
        beta1_t = jnp.maximum(b1 * decay_power(config.beta1_decay, t)[0], config.beta1_floor)

        def leaf(g, m, s, v_row, v_col, v, r_row, r_col, r):
            x = g.astype(_stat_dtype(g.dtype))
            if not enabled:
                u = x
            elif factored:
                u, v_row, v_col, v = came_precondition(x, v_row, v_col, v, b2, eps1)
                u = rms_clip(u, config.clip_threshold)
            else:  # elementwise second moment for every leaf
                v = (b2 * v + (1 - b2) * (jnp.square(x) + eps1)).astype(v.dtype)
                u = rms_clip(jax.lax.rsqrt(v) * x, config.clip_threshold)
            emphasis = (
                config.low_rank_emphasis if (config.lora_rank_penalty and x.ndim == 2) else 1.0
            )
            m_tam, s_tam = torque_aware_momentum_update(
                u,
                m.astype(u.dtype),
                jnp.broadcast_to(s.astype(u.dtype), u.shape),
                b1=config.tam_momentum,
                decay_rate=config.tam_decay,
                eps=eps1,
                correlation=config.tam_correlation,
                auto_threshold=config.tam_large_tensor_threshold,
                emphasis=emphasis,
                variant="fixed",
            )
            bt = beta1_t.astype(u.dtype)
            m_ema = bt * m.astype(u.dtype) + (1 - bt) * u
            m_new = jnp.where(early, m_tam, m_ema)
            s_new = jnp.where(early, _compact(s_tam, s.shape), s.astype(u.dtype))
            if factored:
                out, r_row, r_col = came_confidence(u, m_new, r_row, r_col, b3, eps2)
            else:
                r = (b3 * r + (1 - b3) * (jnp.square(u - m_new) + eps2)).astype(r.dtype)
                out = m_new * jax.lax.rsqrt(r)
            return (
                out.astype(g.dtype),
                m_new.astype(m.dtype),
                s_new.astype(s.dtype),
                v_row,
                v_col,
                v,
                r_row,
                r_col,
                r,
            )

        out, *rest = tree_map_grouped(leaf, 9, updates, *state[1:])
        return out, AutomagicCameState(count, *rest)

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)


# --------------------------------------------------------------------- direction


class AutomagicDirectionState(NamedTuple):
    """State of :func:`automagic_direction`."""

    count: chex.Array  # int32 scalar
    edge_history: optax.Updates  # H of the early-phase edge damping (ndim >= 2), else (0,)


def automagic_direction(config: AutomagicConfig) -> optax.GradientTransformationExtraArgs:
    """Automagic's direction control, selected by phase.

    Early phase (``t < w // 2``): Grams ``|U| sign(g')`` with ``g'`` the processed
    gradient (``ref_grads``), damped where its edge strength has been high
    (``edge_suppression``), then OrthoGrad against the params (``rule="automagic"``;
    skipped for one-element leaves, whose update is always parallel to the weight).
    Later: the Cautious mask ``1[U g' > 0] / max(mean, 1e-3)``, halved when the
    gradient's variance is below 1e-6 (``background_regularization``).

    Needs ``params`` and the extra argument ``ref_grads``.
    """
    w = config.warmup_steps
    background = 1e-6 if config.background_regularization else None

    def init_fn(params: optax.Params) -> AutomagicDirectionState:
        def history(p):
            if config.edge_suppression and p.ndim >= 2:
                return filled_like(p, 0.0, _stat_dtype(p.dtype))
            return _placeholder(p)

        return AutomagicDirectionState(jnp.zeros([], jnp.int32), jax.tree.map(history, params))

    def update_fn(updates, state, params=None, **extra_args):
        ref_grads = extra_args.get("ref_grads")
        if params is None or ref_grads is None:
            raise ValueError(
                "automagic_direction needs params and the extra argument ref_grads "
                "(use it inside with_reference_grads)"
            )
        early = phase_of(state.count, w) == EARLY

        def leaf(u, g, p, h):
            c = grams_update(u, g)
            if config.edge_suppression and u.ndim >= 2:
                c, h_new = edge_damping_update(
                    c, h, 0.9, config.edge_threshold, config.edge_penalty, 0.1
                )
                h = jnp.where(early, h_new, h)
            if p.size > 1:  # a one-element update is always parallel to its weight
                c = orthogonalize(c, p, 1e-30, rule="automagic")
            late = cautious_update(u, g, 1e-3, background, 0.5)
            return jnp.where(early, c, late).astype(u.dtype), h

        out, history = tree_map_grouped(leaf, 2, updates, ref_grads, params, state.edge_history)
        return out, AutomagicDirectionState(optax.safe_increment(state.count), history)

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)


# ------------------------------------------------------------------------ layout


def _to_torch(x: chex.Array) -> chex.Array:
    if x.ndim == 2:
        return x.T
    if x.ndim == 4:
        return x.transpose(3, 2, 0, 1)  # HWIO -> OIHW
    return x


def _from_torch(x: chex.Array) -> chex.Array:
    if x.ndim == 2:
        return x.T
    if x.ndim == 4:
        return x.transpose(2, 3, 1, 0)  # OIHW -> HWIO
    return x


def with_torch_layout(inner: optax.GradientTransformation) -> optax.GradientTransformationExtraArgs:
    """Run ``inner`` on torch-layout views of Flax params: 2-D leaves transposed
    (Dense ``(in, out)`` -> ``(out, in)``), 4-D leaves HWIO -> OIHW; updates mapped back.

    Row/column-dependent maths (CAME's factoring, the Laplacian, the per-row variance and
    cosine, the FFT) then sees the axes torch would. The state is stored in torch layout.
    """
    inner = optax.with_extra_args_support(inner)

    def convert(tree):
        return None if tree is None else jax.tree.map(_to_torch, tree)

    def init_fn(params):
        return inner.init(convert(params))

    def update_fn(updates, state, params=None, **extra_args):
        extra_args = {
            k: convert(v) if k in ("ref_grads", "raw_grads") else v for k, v in extra_args.items()
        }
        out, state = inner.update(convert(updates), state, convert(params), **extra_args)
        return jax.tree.map(_from_torch, out), state

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)


# --------------------------------------------------------------------- composite


def _every(
    inner: optax.GradientTransformationExtraArgs, every: int
) -> optax.GradientTransformationExtraArgs:
    """``inner`` (stateless) on the steps with ``step % every == 0``, identity on the others.

    ``step`` is the extra argument :func:`with_reference_grads` passes with ``step_of``
    (the steps taken before this one). The skipped branch of the ``lax.cond`` costs
    nothing, and nothing is cached between steps. ``every == 1`` is ``inner`` itself.
    """
    if every == 1:
        return inner

    def update_fn(updates, state, params=None, **extra_args):
        step = extra_args.pop("step")

        def run(updates):
            return inner.update(updates, state, params, **extra_args)[0]

        return jax.lax.cond(step % every == 0, run, lambda updates: updates, updates), state

    return optax.GradientTransformationExtraArgs(inner.init, update_fn)


def _body_step(body_state: tuple) -> chex.Array:
    """The step counter of the composite's body (its CAME block's)."""
    return body_state[0].count


def automagic_came_amp(
    learning_rate: optax.ScalarOrSchedule = 1e-6,
    config: AutomagicConfig | None = None,
    *,
    weight_decay_mask: Any | Callable[[optax.Params], Any] | None = None,
    kernel: bool = False,
) -> optax.GradientTransformationExtraArgs:
    r"""Automagic-CameAMP with the corrected ("fixed") semantics, as an ``optax`` chain.

    See the module docstring for the chain and the differences from the original. The
    per-element learning rate starts at ``learning_rate`` (the original's ``lr``), grows or
    shrinks by ``lr_bump`` per step during warm-up as the gradient's sign agrees with the
    previous step's, and is clamped to ``[min_lr, max_lr]``; a schedule acts as torch's
    group lr: increases are added to the mask during warm-up, and afterwards the mask is
    scaled by ``max(lr_t / lr_max, 0.1)``.

    Args:
      learning_rate: initial per-element learning rate, or a schedule (its value at
        step 0 initialises the mask), ``> 0``.
      config: an :class:`AutomagicConfig` (default: its defaults, the LoRA preset's
        values); see :func:`lora_config`, :func:`full_finetune_config`.
      weight_decay_mask: optional mask (tree or callable) of the leaves SPD decays.
      kernel: static; step the learning-rate mask with
        :func:`jaxopt_adv.fast.automagic_lr_mask` (one C++ pass per leaf on CPU, the
        same state). Its outputs are the JAX block's bit for bit, but XLA then fuses
        the blocks around it differently, so steps agree to rounding.

    Returns:
      An ``optax.GradientTransformationExtraArgs``; ``update`` needs ``params``.

    Example:
      >>> import jax.numpy as jnp
      >>> from jaxopt_adv.automagic import automagic_came_amp, automagic_stats
      >>> opt = automagic_came_amp(1e-4)
      >>> params = {"w": jnp.ones((4, 3)), "b": jnp.zeros(3)}
      >>> state = opt.init(params)
      >>> grads = {"w": jnp.full((4, 3), 0.1), "b": jnp.ones(3)}
      >>> updates, state = opt.update(grads, state, params)
      >>> stats = automagic_stats(state)  # pass the config when it is not the default
      >>> int(stats["phase"]), round(float(stats["mean_lr"]), 8)  # 1e-4 - 0.8 * 3e-6
      (0, 9.76e-05)

    References:
      Luo et al., "CAME: Confidence-guided Adaptive Memory Efficient Optimization",
      ACL 2023; Malviya et al., "Torque-Aware Momentum", arXiv 2412.18790; Cao et al.,
      "Grams", arXiv 2412.17107; Liang et al., "Cautious Optimizers", arXiv 2411.16085;
      Tian et al., "Rethinking Weight Decay for Robust Fine-Tuning of Foundation Models"
      (SPD), NeurIPS 2024; Jiang et al., adaptive gradient regularisation, arXiv
      2407.16944; Ostris' Automagic (ai-toolkit). Checked against the minimal torch
      version in ``tests/reference/torch_automagic.py`` (restated from the method, not
      translated from this code).

    Warning:
      This is not the original's arithmetic (which does not train, see the module
      docstring); each block's faithful mode is available on its own.
    """
    config = AutomagicConfig() if config is None else config
    initial = learning_rate(0) if callable(learning_rate) else learning_rate
    # > 0: the initial per-element rate (automagic_lr_mask's lr), named as the user passed it
    check_interval(
        initial,
        "learning_rate",
        0.0,
        math.inf,
        low_open=True,
        high_open=True,
        torch_name="learning rate",
    )
    pre = [
        agr(
            scope="tree",
            edge=config.edge_suppression,
            edge_threshold=config.edge_threshold,
            edge_scale=config.edge_penalty,
            eps=1e-10,
            # alpha < 1: the edge factor must not flip a stiff entry's sign (see above)
            cap_alpha=True,
        )
    ]
    if config.spatial_awareness and config.frequency_penalty > 0:
        pre.append(
            _every(
                frequency_penalty(config.frequency_penalty, mode="highpass"),
                config.frequency_every,
            )
        )
    if config.lora_rank_penalty and config.rank_penalty_strength > 0:
        pre.append(
            _every(
                low_rank_penalty(config.rank_penalty_strength, rank=_RANK, mode="tail"),
                config.rank_every,
            )
        )
    spd = selective_projection_decay(
        config.weight_decay,
        config.anchor,
        rank_aware=config.lora_rank_penalty,
        active_steps=config.warmup_steps,
    )
    if weight_decay_mask is not None:
        spd = optax.masked(spd, weight_decay_mask, mask_compatible_extra_args=True)
    if kernel:  # imported here: jaxopt_adv.fast imports this package
        from jaxopt_adv.fast import automagic_lr_mask as lr_mask_block
    else:
        lr_mask_block = automagic_lr_mask
    body = optax.chain(
        scale_by_automagic_came(config),
        automagic_direction(config),
        lr_mask_block(
            initial,
            config.min_lr,
            config.max_lr,
            config.lr_bump,
            group_lr=learning_rate if callable(learning_rate) else None,
            warmup_steps=config.warmup_steps,
            spatial=config.spatial_awareness,
            detail_preservation=config.detail_preservation,
            persistent_schedule=True,
            mask_dtype=config.mask_dtype,
        ),
        optax.scale(-1.0),
        spd,
    )
    tx = requires_float_params(with_reference_grads(optax.chain(*pre), body, step_of=_body_step))
    return with_torch_layout(tx) if config.layout == "flax" else tx


def lora_config(**overrides: Any) -> AutomagicConfig:
    """The LoRA preset (``full_finetune=False``, rank penalty, edge suppression, spatial
    awareness, SPD toward zeros), with ``overrides`` merged in (never an error for
    repeating a preset key, unlike the original's factory)."""
    preset = {
        "full_finetune": False,
        "lora_rank_penalty": True,
        "edge_suppression": True,
        "spatial_awareness": True,
    }
    return AutomagicConfig(**{**preset, **overrides})


def full_finetune_config(**overrides: Any) -> AutomagicConfig:
    """The full fine-tune preset (SPD toward the initial weights, no rank penalty), with
    ``overrides`` merged in."""
    preset = {
        "full_finetune": True,
        "lora_rank_penalty": False,
        "edge_suppression": True,
        "spatial_awareness": True,
    }
    return AutomagicConfig(**{**preset, **overrides})


def create_lora_optimizer(
    learning_rate: optax.ScalarOrSchedule = 1e-6, **overrides: Any
) -> optax.GradientTransformationExtraArgs:
    """Automagic-CameAMP for LoRA adapters (the original's ``create_lora_optimizer``).

    ``overrides`` are :class:`AutomagicConfig` fields merged into :func:`lora_config`,
    plus ``weight_decay_mask`` and ``kernel`` (see :func:`automagic_came_amp`).

    A parameter moves by about ``max_lr`` (1e-3) per step at most: ``1e-4`` suits
    fine-tuning; a problem solved from scratch, whose parameters travel O(10) units,
    wants a higher start and ceiling, e.g. ``create_lora_optimizer(1e-3, max_lr=2e-3)``
    (optax's parabola and Rosenbrock tests in 10,000 steps). The same holds for
    :func:`create_full_finetune_optimizer`.

    Example:
      >>> from jaxopt_adv.automagic import create_lora_optimizer
      >>> opt = create_lora_optimizer(1e-4, warmup_steps=100, edge_suppression=False)
    """
    mask = overrides.pop("weight_decay_mask", None)
    kernel = overrides.pop("kernel", False)
    return automagic_came_amp(
        learning_rate, lora_config(**overrides), weight_decay_mask=mask, kernel=kernel
    )


def create_full_finetune_optimizer(
    learning_rate: optax.ScalarOrSchedule = 1e-6, **overrides: Any
) -> optax.GradientTransformationExtraArgs:
    """Automagic-CameAMP for a full fine-tune (the original's ``create_full_finetune_optimizer``).

    ``overrides`` are :class:`AutomagicConfig` fields merged into
    :func:`full_finetune_config`, plus ``weight_decay_mask`` and ``kernel`` (see
    :func:`automagic_came_amp`).
    """
    mask = overrides.pop("weight_decay_mask", None)
    kernel = overrides.pop("kernel", False)
    return automagic_came_amp(
        learning_rate, full_finetune_config(**overrides), weight_decay_mask=mask, kernel=kernel
    )


# ------------------------------------------------------------------- diagnostics


def automagic_stats(opt_state: Any, config: AutomagicConfig | None = None) -> dict[str, chex.Array]:
    """Diagnostics from an Automagic-CameAMP state, without printing anything.

    Args:
      opt_state: the optimizer state (also inside ``optax.inject_hyperparams``,
        ``optax.MultiSteps``, ...).
      config: the :class:`AutomagicConfig` the optimizer was built with (for the phase
        boundaries; default: the defaults).

    Returns:
      ``{"step", "phase", "mean_lr"}``: the updates taken, the phase of the last step
      (0 EARLY, 1 LATE, 2 STABLE, 3 MATURE) and the mean effective per-element learning
      rate of the last step, weighted by leaf size.
    """
    config = AutomagicConfig() if config is None else config
    mask_state = find_state(opt_state, AutomagicLrMaskState)
    sizes = [math.prod(np.shape(m)) for m in jax.tree.leaves(mask_state.lr_mask)]
    weighted = sum(a * n for a, n in zip(jax.tree.leaves(mask_state.avg_lr), sizes, strict=True))
    return {
        "step": mask_state.count,
        "phase": phase_of(jnp.maximum(mask_state.count - 1, 0), config.warmup_steps),
        "mean_lr": weighted / max(sum(sizes), 1),
    }
