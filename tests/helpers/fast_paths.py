"""Steps of a fast-path (kernel) optimizer and of its XLA twin side by side, shared by the
tests of jaxopt_adv.fast: jitted steps, their compiled text, errors, and the bit-identity
run of ``fast.fused`` against ``fast.fused(..., kernel=False)``."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxopt_adv import fast
from tests.fast.common import assert_bit_identical

F32, F64 = jnp.float32, jnp.float64
# the gradient scale of each step of the bit-identity runs (cycled)
SCALES = (5.0, 1.0, 0.5, 2.0, 0.1, 3.0, 0.2)


def step_fn(tx, **jit_options):
    """The jitted ``update + apply_updates`` step of ``tx``."""

    def step(params, state, grads):
        updates, state = tx.update(grads, state, params)
        return optax.apply_updates(params, updates), state

    return jax.jit(step, **jit_options)


def max_relative_error(ours, theirs) -> float:
    """The worst over leaves of ``max|ours - theirs| / max|theirs|`` (empty leaves skipped)."""
    worst = 0.0
    for a, b in zip(jax.tree.leaves(ours), jax.tree.leaves(theirs), strict=True):
        a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
        if b.size:
            worst = max(worst, float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-30)))
    return worst


def compiled(tx, params) -> str:
    """The optimized HLO text of the donated jitted step of ``tx`` on ``params``."""
    state = tx.init(params)
    step = step_fn(tx, donate_argnums=(0, 1))
    return step.lower(params, state, params).compile().as_text()


def assert_left_to_jax(ours, theirs, params, target: str) -> None:
    """``ours`` (a fast-path optimizer) compiles no ``target`` kernel call for ``params``
    and its step (on gradients 0.3) equals ``theirs``' (the JAX transform) bit for bit."""
    assert target not in compiled(ours, params)
    grads = jax.tree.map(lambda p: jnp.full(p.shape, 0.3, p.dtype), params)
    got = step_fn(ours)(params, ours.init(params), grads)
    want = step_fn(theirs)(params, theirs.init(params), grads)
    jax.tree.map(np.testing.assert_array_equal, got, want)


def make_tree(rng: np.random.Generator, leaves: dict, scale: float = 1.0) -> dict:
    """Normal random leaves ``{name: (shape, dtype)}``, times ``scale``."""
    return {k: jnp.asarray(scale * rng.standard_normal(s), d) for k, (s, d) in leaves.items()}


def gradients(rng: np.random.Generator, leaves: dict, t: int) -> dict[str, jax.Array]:
    """Step ``t``'s gradients: scaled normal values whose first four entries are 0, -0
    and two subnormals."""
    out = {}
    for k, (s, d) in leaves.items():
        g = np.asarray(SCALES[t % len(SCALES)] * rng.standard_normal(s), d)
        if g.size >= 4:
            tiny = np.finfo(g.dtype).smallest_subnormal
            g.reshape(-1)[:4] = [0.0, -0.0, 3 * tiny, -tiny]
        out[k] = jnp.asarray(g)
    return out


def expected_reason(expected_when_available: str | None = None) -> str | None:
    """What ``explain`` must say: the expected reason, or why the kernels are unavailable
    on this host (then every step is the XLA path and still must match)."""
    reason = fast.unavailable_reason()
    return expected_when_available if reason is None else reason


def run_both(name, kwargs, leaves, *, inject=False, steps=20, seed=0):
    """20 steps of the kernel and of the XLA path from the same start; compare each."""
    kwargs = {"learning_rate": 0.05, **kwargs}
    ours = fast.fused(name, inject_hyperparams=inject, **kwargs)
    theirs = fast.fused(name, inject_hyperparams=inject, kernel=False, **kwargs)
    rng = np.random.default_rng(seed)
    params = make_tree(rng, leaves)
    state = ours.init(params)
    lowered = jax.jit(ours.step).lower(params, params, state)
    # the reason only when the program has no kernel call (saves a trace per test)
    explained = None if "jaxopt_adv_" in lowered.as_text() else ours.explain(params, params, state)
    step_ours, step_theirs = lowered.compile(), jax.jit(theirs.step)
    a, b = (params, state), (params, state)
    for t in range(steps):
        grads = gradients(rng, leaves, t)
        a = step_ours(a[0], grads, a[1])
        b = step_theirs(b[0], grads, b[1])
        assert_bit_identical(a, b, f"step {t + 1}")
    return explained
