"""jaxopt_adv.grouping: per-leaf maps traced once per group of like leaves, read back at
runtime slots; trees whose like leaves are kept stacked (GroupTree, with_grouped_leaves)."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxopt_adv._common import tree_map_multi
from jaxopt_adv.grouping import (
    MAX_GROUPED_SIZE,
    group_leaves,
    group_tags,
    leaf_slots,
    member_slots,
    sum_grouped,
    tree_map_grouped,
    tree_map_members,
    ungroup_leaves,
    with_grouped_leaves,
    with_slots,
)
from tests.helpers.x64 import x64


def heavy(g, m, scale):
    """A leaf function with whole-leaf and per-row reductions, two outputs."""
    axis = -1 if g.ndim else None
    x = g * jax.lax.rsqrt(jnp.mean(g * g, axis=axis, keepdims=True) + 1e-12)
    m = 0.9 * m + 0.1 * x / jnp.maximum(1.0, jnp.sqrt(jnp.mean(x * x)))
    return scale * m, m


def tree(shapes, dtype=jnp.float32, seed=0):
    rng = np.random.default_rng(seed)
    return {k: jnp.asarray(rng.normal(size=s), dtype) for k, s in shapes.items()}


SHAPES = {"a": (3, 8), "b": (8, 3), "c": (3, 8), "d": (5,), "e": (3, 8), "f": (8, 3), "g": ()}


def test_slots_number_the_leaves_of_each_shape_in_tree_order():
    slots = leaf_slots(tree(SHAPES))
    assert {k: int(v) for k, v in slots.items()} == {
        "a": 0,
        "b": 0,
        "c": 1,
        "d": 0,
        "e": 2,
        "f": 1,
        "g": 0,
    }
    assert all(v.dtype == jnp.int32 and v.shape == () for v in slots.values())
    buffers = [v.unsafe_buffer_pointer() for v in jax.tree.leaves(slots)]
    assert len(set(buffers)) == len(buffers)  # fresh buffers: a donated state may hold them


@pytest.mark.parametrize("jit", [False, True])
def test_grouped_map_is_the_per_leaf_map(jit):
    with x64(True):
        g, m = tree(SHAPES, jnp.float64, 0), tree(SHAPES, jnp.float64, 1)

        def both(g, m, slots):
            fn = lambda g, m: heavy(g, m, 2.0)  # noqa: E731
            return tree_map_grouped(fn, 2, slots, g, m), tree_map_multi(fn, 2, g, m)

        fn = jax.jit(both) if jit else both
        grouped, per_leaf = fn(g, m, leaf_slots(g))
        for ours, theirs in zip(grouped, per_leaf, strict=True):
            for k in SHAPES:
                np.testing.assert_allclose(ours[k], theirs[k], rtol=1e-14, atol=0)


def test_each_group_is_traced_once_and_odd_leaves_alone():
    traced = []

    def fn(g, m):
        traced.append(g.shape)
        return heavy(g, m, 1.0)

    shapes = {**SHAPES, "big1": (MAX_GROUPED_SIZE + 1,), "big2": (MAX_GROUPED_SIZE + 1,)}
    g = tree(shapes)
    m = {**tree(shapes, seed=1), "f": jnp.zeros((8, 3), jnp.bfloat16)}  # mixed dtypes
    jax.eval_shape(lambda g, m, s: tree_map_grouped(fn, 2, s, g, m), g, m, leaf_slots(g))
    # (3, 8) x3 once; (8, 3) per leaf (mixed dtypes); (5,), () alone; the big leaves alone
    assert sorted(traced) == sorted(
        [(3, 8), (8, 3), (8, 3), (5,), (), (MAX_GROUPED_SIZE + 1,), (MAX_GROUPED_SIZE + 1,)]
    )


def test_results_land_at_their_slots_not_their_stack_order():
    """The slots are the only record of which stacked row is whose: wrong slots give
    another leaf's values (so the read-back really uses them)."""
    g = {k: jnp.full((2, 2), float(i)) for i, k in enumerate("abc")}
    swapped = {"a": jnp.int32(2), "b": jnp.int32(1), "c": jnp.int32(0)}
    (out,) = tree_map_grouped(lambda x: (x,), 1, swapped, g)
    assert [float(out[k][0, 0]) for k in "abc"] == [2.0, 1.0, 0.0]
    (out,) = tree_map_grouped(lambda x: (x,), 1, leaf_slots(g), g)
    assert [float(out[k][0, 0]) for k in "abc"] == [0.0, 1.0, 2.0]


