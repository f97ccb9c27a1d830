"""L-BFGS as ``torch.optim.LBFGS`` computes it: one ``update`` is one ``step(closure)``.

All of a step's inner iterations (the two-loop recursion, the tolerance checks,
``max_eval``) and torch's strong-Wolfe line search run inside ``lax.while_loop`` loops, so the
update jits. The parameters are handled as one flat vector, as torch does.

The vector is split back into the parameter tree at every closure evaluation. Each leaf's
piece starts at a *runtime* offset, one int32 scalar per leaf kept in the state
(:func:`leaf_offsets`): a slice at a constant offset is a separate XLA:CPU computation per
leaf (about 15 ms of compile each, 3 s for a 200-leaf tree at every evaluation site),
while slices at runtime offsets of like leaves share one.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, NamedTuple

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.flatten_util import ravel_pytree

from jaxopt_adv._common import (
    check,
    check_count,
    check_learning_rate,
    check_nonnegative,
    check_params,
    filled_like,
    unshard_trailing_axes,
)
from jaxopt_adv.torch._twin import torch_twin

LINE_SEARCH_FNS = (None, "strong_wolfe")


class LbfgsState(NamedTuple):
    """State of :func:`lbfgs`; torch's ``optimizer.state`` keys, flat vectors included."""

    count: chex.Array  # int32: step() calls
    n_iter: chex.Array  # int32: inner iterations over all steps
    func_evals: chex.Array  # int32: function evaluations over all steps
    d: chex.Array  # the last search direction (flat)
    t: chex.Array  # the last step length
    old_dirs: chex.Array  # [history_size, n] gradient differences y, oldest first
    old_stps: chex.Array  # [history_size, n] steps s
    ro: chex.Array  # [history_size] 1 / (y . s)
    num_old: chex.Array  # int32: how many of the history rows are in use
    H_diag: chex.Array  # noqa: N815 (torch's name) the initial inverse-Hessian scale
    prev_flat_grad: chex.Array
    prev_loss: chex.Array
    offsets: Any  # int32 scalar per leaf: where its elements start in the flat vectors


def cubic_interpolate(x1, f1, g1, x2, f2, g2, bounds=None):
    """The minimiser of the cubic through two points and slopes, clamped to ``bounds``
    (default: the two points), or their midpoint where the cubic has none (torch's rule)."""
    if bounds is None:
        lo, hi = jnp.minimum(x1, x2), jnp.maximum(x1, x2)
    else:
        lo, hi = bounds
    d1 = g1 + g2 - 3 * (f1 - f2) / (x1 - x2)
    d2_square = d1 * d1 - g1 * g2
    d2 = jnp.sqrt(jnp.maximum(d2_square, 0))
    min_pos = jnp.where(
        x1 <= x2,
        x2 - (x2 - x1) * ((g2 + d2 - d1) / (g2 - g1 + 2 * d2)),
        x1 - (x1 - x2) * ((g1 + d2 - d1) / (g1 - g2 + 2 * d2)),
    )
    return jnp.where(d2_square >= 0, jnp.minimum(jnp.maximum(min_pos, lo), hi), (lo + hi) / 2)


class _Bracket(NamedTuple):
    t: jax.Array  # [2]
    f: jax.Array  # [2]
    g: jax.Array  # [2, n]
    gtd: jax.Array  # [2]


def _pair(a, b) -> jax.Array:
    return jnp.stack([a, b])


_INITIAL, _BRACKETING, _ZOOMING = 0, 1, 2  # the line search's phases


def _phase(value: Any) -> jax.Array:
    return jnp.asarray(value, jnp.int32)


