"""The dtype options: moment dtypes are honoured and updates keep the gradient's dtype."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import torch

from jaxopt_adv.torch import adafactor, adagrad, adam, adamax, adamw, asgd, nadam, radam, sgd
from tests.harness import PRECISIONS, find_state_field, run_parity, torch_betas

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


@pytest.mark.parametrize("factory", [adam, adamw, nadam, radam, asgd, adamax, adafactor, adagrad])
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


# after 1.5 * 2**24 steps: torch's float32 step counter (its default dtype) stopped at
# 2**24, its float64 one did not; b2 = 1 - 1e-9 keeps 1 - b2**t away from 1 there
LONG_RUN = 3 * 2**23
STOPPED = [
    (adam, torch.optim.Adam, {"b2": 1 - 1e-9}),
    (adamw, torch.optim.AdamW, {"b2": 1 - 1e-9, "weight_decay": 0.1}),
    (nadam, torch.optim.NAdam, {"b2": 1 - 1e-9, "momentum_decay": 1e-7}),
    (radam, torch.optim.RAdam, {"b2": 1 - 1e-7}),  # float32 runs: rho_t in float32
    (asgd, torch.optim.ASGD, {"lambd": 1e-4, "t0": 1e6}),
    (adagrad, torch.optim.Adagrad, {"lr_decay": 1e-6}),
]


def _asgd_resumed(params, kwargs, torch_step):
    """torch's ASGD whose ``eta`` and ``mu`` (computed at the end of each step from the
    counter) are those it holds after ``torch_step`` steps once the harness sets it."""
    optimizer = torch.optim.ASGD(params, lr=0.05, **kwargs)
    step = optimizer.step

    def resumed_step(*args, **kw):
        for state in optimizer.state.values():
            if float(state["step"]) == torch_step:
                lr, lambd, alpha = 0.05, kwargs["lambd"], 0.75
                state["eta"].fill_(lr / ((1 + lambd * lr * torch_step) ** alpha))
                state["mu"].fill_(1 / max(1, torch_step - kwargs["t0"]))
        return step(*args, **kw)

    optimizer.step = resumed_step
    return optimizer


@pytest.mark.parametrize("dtype, torch_default", PRECISIONS)
@pytest.mark.parametrize(
    "factory, torch_cls, kwargs", STOPPED, ids=lambda v: getattr(v, "__name__", "")
)
def test_step_counter_stops_at_2_24_under_float32(factory, torch_cls, kwargs, dtype, torch_default):
    """The bias corrections (NAdam's momentum schedule, ASGD's eta and mu) use torch's
    step counter, which stops at 2**24 under its default float32."""
    torch_step = 2**24 if torch_default == "float32" else LONG_RUN
    if factory is asgd:
        torch_factory = lambda p: _asgd_resumed(p, kwargs, torch_step)  # noqa: E731
    else:
        settings = kwargs if factory is adagrad else torch_betas(kwargs)
        torch_factory = lambda p: torch_cls(p, lr=0.05, **settings)  # noqa: E731
    run_parity(
        factory(0.05, **kwargs, torch_default_dtype=torch_default),
        torch_factory,
        dtype=dtype,
        num_steps=25,
        torch_default=torch_default,
        resume=(LONG_RUN, torch_step),
    )
