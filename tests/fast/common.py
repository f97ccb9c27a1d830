"""Helpers shared by the fast-path tests (no torch import: the parity test brings it)."""

from __future__ import annotations

import jax
import numpy as np


def bits(x) -> np.ndarray:
    """The raw bits of a float array (so that -0.0 and 0.0, and NaN payloads, differ)."""
    x = np.asarray(x)
    return x.view(np.dtype(f"u{x.dtype.itemsize}"))


def assert_bit_identical(ours, theirs, where: str = "") -> None:
    """Same tree structure, dtypes and bits in every leaf."""
    ours_leaves, treedef = jax.tree.flatten(ours)
    theirs_leaves = treedef.flatten_up_to(theirs)
    paths = [jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_leaves_with_path(ours)]
    for path, a, b in zip(paths, ours_leaves, theirs_leaves, strict=True):
        assert np.asarray(a).dtype == np.asarray(b).dtype, (where, path)
        if not np.array_equal(bits(a), bits(b)):
            diff = np.max(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64)))
            raise AssertionError(f"{where}: {path} differs (max abs diff {diff:.3e})")


def random_options(seed: int) -> dict:
    """Hyperparameters of the kernel's arithmetic drawn at random (seeded)."""
    rng = np.random.default_rng(seed)
    return {
        "betas": (
            float(rng.uniform(0.3, 0.95)),
            float(rng.uniform(0.8, 0.999)),
            float(rng.uniform(0.9, 0.9999)),
        ),
        "eps": (float(10 ** rng.uniform(-30, -8)), float(10 ** rng.uniform(-16, -6))),
        "clip_threshold": float(rng.uniform(0.2, 2.0)),
        "beta1_decay": float(rng.uniform(0.9, 1.0)),
        "beta1_floor": float(rng.uniform(0.0, 0.6)),
        "tam_momentum": float(rng.uniform(0.5, 0.95)),
        "tam_decay": float(rng.uniform(0.5, 0.99)),
        "low_rank_emphasis": float(rng.uniform(0.5, 2.0)),
        "tam_large_tensor_threshold": int(rng.integers(100, 2000)),
    }


def lowered(tx, params) -> str:
    """The lowered (StableHLO) text of ``tx``'s jitted update on ``params``."""
    state = tx.init(params)
    return jax.jit(tx.update).lower(params, state, params).as_text()
