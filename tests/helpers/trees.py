"""The parameter tree and gradient stream the contract tests run every optimizer on."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

# "matrix2" repeats a shape, so per-leaf maths also runs through jaxopt_adv.grouping
SHAPES = {"matrix": (4, 3), "vector": (3,), "conv": (2, 2, 3, 3), "scalar": (), "matrix2": (4, 3)}


def random_tree(
    seed: int, shapes: dict[str, tuple[int, ...]], dtype=jnp.float32
) -> dict[str, jax.Array]:
    """``{name: normal random array of its shape}`` for ``shapes``, from ``seed``."""
    keys = jax.random.split(jax.random.key(seed), len(shapes))
    return {
        k: jax.random.normal(key, s, dtype)
        for key, (k, s) in zip(keys, shapes.items(), strict=True)
    }


def make_params(dtype=jnp.float32) -> dict[str, jax.Array]:
    """Two matrices, a vector, an HWIO conv kernel and a scalar, normal random values."""
    return random_tree(0, SHAPES, dtype)


def as_matrices(tree):
    """``tree`` with every leaf reshaped to a matrix, for optimizers that take only 2-D
    params (torch.optim.Muon): a scalar becomes ``(1, 1)``, a vector ``(1, n)`` and a
    higher-rank array ``(first axis, product of the others)`` (its first axis keeps its
    sharding; an empty array stays empty); the tree's structure and values are kept."""

    def matrix(leaf):
        shape = jnp.shape(leaf)
        if len(shape) < 2:
            return leaf.reshape(1, math.prod(shape))
        return leaf.reshape(shape[0], math.prod(shape[1:]))

    return jax.tree.map(matrix, tree)


def make_grads(params, step: int) -> dict[str, jax.Array]:
    """Step ``step``'s gradient: random like ``params``, its scale cycling over four values."""
    keys = jax.random.split(jax.random.key(100 + step), len(params))
    scale = (3.0, 0.5, 1.0, 0.1)[step % 4]
    return {
        k: scale * jax.random.normal(key, p.shape, p.dtype)
        for key, (k, p) in zip(keys, params.items(), strict=True)
    }
