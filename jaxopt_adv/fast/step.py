"""One fused pass per step: torch-exact optimizers as CPU kernels.

The kernels cover Adam/AdamW, SGD, RMSprop, Adagrad, Adadelta, Adamax, NAdam/NAdamW,
RAdam/RAdamW, Rprop, ASGD and SparseAdam.

``optax``'s contract returns *updates* that ``optax.apply_updates`` adds to the
parameters; XLA:CPU compiles ``update + apply_updates`` of Adam into three loops per
leaf (new ``mu``, new ``nu``, new params: 10 array passes where 7 suffice). A kernel that
returned updates could not be fused with the addition, so the fast path is a *step*:
``step(params, grads, state) -> (params, state)``, made of XLA FFI custom calls (one per
up to 16 leaves of a dtype) that read ``p, g`` and the state once and write ``p`` and
the state once, in place when the buffers are donated.

The state is the state of the matching optax transform (``jaxopt_adv.torch.adam(...)``
etc., or its ``optax.inject_hyperparams`` version): states are interchangeable and
checkpoints work. Every count and schedule step is computed by the transform itself
(its ``update`` is traced; XLA removes the per-element part the kernel replaces), and
the kernel's scalars are computed as the transform computes them, so results are
bit-identical to ``tx.update`` + ``optax.apply_updates`` under ``jax.jit``. XLA's
arithmetic for a leaf depends on its program (how many leaves share a bias correction,
how XLA splits a loop over threads, 0-d leaves); the plans (:mod:`.plans`, reading
each family's typed record of hyperparameters, :mod:`.contracts`) pick the kernel
variant that mirrors it, and a self-check (:mod:`.selfcheck`) confirms the mirror on
each host.

Where the kernels cannot be used -- no compiler, a non-CPU backend, more than one
device, a leaf that is not float32/float64, state in another dtype, a hyperparameter
whose dtype would promote the arithmetic, a configuration whose XLA arithmetic is not
mirrored, ``kernel=False`` or ``JAXOPT_ADV_FAST_DISABLE=1`` -- the whole step is
``tx.update`` + ``optax.apply_updates`` (leaving some leaves to XLA inside the kernel
program would change XLA's arithmetic for them).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxopt_adv._state import find_state, replace_state
from jaxopt_adv.fast import build, ffi, flat, selfcheck
from jaxopt_adv.fast.plans import BY_NAME, SUPPORTED, Plan
from jaxopt_adv.fast.probes import PROBE_STEPS, probe_table

__all__ = ["SUPPORTED", "FusedOptimizer", "available", "fused", "jit_step", "unavailable_reason"]


def unavailable_reason() -> str | None:
    """Why the kernels cannot be used in this process, or ``None`` when they can.

    The first call builds (or loads from the cache) the kernel library and checks, once
    per library and host (the outcome is cached next to it), that the kernels reproduce
    XLA's results bit for bit here: XLA's code generation (which products become fused
    multiply-adds, which divisions become reciprocals) is mirrored from this jaxlib's
    XLA:CPU, and a host where it differs gets the pure-JAX path.
    """
    return selfcheck.unavailable(_probe_mismatches, selfcheck.KERNELS)


def available() -> bool:
    """Whether :func:`fused` steps can run the CPU kernels here (see
    :func:`unavailable_reason`)."""
    return unavailable_reason() is None


# ---------------------------------------------------------------------------- the step


class FusedOptimizer:
    """A torch-exact optimizer whose step is one fused pass per leaf on CPU.

    Build it with :func:`fused`. ``init`` is the optax transform's ``init`` (same state;
    with ``flat_state=True`` its per-parameter fields raveled into one array each, see
    :mod:`.flat`), ``step(params, grads, state) -> (params, state)`` applies one update,
    and ``tx`` is the optax transform itself.
    """

    def __init__(
        self,
        name: str,
        hyperparams: dict[str, Any],
        *,
        inject_hyperparams: bool = False,
        kernel: bool = True,
        flat_state: bool = False,
    ):
        if not isinstance(flat_state, bool):
            raise TypeError(f"flat_state must be True or False, not {flat_state!r}")
        self._fused = BY_NAME[name]
        self._probe = False  # set on the self-check's own optimizers
        self.name = name
        self.family = self._fused.family.name
        self.kernel = kernel
        self.flat_state = flat_state
        self.inject_hyperparams = inject_hyperparams
        factory = self._fused.factory
        if inject_hyperparams:
            self.tx = optax.inject_hyperparams(factory)(**hyperparams)
        else:
            self.tx = factory(**hyperparams)
        self._arguments = self._fused.arguments(hyperparams)

    def __repr__(self) -> str:
        flat_state = ", flat_state=True" if self.flat_state else ""
        return f"FusedOptimizer({self.name!r}, kernel={self.kernel}{flat_state})"

    def init(self, params: optax.Params) -> optax.OptState:
        """The optax transform's initial state (in the flat layout with ``flat_state``)."""
        return self.from_tree_state(self.tx.init(params), params)

    def to_tree_state(self, state: optax.OptState, params: optax.Params) -> optax.OptState:
        """The optax transform's own state (``state`` itself unless ``flat_state``).

        Example:
          >>> import jax, jax.numpy as jnp, optax
          >>> from jaxopt_adv import fast
          >>> opt = fast.fused("torch.adam", flat_state=True)
          >>> params = {"b": jnp.zeros(2), "w": jnp.ones((2, 3))}
          >>> state = opt.init(params)
          >>> [x.shape for x in jax.tree.leaves(state)]  # count, mu, nu
          [(), (8,), (8,)]
          >>> optax.tree.get(opt.to_tree_state(state, params), "mu")["w"].shape
          (2, 3)
        """
        if not self.flat_state:
            return state
        return flat.unflatten(state, jax.eval_shape(self.tx.init, params), params)

    def from_tree_state(self, state: optax.OptState, params: optax.Params) -> optax.OptState:
        """This optimizer's layout of the optax transform's ``state`` (the inverse of
        :meth:`to_tree_state`)."""
        if not self.flat_state:
            return state
        return flat.flatten(state, jax.eval_shape(self.tx.init, params), params)

    def step(
        self, params: optax.Params, grads: optax.Updates, state: optax.OptState, **extra_args
    ) -> tuple[optax.Params, optax.OptState]:
        """One optimizer step: ``(new_params, new_state)``; ``extra_args`` (SparseAdam's
        ``mask``) go to the transform's ``update``, and a step given one that holds an
        array takes the XLA path."""
        return self._step(params, grads, state, None, extra_args)

    def explain(
        self, params: optax.Params, grads: optax.Updates, state: optax.OptState, **extra_args
    ) -> str | None:
        """``None`` when every leaf of ``params`` would go through the kernel, else why not
        (abstract evaluation: nothing is computed)."""
        reasons: list[str] = []
        jax.eval_shape(
            lambda p, g, s, e: self._step(p, g, s, reasons, e), params, grads, state, extra_args
        )
        return "; ".join(dict.fromkeys(reasons)) or None

    # ------------------------------------------------------------------------------

    def _step(self, params, grads, state, report: list[str] | None, extra_args: dict):
        given = state
        template = None
        if self.flat_state and flat.applies(params):
            template = jax.eval_shape(self.tx.init, params)
            state = flat.unflatten(state, template, params)
        updates, new_state = self.tx.update(grads, state, params, **extra_args)

        def finish(new_params, new_state):
            if template is not None:
                new_state = flat.flatten(new_state, template, params)
            return new_params, new_state

        def reference(reason: str):
            if report is not None:
                report.append(reason)
            return finish(optax.apply_updates(params, updates), new_state)

        if not self.kernel:
            return reference("kernel=False")
        if extra := sorted(k for k, v in extra_args.items() if jax.tree.leaves(v)):
            return reference(f"the argument {', '.join(extra)} (the kernels take none)")
        reason = build.host_reason() if self._probe else unavailable_reason()
        if reason is not None:
            return reference(reason)

        arguments = self._arguments
        old_inner, new_inner = state, new_state
        if self.inject_hyperparams:
            arguments = {**arguments, **new_state.hyperparams}
            old_inner, new_inner = state.inner_state, new_state.inner_state

        def checked(family: str) -> str | None:
            return None if self._probe else selfcheck.outcome(_probe_mismatches, family)

        args = self._fused.args(arguments)
        plan = self._fused.family.plan(args, old_inner, new_inner, checked)

        p_leaves, treedef = jax.tree.flatten(params)
        g_leaves = treedef.flatten_up_to(grads)
        old_fields = [getattr(find_state(old_inner, cls), name) for cls, name in plan.fields]
        old_state_leaves = [treedef.flatten_up_to(tree) for tree in old_fields]

        # All leaves or none: XLA's arithmetic for one leaf depends on the rest of the
        # program (how many leaves share a scalar), so a leaf left to XLA inside this
        # program would not reproduce the transform's own program bit for bit.
        # XLA removes the computations of zero-size leaves: they use no shared scalar.
        n_leaves = sum(math.prod(jnp.shape(p)) > 0 for p in p_leaves)
        groups: dict[tuple, list[int]] = {}
        for i, (p, g) in enumerate(zip(p_leaves, g_leaves, strict=True)):
            state_arrays = [leaves[i] for leaves in old_state_leaves]
            why = self._leaf_reason(p, g, state_arrays, plan)
            key = plan.group(p, n_leaves) if why is None else why
            if isinstance(key, str):
                return reference(key)
            groups.setdefault(key, []).append(i)
        operands = {}
        for key in groups:
            operands[key] = plan.scalars(key)
            if isinstance(operands[key], str):
                return reference(operands[key])

        out_p = list(p_leaves)
        if template is not None and plan.fields:
            # the flat layout: each call updates its leaves' parts of the flat arrays
            given_inner = given.inner_state if self.inject_hyperparams else given
            flats = [getattr(find_state(given_inner, cls), name) for cls, name in plan.fields]
            starts = flat.offsets(params)
            for key, indices in groups.items():
                for batch in ffi.batches(indices):
                    pairs = [(p_leaves[i], g_leaves[i]) for i in batch]
                    where = [starts[i] for i in batch]
                    new_p, flats = _call_flat(
                        plan.target, plan.flags(key), operands[key], pairs, flats, where
                    )
                    for i, p in zip(batch, new_p, strict=True):
                        out_p[i] = p
            new_fields = flats
        else:
            out_state = [list(leaves) for leaves in old_state_leaves]
            for key, indices in groups.items():
                items = [
                    (p_leaves[i], g_leaves[i], [leaves[i] for leaves in old_state_leaves])
                    for i in indices
                ]
                results = []
                for batch in ffi.batches(items):
                    results += _call(plan.target, plan.flags(key), operands[key], batch)
                for i, (p, state_arrays) in zip(indices, results, strict=True):
                    out_p[i] = p
                    for k, array in enumerate(state_arrays):
                        out_state[k][i] = array
            new_fields = [treedef.unflatten(leaves) for leaves in out_state]

        for (cls, name), value in zip(plan.fields, new_fields, strict=True):
            new_inner = replace_state(new_inner, cls, **{name: value})
        if self.inject_hyperparams:
            new_state = new_state._replace(inner_state=new_inner)
        else:
            new_state = new_inner
        return finish(treedef.unflatten(out_p), new_state)

    @staticmethod
    def _leaf_reason(p, g, state_arrays, plan: Plan) -> str | None:
        dtype = np.dtype(p.dtype)
        if dtype not in ffi.FLOATS:
            return f"leaf dtype {dtype} (the kernels take float32 and float64)"
        if np.dtype(g.dtype) != dtype or jnp.shape(g) != jnp.shape(p):
            return "a gradient differs in dtype or shape from its parameter"
        if plan.state_dtype is not None and np.dtype(plan.state_dtype) != dtype:
            return f"state dtype {np.dtype(plan.state_dtype)} differs from the leaf's {dtype}"
        for array in state_arrays:
            if np.dtype(array.dtype) != dtype or jnp.shape(array) != jnp.shape(p):
                return "a state array differs in dtype or shape from its parameter"
        return None


