"""Muon as ``torch.optim.Muon`` computes it: momentum, then Newton-Schulz orthogonalization."""

from __future__ import annotations

import math
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
    check_tuple,
    concrete_scalar,
    unshard_trailing_axes,
)
from jaxopt_adv.grouping import leaf_slots, tree_map_grouped
from jaxopt_adv.torch._chain import torch_chain
from jaxopt_adv.torch._twin import torch_twin

ADJUST_LR_FNS = (None, "original", "match_rms_adamw")
NS_COEFFICIENTS = (3.4445, -4.775, 2.0315)


class ScaleByMuonState(NamedTuple):
    """State of :func:`scale_by_muon`."""

    count: chex.Array  # int32 scalar
    momentum_buffer: optax.Updates  # torch ``momentum_buffer``
    slots: optax.Updates  # int32 scalar per leaf: its place among the leaves of its shape


def lerp(start: jax.Array, end: jax.Array, weight: Any) -> jax.Array:
    """``torch.lerp(start, end, weight)`` with torch's two formulas (exact at both ends)."""
    diff = end - start
    return jnp.where(jnp.abs(weight) < 0.5, start + weight * diff, end - diff * (1 - weight))


def _bf16_matmul(a: jax.Array, b: jax.Array) -> jax.Array:
    """A bfloat16 product accumulated in float32, as torch's CPU bfloat16 GEMM."""
    return jnp.matmul(a, b, preferred_element_type=jnp.float32)


def _two_sum(a: jax.Array, b: jax.Array) -> tuple[jax.Array, jax.Array]:
    """``a + b`` and its exact rounding error (Knuth's TwoSum)."""
    total = a + b
    b_part = total - a
    return total, (a - (total - b_part)) + (b - b_part)


def _fma_bf16(beta: Any, m: jax.Array, q: jax.Array) -> jax.Array:
    """``fma(beta, m, q)`` in float32 for a bfloat16 ``m``, as torch's kernel rounds it.

    XLA decides itself which multiplication it fuses into an addition, so the fused
    multiply-add is built from exact pieces: ``beta`` split into two 12-bit halves makes
    both products with the 8-bit ``m`` exact, and TwoSum carries the rounding errors.
    """
    f32 = jnp.float32
    beta = jnp.asarray(beta, f32)
    bits = jax.lax.bitcast_convert_type(beta, jnp.uint32) & jnp.uint32(0xFFFFF000)
    high = jax.lax.bitcast_convert_type(bits, f32)
    m = m.astype(f32)
    product, product_error = _two_sum(high * m, (beta - high) * m)
    total, error = _two_sum(product, q)
    return total + (error + product_error)


def newton_schulz(
    g: jax.Array, coefficients: tuple[Any, Any, Any], steps: Any, eps: Any
) -> jax.Array:
    """The quintic Newton-Schulz iteration of ``torch.optim.Muon``, in bfloat16.

    Like torch, it works on the wide orientation of ``g`` (transposing a tall matrix),
    normalizes by the Frobenius norm (at least ``eps``) and rounds every product to
    bfloat16 after a float32 accumulation, so it returns torch's bfloat16 result.

    The iteration needs the whole matrix: an explicitly sharded ``g`` is gathered first
    (JAX refuses ``x @ x.T`` of a row-sharded ``x``, whose result would be sharded twice
    along one mesh axis) and the result is sharded back like ``g``.
    """
    a, b, c = coefficients
    f32, bf16 = jnp.float32, jnp.bfloat16
    whole = unshard_trailing_axes(g, 2)
    tall = g.shape[0] > g.shape[1]
    x = (whole.T if tall else whole).astype(bf16)
    norm = jnp.sqrt(jnp.sum(jnp.square(x.astype(f32)))).astype(bf16)
    norm = jnp.maximum(norm, jnp.asarray(eps, bf16))
    x = (x.astype(f32) / norm.astype(f32)).astype(bf16)

    def addmm(beta, m, alpha, product):
        # torch's bfloat16 addmm: fma(beta, m, alpha * product) in float32, then rounded
        return _fma_bf16(beta, m, alpha * product).astype(bf16)

    def body(_, x):
        gram = _bf16_matmul(x, x.T).astype(bf16)
        gram_update = addmm(b, gram, c, _bf16_matmul(gram, gram))
        return addmm(a, x, 1.0, _bf16_matmul(gram_update, x))

    x = jax.lax.fori_loop(0, steps, body, x)
    x = x.T if tall else x
    return x if whole is g else jax.sharding.reshard(x, jax.typeof(g).sharding)


