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
