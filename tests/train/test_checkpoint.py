"""orbax checkpoints: bit-exact round trips, clear errors, nothing half-loaded."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxopt_adv
from jaxopt_adv.train import (
    CheckpointError,
    init_train_state,
    latest_checkpoint,
    restore_checkpoint,
    save_checkpoint,
)
from tests.train.models import make_model


def _state(optimizer="torch.adam", **kwargs):
    tx = jaxopt_adv.get_optimizer(optimizer)(learning_rate=1e-2, **kwargs)
    state = init_train_state(make_model(), tx)
    # make every leaf non-trivial so a wrong restore cannot pass by accident
    return jax.tree.map(
        lambda x: x if jnp.issubdtype(x.dtype, jax.dtypes.prng_key) else x + 1, state
    )


def _equal(a, b):
    def same(x, y):
        if jnp.issubdtype(x.dtype, jax.dtypes.prng_key):
            x, y = jax.random.key_data(x), jax.random.key_data(y)
        return x.dtype == y.dtype and np.array_equal(np.asarray(x), np.asarray(y))

    return jax.tree.structure(a) == jax.tree.structure(b) and all(
        jax.tree.leaves(jax.tree.map(same, a, b))
    )


@pytest.mark.parametrize(
    "optimizer",
    ["torch.adam", "torch.nadam", "torch.rprop", "torch.asgd", "came", "automagic_came_amp"],
)
def test_round_trip_is_bit_exact(tmp_path, optimizer):
    state = _state(optimizer)
    save_checkpoint(tmp_path / "step_00000005", state)
    restored = restore_checkpoint(tmp_path / "step_00000005", jax.eval_shape(lambda: state))
    assert _equal(restored, state)


def test_restore_into_a_concrete_target(tmp_path):
    state = _state()
    save_checkpoint(tmp_path / "ck", state)
    target = _state()  # same structure, different values
    target = jax.tree.map(
        lambda x: x if jnp.issubdtype(x.dtype, jax.dtypes.prng_key) else x * 0, target
    )
    assert _equal(restore_checkpoint(tmp_path / "ck", target), state)


def test_different_optimizer_configuration_is_refused(tmp_path):
    save_checkpoint(tmp_path / "ck", _state("torch.adam"))
    with pytest.raises(CheckpointError, match="different tree"):
        restore_checkpoint(tmp_path / "ck", _state("torch.adam", amsgrad=True))
    with pytest.raises(CheckpointError, match="different tree"):
        restore_checkpoint(tmp_path / "ck", _state("torch.sgd", momentum=0.9))


def test_shape_mismatch_is_refused(tmp_path):
    state = _state()
    save_checkpoint(tmp_path / "ck", state)
    bigger = jax.tree.map(
        lambda x: jnp.zeros((x.shape[0] + 1,) + x.shape[1:], x.dtype) if x.ndim == 2 else x, state
    )
    with pytest.raises(CheckpointError, match="leaf"):
        restore_checkpoint(tmp_path / "ck", bigger)


def test_missing_truncated_or_corrupt_checkpoints_raise(tmp_path):
    state = _state()
    with pytest.raises(CheckpointError, match="no checkpoint"):
        restore_checkpoint(tmp_path / "nothing", state)
    path = save_checkpoint(tmp_path / "ck", state)
    data_files = sorted(
        (f for f in path.rglob("*") if f.is_file() and f.stat().st_size > 0),
        key=lambda f: f.stat().st_size,
    )
    biggest = data_files[-1]  # the array data
    biggest.write_bytes(biggest.read_bytes()[: biggest.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="incomplete or corrupt"):
        restore_checkpoint(path, state)

    path = save_checkpoint(tmp_path / "ck2", state)
    for f in path.rglob("*"):
        if f.is_file() and "METADATA" in f.name:
            f.write_text("{ not json")
    with pytest.raises(CheckpointError):
        restore_checkpoint(path, state)


def test_refuses_to_overwrite(tmp_path):
    save_checkpoint(tmp_path / "ck", _state())
    with pytest.raises(CheckpointError, match="already exists"):
        save_checkpoint(tmp_path / "ck", _state())


def test_latest_checkpoint(tmp_path):
    assert latest_checkpoint(tmp_path) is None
    for step in (5, 10, 7):
        save_checkpoint(tmp_path / f"step_{step:08d}", _state())
    (tmp_path / "step_notanumber").mkdir()
    assert latest_checkpoint(tmp_path).name == "step_00000010"
