"""tree_map_grouped: tree_map_multi's results, traced once per (shape, dtype) group."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxopt_adv._common import tree_map_multi
from jaxopt_adv._grouping import group_key, tree_map_grouped


def _per_leaf(g, m, scale):
    m = 0.9 * m + 0.1 * g
    rows = jnp.mean(m * m, axis=-1, keepdims=True) if m.ndim else m * m
    return m / (jnp.sqrt(rows) + 1e-8) * scale, m, jnp.sum(m)


def _tree(key):
    shapes = {"a": (3, 5), "b": (3, 5), "c": (5, 3), "d": (7,), "e": (3, 5), "f": ()}
    keys = jax.random.split(key, len(shapes))
    return {n: jax.random.normal(k, s) for (n, s), k in zip(shapes.items(), keys, strict=True)}


def test_grouped_equals_the_per_leaf_map():
    g, m = _tree(jax.random.key(0)), _tree(jax.random.key(1))
    scale = {n: 2.0 if n in "ab" else 3.0 for n in g}  # a static per-leaf value splits a group
    expected = tree_map_multi(_per_leaf, 3, g, m, scale)
    got = tree_map_grouped(_per_leaf, 3, g, m, scale)
    for want, have in zip(jax.tree.leaves(expected), jax.tree.leaves(got), strict=True):
        assert want.shape == have.shape and want.dtype == have.dtype
        np.testing.assert_allclose(have, want, rtol=1e-6, atol=1e-7)


def test_grouped_traces_the_function_once_per_group():
    calls = []

    def counted(g, m, scale):
        calls.append(g.shape)
        return _per_leaf(g, m, scale)

    g, m = _tree(jax.random.key(0)), _tree(jax.random.key(1))
    jax.jit(lambda g, m: tree_map_grouped(counted, 3, g, m, {n: 1.0 for n in g}))(g, m)
    # groups: {a, b, e} (3, 5); {c} (5, 3); {d} (7,); {f} ()
    assert sorted(calls) == sorted([(3, 5), (5, 3), (7,), ()])


def test_a_dtype_splits_a_group_and_an_empty_tree_maps_to_empty_trees():
    assert group_key([jnp.ones(3)]) != group_key([jnp.ones(3, jnp.int32)])
    assert group_key([[1, 2]]) is None  # unhashable: its own group
    assert tree_map_grouped(_per_leaf, 3, {}, {}, {}) == ({}, {}, {})


def test_a_wrong_output_count_is_a_value_error():
    tree = {"a": jnp.ones(2), "b": jnp.ones(2)}
    with pytest.raises(ValueError, match="n_out=3"):
        tree_map_grouped(lambda x: (x, x), 3, tree)
