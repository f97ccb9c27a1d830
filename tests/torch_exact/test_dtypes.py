"""The dtype options: moment dtypes are honoured and updates keep the gradient's dtype."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import torch

from jaxopt_adv.torch import adafactor, adam, adamax, adamw, asgd, nadam, radam, sgd
from tests.harness import find_state_field

CASES = [
    (adam, {"learning_rate": 0.1}, "mu", "mu_dtype"),
    (adam, {"learning_rate": 0.1, "amsgrad": True}, "mu", "mu_dtype"),
    (adamw, {"learning_rate": 0.1}, "mu", "mu_dtype"),
    (nadam, {"learning_rate": 0.1}, "mu", "mu_dtype"),
    (radam, {"learning_rate": 0.1}, "mu", "mu_dtype"),
    (sgd, {"learning_rate": 0.1, "momentum": 0.9}, "trace", "accumulator_dtype"),
]


@pytest.mark.parametrize("factory, kwargs, field, option", CASES)
@pytest.mark.parametrize(
    "param_dtype, state_dtype",
    [(jnp.float32, jnp.bfloat16), (jnp.bfloat16, jnp.float32)],
    ids=["f32-params-bf16-state", "bf16-params-f32-state"],
)
def test_moment_dtype(factory, kwargs, field, option, param_dtype, state_dtype):
    tx = factory(**kwargs, **{option: state_dtype})
    reference = factory(**kwargs)
    params = {"w": jnp.linspace(-1.0, 1.0, 12, dtype=param_dtype).reshape(3, 4)}
    state, ref_state = tx.init(params), reference.init(params)
    ref_params = params
    for t in range(5):
        grads = jax.tree.map(lambda p, t=t: jnp.cos(3.0 * p + t).astype(p.dtype), params)
        updates, state = tx.update(grads, state, params)
        assert updates["w"].dtype == param_dtype
        assert find_state_field(state, field)["w"].dtype == state_dtype
        params = optax.apply_updates(params, updates)
        ref_updates, ref_state = reference.update(grads, ref_state, ref_params)
        ref_params = optax.apply_updates(ref_params, ref_updates)
    # a bfloat16 moment is a lower-precision version of the same optimizer
    np.testing.assert_allclose(
        np.asarray(params["w"], np.float32), np.asarray(ref_params["w"], np.float32), atol=0.05
    )


@pytest.mark.parametrize("factory", [adam, adamw, nadam, radam, asgd, adamax, adafactor])
@pytest.mark.parametrize("value", ["float16", "bfloat16", "double32", 32, jnp.int32, torch.float16])
def test_bad_torch_default_dtype(factory, value):
    with pytest.raises(ValueError, match="Invalid torch_default_dtype value"):
        factory(torch_default_dtype=value)


@pytest.mark.parametrize(
    "value", ["float32", "float64", jnp.float32, np.float64, torch.float64, torch.float32, None]
)
def test_torch_default_dtype_spellings(value):
    """Strings and dtypes name the same option (float32 runs: no rounding to do)."""
    tx = nadam(0.1, torch_default_dtype=value)
    params = jnp.ones(3)
    updates, _ = tx.update(jnp.ones(3), tx.init(params), params)
    np.testing.assert_allclose(updates, nadam(0.1).update(jnp.ones(3), tx.init(params), params)[0])
