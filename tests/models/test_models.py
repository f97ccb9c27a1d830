"""The criteria and the ready models (MLP, SmallCNN)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import torch
import torch.nn.functional as F
from flax import nnx

from jaxopt_adv.models import MLP, LogSoftmax, SmallCNN, class_nll_loss, mse_loss
from jaxopt_adv.models.torch_twins import TorchMLP, TorchSmallCNN
from tests.harness import precision

torch.set_num_threads(1)


def num_params(model) -> int:
    return sum(int(np.prod(v.shape)) for v in jax.tree.leaves(nnx.state(model, nnx.Param)))


def test_criteria_match_torch_values_and_gradients():
    with precision("float64"):
        rng = np.random.default_rng(0)
        logits, labels = rng.normal(size=(7, 5)) * 4, rng.integers(0, 5, size=7)
        log_probs = jax.nn.log_softmax(jnp.asarray(logits))
        t_log_probs = torch.from_numpy(np.array(log_probs)).requires_grad_(True)
        expected = F.nll_loss(t_log_probs, torch.from_numpy(labels))
        expected.backward()
        value, grad = jax.value_and_grad(class_nll_loss)(log_probs, jnp.asarray(labels))
        np.testing.assert_allclose(value, expected.item(), rtol=1e-14)
        np.testing.assert_allclose(grad, t_log_probs.grad.numpy(), rtol=1e-14)
        # log-softmax + NLL is optax's integer-label cross-entropy
        ce = optax.softmax_cross_entropy_with_integer_labels(
            jnp.asarray(logits), jnp.asarray(labels)
        )
        np.testing.assert_allclose(
            class_nll_loss(LogSoftmax()(jnp.asarray(logits)), labels), ce.mean(), rtol=1e-14
        )

        pred, target = rng.normal(size=(3, 4)), rng.normal(size=(3, 4))
        t_pred = torch.from_numpy(pred).requires_grad_(True)
        expected = F.mse_loss(t_pred, torch.from_numpy(target))
        expected.backward()
        value, grad = jax.value_and_grad(mse_loss)(jnp.asarray(pred), jnp.asarray(target))
        np.testing.assert_allclose(value, expected.item(), rtol=1e-14)
        np.testing.assert_allclose(grad, t_pred.grad.numpy(), rtol=1e-14)


def test_criteria_check_shapes():
    with pytest.raises(ValueError, match="log_probs"):
        class_nll_loss(jnp.zeros((3, 2)), jnp.zeros((2,), jnp.int32))
    with pytest.raises(ValueError, match="differ in shape"):
        mse_loss(jnp.zeros(3), jnp.zeros(4))


def test_mlp_is_the_seed_network():
    model = MLP(rngs=nnx.Rngs(0))
    assert num_params(model) == 784 * 512 + 512 + 512 * 256 + 256 + 256 * 10 + 10
    assert num_params(model) == sum(p.numel() for p in TorchMLP().parameters())
    assert [type(layer).__name__ for layer in model.layers] == [
        "Linear", "ReLU", "Dropout", "Linear", "ReLU", "Dropout", "Linear"
    ]  # fmt: skip
    assert model.layers[2].rate == 0.2
    x = jnp.ones((3, 784))
    assert model(x).shape == (3, 10)
    assert not np.array_equal(model(x), model(x))  # dropout is on in training mode
    model.eval()
    np.testing.assert_array_equal(model(x), model(x))


def test_small_cnn_shapes_and_sizes():
    for image_size, channels in ((28, (8, 16)), (8, (4, 8)), (9, (3,))):
        model = SmallCNN(1, channels, 10, image_size=image_size, rngs=nnx.Rngs(0))
        reference = TorchSmallCNN(1, channels, 10, image_size=image_size)
        assert num_params(model) == sum(p.numel() for p in reference.parameters())
        batch_stats = jax.tree.leaves(nnx.state(model, nnx.BatchStat))
        assert sum(v.size for v in batch_stats) == 2 * sum(channels)
        assert model(jnp.ones((2, image_size, image_size, 1))).shape == (2, 10)
    # no conv bias before BatchNorm (it would only receive rounding noise)
    assert model.features[0].bias is None and model.features[1].bias is not None
    with pytest.raises(ValueError, match="too small"):
        SmallCNN(1, (4, 8, 16), image_size=4, rngs=nnx.Rngs(0))


def test_small_cnn_train_and_eval_modes():
    model = SmallCNN(1, (4, 8), 10, image_size=8, rngs=nnx.Rngs(0))
    x = jnp.asarray(np.random.default_rng(0).normal(size=(4, 8, 8, 1)), jnp.float32)
    before = np.asarray(model.features[1].mean[...]).copy()
    model(x)
    assert not np.array_equal(model.features[1].mean[...], before)
    model.eval()
    after = np.asarray(model.features[1].mean[...]).copy()
    model(x)
    np.testing.assert_array_equal(model.features[1].mean[...], after)
    # float64 parameters and statistics
    with precision("float64"):
        model64 = SmallCNN(1, (4,), 3, image_size=4, param_dtype=jnp.float64, rngs=nnx.Rngs(0))
        dtypes = {v.dtype for v in jax.tree.leaves(nnx.state(model64)) if v.dtype.kind == "f"}
        assert dtypes == {jnp.dtype(jnp.float64)}
