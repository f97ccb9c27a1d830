"""MuReadout, the init rescale, the attention scale, MuMLP: spec values and the m = 1 identity."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxopt_adv.interop import export_torch_state_dict, load_torch_state_dict
from jaxopt_adv.models import MLP, Linear
from jaxopt_adv.mup import (
    MuMLP,
    MuReadout,
    infer_infshapes,
    mup_attention_scale,
    mup_dot_product_attention,
    mup_rescale_init,
)


def test_mureadout_spec_value():
    """Spec 5.6: x = 0.1 * 1_256, W = 0.01, m = 4: logits 0.064 (0.256 in SP)."""
    x = jnp.full((1, 256), 0.1)
    for width_mult, expected in ((4.0, 0.064), (1.0, 0.256)):
        readout = MuReadout(256, 3, width_mult=width_mult, rngs=nnx.Rngs(0))
        readout.kernel[...] = jnp.full((256, 3), 0.01)
        readout.bias[...] = jnp.zeros(3)
        np.testing.assert_allclose(readout(x), np.full((1, 3), expected), rtol=1e-6)


def test_mureadout_output_mult_and_zero_init():
    readout = MuReadout(8, 2, width_mult=2.0, output_mult=3.0, zero_init=True, rngs=nnx.Rngs(0))
    assert not np.any(readout.kernel[...]) and not np.any(readout.bias[...])
    readout.kernel[...] = jnp.ones((8, 2))
    np.testing.assert_allclose(readout(jnp.ones((1, 8))), np.full((1, 2), 8 * 3.0 / 2.0))


def test_width_multiplier_one_is_the_standard_model_exactly():
    """MuReadout(m=1) is Linear, MuMLP(m=1) is models.MLP, and the rescale is the identity."""
    x = jax.random.normal(jax.random.key(1), (4, 8))
    readout, linear = MuReadout(8, 3, rngs=nnx.Rngs(0)), Linear(8, 3, rngs=nnx.Rngs(0))
    np.testing.assert_array_equal(readout(x), linear(x))

    mu_model = MuMLP(8, (16, 16), 3, rngs=nnx.Rngs(0))
    sp_model = MLP(8, (16, 16), 3, dropout_rate=0.0, rngs=nnx.Rngs(1))
    load_torch_state_dict(sp_model, export_torch_state_dict(mu_model))
    np.testing.assert_array_equal(mu_model(x), sp_model(x))
    params = nnx.state(mu_model, nnx.Param)
    rescaled = mup_rescale_init(params, infer_infshapes(params, params))
    jax.tree.map(np.testing.assert_array_equal, nnx.as_pure(rescaled), nnx.as_pure(params))


def test_rescale_init_on_pure_and_variable_trees():
    base = nnx.state(MuMLP(4, (8, 8), 3, rngs=nnx.Rngs(0)), nnx.Param)
    model = MuMLP(4, (32, 32), 3, width_mult=4.0, rngs=nnx.Rngs(1))
    params = nnx.state(model, nnx.Param)
    infshapes = infer_infshapes(base, params)
    from_variables = mup_rescale_init(params, infshapes)
    from_arrays = mup_rescale_init(nnx.as_pure(params), infshapes)
    jax.tree.map(np.testing.assert_array_equal, nnx.as_pure(from_variables), from_arrays)
    factors = jax.tree.map(
        lambda new, old: float(jnp.mean(new / old)), from_arrays, nnx.as_pure(params)
    )
    assert factors["layers"][0] == {"bias": 1.0, "kernel": 1.0}  # input: m_in = 1
    assert factors["layers"][2] == {"bias": pytest.approx(2.0), "kernel": 1.0}
    assert factors["layers"][4] == {"bias": pytest.approx(2.0), "kernel": pytest.approx(2.0)}


def test_rescale_init_needs_every_infshape():
    params = {"a": {"kernel": jnp.ones((2, 2)), "bias": jnp.ones(2)}}
    infshapes = infer_infshapes(
        {"a": {"kernel": jnp.ones((2, 2))}}, {"a": {"kernel": params["a"]["kernel"]}}
    )
    with pytest.raises(ValueError, match="no infshape for parameters \\['a/bias'\\]"):
        mup_rescale_init(params, infshapes)


def test_attention_scale():
    assert mup_attention_scale(64) == 1 / 8  # = 1 / sqrt(64): the standard scale at base
    assert mup_attention_scale(256) == 8 / 256  # mup's 8 / d
    assert mup_attention_scale(32, base_head_dim=32) == pytest.approx(1 / np.sqrt(32), rel=1e-15)
    for bad in ({"head_dim": 0}, {"head_dim": 8, "base_head_dim": -1}):
        with pytest.raises(ValueError, match="must be > 0"):
            mup_attention_scale(**bad)


def test_dot_product_attention_scores():
    keys = jax.random.split(jax.random.key(0), 3)
    q, k, v = (jax.random.normal(key, (2, 5, 3, 256)) for key in keys)
    scores = jnp.einsum("bqhd,bkhd->bhqk", q, k) * (8 / 256)
    expected = jnp.einsum("bhqk,bkhd->bqhd", jax.nn.softmax(scores, axis=-1), v)
    np.testing.assert_allclose(mup_dot_product_attention(q, k, v), expected, rtol=1e-5, atol=1e-6)
    # at the base head dimension it is Flax's attention, bit for bit
    q64, k64, v64 = q[..., :64], k[..., :64], v[..., :64]
    np.testing.assert_array_equal(
        mup_dot_product_attention(q64, k64, v64), nnx.dot_product_attention(q64, k64, v64)
    )


def test_dot_product_attention_in_multi_head_attention():
    """As attention_fn: Flax's attention at the base head size (32 = 64 / 2 heads), a
    different one when the heads are wider than the base."""

    def attention(**kwargs):
        return nnx.MultiHeadAttention(
            num_heads=2, in_features=64, decode=False, rngs=nnx.Rngs(0), **kwargs
        )

    x = jax.random.normal(jax.random.key(1), (1, 4, 64))
    standard = attention()(x)
    at_base = attention(attention_fn=functools.partial(mup_dot_product_attention, base_head_dim=32))
    np.testing.assert_array_equal(at_base(x), standard)
    wider = attention(attention_fn=functools.partial(mup_dot_product_attention, base_head_dim=8))
    assert float(jnp.max(jnp.abs(wider(x) - standard))) > 1e-3


def test_bad_width_mult():
    with pytest.raises(ValueError, match="Invalid width_mult value"):
        MuReadout(4, 2, width_mult=0.0, rngs=nnx.Rngs(0))