def strong_wolfe(
    evaluate: Callable[[jax.Array], tuple[jax.Array, jax.Array]],
    t: jax.Array,
    d: jax.Array,
    f: jax.Array,
    g: jax.Array,
    gtd: jax.Array,
    max_ls: jax.Array,
    tolerance_change: Any,
    c1: float = 1e-4,
    c2: float = 0.9,
) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
    """torch's ``_strong_wolfe``: bracketing, then zoom by cubic interpolation.

    ``evaluate(t)`` is the loss and flat gradient at ``x + t d``. Returns ``(f, g, t,
    evaluations)`` of the point it accepts.

    torch's three evaluations (the first trial, each bracketing step, each zoom step) are
    one ``lax.while_loop`` whose body picks the phase's trial step, evaluates it and
    applies the result: the closure appears once in the program (its trace and compile
    cost once, however large the model). During bracketing the bracket holds the previous
    and the newest point, ``[prev, new]``.
    """
    d_norm = jnp.max(jnp.abs(d))

    def zoom_trial(b, insuf_progress):
        t_new = cubic_interpolate(b.t[0], b.f[0], b.gtd[0], b.t[1], b.f[1], b.gtd[1])
        b_max, b_min = jnp.max(b.t), jnp.min(b.t)
        eps = 0.1 * (b_max - b_min)
        near_edge = jnp.minimum(b_max - t_new, t_new - b_min) < eps
        outside = insuf_progress | (t_new >= b_max) | (t_new <= b_min)
        moved = jnp.where(jnp.abs(t_new - b_max) < jnp.abs(t_new - b_min), b_max - eps, b_min + eps)
        return jnp.where(near_edge & outside, moved, t_new), near_edge & ~outside

    def low_index(b):
        return jnp.where(b.f[0] <= b.f[1], 0, 1)

    def zoomed(b, t_new, f_new, g_new, gtd_new):
        """The bracket after a zoom evaluation, and whether it satisfies the Wolfe test."""
        low = low_index(b)
        high = 1 - low
        armijo_fails = (f_new > f + c1 * t_new * gtd) | (f_new >= b.f[low])
        done = ~armijo_fails & (jnp.abs(gtd_new) <= -c2 * gtd)
        # the old low end becomes the high end when the slope points back past it
        flip = ~armijo_fails & ~done & (gtd_new * (b.t[high] - b.t[low]) >= 0)

        def put(values, index, value):
            return values.at[index].set(value)

        def flipped(values):
            return jnp.where(flip, put(values, high, values[low]), values)

        target = jnp.where(armijo_fails, high, low)
        new = _Bracket(
            put(flipped(b.t), target, t_new),
            put(flipped(b.f), target, f_new),
            put(flipped(b.g), target, g_new),
            put(flipped(b.gtd), target, gtd_new),
        )
        return new, done

    def end_of_bracketing(s):
        """Bracketing stops at a point that fails Armijo, meets the curvature test or
        goes uphill (checked while evaluations are left), or when they run out: the
        bracket to zoom into."""
        b = s["bracket"]
        checked = s["ls_iter"] < max_ls
        armijo_fails = (b.f[1] > f + c1 * b.t[1] * gtd) | ((s["ls_iter"] > 1) & (b.f[1] >= b.f[0]))
        curvature_holds = jnp.abs(b.gtd[1]) <= -c2 * gtd
        stop = checked & (armijo_fails | curvature_holds | (b.gtd[1] >= 0))
        done = stop & ~armijo_fails & curvature_holds
        exhausted = ~checked  # bracket [0, t]
        low_t = jnp.where(exhausted, jnp.zeros_like(t), b.t[0])
        low_f = jnp.where(exhausted, f, b.f[0])
        low_g = jnp.where(exhausted, g, b.g[0])
        # a Wolfe point found at once is a one-point bracket: both ends hold it
        bracket = _Bracket(
            _pair(jnp.where(done, b.t[1], low_t), b.t[1]),
            _pair(jnp.where(done, b.f[1], low_f), b.f[1]),
            _pair(jnp.where(done, b.g[1], low_g), b.g[1]),
            _pair(jnp.where(done, b.gtd[1], b.gtd[0]), b.gtd[1]),
        )
        switch = stop | exhausted
        return {
            **s,
            "phase": _phase(jnp.where(switch, _ZOOMING, _BRACKETING)),
            "bracket": jax.tree.map(lambda new, old: jnp.where(switch, new, old), bracket, b),
            "done": done,
        }

    def searching(s):
        b = s["bracket"]
        wide = jnp.abs(b.t[1] - b.t[0]) * d_norm >= tolerance_change
        zooming = ~s["done"] & (s["ls_iter"] < max_ls) & wide
        return (s["phase"] != _ZOOMING) | zooming

    def settled(s):
        """``s`` with its last evaluation folded into the bracket (and the phase moved on)."""

        def fold(s):
            b = s["bracket"]
            t_new, f_new, g_new = s["evaluated"]
            new = (t_new, f_new, g_new, jnp.dot(g_new, d))

            def after_zoom(s):
                bracket, done = zoomed(b, *new)
                return {**s, "bracket": bracket, "done": done}

            def after_bracketing(s):
                shifted = _Bracket(*(_pair(v[1], n) for v, n in zip(b, new, strict=True)))
                return end_of_bracketing({**s, "bracket": shifted, "phase": _phase(_BRACKETING)})

            return jax.lax.cond(s["phase"] == _ZOOMING, after_zoom, after_bracketing, s)

        return jax.lax.cond(s["pending"], fold, lambda s: s, s) | {"pending": jnp.asarray(False)}

    def trial(s):
        """Evaluate the phase's next step length; the result is read back by the next
        round only, so that XLA computes the loss and the gradient once rather than
        inside each test that reads them."""
        b, phase = s["bracket"], s["phase"]
        t_bracketing = cubic_interpolate(
            b.t[0],
            b.f[0],
            b.gtd[0],
            b.t[1],
            b.f[1],
            b.gtd[1],
            bounds=(b.t[1] + 0.01 * (b.t[1] - b.t[0]), b.t[1] * 10),
        )
        t_zoom, insuf_progress = zoom_trial(b, s["insuf_progress"])
        t_new = jnp.where(
            phase == _INITIAL, s["t0"], jnp.where(phase == _BRACKETING, t_bracketing, t_zoom)
        )
        f_new, g_new = evaluate(t_new)
        return {
            **s,
            "evaluated": (t_new, f_new, g_new),
            "pending": jnp.asarray(True),
            "ls_iter": s["ls_iter"] + (phase != _INITIAL),
            "evals": s["evals"] + 1,
            "insuf_progress": jnp.where(phase == _ZOOMING, insuf_progress, s["insuf_progress"]),
        }

    def step(s):
        s = settled(s)
        go = searching(s)
        return jax.lax.cond(go, trial, lambda s: s, s) | {"go": go}

    # the first trial shifts in after (0, f, g, gtd): bracketing starts from [0, t]
    start = _Bracket(*(_pair(v, v) for v in (jnp.zeros_like(t), f, g, gtd)))
    s = {
        "t0": t,
        "phase": _phase(_INITIAL),
        "bracket": start,
        "ls_iter": jnp.zeros([], jnp.int32),
        "evals": jnp.zeros([], jnp.int32),
        "done": jnp.zeros([], bool),
        "insuf_progress": jnp.zeros([], bool),
        "evaluated": (t, f, g),
        "pending": jnp.asarray(False),
        "go": jnp.asarray(True),
    }
    s = jax.lax.while_loop(lambda s: s["go"], step, s)  # ends with nothing pending
    b = s["bracket"]
    low = low_index(b)
    return b.f[low], b.g[low], b.t[low], s["evals"]


