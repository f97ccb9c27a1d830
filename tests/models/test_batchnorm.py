"""BatchNorm against torch.nn.BatchNorm1d/2d over several training steps, and nnx's rule."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import nnx

from jaxopt_adv.interop import load_torch_state_dict
from jaxopt_adv.models import BatchNorm, ChannelwiseScaling
from tests.harness import precision

torch.set_num_threads(1)
TOL = {"float64": 1e-12, "float32": 1e-5}


def to_torch_layout(x: np.ndarray) -> np.ndarray:
    return x if x.ndim == 2 else np.ascontiguousarray(np.moveaxis(x, -1, 1))


def to_nnx_layout(x: np.ndarray) -> np.ndarray:
    return x if x.ndim == 2 else np.moveaxis(x, 1, -1)


def assert_close(ours, reference, tolerance):
    ours, reference = np.asarray(ours, np.float64), np.asarray(reference, np.float64)
    error = np.max(np.abs(ours - reference)) / max(np.max(np.abs(reference)), 1e-30)
    assert error <= tolerance, error


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize(
    ("shape", "momentum", "eps"),
    [
        ((16, 3), 0.1, 1e-5),
        ((6, 5, 5, 4), 0.1, 1e-5),
        ((5, 4, 3, 2), 0.35, 1e-2),
        ((3, 2, 3), 1.0, 1e-5),
    ],
)
def test_training_steps_match_torch(shape, momentum, eps, dtype):
    """Outputs, input/affine gradients and running statistics after each of 5 steps."""
    with precision(dtype):
        channels = shape[-1]
        reference = (torch.nn.BatchNorm1d if len(shape) <= 3 else torch.nn.BatchNorm2d)(
            channels, eps=eps, momentum=momentum
        )
        with torch.no_grad():
            reference.weight.uniform_(0.5, 1.5)
            reference.bias.uniform_(-0.5, 0.5)
        layer = BatchNorm(channels, momentum=momentum, eps=eps, param_dtype=jnp.dtype(dtype))
        load_torch_state_dict(layer, reference.state_dict())
        graphdef, params, stats = nnx.split(layer, nnx.Param, nnx.BatchStat)

        @jax.jit
        def step(params, stats, x, w):
            # copy=True: fresh Variables at this trace level, which NNX lets the module
            # mutate (the BatchStats passed in belong to the jit trace)
            def loss(params, stats, x):
                model = nnx.merge(graphdef, params, stats, copy=True)
                y = model(x)
                return jnp.sum(y * w), (y, nnx.state(model, nnx.BatchStat))

            (_, (y, stats_out)), grads = jax.value_and_grad(loss, has_aux=True)(params, stats, x)
            x_grad = jax.grad(loss, argnums=2, has_aux=True)(params, stats, x)[0]
            return y, stats_out, grads, x_grad

        rng = np.random.default_rng(0)
        for t in range(5):
            x = (rng.normal(size=shape) * (1 + t) + t).astype(dtype)
            w = rng.normal(size=shape).astype(dtype)
            y, stats, grads, x_grad = step(params, stats, jnp.asarray(x), jnp.asarray(w))
            x_torch = torch.from_numpy(to_torch_layout(x)).requires_grad_(True)
            reference.zero_grad()
            y_torch = reference(x_torch)
            (y_torch * torch.from_numpy(to_torch_layout(w))).sum().backward()
            tol = TOL[dtype]
            assert_close(y, to_nnx_layout(y_torch.detach().numpy()), tol)
            assert_close(x_grad, to_nnx_layout(x_torch.grad.numpy()), tol * 10)
            assert_close(grads["scale"][...], reference.weight.grad.numpy(), tol)
            assert_close(grads["bias"][...], reference.bias.grad.numpy(), tol)
            assert_close(stats["mean"][...], reference.running_mean.numpy(), tol)
            assert_close(stats["var"][...], reference.running_var.numpy(), tol)
            assert stats["var"][...].dtype == jnp.dtype(dtype)


@pytest.mark.usefixtures("default_compilation")
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_training_steps_match_torch_with_xlas_default_compilation(dtype):
    """The package compiles quickly (``conftest.py``); the parity also holds compiled with
    XLA's default settings, the code users run."""
    test_training_steps_match_torch((6, 5, 5, 4), 0.1, 1e-5, dtype)


