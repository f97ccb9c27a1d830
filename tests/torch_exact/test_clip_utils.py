"""torch.nn.utils.get_total_norm / clip_grads_with_norm_ parity for jaxopt_adv.torch.clip."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from jaxopt_adv.torch import clip_grads_with_norm, get_total_norm
from tests.harness import gradient_stream, precision

TOLERANCE = {"float64": 1e-12, "float32": 1e-6}


def torch_split_clip(grads: dict, dtype: str, norm_type: float, max_norm: float):
    """torch's total norm and the ``.grad`` it leaves, in ``sorted(grads)`` order."""
    tensors = [torch.tensor(grads[k], dtype=getattr(torch, dtype)) for k in sorted(grads)]
    total = torch.nn.utils.get_total_norm(tensors, norm_type)
    params = []
    for t in tensors:
        p = torch.zeros_like(t, requires_grad=True)
        p.grad = t.clone()
        params.append(p)
    torch.nn.utils.clip_grads_with_norm_(params, max_norm, total)
    return float(total), [p.grad.numpy() for p in params]


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("norm_type", [1.0, 2.0, 3.5, math.inf])
@pytest.mark.parametrize("ratio", [1 / 3, 2.0, float(np.random.default_rng(5).uniform(0.2, 3))])
def test_split_clipping_matches_torch(norm_type, ratio, dtype):
    grads = gradient_stream(1)[0]
    with precision(dtype):
        ours = {k: jnp.asarray(np.asarray(v, dtype)) for k, v in grads.items()}
        total = jax.jit(get_total_norm, static_argnums=1)(ours, norm_type)
        max_norm = ratio * float(total)
        reference_total, reference = torch_split_clip(grads, dtype, norm_type, max_norm)
        clipped = jax.jit(clip_grads_with_norm)(ours, max_norm, total)
    assert total.dtype == jnp.dtype(dtype)
    assert abs(float(total) - reference_total) <= TOLERANCE[dtype] * reference_total
    for ours_leaf, torch_leaf in zip((clipped[k] for k in sorted(grads)), reference, strict=True):
        assert ours_leaf.dtype == jnp.dtype(dtype)
        scale = np.max(np.abs(torch_leaf))
        assert np.max(np.abs(np.asarray(ours_leaf) - torch_leaf)) <= TOLERANCE[dtype] * scale


def test_nonfinite_total_raises_when_asked():
    grads = [jnp.array([1.0, jnp.inf])]
    with pytest.raises(RuntimeError, match="not finite"):
        get_total_norm(grads, error_if_nonfinite=True)
    with pytest.raises(RuntimeError):
        torch.nn.utils.get_total_norm([torch.tensor([1.0, math.inf])], error_if_nonfinite=True)
    assert jnp.isinf(get_total_norm(grads))


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="norm_type"):
        get_total_norm([jnp.ones(2)], norm_type=0.0)
    with pytest.raises(ValueError, match="max_norm"):
        clip_grads_with_norm([jnp.ones(2)], -1.0, 1.0)


def test_clip_grads_with_norm_returns_new_grads():
    grads = {"w": jnp.array([3.0, 4.0])}
    clipped = clip_grads_with_norm(grads, 1.0, get_total_norm(grads))
    np.testing.assert_allclose(clipped["w"], [3 / (5 + 1e-6), 4 / (5 + 1e-6)], rtol=1e-6)
    np.testing.assert_array_equal(grads["w"], [3.0, 4.0])