def _call(target: str, flags: int, scalars: list[jax.Array], leaves: list[tuple]) -> list:
    """One custom call over ``leaves`` = ``[(p, g, [state arrays]), ...]``; returns
    ``[(new_p, [new state arrays]), ...]``."""
    call = ffi.Call(scalars)
    for p, g, state_arrays in leaves:
        call.update(p)
        call.read(g)
        call.update(*state_arrays)
    outputs = call.run(target, flags=flags)
    width = 1 + len(leaves[0][2])
    return [(chunk[0], list(chunk[1:])) for chunk in ffi.chunks(outputs, width)]


def _call_flat(
    target: str,
    flags: int,
    scalars: list[jax.Array],
    pairs: list[tuple],
    flats: list[jax.Array],
    offsets: list[int],
) -> tuple[list, list]:
    """One custom call over the leaves ``pairs = [(p, g), ...]`` whose state arrays are the
    parts of ``flats`` starting at ``offsets``; returns ``(new ps, new flats)``."""
    words = np.asarray(offsets, np.uint64)
    packed = np.stack([words & 0xFFFFFFFF, words >> 32], axis=-1).astype(np.uint32).ravel()
    call = ffi.Call(scalars)
    for p, g in pairs:
        call.update(p)
        call.read(g)
    call.update(*flats)
    call.read(packed)
    outputs = call.run(target, flags=flags)
    return outputs[: len(pairs)], outputs[len(pairs) :]