def two_loop_direction(g, old_dirs, old_stps, ro, num_old, h_diag) -> jax.Array:
    """``-H g`` by the two-loop recursion over the ``num_old`` stored pairs."""

    def backward(j, carry):
        q, al = carry
        i = num_old - 1 - j
        a = jnp.dot(old_stps[i], q) * ro[i]
        return q - a * old_dirs[i], al.at[i].set(a)

    q, al = jax.lax.fori_loop(0, num_old, backward, (-g, jnp.zeros_like(ro)))

    def forward(i, r):
        be_i = jnp.dot(old_dirs[i], r) * ro[i]
        return r + (al[i] - be_i) * old_stps[i]

    return jax.lax.fori_loop(0, num_old, forward, q * h_diag)


def _push(state_arrays, y, s, ys, history_size):
    """Append ``(y, s, 1/ys)``, dropping the oldest pair when the history is full."""
    old_dirs, old_stps, ro, num_old = state_arrays
    full = num_old == history_size
    index = jnp.where(full, history_size - 1, num_old)

    def shifted(a):
        return jnp.where(full, jnp.roll(a, -1, axis=0), a)

    return (
        shifted(old_dirs).at[index].set(y),
        shifted(old_stps).at[index].set(s),
        shifted(ro).at[index].set(1 / ys),
        jnp.minimum(num_old + 1, history_size),
    )


def _whole(tree: Any) -> Any:
    """Every leaf gathered where it is explicitly sharded: the flat vectors concatenate
    all the leaves (and keep torch's flat layout), which explicit sharding refuses for
    leaves placed differently."""
    return jax.tree.map(lambda x: unshard_trailing_axes(x, jnp.ndim(x)), tree)


