"""The coordinate check: muP keeps activations O(1) across widths 64...1024, SP does not."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from jaxopt_adv import torch as torch_exact
from jaxopt_adv.mup import (
    MuMLP,
    coord_check,
    infer_infshapes,
    mu_adam,
    mup_rescale_init,
    plot_coord_check,
)

IN_FEATURES, NUM_CLASSES, BATCH, BASE_WIDTH = 32, 10, 64, 64
WIDTHS = (64, 256, 1024)
STEPS = 3
LEARNING_RATE = 0.01


def batches():
    rng = np.random.default_rng(0)
    return [
        (
            jnp.asarray(rng.normal(size=(BATCH, IN_FEATURES)), jnp.float32),
            jnp.asarray(rng.integers(0, NUM_CLASSES, BATCH)),
        )
        for _ in range(STEPS + 1)
    ]


def loss_fn(model, batch):
    x, y = batch
    return optax.softmax_cross_entropy_with_integer_labels(model(x), y).mean()


BASE = jax.eval_shape(
    lambda: nnx.state(
        MuMLP(IN_FEATURES, (BASE_WIDTH,) * 2, NUM_CLASSES, rngs=nnx.Rngs(0)), nnx.Param
    )
)


def mup_model(width: int) -> MuMLP:
    model = MuMLP(
        IN_FEATURES, (width, width), NUM_CLASSES, width_mult=width / BASE_WIDTH, rngs=nnx.Rngs(0)
    )
    params = nnx.state(model, nnx.Param)
    nnx.update(model, mup_rescale_init(params, infer_infshapes(BASE, params)))
    return model


def mup_optimizer(model: MuMLP) -> optax.GradientTransformation:
    infshapes = infer_infshapes(BASE, nnx.state(model, nnx.Param))
    return mu_adam(LEARNING_RATE, infshapes=infshapes)


def sp_model(width: int) -> MuMLP:
    return MuMLP(IN_FEATURES, (width, width), NUM_CLASSES, rngs=nnx.Rngs(0))  # m = 1: SP


def spread(records, module: str, step: int = STEPS) -> float:
    """max / min over the widths of mean |x| of one output at one step."""
    values = [r.l1 for r in records if r.module == module and r.step == step]
    assert len(values) == len(WIDTHS)
    return max(values) / min(values)


def growth(records, module: str, step: int = STEPS) -> float:
    """mean |x| at the widest width over that at the narrowest."""
    by_width = {r.width: r.l1 for r in records if r.module == module and r.step == step}
    return by_width[max(WIDTHS)] / by_width[min(WIDTHS)]


def test_mup_keeps_activations_width_independent_and_sp_does_not(tmp_path):
    mup_records = coord_check(mup_model, mup_optimizer, loss_fn, batches(), WIDTHS, steps=STEPS)
    sp_records = coord_check(
        sp_model,
        lambda model: torch_exact.adam(LEARNING_RATE),
        loss_fn,
        batches(),
        WIDTHS,
        steps=STEPS,
    )
    modules = {r.module for r in mup_records}
    # post-ReLU activations of both hidden layers, the readout's logits and the model's
    assert modules == {"layers/1", "layers/3", "layers/4", ""}
    for module in modules:
        assert spread(mup_records, module) < 1.5, module
    # under SP with Adam the logits grow with width (~24x from 64 to 1024 here)
    assert growth(sp_records, "layers/4") > 5.0
    assert growth(sp_records, "layers/3") > 1.8

    path = tmp_path / "coord_check.png"
    figure = plot_coord_check(mup_records, str(path), title="muP")
    assert len(figure.axes) == STEPS + 1
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize(
    "steps, num_batches, message",
    [(0, 2, "Invalid steps value"), (3, 3, "needs 4 batches, got 3")],
)
def test_bad_arguments(steps, num_batches, message):
    with pytest.raises(ValueError, match=message):
        coord_check(
            sp_model, lambda m: optax.sgd(0.1), loss_fn, batches()[:num_batches], [8], steps=steps
        )