def adjusted_ratio(shape: tuple[int, ...], adjust_lr_fn: str | None) -> float:
    """torch's learning-rate factor for a ``(A, B)`` matrix: ``sqrt(max(1, A / B))``
    ("original", Keller Jordan's) or ``0.2 sqrt(max(A, B))`` ("match_rms_adamw", Moonshot's).

    An empty matrix (``B = 0``, where torch divides by zero) has no entries to scale: 1.
    """
    rows, cols = shape
    if rows * cols == 0:
        return 1.0
    if adjust_lr_fn == "match_rms_adamw":
        return 0.2 * max(rows, cols) ** 0.5
    return max(1.0, rows / cols) ** 0.5


def check_muon_args(
    momentum: Any, ns_coefficients: Any, eps: Any, ns_steps: Any, adjust_lr_fn: Any
) -> None:
    """torch's checks, plus the ones torch only makes at the first step."""
    check_nonnegative(momentum, "momentum")
    check_tuple(ns_coefficients, "ns_coefficients", 3)
    for index, coefficient in enumerate(ns_coefficients):  # a NaN would make every step NaN
        name = f"ns_coefficients[{index}]"
        check_interval(coefficient, name, -math.inf, math.inf, low_open=True, high_open=True)
    check_nonnegative(eps, "eps", "epsilon")
    check_count(ns_steps, "ns_steps", minimum=0)
    steps = concrete_scalar(ns_steps)  # also a NumPy scalar or a concrete 0-d array
    check(
        steps is None or steps < 100,
        f"Invalid ns_steps value: {ns_steps} (ns_steps must be an int >= 0 and < 100)",
    )
    check(
        adjust_lr_fn in ADJUST_LR_FNS,
        f"Invalid adjust_lr_fn {adjust_lr_fn!r}: choose one of {ADJUST_LR_FNS}",
    )


def _check_matrices(params: optax.Params) -> None:
    """torch's construction-time check: Muon only takes 2-D parameters."""
    for path, leaf in jax.tree_util.tree_leaves_with_path(params):
        if jnp.ndim(leaf) != 2:
            raise ValueError(
                f"Muon only supports 2-D parameters; {jax.tree_util.keystr(path) or 'params'} "
                f"has shape {jnp.shape(leaf)} (optimize it with e.g. AdamW through "
                "optax.partition)"
            )


def scale_by_muon(
    momentum: Any = 0.95,
    *,
    nesterov: bool = True,
    ns_coefficients: tuple[Any, Any, Any] = NS_COEFFICIENTS,
    eps: Any = 1e-7,
    ns_steps: Any = 5,
    adjust_lr_fn: str | None = None,
) -> optax.GradientTransformationExtraArgs:
    r"""Muon's direction as torch computes it: orthogonalized momentum, scaled per shape.

    .. math::
      B_t = \mathrm{lerp}(B_{t-1}, g_t, 1-\mu), \quad
      \tilde B_t = \mathrm{lerp}(g_t, B_t, \mu) \text{ (nesterov) or } B_t, \quad
      \text{out}_t = r(A, B)\,\mathrm{NS}_k^{(a,b,c)}(\tilde B_t)

    where :math:`\mathrm{NS}` is :func:`newton_schulz` (bfloat16, as in torch) and
    :math:`r` is :func:`adjusted_ratio`.

    Args:
      momentum: torch ``momentum``, ``>= 0``.
      nesterov: static; use the Nesterov look-ahead.
      ns_coefficients: the quintic's ``(a, b, c)``.
      eps: lower bound of the norm the iteration starts from, ``>= 0``.
      ns_steps: number of Newton-Schulz iterations, an int in ``[0, 100)``.
      adjust_lr_fn: static; ``None`` / ``"original"`` or ``"match_rms_adamw"``.

    Returns:
      An ``optax.GradientTransformationExtraArgs``; ``init`` raises ``ValueError`` for a
      leaf that is not a matrix.

    Example:
      >>> import jax.numpy as jnp
      >>> from jaxopt_adv.torch import scale_by_muon
      >>> tx = scale_by_muon()
      >>> state = tx.init(jnp.zeros((2, 2)))
      >>> u, state = tx.update(jnp.array([[1.0, 0.0], [0.0, 2.0]]), state)
      >>> u.dtype
      dtype('float32')

    References:
      Jordan et al., "Muon: An optimizer for hidden layers in neural networks", 2024;
      mirrors ``torch.optim.Muon`` (torch 2.13).
    """
    check_muon_args(momentum, ns_coefficients, eps, ns_steps, adjust_lr_fn)

    def init_fn(params: optax.Params) -> ScaleByMuonState:
        _check_matrices(params)
        zeros = optax.tree.zeros_like(params)
        return ScaleByMuonState(jnp.zeros([], jnp.int32), zeros, leaf_slots(params))

    def update_fn(updates, state, params=None, **extra_args):
        del params, extra_args

        def leaf(g, buf):
            buf = lerp(buf, g.astype(buf.dtype), 1 - momentum).astype(buf.dtype)
            direction = lerp(g.astype(buf.dtype), buf, momentum) if nesterov else buf
            ortho = newton_schulz(direction, ns_coefficients, ns_steps, eps)
            out = adjusted_ratio(g.shape, adjust_lr_fn) * ortho.astype(buf.dtype)
            return out.astype(g.dtype), buf

        # one batched Newton-Schulz per group of like matrices (jaxopt_adv.grouping)
        out, buf = tree_map_grouped(leaf, 2, state.slots, updates, state.momentum_buffer)
        return out, ScaleByMuonState(optax.safe_increment(state.count), buf, state.slots)

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)