def _probe_mismatches() -> dict[str, str | None]:
    """Run every probe through the kernels and through XLA: per family, the first
    configuration that differs (``None``: none does)."""
    rng = np.random.default_rng(0)
    outcome: dict[str, str | None] = {}
    for family, probes in probe_table(np.random.default_rng(1)).items():
        outcome[family] = None
        for name, inject, hyperparams, shapes in probes:
            if _probe_differs(rng, name, inject, hyperparams, shapes):
                outcome[family] = f"{name} {hyperparams} (injected: {inject})"
                break
    return outcome


def _probe_differs(rng, name, inject, hyperparams, shapes) -> bool:
    kernel = FusedOptimizer(name, hyperparams, inject_hyperparams=inject)
    kernel._probe = True
    reference = FusedOptimizer(name, hyperparams, inject_hyperparams=inject, kernel=False)
    params = {k: jnp.asarray(rng.standard_normal(s), jnp.float32) for k, s in shapes.items()}
    state = reference.init(params)
    ours, theirs = (params, state), (params, state)
    step_ours, step_theirs = jax.jit(kernel.step), jax.jit(reference.step)
    for _ in range(PROBE_STEPS):
        grads = {k: jnp.asarray(rng.standard_normal(s), jnp.float32) for k, s in shapes.items()}
        ours = step_ours(ours[0], grads, ours[1])
        theirs = step_theirs(theirs[0], grads, theirs[1])
        for a, b in zip(jax.tree.leaves(ours), jax.tree.leaves(theirs), strict=True):
            if not np.array_equal(np.asarray(a), np.asarray(b), equal_nan=True):
                return True
    return False


