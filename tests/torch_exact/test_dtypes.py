"""The dtype options: moment dtypes are honoured and updates keep the gradient's dtype."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxopt_adv.torch import adam, adamw, nadam, radam, sgd
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
