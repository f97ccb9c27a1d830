"""The stateless and weight layers of jaxopt_adv.models against torch.nn.functional."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from flax import nnx

from jaxopt_adv.interop import load_torch_state_dict
from jaxopt_adv.models import (
    Conv2d,
    Dropout,
    Flatten,
    Linear,
    LogSoftmax,
    MaxPool2d,
    ReLU,
    Softmax,
    torch_default_init,
)
from tests.harness import precision

torch.set_num_threads(1)
TOL = 1e-12  # float64


def nchw(x: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))


def nhwc(t: torch.Tensor) -> np.ndarray:
    return t.detach().numpy().transpose(0, 2, 3, 1)


def test_default_init_has_torch_bounds():
    layer = Linear(50, 400, rngs=nnx.Rngs(0))
    conv = Conv2d(3, 64, (5, 4), rngs=nnx.Rngs(0))
    for kernel, bias, fan_in in ((layer.kernel, layer.bias, 50), (conv.kernel, conv.bias, 60)):
        bound = 1 / np.sqrt(fan_in)
        for values in (np.asarray(kernel[...]), np.asarray(bias[...])):
            assert np.abs(values).max() <= bound
            assert np.abs(values).max() > 0.9 * bound  # uniform over the whole interval
            assert abs(values.mean()) < 0.3 * bound
    assert not np.asarray(torch_default_init(0)(jax.random.key(0), (2, 3))).any()
    # the flat draw gives exactly what a shaped draw gives
    key = jax.random.key(3)
    np.testing.assert_array_equal(
        torch_default_init(4)(key, (3, 5, 2)),
        jax.random.uniform(key, (3, 5, 2), minval=-0.5, maxval=0.5),
    )


def test_linear_matches_torch():
    with precision("float64"):
        reference = torch.nn.Linear(6, 4)
        layer = Linear(6, 4, param_dtype=jnp.float64, rngs=nnx.Rngs(0))
        load_torch_state_dict(layer, reference.state_dict())
        x = np.random.default_rng(0).normal(size=(3, 6))
        expected = reference(torch.from_numpy(x)).detach().numpy()
        np.testing.assert_allclose(layer(jnp.asarray(x)), expected, rtol=0, atol=TOL)
        assert Linear(6, 4, use_bias=False, rngs=nnx.Rngs(0)).bias is None


@pytest.mark.parametrize(
    ("kernel", "stride", "padding"), [(3, 1, 0), (3, 2, 1), ((3, 2), (2, 1), (1, 2)), (1, 1, 0)]
)
def test_conv2d_matches_torch(kernel, stride, padding):
    with precision("float64"):
        reference = torch.nn.Conv2d(3, 5, kernel, stride, padding)
        layer = Conv2d(3, 5, kernel, stride, padding, param_dtype=jnp.float64, rngs=nnx.Rngs(0))
        load_torch_state_dict(layer, reference.state_dict())
        x = np.random.default_rng(1).normal(size=(2, 9, 8, 3))
        expected = nhwc(reference(nchw(x)))
        out = layer(jnp.asarray(x))
        assert out.shape == expected.shape
        np.testing.assert_allclose(out, expected, rtol=0, atol=TOL)


@pytest.mark.usefixtures("default_compilation")
def test_conv2d_matches_torch_with_xlas_default_compilation():
    """The package compiles quickly (``conftest.py``); the parity also holds compiled with
    XLA's default settings, the code users run."""
    test_conv2d_matches_torch((3, 2), (2, 1), (1, 2))


def test_conv2d_rejects_bad_arguments():
    with pytest.raises(ValueError, match="padding must be"):
        Conv2d(1, 1, 3, padding=-1, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="kernel_size must be"):
        Conv2d(1, 1, (3, 3, 3), rngs=nnx.Rngs(0))


@pytest.mark.parametrize(
    ("kernel", "stride", "padding"), [(2, None, 0), (3, 2, 1), ((3, 2), (1, 2), (1, 0))]
)
def test_max_pool_matches_torch_values_and_gradients(kernel, stride, padding):
    with precision("float64"):
        # all negative: the -inf padding, not zeros, must win at the borders
        x = -np.abs(np.random.default_rng(2).normal(size=(2, 7, 6, 3))) - 1
        pool = MaxPool2d(kernel, stride, padding)
        x_torch = nchw(x).requires_grad_(True)
        expected = F.max_pool2d(x_torch, kernel, stride, padding)
        np.testing.assert_array_equal(pool(jnp.asarray(x)), nhwc(expected))
        weights = np.random.default_rng(3).normal(size=expected.shape)
        (expected * torch.from_numpy(weights)).sum().backward()
        grad = jax.grad(lambda v: jnp.sum(pool(v) * jnp.asarray(weights.transpose(0, 2, 3, 1))))(
            jnp.asarray(x)
        )
        np.testing.assert_allclose(grad, nhwc(x_torch.grad), rtol=0, atol=TOL)


def test_max_pool_rejects_large_padding():
    with pytest.raises(ValueError, match="at most half"):
        MaxPool2d(2, padding=2)


def test_flatten_orders():
    x = np.random.default_rng(4).normal(size=(2, 3, 4, 5))  # NHWC
    expected = torch.nn.Flatten()(nchw(x)).numpy()
    np.testing.assert_array_equal(Flatten()(jnp.asarray(x)), expected.astype(np.float32))
    np.testing.assert_array_equal(
        Flatten(torch_order=False)(jnp.asarray(x)), x.reshape(2, -1).astype(np.float32)
    )
    assert not np.array_equal(Flatten(torch_order=False)(jnp.asarray(x)), expected)
    np.testing.assert_array_equal(Flatten()(jnp.ones((3, 4))), jnp.ones((3, 4)))


def test_relu_softmax_log_softmax_match_torch():
    with precision("float64"):
        x = np.random.default_rng(5).normal(size=(4, 6)) * 30
        x[0, 0] = 0.0
        t = torch.from_numpy(x)
        np.testing.assert_array_equal(ReLU()(jnp.asarray(x)), F.relu(t).numpy())
        np.testing.assert_allclose(Softmax()(jnp.asarray(x)), F.softmax(t, 1).numpy(), atol=TOL)
        np.testing.assert_allclose(
            LogSoftmax()(jnp.asarray(x)), F.log_softmax(t, 1).numpy(), atol=1e-11
        )
        np.testing.assert_allclose(Softmax(0)(jnp.asarray(x)), F.softmax(t, 0).numpy(), atol=TOL)
        t.requires_grad_(True)
        F.relu(t).sum().backward()
        grad = jax.grad(lambda v: ReLU()(v).sum())(jnp.asarray(x))
        np.testing.assert_array_equal(grad, t.grad.numpy())  # 0 at 0, as torch


def test_dropout_has_torch_semantics():
    layer = Dropout(0.25, rngs=nnx.Rngs(0))
    x = jnp.ones((200, 100))
    y = np.asarray(layer(x))
    assert set(np.unique(y)) == {0.0, np.float32(1 / 0.75)}  # survivors scaled by 1/(1-p)
    assert abs((y == 0).mean() - 0.25) < 0.01
    assert not np.array_equal(y, np.asarray(layer(x)))  # a fresh mask per call
    layer.eval()
    np.testing.assert_array_equal(layer(x), x)