def _resolve(optimizer: Any) -> str:
    if isinstance(optimizer, str):
        name = optimizer if optimizer.startswith("torch.") else f"torch.{optimizer}"
        if name in SUPPORTED:
            return name
    else:
        for name, (factory, _) in SUPPORTED.items():
            if optimizer is factory:
                return name
    names = ", ".join(SUPPORTED)
    raise ValueError(f"fused() supports {names} (or their factories), not {optimizer!r}")


def fused(
    optimizer: str | Callable[..., optax.GradientTransformation],
    /,
    *,
    inject_hyperparams: bool = False,
    kernel: bool = True,
    flat_state: bool = False,
    **hyperparams: Any,
) -> FusedOptimizer:
    """A torch-exact optimizer whose step runs as one fused pass per leaf on CPU.

    ``fused("torch.adam", learning_rate=1e-3)`` is ``jaxopt_adv.torch.adam(1e-3)`` with
    a ``step(params, grads, state) -> (params, state)`` that computes, bit for bit, what
    ``tx.update`` followed by ``optax.apply_updates`` computes under ``jax.jit``, for any
    hyperparameter values, in one C++ kernel that reads and writes each array once (10
    array passes become 7 for Adam); the few constant values whose XLA arithmetic the
    kernels do not mirror (an eps of 0, ...) send the step to that path
    (:meth:`FusedOptimizer.explain` says why). The state is the transform's own, so it can be checkpointed, inspected, or
    handed to the plain optax transform (``.tx``).

    Args:
      optimizer: ``"torch.adam"``, ``"torch.adamw"``, ``"torch.sgd"``,
        ``"torch.rmsprop"``, ``"torch.adagrad"``, ``"torch.adadelta"``,
        ``"torch.adamax"``, ``"torch.nadam"``, ``"torch.radam"``, ``"torch.rprop"``,
        ``"torch.asgd"``, ``"torch.sparse_adam"`` (the ``torch.`` prefix may be left
        out), or one of the factories ``jaxopt_adv.torch.adam`` / ``adamw`` / ``sgd`` /
        ``rmsprop`` / ``adagrad`` / ``adadelta`` / ``adamax`` / ``nadam`` / ``radam`` /
        ``rprop`` / ``asgd`` / ``sparse_adam``.
      inject_hyperparams: static; build the transform with
        ``optax.inject_hyperparams`` (hyperparameters live in the state and can be
        changed between steps without recompiling).
      kernel: static; ``False`` always takes the pure-JAX path (for comparisons).
      flat_state: static; keep each per-parameter state field (Adam's ``mu`` and ``nu``,
        ...) as one 1-D array over all leaves (:mod:`jaxopt_adv.fast.flat`), which
        halves the arrays a jitted step passes in and out of a many-leaf tree (200
        Adam leaves: 1,400 to 600). Bit-identical to the tree layout where the
        kernels run (the XLA fallback agrees to rounding); a one-leaf tree keeps its
        state as it is; :meth:`FusedOptimizer.to_tree_state` gives the transform's own
        state back.
      **hyperparams: the factory's arguments (learning rate, betas, momentum, ...).

    Returns:
      A :class:`FusedOptimizer`; jit its step with :func:`jit_step`.

    Example:
      >>> import jax.numpy as jnp
      >>> from jaxopt_adv import fast
      >>> opt = fast.fused("torch.adam", learning_rate=0.1)
      >>> params = {"w": jnp.ones(3)}
      >>> state = opt.init(params)
      >>> step = fast.jit_step(opt)
      >>> params, state = step(params, {"w": jnp.ones(3)}, state)
      >>> params["w"]
      Array([0.9, 0.9, 0.9], dtype=float32)

    References:
      ``torch.optim.Adam`` / ``AdamW`` / ``SGD`` / ``RMSprop`` / ``Adagrad`` /
      ``Adadelta`` / ``Adamax`` / ``NAdam`` / ``RAdam`` / ``Rprop`` / ``ASGD`` /
      ``SparseAdam`` (torch 2.13, with ``fused=True`` where torch has it) are the
      one-pass kernels this mirrors; the arithmetic is ``jaxopt_adv.torch``'s.

    Warning:
      The kernels run on the CPU backend of a single-device process. Elsewhere (GPU,
      ``--xla_force_host_platform_device_count`` > 1, sharded arrays) and for other
      dtypes the step silently takes the pure-JAX path; :meth:`FusedOptimizer.explain`
      and :func:`unavailable_reason` say why.
    """
    return FusedOptimizer(
        _resolve(optimizer),
        hyperparams,
        inject_hyperparams=inject_hyperparams,
        kernel=kernel,
        flat_state=flat_state,
    )


def jit_step(
    optimizer: FusedOptimizer,
) -> Callable[[optax.Params, optax.Updates, optax.OptState], tuple]:
    """``jax.jit(optimizer.step)`` with the params and the state donated.

    Donation lets the kernel update the buffers in place (without it XLA copies every
    array first); ``keep_unused=True`` keeps the donation of state leaves a step does
    not read. The arrays passed in are invalid after the call.

    Example:
      >>> import jax.numpy as jnp
      >>> from jaxopt_adv import fast
      >>> opt = fast.fused("torch.sgd", learning_rate=0.5, momentum=0.9)
      >>> step = fast.jit_step(opt)
      >>> params = jnp.zeros(2)
      >>> params, state = step(params, jnp.ones(2), opt.init(params))
      >>> params
      Array([-0.5, -0.5], dtype=float32)
    """
    return jax.jit(optimizer.step, donate_argnums=(0, 2), keep_unused=True)