def test_without_slots_every_leaf_is_mapped_alone():
    """``slots=None`` (a stateless block called without slots): one trace per leaf, the
    per-leaf map's results."""
    traced = []

    def fn(g, m):
        traced.append(g.shape)
        return heavy(g, m, 1.0)

    g, m = tree(SHAPES), tree(SHAPES, seed=1)
    grouped = tree_map_grouped(fn, 2, None, g, m)
    assert sorted(traced) == sorted(SHAPES.values())
    for ours, theirs in zip(grouped, tree_map_multi(fn, 2, g, m), strict=True):
        for k in SHAPES:
            np.testing.assert_array_equal(ours[k], theirs[k])


def test_with_slots_hands_a_stateless_block_its_slots():
    """with_slots keeps leaf_slots(params) in its state and passes them as ``slots``."""
    seen = []

    def update_fn(updates, state, params=None, **extra_args):
        seen.append(extra_args.get("slots"))
        return updates, state

    tx = with_slots(optax.GradientTransformationExtraArgs(lambda p: optax.EmptyState(), update_fn))
    params = tree(SHAPES)
    state = tx.init(params)
    out, state = tx.update(params, state, params, other=1)
    assert out is params
    assert {k: int(v) for k, v in seen[0].items()} == {
        k: int(v) for k, v in leaf_slots(params).items()
    }
    assert state.slots is seen[0]


def test_sum_grouped_reduces_once_per_group():
    """One reduction per (shape, dtype) group; the sum of the per-leaf sums."""
    reduced = []

    def total(x):
        reduced.append(x.shape)
        return jnp.sum(jnp.abs(x))

    big = (MAX_GROUPED_SIZE + 1,)
    with x64(True):
        leaves = jax.tree.leaves(tree({**SHAPES, "big1": big, "big2": big}, jnp.float64))
        got = sum_grouped(total, leaves)
        want = sum(float(jnp.sum(jnp.abs(x))) for x in leaves)
    assert float(got) == pytest.approx(want, rel=1e-14)
    # the big leaves alone (a stack of them would be a large copy)
    assert sorted(reduced) == sorted([(3, 3, 8), (2, 8, 3), (5,), (), big, big])


def test_empty_tree():
    assert tree_map_grouped(lambda x: (x, x), 2, {}, {}) == ({}, {})


def test_explicitly_sharded_leaves_are_mapped_one_by_one():
    """Stacking would have to merge the leaves' placements: sharded leaves stay apart."""
    mesh = jax.make_mesh((1,), ("x",), axis_types=(jax.sharding.AxisType.Explicit,))
    sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("x"))
    shapes = [jax.ShapeDtypeStruct((4, 3), jnp.float32, sharding=sharding)] * 3
    traced = []

    def fn(g):
        traced.append(g.shape)
        return (2 * g,)

    with jax.set_mesh(mesh):
        jax.eval_shape(lambda t: tree_map_grouped(fn, 1, leaf_slots(t), t), shapes)
    assert traced == [(4, 3)] * 3


def test_group_tree_stacks_like_leaves_and_reads_them_back():
    """Leaves of one shape, dtype and tag are stacked in tree order; singletons, large
    leaves and other tags stay loose; both read-backs (static and runtime positions)
    give the tree back."""
    big = (MAX_GROUPED_SIZE + 1,)
    t = tree({**SHAPES, "big1": big, "big2": big})
    tags = {k: k != "e" for k in t}  # "e" (3, 8) apart from "a", "c"
    grouped = group_leaves(t, tags)
    names = sorted(t)  # jax orders a dict by key
    assert [[names[i] for i in m] for m in grouped.members] == [["a", "c"], ["b", "f"]]
    assert [x.shape for x in grouped.stacks] == [(2, 3, 8), (2, 8, 3)]
    assert sorted(k for k, v in grouped.loose.items() if v is not None) == [
        "big1",
        "big2",
        "d",
        "e",
        "g",
    ]
    assert group_tags(grouped).stacks == (True, True) and group_tags(grouped).loose["e"] is False
    treedef = jax.tree.structure(t)
    for slots in (None, member_slots(grouped)):
        back = ungroup_leaves(grouped, treedef, slots)
        for k in t:
            np.testing.assert_array_equal(back[k], t[k])
    with pytest.raises(AssertionError):  # the runtime positions are really read
        swapped = tuple(tuple(reversed(s)) for s in member_slots(grouped))
        np.testing.assert_array_equal(ungroup_leaves(grouped, treedef, swapped)["a"], t["a"])


