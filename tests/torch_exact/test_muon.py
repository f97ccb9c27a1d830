"""torch.optim.Muon parity for jaxopt_adv.torch.muon."""

import jax.numpy as jnp
import numpy as np
import pytest
import torch

from jaxopt_adv.torch import muon
from tests.harness import run_parity

# several aspect ratios (wide, tall, square, a row, a column); inner dimensions stay
# small, where the bfloat16 Newton-Schulz products are torch's to the bit; "wide2" and
# "square2" repeat shapes, so those matrices go through one batched Newton-Schulz
SHAPES = {
    "wide": (4, 7),
    "tall": (6, 3),
    "square": (5, 5),
    "row": (1, 6),
    "column": (8, 1),
    "wide2": (4, 7),
    "square2": (5, 5),
}
MUON_STATE = {"momentum_buffer": "momentum_buffer"}

CASES = {
    "defaults": {},
    "plain_momentum": {"nesterov": False, "momentum": 0.9},
    "no_decay": {"weight_decay": 0.0, "momentum": 0.5},
    "match_rms_adamw": {"adjust_lr_fn": "match_rms_adamw", "weight_decay": 0.01},
    "coefficients": {"ns_coefficients": (2.0, -1.5, 0.5), "ns_steps": 7, "eps": 1e-3},
}


def _draw(seed: int) -> dict:
    rng = np.random.default_rng(seed)
    return {
        "weight_decay": float(rng.uniform(0.0, 0.3)),
        "momentum": float(rng.uniform(0.0, 0.99)),
        "nesterov": bool(rng.integers(2)),
        "ns_steps": int(rng.integers(1, 8)),
        "adjust_lr_fn": [None, "original", "match_rms_adamw"][rng.integers(3)],
    }


CASES.update({f"random{seed}": _draw(seed) for seed in range(2)})


def _start(seed: int = 0):
    rng = np.random.default_rng(seed)
    params = {k: rng.normal(size=s) for k, s in SHAPES.items()}
    stream = [{k: (0.1 + t % 3) * rng.normal(size=s) for k, s in SHAPES.items()} for t in range(20)]
    return params, stream


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("case", CASES)
def test_muon_parity(case, dtype):
    kwargs = CASES[case]
    params, stream = _start()
    run_parity(
        muon(0.02, **kwargs),
        lambda p: torch.optim.Muon(p, lr=0.02, **kwargs),
        dtype=dtype,
        state_map=MUON_STATE,
        params=params,
        stream=stream,
    )


@pytest.mark.parametrize("shape", [(3,), (), (2, 3, 4)])
def test_non_matrix_leaf_is_rejected_at_init(shape):
    tx = muon()
    with pytest.raises(ValueError, match=r"Muon only supports 2-D parameters; \['b'\] has shape"):
        tx.init({"w": jnp.zeros((2, 3)), "b": jnp.zeros(shape)})


@pytest.mark.parametrize("adjust_lr_fn", [None, "match_rms_adamw"])
@pytest.mark.parametrize("shape", [(3, 0), (0, 3)])
def test_empty_matrix_steps(shape, adjust_lr_fn):
    """An empty matrix (a layer of width 0) gets an empty update; the shape ratio
    divided by zero (torch's ``A / B``) and raised ZeroDivisionError."""
    tx = muon(adjust_lr_fn=adjust_lr_fn)
    params = {"w": jnp.ones((2, 3)), "empty": jnp.zeros(shape)}
    updates, _ = tx.update(params, tx.init(params), params)
    assert updates["empty"].shape == shape
    assert bool(jnp.all(jnp.isfinite(updates["w"])))


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"learning_rate": -1.0}, "Invalid learning rate"),
        ({"weight_decay": -0.1}, "Invalid weight_decay value"),
        ({"momentum": -0.5}, "Invalid momentum value"),
        ({"eps": -1e-7}, "Invalid epsilon value"),
        ({"ns_steps": 100}, "Invalid ns_steps value"),
        ({"ns_steps": 2.5}, "Invalid ns_steps value"),
        ({"ns_coefficients": (1.0, 2.0)}, "Invalid ns_coefficients value"),
        ({"ns_coefficients": (1.0, float("nan"), 2.0)}, r"Invalid ns_coefficients\[1\] value"),
        ({"ns_steps": np.int64(100)}, "Invalid ns_steps value"),
        ({"adjust_lr_fn": "rms"}, "Invalid adjust_lr_fn 'rms'"),
    ],
)
def test_bad_hyperparameters(kwargs, message):
    with pytest.raises(ValueError, match=message):
        muon(**kwargs)
