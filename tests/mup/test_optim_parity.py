"""mu_adam / mu_adamw / mu_sgd against PyPI mup 1.0.0: 20-step parity and the rules table."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from mup import MuAdam, MuAdamW, MuSGD, set_base_shapes
from mup.infshape import zip_infshape

from jaxopt_adv.mup import (
    infer_infshapes,
    mu_adam,
    mu_adamw,
    mu_sgd,
    mup_multipliers,
)
from tests.harness import PARAM_SHAPES, run_parity
from tests.mup.common import BASE_SHAPES, harness_infshapes
from tests.mup.torch_models import TorchMuCNN, TorchMuMLP

torch.set_num_threads(1)

ADAM_STATE = {"mu": "exp_avg", "nu": "exp_avg_sq"}
SGD_STATE = {"trace": "momentum_buffer"}


def with_mup_infshapes(params):
    """Attach mup's infshapes to the harness's torch tensors (names in harness order)."""
    for p, name in zip(params, PARAM_SHAPES, strict=True):
        p.infshape = zip_infshape(BASE_SHAPES[name], tuple(p.shape))
    return params


def torch_betas(kwargs):
    kwargs = dict(kwargs)
    if "b1" in kwargs or "b2" in kwargs:
        kwargs["betas"] = (kwargs.pop("b1", 0.9), kwargs.pop("b2", 0.999))
    return kwargs


ADAM_CASES = {
    "plain": {},
    "weight_decay": {"weight_decay": 0.1},
    "hyper": {"b1": 0.8, "b2": 0.99, "eps": 1e-6, "weight_decay": 0.05},
}
SGD_CASES = {
    "plain": {},
    "momentum_dampening_wd": {"momentum": 0.9, "dampening": 0.1, "weight_decay": 0.01},
    "nesterov_wd": {"momentum": 0.8, "nesterov": True, "weight_decay": 0.05},
}
RUNS = [
    (name, case, "float64")
    for name, cases in (("adam", ADAM_CASES), ("adamw", ADAM_CASES), ("sgd", SGD_CASES))
    for case in cases
] + [
    ("adam", "weight_decay", "float32"),
    ("adamw", "hyper", "float32"),
    ("sgd", "momentum_dampening_wd", "float32"),
]
OURS = {"adam": mu_adam, "adamw": mu_adamw, "sgd": mu_sgd}
THEIRS = {"adam": MuAdam, "adamw": MuAdamW, "sgd": MuSGD}
LEARNING_RATE = {"adam": 0.01, "adamw": 0.01, "sgd": 0.02}


@pytest.mark.parametrize("name, case, dtype", RUNS, ids=["-".join(r) for r in RUNS])
def test_parity_with_pypi_mup_torch_layout(name, case, dtype):
    """20 steps of the harness stream, params and Adam/momentum state after every step."""
    kwargs = SGD_CASES[case] if name == "sgd" else ADAM_CASES[case]
    if name != "sgd":
        state_map = ADAM_STATE
    else:
        state_map = SGD_STATE if kwargs.get("momentum") else {}
    lr = LEARNING_RATE[name]
    run_parity(
        OURS[name](lr, infshapes=harness_infshapes(), **kwargs),
        lambda p: THEIRS[name](with_mup_infshapes(p), lr=lr, **torch_betas(kwargs)),
        dtype=dtype,
        state_map=state_map,
    )


class Scheduled:
    """A torch optimizer whose ``step`` also steps its lr scheduler (for run_parity)."""

    def __init__(self, optimizer, scheduler):
        self.optimizer, self.scheduler = optimizer, scheduler
        self.state = optimizer.state

    def step(self):
        self.optimizer.step()
        self.scheduler.step()


@pytest.mark.usefixtures("default_compilation")
def test_parity_with_xlas_default_compilation():
    """The package compiles quickly (``conftest.py``); the parity with mup also holds
    compiled with XLA's default settings, the code users run."""
    test_parity_with_pypi_mup_torch_layout("adamw", "hyper", "float64")
    test_parity_with_pypi_mup_torch_layout("sgd", "momentum_dampening_wd", "float32")


