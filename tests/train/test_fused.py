"""The train step and loop with a fused optimizer (``jaxopt_adv.fast``).

The model is the loop tests' ``TinyNet`` without its BatchNorm: a bias in front of a
BatchNorm has a gradient that is pure rounding noise, whose bits depend on how XLA fuses
the backward pass with the rest of the step, and RMSprop/Adam scale that noise up to
O(lr) updates. Given the same gradients the fused update is bit-identical
(``tests/fast``); here the whole train step, dropout included, is too.
"""

import jax
import numpy as np
import optax
import pytest

import jaxopt_adv
from jaxopt_adv import fast
from jaxopt_adv.train import fit
from tests.fast.common import assert_bit_identical
from tests.train.models import loss_fn, make_data, make_model


@pytest.mark.parametrize(
    ("name", "hyperparams"),
    [
        ("torch.adam", {"learning_rate": 3e-2, "amsgrad": True}),
        ("torch.adamw", {"learning_rate": 3e-2, "weight_decay": 0.1}),
        ("torch.sgd", {"learning_rate": 0.1, "momentum": 0.9, "nesterov": True}),
        ("torch.rmsprop", {"learning_rate": 1e-2, "centered": True, "momentum": 0.5}),
        ("torch.adagrad", {"learning_rate": 5e-2, "lr_decay": 0.01, "weight_decay": 1e-3}),
        ("torch.adamax", {"learning_rate": 2e-2, "weight_decay": 1e-3}),
    ],
)
def test_fit_with_a_fused_optimizer_matches_its_transform(name, hyperparams):
    opt = fast.fused(name, **hyperparams)
    data = make_data(96)
    runs = []
    for tx in (opt, opt.tx):
        state, history = fit(
            make_model(batch_norm=False), tx, loss_fn, data, epochs=4, batch_size=16, progress=False
        )
        runs.append((jax.device_get((state.params, state.opt_state)), history.steps["loss"]))
    (fused_state, fused_loss), (xla_state, xla_loss) = runs
    assert_bit_identical(fused_state, xla_state, name)
    np.testing.assert_array_equal(fused_loss, xla_loss)
    assert fused_loss[-1] < fused_loss[0]


def test_fused_optimizer_cannot_be_wrapped_by_fit():
    opt = fast.fused("torch.sgd", learning_rate=0.1)
    clip = jaxopt_adv.torch.clip_grad_norm(1.0)
    for extra in ({"clip": clip}, {"accumulate_steps": 2}):
        with pytest.raises(TypeError, match="clip= or accumulate_steps="):
            fit(make_model(batch_norm=False), opt, loss_fn, make_data(32), progress=False, **extra)
    fit(make_model(batch_norm=False), opt.tx, loss_fn, make_data(32), progress=False, clip=clip)
    assert isinstance(opt.tx, optax.GradientTransformation)
