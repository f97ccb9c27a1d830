"""Bit-for-bit equality of two trees (a restored checkpoint against the saved one)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


def leaf_bits(x) -> tuple:
    """(dtype, shape, raw bytes) of a leaf; a typed PRNG key by its key data."""
    if jnp.issubdtype(x.dtype, jax.dtypes.prng_key):
        x = jax.random.key_data(x)
    x = np.asarray(x)
    return x.dtype, x.shape, x.tobytes()


def assert_bit_exact(got, expected) -> None:
    """Same tree structure, and the same dtype, shape and bytes in every leaf."""
    assert jax.tree.structure(got) == jax.tree.structure(expected)
    for (path, x), y in zip(
        jax.tree_util.tree_leaves_with_path(got), jax.tree.leaves(expected), strict=True
    ):
        assert leaf_bits(x) == leaf_bits(y), jax.tree_util.keystr(path)
