"""torch.optim.Adafactor parity for jaxopt_adv.torch.adafactor."""

import numpy as np
import pytest
import torch

from jaxopt_adv.torch import adafactor
from tests.harness import PRECISIONS, run_parity

# torch factors the last two dimensions of a leaf of >= 2 dims, keeps a full second
# moment for 0-D and 1-D leaves; each group is compared with its own state
# "matrix2", "tall2" and "vector2" repeat shapes: those leaves go through one vmapped trace
FACTORED = {
    "matrix": (5, 4),
    "tall": (7, 2),
    "stack": (3, 4, 5),
    "matrix2": (5, 4),
    "tall2": (7, 2),
}
UNFACTORED = {"vector": (7,), "scalar": (), "vector2": (7,)}
FACTORED_STATE = {"row_var": "row_var", "col_var": "col_var"}
UNFACTORED_STATE = {"variance": "variance"}

CASES = {
    "defaults": {},
    "decay": {"weight_decay": 0.1, "beta2_decay": -0.5},
    "eps": {"eps": (1e-3, 1e-1), "d": 2.0},
    "maximize": {"maximize": True, "weight_decay": 0.05, "eps": (0.0, 0.0)},
}


def _draw(seed: int) -> dict:
    rng = np.random.default_rng(seed)
    return {
        "beta2_decay": float(rng.uniform(-1.0, 0.0)),
        "eps": (float(10 ** rng.uniform(-8, -2)), float(10 ** rng.uniform(-4, -1))),
        "d": float(rng.uniform(1.0, 3.0)),
        "weight_decay": float(rng.uniform(0.0, 0.2)),
        "maximize": bool(rng.integers(2)),
    }


CASES.update({f"random{seed}": _draw(seed) for seed in range(2)})


def _start(shapes: dict, seed: int = 0, num_steps: int = 20):
    rng = np.random.default_rng(seed)
    params = {k: rng.normal(size=s) for k, s in shapes.items()}
    stream = []
    for t in range(num_steps):
        g = {k: (0.1 + t % 3) * rng.normal(size=s) for k, s in shapes.items()}
        if t % 4 == 3:  # a zero row: an exactly zero row variance
            g["matrix" if "matrix" in g else "vector"][0] = 0.0
        stream.append(g)
    return params, stream


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize(
    "shapes, state_map", [(FACTORED, FACTORED_STATE), (UNFACTORED, UNFACTORED_STATE)]
)
def test_adafactor_parity(shapes, state_map, case, dtype):
    kwargs = CASES[case]
    params, stream = _start(shapes)
    run_parity(
        adafactor(0.05, **kwargs),
        lambda p: torch.optim.Adafactor(p, lr=0.05, **kwargs),
        dtype=dtype,
        state_map=state_map,
        params=params,
        stream=stream,
    )


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_parity_default_learning_rate_and_schedule(dtype):
    """The default learning rate, every leaf kind in one tree, and a schedule (the
    relative step is min(lr, 1/sqrt(t)): the schedule crosses 1/sqrt(t))."""
    schedule = lambda t: 0.8 / (1 + t)  # noqa: E731
    params, stream = _start({**FACTORED, **UNFACTORED})
    run_parity(
        adafactor(schedule, weight_decay=0.1),
        lambda p: torch.optim.Adafactor(p, lr=0.8, weight_decay=0.1),
        dtype=dtype,
        params=params,
        stream=stream,
        schedule=schedule,
    )
    run_parity(adafactor(), torch.optim.Adafactor, dtype=dtype, params=params, stream=stream)


@pytest.mark.parametrize("dtype, torch_default", PRECISIONS)
@pytest.mark.parametrize("seed", range(2, 4))
def test_parity_random_under_torch_default_dtype(seed, dtype, torch_default):
    """Every leaf kind in one tree, 25 steps; then the same after 1.5 * 2**24 steps, where
    torch's float32 step counter has stopped at 2**24: its t**beta2_decay and
    min(lr, 1/sqrt(t)) stay there (the relative step is then 1.22 times the exact
    count's; 8e-4 apart after 25 steps with the exact count)."""
    kwargs = _draw(seed)
    params, stream = _start({**FACTORED, **UNFACTORED}, seed, num_steps=25)
    torch_step = 2**24 if torch_default == "float32" else 3 * 2**23
    for resume in (None, (3 * 2**23, torch_step)):
        run_parity(
            adafactor(0.05, **kwargs, torch_default_dtype=torch_default),
            lambda p: torch.optim.Adafactor(p, lr=0.05, **kwargs),
            dtype=dtype,
            params=params,
            stream=stream,
            torch_default=torch_default,
            resume=resume,
        )


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"learning_rate": -1.0}, "Invalid learning rate"),
        ({"beta2_decay": 0.5}, "Invalid beta2_decay value"),
        ({"eps": (1e-3,)}, "Invalid eps value"),
        ({"eps": (-1.0, 1e-3)}, r"Invalid eps\[0\] value"),
        ({"eps": (None, -1.0)}, r"Invalid eps\[1\] value"),
        ({"d": 0.5}, "Invalid d value"),
        ({"weight_decay": -1.0}, "Invalid weight_decay value"),
    ],
)
def test_bad_hyperparameters(kwargs, message):
    with pytest.raises(ValueError, match=message):
        adafactor(**kwargs)