def leaf_offsets(params: Any) -> Any:
    """One int32 scalar per leaf: the index of its first element in the flat vector of
    ``jax.flatten_util.ravel_pytree(params)`` (the leaves in tree order, as torch's
    ``_gather_flat_grad`` concatenates its parameters).

    Kept in the state so that :func:`split_flat` slices at runtime offsets. Every offset
    is a fresh buffer (a donated state must not share them), placed like a per-leaf
    scalar of a state.

    Example:
      >>> import jax.numpy as jnp
      >>> offsets = leaf_offsets({"a": jnp.zeros((2, 3)), "b": jnp.zeros(4), "c": jnp.ones(2)})
      >>> [int(offsets[k]) for k in "abc"]
      [0, 6, 10]
    """
    leaves, treedef = jax.tree.flatten(params)
    starts = np.cumsum([0] + [int(np.prod(jnp.shape(leaf))) for leaf in leaves])
    check(
        int(starts[-1]) <= np.iinfo(np.int32).max,
        f"lbfgs needs params with at most 2**31 - 1 elements in all, got {int(starts[-1])}",
    )
    offsets = [
        filled_like(leaf, int(o), jnp.int32, ()) for leaf, o in zip(leaves, starts, strict=False)
    ]
    return treedef.unflatten(offsets)


def split_flat(flat: jax.Array, offsets: Any, like: Any) -> Any:
    """The tree ``like`` (its shapes and dtypes) read from ``flat`` at ``offsets``
    (:func:`leaf_offsets`): ``ravel_pytree``'s ``unravel`` with runtime offsets."""

    def piece(leaf: Any, offset: jax.Array) -> jax.Array:
        size = math.prod(jnp.shape(leaf))
        return jax.lax.dynamic_slice_in_dim(flat, offset, size).reshape(jnp.shape(leaf))

    return jax.tree.map(lambda leaf, o: piece(leaf, o).astype(jnp.result_type(leaf)), like, offsets)


def _placed_like(x: jax.Array, param: jax.Array) -> jax.Array:
    """``x`` placed like ``param`` where ``param`` is explicitly sharded."""
    sharding = jax.typeof(param).sharding
    if isinstance(sharding, jax.sharding.NamedSharding) and any(sharding.spec):
        return jax.sharding.reshard(x, sharding)
    return x


def _check_args(max_iter, max_eval, tolerance_grad, tolerance_change, history_size, ls_fn):
    check_count(max_iter, "max_iter")
    if max_eval is not None:
        check_count(max_eval, "max_eval")
    check_nonnegative(tolerance_grad, "tolerance_grad", allow_inf=True)
    check_nonnegative(tolerance_change, "tolerance_change", allow_inf=True)
    check_count(history_size, "history_size")
    check(
        ls_fn in LINE_SEARCH_FNS,
        f"Invalid line_search_fn {ls_fn!r}: choose one of {LINE_SEARCH_FNS}",
    )


