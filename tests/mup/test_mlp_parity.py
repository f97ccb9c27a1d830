"""A muP MLP at width 256 (base 64): PyPI mup in torch vs jaxopt_adv.mup in Flax NNX.

The torch model is ``Sequential(Linear, ReLU, Linear, ReLU, MuReadout)`` with
``mup.set_base_shapes(model, base)``; its (rescaled) weights are copied into
``jaxopt_adv.mup.MuMLP`` with ``jaxopt_adv.interop`` (Linear ``W.T``, the Flax layout).
Both train on the same batches, and all parameters are compared after every step: in
float64 the max relative error must stay <= 1e-10.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import torch
import torch.nn.functional as F
from flax import nnx
from mup import MuAdam, MuAdamW, MuSGD, set_base_shapes

from jaxopt_adv.interop import export_torch_state_dict, load_torch_state_dict
from jaxopt_adv.mup import (
    MuMLP,
    MuReadout,
    infer_infshapes,
    mu_adam,
    mu_adamw,
    mu_sgd,
    mup_rescale_init,
)
from tests.harness import precision
from tests.mup.torch_models import TorchMuMLP

torch.set_num_threads(1)

IN_FEATURES, NUM_CLASSES, BATCH = 20, 10, 16
BASE_WIDTH, WIDTH = 64, 256
BASE_HIDDEN = (BASE_WIDTH, BASE_WIDTH)
# hidden widths of the target: 64 -> 256 everywhere, and an uneven one whose middle
# layer has m_in = 4, m_out = 2 (catches a fan-in / fan-out mix-up in Flax's layout)
HIDDEN = {"square": (WIDTH, WIDTH), "uneven": (WIDTH, WIDTH // 2)}
NUM_STEPS = 10
TOLERANCE = 1e-10

CASES = {
    "adamw": (
        lambda s: mu_adamw(0.01, infshapes=s, weight_decay=0.1),
        lambda p: MuAdamW(p, lr=0.01, weight_decay=0.1),
    ),
    "adam": (
        lambda s: mu_adam(0.01, infshapes=s, b1=0.8, weight_decay=0.05),
        lambda p: MuAdam(p, lr=0.01, betas=(0.8, 0.999), weight_decay=0.05),
    ),
    "sgd": (
        lambda s: mu_sgd(0.05, infshapes=s, momentum=0.9, dampening=0.1, weight_decay=0.01),
        lambda p: MuSGD(p, lr=0.05, momentum=0.9, dampening=0.1, weight_decay=0.01),
    ),
    "sgd_nesterov": (
        lambda s: mu_sgd(0.05, infshapes=s, momentum=0.9, nesterov=True),
        lambda p: MuSGD(p, lr=0.05, momentum=0.9, nesterov=True),
    ),
}


def flax_model(hidden: tuple[int, ...]) -> MuMLP:
    return MuMLP(
        IN_FEATURES,
        hidden,
        NUM_CLASSES,
        width_mult=hidden[-1] / BASE_HIDDEN[-1],
        param_dtype=jnp.float64,
        rngs=nnx.Rngs(0),
    )


def torch_pair(seed: int = 0, hidden=HIDDEN["square"]) -> tuple[TorchMuMLP, TorchMuMLP]:
    torch.manual_seed(seed)
    base = TorchMuMLP(IN_FEATURES, BASE_HIDDEN, NUM_CLASSES)
    return TorchMuMLP(IN_FEATURES, hidden, NUM_CLASSES), base


def base_shapes():
    return jax.eval_shape(lambda: nnx.state(flax_model(BASE_HIDDEN), nnx.Param))


def batches(seed: int = 1):
    rng = np.random.default_rng(seed)
    return [
        (rng.normal(size=(BATCH, IN_FEATURES)), rng.integers(0, NUM_CLASSES, BATCH))
        for _ in range(NUM_STEPS)
    ]


def loss_fn(model: MuMLP, x: jax.Array, y: jax.Array) -> jax.Array:
    return optax.softmax_cross_entropy_with_integer_labels(model(x), y).mean()


def relative_errors(model, reference, scales, errors) -> None:
    """max |ours - torch| / (largest |torch| so far), per torch parameter name."""
    ours = export_torch_state_dict(model)
    for name, value in reference.state_dict().items():
        theirs = value.numpy()
        scales[name] = max(scales.get(name, 0.0), float(np.max(np.abs(theirs))))
        error = float(np.max(np.abs(np.asarray(ours[name]) - theirs))) / scales[name]
        errors[name] = max(errors.get(name, 0.0), error)


RUNS = [(case, "square") for case in CASES] + [("adamw", "uneven"), ("sgd", "uneven")]


@pytest.mark.parametrize("case, widths", RUNS, ids=[f"{c}-{w}" for c, w in RUNS])
def test_mlp_training_matches_pypi_mup(case, widths):
    ours_factory, theirs_factory = CASES[case]
    with precision("float64"):
        reference, base = torch_pair(hidden=HIDDEN[widths])
        set_base_shapes(reference, base)  # muP init rescale, infshapes on the params
        model = flax_model(HIDDEN[widths])
        load_torch_state_dict(model, reference.state_dict())
        infshapes = infer_infshapes(base_shapes(), nnx.state(model, nnx.Param))
        optimizer = nnx.Optimizer(model, ours_factory(infshapes), wrt=nnx.Param)
        torch_optimizer = theirs_factory(reference.parameters())

        @nnx.jit
        def step(model, optimizer, x, y):
            optimizer.update(model, nnx.grad(loss_fn)(model, x, y))

        start = {k: v.clone() for k, v in reference.state_dict().items()}
        scales, errors = {}, {}
        for x, y in batches():
            torch_optimizer.zero_grad()
            F.cross_entropy(reference(torch.tensor(x)), torch.tensor(y)).backward()
            torch_optimizer.step()
            step(model, optimizer, jnp.asarray(x), jnp.asarray(y))
            relative_errors(model, reference, scales, errors)
    worst = max(errors, key=errors.get)
    assert errors[worst] <= TOLERANCE, f"{worst}: relative error {errors[worst]:.3e}"
    # every parameter moved, so the comparison is not of two untouched copies
    for name, value in reference.state_dict().items():
        assert float((value - start[name]).abs().max()) > 1e-4, name


def test_init_rescale_matches_set_base_shapes():
    """SP init imported before mup's rescale, then mup_rescale_init == set_base_shapes:
    hidden biases and the MuReadout weight and bias x sqrt(4) = 2, the rest untouched."""
    with precision("float64"):
        reference, base = torch_pair(seed=3)
        model = flax_model(HIDDEN["square"])
        load_torch_state_dict(model, reference.state_dict())
        before = {k: v.clone() for k, v in reference.state_dict().items()}
        set_base_shapes(reference, base)
        params = nnx.state(model, nnx.Param)
        nnx.update(model, mup_rescale_init(params, infer_infshapes(base_shapes(), params)))
        ours = export_torch_state_dict(model)
        for name, value in reference.state_dict().items():
            np.testing.assert_array_equal(np.asarray(ours[name]), value.numpy(), err_msg=name)
        changed = {k for k in before if not torch.equal(before[k], reference.state_dict()[k])}
        assert changed == {"layers.2.bias", "layers.4.weight", "layers.4.bias"}


@pytest.mark.parametrize("output_mult", [1.0, 2.5])
def test_mureadout_forward_matches_torch(output_mult):
    with precision("float64"):
        reference, base = torch_pair(seed=4)
        for module in (reference, base):
            module.layers[-1].output_mult = output_mult
        set_base_shapes(reference, base)
        readout = MuReadout(
            WIDTH,
            NUM_CLASSES,
            width_mult=WIDTH / BASE_WIDTH,
            output_mult=output_mult,
            param_dtype=jnp.float64,
            rngs=nnx.Rngs(0),
        )
        load_torch_state_dict(
            readout,
            {
                k.removeprefix("layers.4."): v
                for k, v in reference.state_dict().items()
                if k.startswith("layers.4.")
            },
        )
        x = np.random.default_rng(0).normal(size=(3, WIDTH))
        expected = reference.layers[-1](torch.tensor(x)).detach().numpy()
        np.testing.assert_allclose(readout(jnp.asarray(x)), expected, rtol=1e-13)