@torch_twin("Muon")
def muon(
    learning_rate: optax.ScalarOrSchedule = 1e-3,
    weight_decay: Any = 0.1,
    momentum: Any = 0.95,
    *,
    nesterov: bool = True,
    ns_coefficients: tuple[Any, Any, Any] = NS_COEFFICIENTS,
    eps: Any = 1e-7,
    ns_steps: Any = 5,
    adjust_lr_fn: str | None = None,
) -> optax.GradientTransformationExtraArgs:
    r"""Muon that reproduces ``torch.optim.Muon`` step for step.

    .. math::
      \theta_t = \theta_{t-1}(1 - \eta_t\lambda)
        - \eta_t\, r(A, B)\, \mathrm{NS}_k^{(a,b,c)}(\tilde B_t)

    (see :func:`scale_by_muon`). Like torch, the Newton-Schulz iteration runs in
    bfloat16; its result is torch's to the bit for matrices with small inner dimensions
    and within bfloat16 rounding of it for large ones (float32 accumulation order).

    Muon is for the 2-D weights of hidden layers: every leaf must be a matrix (``init``
    raises ``ValueError`` otherwise, as torch does at construction). Optimize the other
    leaves (biases, embeddings, the output layer) with e.g. AdamW through
    ``optax.partition``, as Muon users do (see the example).

    Args:
      learning_rate: scalar or schedule (torch ``lr``), default ``1e-3``.
      weight_decay: decoupled decay ``theta (1 - lr wd)``, default ``0.1``; ``>= 0``.
      momentum: torch ``momentum``, ``>= 0``.
      nesterov: static; use the Nesterov look-ahead (torch's default).
      ns_coefficients: the quintic's ``(a, b, c)``.
      eps: lower bound of the norm the iteration starts from, ``>= 0``.
      ns_steps: number of Newton-Schulz iterations, an int in ``[0, 100)``.
      adjust_lr_fn: static; ``None`` / ``"original"`` (``sqrt(max(1, A/B))``) or
        ``"match_rms_adamw"`` (``0.2 sqrt(max(A, B))``).

    Returns:
      An ``optax.GradientTransformationExtraArgs``; it needs ``params``.

    Example:
      >>> import jax
      >>> import jax.numpy as jnp
      >>> import optax
      >>> import jaxopt_adv
      >>> params = {"w": jnp.ones((3, 2)), "b": jnp.zeros(2)}
      >>> opt = optax.partition(
      ...     {"muon": jaxopt_adv.torch.muon(0.02), "adamw": jaxopt_adv.torch.adamw(1e-3)},
      ...     {"w": "muon", "b": "adamw"},
      ... )
      >>> state = opt.init(params)
      >>> grads = {"w": jnp.array([[1.0, 0.0], [0.0, 1.0], [0.0, 0.0]]), "b": jnp.ones(2)}
      >>> updates, state = opt.update(grads, state, params)
      >>> jax.tree.map(lambda u: u.shape, updates)
      {'b': (2,), 'w': (3, 2)}

    References:
      Jordan et al., "Muon: An optimizer for hidden layers in neural networks", 2024;
      Liu et al., "Muon is Scalable for LLM Training", arXiv 2502.16982, 2025
      (``match_rms_adamw``); mirrors ``torch.optim.Muon`` (torch 2.13).
    """
    return torch_chain(
        scale_by_muon(
            momentum,
            nesterov=nesterov,
            ns_coefficients=ns_coefficients,
            eps=eps,
            ns_steps=ns_steps,
            adjust_lr_fn=adjust_lr_fn,
        ),
        learning_rate=learning_rate,
        weight_decay=weight_decay,
        decoupled_weight_decay=True,
    )
