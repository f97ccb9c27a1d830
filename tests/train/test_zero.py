"""train.zero: which dimension each leaf is sliced along, and argument checks (the sliced
runs themselves: tests/helpers/zero_check.py, tests/test_multiprocess.py)."""

import jax
import jax.numpy as jnp
import pytest
from jax.sharding import PartitionSpec as P

from jaxopt_adv.torch import adam
from jaxopt_adv.train import local_bytes, shard_optimizer_state, slice_shardings
from jaxopt_adv.train.zero import _slice_spec


@pytest.mark.parametrize(
    ("shape", "size", "spec"),
    [
        ((8, 3), 4, P("data")),  # the first dimension the axis size divides
        ((3, 8), 4, P(None, "data")),
        ((10,), 4, P()),  # none: replicated
        ((2, 2), 4, P()),
        ((), 4, P()),
        ((0, 4), 4, P(None, "data")),  # an empty dimension is not sliced
        ((5,), 1, P("data")),
    ],
)
def test_each_leaf_is_sliced_along_its_first_dimension_the_axis_divides(shape, size, spec):
    assert _slice_spec(shape, "data", size) == spec


def test_an_axis_the_mesh_lacks_is_refused():
    mesh = jax.make_mesh((1,), ("data",))
    with pytest.raises(ValueError, match="axis 'batch' is not an axis of the mesh"):
        slice_shardings({"w": jnp.zeros(3)}, mesh, axis="batch")
    with pytest.raises(ValueError, match="axis 'batch'"):
        shard_optimizer_state(adam(1e-3), mesh, axis="batch").init({"w": jnp.zeros(3)})


def test_local_bytes_counts_this_process_arrays():
    mesh = jax.make_mesh((1,), ("data",))
    tx = shard_optimizer_state(adam(1e-3), mesh)
    state = tx.init({"w": jnp.zeros((4, 3)), "b": jnp.zeros(3)})
    assert local_bytes(state) == 4 + 2 * (12 + 3) * 4  # count (int32), mu and nu (float32)