def test_parity_under_a_schedule():
    """A schedule on ours equals torch LambdaLR over mup's width-scaled param groups."""
    factor = lambda t: 0.9**t  # noqa: E731
    lr = 0.01

    def torch_factory(params):
        optimizer = MuAdamW(with_mup_infshapes(params), lr=lr, weight_decay=0.1)
        return Scheduled(optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, factor))

    run_parity(
        mu_adamw(lambda t: lr * factor(t), infshapes=harness_infshapes(), weight_decay=0.1),
        torch_factory,
        state_map=ADAM_STATE,
    )


# --------------------------------------------------------------------------------------
# The multiplier table against mup's param groups, in both layouts.


def torch_models():
    """(model, base) pairs with set_base_shapes applied: an MLP whose hidden layer
    shrinks its fan-out relative to its fan-in (m_in = 4, m_out = 2), and a CNN."""
    torch.manual_seed(0)
    mlp, mlp_base = TorchMuMLP(20, (256, 128), 10), TorchMuMLP(20, (64, 64), 10)
    cnn, cnn_base = TorchMuCNN(32, 48), TorchMuCNN(8, 8)
    return [set_base_shapes(mlp, mlp_base), set_base_shapes(cnn, cnn_base)], [mlp_base, cnn_base]


def flax_shape(name: str, shape: tuple[int, ...]) -> jax.ShapeDtypeStruct:
    """A torch parameter's shape in Flax's layout (Linear W.T, conv OIHW -> HWIO)."""
    if len(shape) == 2:
        shape = shape[::-1]
    elif len(shape) == 4:
        shape = (shape[2], shape[3], shape[1], shape[0])
    return jax.ShapeDtypeStruct(shape, jnp.float32)


def group_of(optimizer, param):
    (group,) = [g for g in optimizer.param_groups if any(p is param for p in g["params"])]
    return group["lr"], group["weight_decay"]


@pytest.mark.parametrize("layout", ["flax", "torch"])
@pytest.mark.parametrize("scaling", ["adam", "sgd"])
def test_multipliers_match_mup_param_groups(layout, scaling):
    models, bases = torch_models()
    for model, base in zip(models, bases, strict=True):
        named = dict(model.named_parameters())
        base_named = dict(base.named_parameters())
        convert = (
            flax_shape if layout == "flax" else lambda n, s: jax.ShapeDtypeStruct(s, "float32")
        )
        infshapes = infer_infshapes(
            {k: convert(k, tuple(p.shape)) for k, p in base_named.items()},
            {k: convert(k, tuple(p.shape)) for k, p in named.items()},
            layout=layout,
        )
        optimizer = (MuSGD if scaling == "sgd" else MuAdam)(
            model.parameters(), lr=0.5, weight_decay=0.25
        )
        seen = set()
        for name, param in named.items():
            lr_mult, wd_mult = mup_multipliers(infshapes[name], scaling)
            lr, wd = group_of(optimizer, param)
            np.testing.assert_allclose([lr, wd], [0.5 * lr_mult, 0.25 * wd_mult], rtol=1e-15)
            seen.add((lr_mult, wd_mult))
        assert len(seen) >= 2  # not all multipliers are 1


def test_flax_layout_uses_fan_in_on_axis_minus_two():
    """The spec's layout trap: on a Flax [in, out] kernel with m_in != m_out, Adam's
    multiplier is 1/m_in; reading torch's axis would give 1/m_out."""
    kernel = infer_infshapes(jnp.zeros((64, 32)), jnp.zeros((256, 64)))
    assert mup_multipliers(kernel, "adam").learning_rate == 1 / 4
    torch_read = infer_infshapes(jnp.zeros((64, 32)), jnp.zeros((256, 64)), layout="torch")
    assert mup_multipliers(torch_read, "adam").learning_rate == 1 / 2
    conv = infer_infshapes(jnp.zeros((3, 3, 16, 8)), jnp.zeros((3, 3, 64, 16)))  # HWIO
    assert (conv.fan_in_mult, conv.fan_out_mult) == (4.0, 2.0)
    assert mup_multipliers(conv, "sgd") == (0.5, 2.0)