@pytest.mark.parametrize("jit", [False, True])
def test_map_over_a_group_tree_is_the_per_leaf_map(jit):
    """On a GroupTree the per-leaf function is vmapped over each stack's members (its
    leaf-shaped reductions stay per member), called as is on loose leaves; init-style
    maps (tree_map_members) likewise."""
    with x64(True):
        g, m = tree(SHAPES, jnp.float64, 0), tree(SHAPES, jnp.float64, 1)
        fn = lambda g, m: heavy(g, m, 2.0)  # noqa: E731

        def grouped_map(g, m):
            grouped = group_leaves(g)
            outs = tree_map_grouped(fn, 2, None, grouped, group_leaves(m, like=grouped))
            return [ungroup_leaves(out, jax.tree.structure(g)) for out in outs]

        ours = (jax.jit(grouped_map) if jit else grouped_map)(g, m)
        for got, want in zip(ours, tree_map_multi(fn, 2, g, m), strict=True):
            for k in SHAPES:
                np.testing.assert_allclose(got[k], want[k], rtol=1e-14, atol=0)
    sizes = tree_map_members(jnp.size, group_leaves(g))
    assert [int(x) for x in sizes.stacks[0]] == [24, 24, 24] and int(sizes.loose["d"]) == 5
    assert leaf_slots(group_leaves(g)) is None


def test_with_grouped_leaves_keeps_the_state_stacked():
    """optax.adam wrapped: stacked moments, the per-leaf results (elementwise maths), and
    a slot per stacked leaf in the state; params are needed only by a stateless inner."""
    params, grads = tree(SHAPES), tree(SHAPES, seed=1)
    tx = with_grouped_leaves(optax.adam(0.1))
    state = tx.init(params)
    assert [x.shape for x in state.inner[0].mu.stacks] == [(3, 3, 8), (2, 8, 3)]
    assert [len(s) for s in state.slots] == [3, 2]
    updates, _ = jax.jit(tx.update)(grads, state, params)
    want, _ = optax.adam(0.1).update(grads, optax.adam(0.1).init(params), params)
    for k in SHAPES:
        np.testing.assert_allclose(updates[k], want[k], rtol=1e-5)
    # without params the updates take the grouping of the state's stacks
    np.testing.assert_array_equal(jax.jit(tx.update)(grads, state)[0]["a"], updates["a"])
    stateless = with_grouped_leaves(optax.scale(2.0))
    with pytest.raises(ValueError, match="needs params"):
        stateless.update(grads, stateless.init(params))


def test_with_grouped_leaves_keeps_inits_grouping_for_params_in_another_dtype():
    """Float32 masters at ``init``, then a bfloat16 copy of some of them at ``update``
    (mixed precision): the update follows the state's stacks, as the per-leaf
    transform's does (regrouping the params by dtype broke the stacks apart)."""
    params, grads = tree(SHAPES), tree(SHAPES, seed=1)
    inner = optax.add_decayed_weights(0.5)
    tx = with_grouped_leaves(optax.chain(optax.scale_by_adam(), inner))
    state = tx.init(params)
    given = {**params, "c": params["c"].astype(jnp.bfloat16)}  # "a", "c", "e" share a stack
    updates, _ = jax.jit(tx.update)(grads, state, given)
    plain = optax.chain(optax.scale_by_adam(), inner)
    want, _ = plain.update(grads, plain.init(params), given)
    for k in SHAPES:
        np.testing.assert_allclose(updates[k], want[k], rtol=1e-5)