def test_eval_mode_uses_and_keeps_the_running_statistics():
    with precision("float64"):
        reference = torch.nn.BatchNorm2d(3)
        reference.train()
        for seed in range(3):
            reference(torch.randn(4, 3, 5, 5, generator=torch.Generator().manual_seed(seed)))
        reference.eval()
        layer = BatchNorm(3, param_dtype=jnp.float64)
        load_torch_state_dict(layer, reference.state_dict())
        layer.eval()
        assert layer.use_running_average
        x = np.random.default_rng(1).normal(size=(2, 4, 4, 3))
        expected = reference(torch.from_numpy(to_torch_layout(x))).detach().numpy()
        before = np.asarray(layer.var[...]).copy()
        assert_close(layer(jnp.asarray(x)), to_nnx_layout(expected), 1e-12)
        np.testing.assert_array_equal(layer.var[...], before)
        # the call argument overrides the mode; nnx.view switches it too
        layer(jnp.asarray(x), use_running_average=False)
        assert not np.array_equal(layer.var[...], before)
        assert not nnx.view(layer, use_running_average=False).use_running_average


def test_unaffine_batchnorm_then_channelwise_scaling_is_affine_batchnorm():
    """The seed's BatchNormalization + ChannelwiseScaling pair = one torch BatchNorm."""
    gamma, beta = jnp.array([0.5, 2.0, -1.0]), jnp.array([0.1, 0.0, 3.0])
    affine = BatchNorm(3)
    affine.scale[...], affine.bias[...] = gamma, beta
    plain, scaling = BatchNorm(3, affine=False), ChannelwiseScaling(3)
    scaling.scale[...], scaling.bias[...] = gamma, beta
    assert plain.scale is None and plain.bias is None
    assert len(jax.tree.leaves(nnx.state(plain, nnx.Param))) == 0
    x = jnp.asarray(np.random.default_rng(2).normal(size=(8, 3)), jnp.float32)
    np.testing.assert_allclose(scaling(plain(x)), affine(x), rtol=0, atol=1e-6)
    np.testing.assert_array_equal(plain.var[...], affine.var[...])


def test_nnx_batchnorm_keeps_different_running_statistics():
    """Why ours exists: nnx's momentum is 1 - torch's, and its running var is biased."""
    x = jnp.asarray(np.random.default_rng(3).normal(size=(4, 2)) * 3, jnp.float32)
    n = x.shape[0]
    ours = BatchNorm(2, momentum=0.1)
    theirs = nnx.BatchNorm(2, momentum=0.9, rngs=nnx.Rngs(0))
    np.testing.assert_allclose(ours(x), theirs(x), atol=1e-5)  # same normalisation
    np.testing.assert_allclose(ours.mean[...], theirs.mean[...], rtol=1e-6)  # 1 - m convention
    biased = np.var(np.asarray(x), axis=0)
    np.testing.assert_allclose(theirs.var[...], 0.9 + 0.1 * biased, rtol=1e-5)
    np.testing.assert_allclose(ours.var[...], 0.9 + 0.1 * biased * n / (n - 1), rtol=1e-5)
    reference = torch.nn.BatchNorm1d(2)
    reference(torch.from_numpy(np.array(x)))
    np.testing.assert_allclose(ours.var[...], reference.running_var.numpy(), rtol=1e-6)
    assert not np.allclose(theirs.var[...], reference.running_var.numpy(), rtol=1e-3)


def test_argument_and_input_checks():
    with pytest.raises(ValueError, match="momentum"):
        BatchNorm(2, momentum=1.5)
    with pytest.raises(ValueError, match="eps"):
        BatchNorm(2, eps=0.0)
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        BatchNorm(2)(jnp.ones((1, 2)))
    with pytest.raises(ValueError, match="expected 2 channels"):
        BatchNorm(2)(jnp.ones((4, 3)))
    BatchNorm(2)(jnp.ones((1, 2)), use_running_average=True)  # fine in eval mode


def test_bfloat16_inputs_use_float32_statistics():
    layer = BatchNorm(2, affine=False)
    x = jnp.asarray(np.random.default_rng(4).normal(size=(64, 2)), jnp.bfloat16)
    y = layer(x)
    assert y.dtype == jnp.bfloat16 and layer.var[...].dtype == jnp.float32
    assert float(jnp.abs(jnp.mean(y.astype(jnp.float32), axis=0)).max()) < 2e-2