@torch_twin("LBFGS")
def lbfgs(
    learning_rate: optax.ScalarOrSchedule = 1,
    max_iter: int = 20,
    max_eval: int | None = None,
    tolerance_grad: Any = 1e-7,
    tolerance_change: Any = 1e-9,
    history_size: int = 100,
    line_search_fn: str | None = None,
) -> optax.GradientTransformationExtraArgs:
    r"""L-BFGS that reproduces ``torch.optim.LBFGS`` step for step.

    One ``update(grads, state, params, value_fn=f)`` is one ``LBFGS.step(closure)``:
    ``grads`` is the gradient of ``f`` at ``params`` and ``value_fn(params)`` the loss
    (the closure); the step runs up to ``max_iter`` iterations of

    .. math::
      d_k = -H_k g_k \text{ (two-loop recursion over the last history\_size pairs)},
      \quad x_{k+1} = x_k + t_k d_k

    with :math:`t_k` = ``learning_rate`` (the first iteration ever:
    :math:`\min(1, 1/\|g\|_1)` times it), or the strong-Wolfe line search with cubic
    interpolation. It stops, like torch, after ``max_iter`` iterations or ``max_eval``
    evaluations, when :math:`\max|g| \le` ``tolerance_grad``, when the directional
    derivative, the step or the change in loss falls below ``tolerance_change``. The
    update is the step's total move; ``value_fn`` is differentiated with
    ``jax.value_and_grad`` at every trial point. Everything runs in ``lax.while_loop``,
    so the update jits.

    Args:
      learning_rate: scalar or schedule (torch ``lr``), default ``1``.
      max_iter: static; iterations per step, an int ``>= 1``.
      max_eval: static; function evaluations per step (default ``max_iter * 5 // 4``).
      tolerance_grad: stop when the gradient's largest entry is at most this, ``>= 0``.
      tolerance_change: stop when the loss, the step or the slope changes less, ``>= 0``.
      history_size: static; number of stored ``(y, s)`` pairs, an int ``>= 1``.
      line_search_fn: static; ``None`` or ``"strong_wolfe"``.

    Returns:
      An ``optax.GradientTransformationExtraArgs``; ``update`` needs ``params`` and the
      keyword ``value_fn``. The state holds ``2 * history_size + 3`` flat copies of the
      parameters, as torch's does (whole on every device: explicitly sharded params are
      gathered into them, and the updates come back placed like the params), and one
      int32 per leaf: where the leaf starts in them (:func:`leaf_offsets`).

    Example:
      >>> import jax
      >>> import jax.numpy as jnp
      >>> import jaxopt_adv
      >>> f = lambda x: jnp.sum((x - 3.0) ** 2)
      >>> opt = jaxopt_adv.torch.lbfgs(line_search_fn="strong_wolfe")
      >>> x = jnp.zeros(2)
      >>> state = opt.init(x)
      >>> updates, state = opt.update(jax.grad(f)(x), state, x, value_fn=f)
      >>> x + updates
      Array([3., 3.], dtype=float32)

    References:
      Nocedal, "Updating Quasi-Newton Matrices with Limited Storage", Math. Comp. 1980;
      Nocedal, Wright, "Numerical Optimization", 2006 (strong-Wolfe line search, after
      Schmidt's minFunc); mirrors ``torch.optim.LBFGS`` (torch 2.13).
    """
    check_learning_rate(learning_rate)
    _check_args(max_iter, max_eval, tolerance_grad, tolerance_change, history_size, line_search_fn)
    max_eval = max_iter * 5 // 4 if max_eval is None else max_eval

    def init_fn(params: optax.Params) -> LbfgsState:
        check_params(params)
        flat, _ = ravel_pytree(_whole(params))
        dtype = flat.dtype

        def history():  # a fresh buffer for each field, so a jit may donate the state
            return jnp.zeros((history_size, flat.size), dtype)

        return LbfgsState(
            count=jnp.zeros([], jnp.int32),
            n_iter=jnp.zeros([], jnp.int32),
            func_evals=jnp.zeros([], jnp.int32),
            d=jnp.zeros_like(flat),
            t=jnp.zeros([], dtype),
            old_dirs=history(),
            old_stps=history(),
            ro=jnp.zeros([history_size], dtype),
            num_old=jnp.zeros([], jnp.int32),
            H_diag=jnp.ones([], dtype),
            prev_flat_grad=jnp.zeros_like(flat),
            prev_loss=jnp.zeros([], dtype),
            offsets=leaf_offsets(params),
        )

    def update_fn(updates, state, params=None, *, value_fn=None, **extra_args):
        del extra_args
        if params is None or value_fn is None:
            raise ValueError(
                "lbfgs.update needs params and value_fn=(params -> loss), the closure "
                "torch.optim.LBFGS.step takes"
            )
        whole_params = _whole(params)
        x0, _ = ravel_pytree(whole_params)
        dtype = x0.dtype
        flat_grad0 = ravel_pytree(_whole(updates))[0].astype(dtype)

        def unravel(x):
            return split_flat(x, state.offsets, whole_params)

        def evaluate_at(x):
            # differentiated on the tree and concatenated, as torch's _gather_flat_grad
            loss, grad = jax.value_and_grad(value_fn)(unravel(x))
            return loss.astype(dtype), ravel_pytree(grad)[0].astype(dtype)

        lr = learning_rate(state.count) if callable(learning_rate) else learning_rate
        lr = jnp.asarray(lr, dtype)
        loss0 = jnp.asarray(value_fn(params), dtype)

        def iteration(c):
            n_iter = c["n_iter"] + 1
            total = c["total"] + 1
            g = c["g"]
            first = total == 1
            y = g - c["prev_g"]
            s = c["d"] * c["t"]
            ys = jnp.dot(y, s)
            accept = ~first & (ys > 1e-10)
            pushed = _push(
                (c["old_dirs"], c["old_stps"], c["ro"], c["num_old"]), y, s, ys, history_size
            )
            kept = (c["old_dirs"], c["old_stps"], c["ro"], c["num_old"])
            old_dirs, old_stps, ro, num_old = jax.tree.map(
                lambda a, b: jnp.where(accept, a, b), pushed, kept
            )
            num_old = jnp.where(first, 0, num_old)
            h_diag = jnp.where(first, 1, jnp.where(accept, ys / jnp.dot(y, y), c["h_diag"]))
            d = jnp.where(first, -g, two_loop_direction(g, old_dirs, old_stps, ro, num_old, h_diag))
            prev_g, prev_loss = g, c["loss"]
            t = jnp.where(first, jnp.minimum(1, 1 / jnp.sum(jnp.abs(g))) * lr, lr)
            gtd = jnp.dot(g, d)
            flat = gtd > -tolerance_change  # not a descent direction: stop, do not move

            def search(x):
                if line_search_fn == "strong_wolfe":
                    loss, grad, t_found, evals = strong_wolfe(
                        lambda t: evaluate_at(x + t * d),
                        t,
                        d,
                        c["loss"],
                        g,
                        gtd,
                        max_eval - c["evals"],
                        tolerance_change,
                    )
                    return x + t_found * d, loss, grad, t_found, evals
                x_new = x + t * d
                loss, grad = jax.lax.cond(
                    n_iter != max_iter,
                    evaluate_at,
                    lambda _: (c["loss"], g),
                    x_new,
                )
                return x_new, loss, grad, t, (n_iter != max_iter).astype(jnp.int32)

            def skip(x):
                return x, c["loss"], g, t, jnp.zeros([], jnp.int32)

            x, loss, g_new, t, evals = jax.lax.cond(flat, skip, search, c["x"])
            evals = c["evals"] + evals
            stop = (
                flat
                | (n_iter == max_iter)
                | (evals >= max_eval)
                | (jnp.max(jnp.abs(g_new)) <= tolerance_grad)
                | (jnp.max(jnp.abs(d * t)) <= tolerance_change)
                | (jnp.abs(loss - prev_loss) < tolerance_change)
            )
            return {
                **c,
                "x": x,
                "loss": loss,
                "g": g_new,
                "d": d,
                "t": t,
                "old_dirs": old_dirs,
                "old_stps": old_stps,
                "ro": ro,
                "num_old": num_old,
                "h_diag": h_diag,
                "prev_g": prev_g,
                "prev_loss": prev_loss,
                "n_iter": n_iter,
                "total": total,
                "evals": evals,
                "stop": stop,
            }

        carry = {
            "x": x0,
            "loss": loss0,
            "g": flat_grad0,
            "d": state.d,
            "t": state.t,
            "old_dirs": state.old_dirs,
            "old_stps": state.old_stps,
            "ro": state.ro,
            "num_old": state.num_old,
            "h_diag": state.H_diag,
            "prev_g": state.prev_flat_grad,
            "prev_loss": state.prev_loss,
            "n_iter": jnp.zeros([], jnp.int32),
            "total": state.n_iter,
            "evals": jnp.ones([], jnp.int32),
            # torch returns at once when the gradient is already small enough
            "stop": jnp.max(jnp.abs(flat_grad0)) <= tolerance_grad,
        }
        c = jax.lax.while_loop(lambda c: ~c["stop"], iteration, carry)
        new_state = LbfgsState(
            count=optax.safe_increment(state.count),
            n_iter=c["total"],
            func_evals=state.func_evals + c["evals"],
            d=c["d"],
            t=c["t"],
            old_dirs=c["old_dirs"],
            old_stps=c["old_stps"],
            ro=c["ro"],
            num_old=c["num_old"],
            H_diag=c["h_diag"],
            prev_flat_grad=c["prev_g"],
            prev_loss=c["prev_loss"],
            offsets=state.offsets,
        )
        moved = jax.tree.map(  # in the gradients' dtypes, as every optax transform
            lambda new, old, param, grad: _placed_like((new - old).astype(grad.dtype), param),
            unravel(c["x"]),
            whole_params,
            params,
            updates,
        )
        return moved, new_state

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)
