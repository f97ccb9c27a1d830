"""The jitted, donated train step.

Compiled with ``quick_compilation`` (``tests/helpers/quick.py``): runs of one setting are
compared with each other, with tolerances or with exact zeros, NaNs and infinities.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

import jaxopt_adv
from jaxopt_adv.train import init_train_state, make_eval_step, make_train_step, split_model
from tests.train.models import loss_fn, make_data, make_model

pytestmark = pytest.mark.usefixtures("quick_compilation")


def test_step_matches_a_hand_written_update():
    model = make_model()
    model.eval()  # deterministic: no dropout, running statistics
    tx = jaxopt_adv.torch.adam(1e-2)
    graphdef, params, rest = split_model(model)
    batch = make_data(8)
    state = init_train_state(model, tx)
    new_state, metrics = make_train_step(graphdef, loss_fn, tx)(state, batch)

    def pure_loss(p):
        return loss_fn(nnx.merge(graphdef, p, rest), batch)[0]

    loss, grads = jax.value_and_grad(pure_loss)(params)
    updates, _ = tx.update(grads, tx.init(params), params)
    expected = optax.apply_updates(params, updates)
    jax.tree.map(
        lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7),
        new_state.params,
        expected,
    )
    np.testing.assert_allclose(metrics["loss"], loss, rtol=1e-6)
    np.testing.assert_allclose(metrics["grad_norm"], optax.tree.norm(grads), rtol=1e-6)
    assert int(new_state.step) == 1


def test_state_is_donated_and_the_step_compiles_once():
    model = make_model()
    tx = jaxopt_adv.torch.sgd(0.1, momentum=0.9)
    step = make_train_step(split_model(model)[0], loss_fn, tx)
    state = init_train_state(model, tx)
    x, y = make_data(32)
    for i in range(3):
        old = state
        state, _ = step(state, (x[8 * i : 8 * i + 8], y[8 * i : 8 * i + 8]))
        assert all(leaf.is_deleted() for leaf in jax.tree.leaves(old.params))
    assert step._cache_size() == 1
    model(x)  # the model's own arrays were copied, not donated


def test_batch_statistics_and_rng_state_advance():
    model = make_model()
    tx = optax.sgd(0.1)
    step = make_train_step(split_model(model)[0], loss_fn, tx)
    state = init_train_state(model, tx)
    mean, var = np.asarray(state.rest["norm"]["mean"]), np.asarray(state.rest["norm"]["var"])
    count = int(state.rest["drop"]["rngs"]["count"])
    state, _ = step(state, make_data(8))
    assert not np.array_equal(mean, state.rest["norm"]["mean"])
    assert not np.array_equal(var, state.rest["norm"]["var"])
    assert int(state.rest["drop"]["rngs"]["count"]) == count + 1


@pytest.mark.parametrize("source", ["schedule", "inject"])
def test_learning_rate_is_reported(source):
    model = make_model()
    schedule = optax.linear_schedule(0.1, 0.0, 10)
    if source == "schedule":
        tx, kwargs = jaxopt_adv.torch.sgd(schedule), {"learning_rate": schedule}
    else:
        tx, kwargs = optax.inject_hyperparams(jaxopt_adv.torch.sgd)(learning_rate=schedule), {}
    step = make_train_step(split_model(model)[0], loss_fn, tx, **kwargs)
    state = init_train_state(model, tx)
    lrs = []
    for _ in range(3):
        state, metrics = step(state, make_data(8))
        lrs.append(float(metrics["lr"]))
    np.testing.assert_allclose(lrs, [0.1, 0.09, 0.08], rtol=1e-6)


def test_loss_reaches_plateau_transforms_as_value():
    """The loss is passed to the optimizer as the extra argument ``value=``."""
    seen = []

    def record(updates, state, params=None, **extra):
        seen.append("value" in extra)
        return updates, state

    tx = optax.chain(optax.sgd(0.1), optax.GradientTransformationExtraArgs(lambda p: (), record))
    model = make_model()
    step = make_train_step(split_model(model)[0], loss_fn, tx)
    step(init_train_state(model, tx), make_data(8))
    assert seen == [True]


def test_eval_step_uses_eval_mode():
    model = make_model()
    tx = optax.sgd(0.1)
    state = init_train_state(model, tx)
    eval_step = make_eval_step(split_model(model)[0], loss_fn)
    batch = make_data(16)
    first, second = eval_step(state, batch), eval_step(state, batch)
    assert float(first["loss"]) == float(second["loss"])  # no dropout, running stats
    model.eval()
    np.testing.assert_allclose(first["loss"], loss_fn(model, batch)[0], rtol=1e-6)
    assert jnp.isfinite(first["accuracy"])


def test_wrt_trains_only_the_selected_variables():
    """``wrt=nnx.LoRAParam``: adapters move, the frozen base rides along in ``rest``."""
    model = nnx.LoRALinear(3, 2, lora_rank=1, rngs=nnx.Rngs(0))
    base_kernel = np.asarray(model.kernel[...]).copy()
    tx = optax.sgd(0.05)
    graphdef, params, rest = split_model(model, nnx.LoRAParam)
    assert {k for k in params} == {"lora"}
    assert "kernel" in rest and "bias" in rest
    step = make_train_step(graphdef, _lora_loss, tx, wrt=nnx.LoRAParam)
    state = init_train_state(model, tx, nnx.LoRAParam)
    batch = (jnp.ones((4, 3)), jnp.ones((4, 2)))
    for _ in range(3):
        state, metrics = step(state, batch)
    np.testing.assert_array_equal(state.rest["kernel"], base_kernel)
    assert np.any(np.asarray(state.params["lora"]["lora_b"]) != 0.0)
    assert metrics["loss"] < _lora_loss(model, batch)[0]  # the model still holds step 0


def _lora_loss(model, batch):
    x, y = batch
    return jnp.mean((model(x) - y) ** 2), {}