# --------------------------------------------------------------------------------------
# A parameter with two width axes that are not (fan-out, fan-in): mup's main axis.


class TwoWidthAxes(torch.nn.Module):
    """A ``(3, w1, w2)`` tensor (width axes 1 and 2, axis 0 finite) and a ``(w1,)`` bias."""

    def __init__(self, w1: int, w2: int) -> None:
        super().__init__()
        self.tensor = torch.nn.Parameter(torch.zeros(3, w1, w2))
        self.bias = torch.nn.Parameter(torch.zeros(w1))


TWO_AXES_CASES = {
    "adam": {"weight_decay": 0.1},
    "adamw": {"b1": 0.8, "weight_decay": 0.05},
    "sgd": {"momentum": 0.9, "weight_decay": 0.01},
}


@pytest.mark.parametrize("name", sorted(TWO_AXES_CASES))
def test_parity_with_pypi_mup_on_a_tensor_with_two_width_axes(name):
    """Base (3, 8, 8), target (3, 32, 16): mup's main axis is the *last* infinite one
    (m = 2), not the fan-in (m = 4); MuSGD uses m_in / m_out = 4. 20 steps, f64."""
    model = set_base_shapes(TwoWidthAxes(32, 16), TwoWidthAxes(8, 8))
    shapes = {k: tuple(p.shape) for k, p in model.named_parameters()}
    rng = np.random.default_rng(0)
    start = {k: rng.normal(size=s) for k, s in shapes.items()}
    stream = [{k: rng.normal(size=s) for k, s in shapes.items()} for _ in range(20)]
    base = {
        k: jax.ShapeDtypeStruct(s, jnp.float64) for k, s in (("tensor", (3, 8, 8)), ("bias", (8,)))
    }
    infshapes = infer_infshapes(
        base, {k: jax.ShapeDtypeStruct(s, jnp.float64) for k, s in shapes.items()}, layout="torch"
    )
    kwargs, lr = TWO_AXES_CASES[name], LEARNING_RATE[name]

    def torch_factory(params):
        for p, reference in zip(params, model.parameters(), strict=True):
            p.infshape = reference.infshape
        return THEIRS[name](params, lr=lr, **torch_betas(kwargs))

    state_map = SGD_STATE if name == "sgd" else ADAM_STATE
    run_parity(
        OURS[name](lr, infshapes=infshapes, **kwargs),
        torch_factory,
        state_map=state_map,
        params=start,
        stream=stream,
    )


@pytest.mark.parametrize("scaling", ["adam", "sgd"])
def test_two_width_axes_multipliers_match_mup_in_both_layouts(scaling):
    """The same (3, 32, 16) torch tensor read in Flax's layout, (16, 32, 3): the
    multipliers are those of mup's param group for the torch tensor."""
    model = set_base_shapes(TwoWidthAxes(32, 16), TwoWidthAxes(8, 8))
    optimizer = (MuSGD if scaling == "sgd" else MuAdam)(
        model.parameters(), lr=0.5, weight_decay=0.25
    )
    expected = group_of(optimizer, model.tensor)
    for layout, base, target in (
        ("torch", (3, 8, 8), (3, 32, 16)),
        ("flax", (8, 8, 3), (16, 32, 3)),
    ):
        infshape = infer_infshapes(jnp.zeros(base), jnp.zeros(target), layout=layout)
        lr_mult, wd_mult = mup_multipliers(infshape, scaling)
        np.testing.assert_allclose([0.5 * lr_mult, 0.25 * wd_mult], expected, rtol=1e-15)
