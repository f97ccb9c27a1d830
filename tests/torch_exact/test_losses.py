"""torch.nn.functional parity for jaxopt_adv.torch.losses (values and gradients).

Same harness as test_functional.py: values and one random VJP compared with torch
autograd, every reduction, float64 and float32; margins drawn at random as well as fixed.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from jaxopt_adv.torch import losses as ours
from tests.harness import precision
from tests.helpers.functional_parity import (
    PRECISIONS,
    elementwise_error,
    relative_error,
    run_parity,
)

N, D = 6, 5


def signs(rng, shape) -> np.ndarray:
    return rng.choice([-1.0, 1.0], size=shape)


def random_margin(seed: int) -> float:
    return float(np.random.default_rng(100 + seed).uniform(0.05, 1.5))


# -------------------------------------------------------------- margin / embedding


def ranking_data(seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    return {
        "input1": rng.normal(size=(N, D)),
        "input2": rng.normal(size=(N, D)),
        "target": signs(rng, (N, D)),
    }


def hinge_data(seed: int = 1) -> dict:
    rng = np.random.default_rng(seed)
    return {"input": 1.5 * rng.normal(size=(N, D)), "target": signs(rng, (N, D))}


def cosine_data(seed: int = 2, unbatched: bool = False) -> dict:
    rng = np.random.default_rng(seed)
    shape, tshape = ((D,), ()) if unbatched else ((N, D), (N,))
    target = signs(rng, tshape)
    return {
        "input1": rng.normal(size=shape),
        "input2": rng.normal(size=shape),
        "target": np.asarray(target).astype(np.int64),
    }


SIMPLE = {
    "margin_ranking": (ours.margin_ranking_loss, F.margin_ranking_loss, ranking_data, {}),
    "margin_ranking_margin": (
        ours.margin_ranking_loss,
        F.margin_ranking_loss,
        ranking_data,
        {"margin": 0.5},
    ),
    "margin_ranking_random": (
        ours.margin_ranking_loss,
        F.margin_ranking_loss,
        ranking_data,
        {"margin": random_margin(0)},
    ),
    "hinge": (ours.hinge_embedding_loss, F.hinge_embedding_loss, hinge_data, {}),
    "hinge_random": (
        ours.hinge_embedding_loss,
        F.hinge_embedding_loss,
        hinge_data,
        {"margin": random_margin(1)},
    ),
    "soft_margin": (ours.soft_margin_loss, F.soft_margin_loss, hinge_data, {}),
    "cosine": (ours.cosine_embedding_loss, F.cosine_embedding_loss, cosine_data, {}),
    "cosine_random": (
        ours.cosine_embedding_loss,
        F.cosine_embedding_loss,
        cosine_data,
        {"margin": random_margin(2) - 0.5},
    ),
    "cosine_unbatched": (
        ours.cosine_embedding_loss,
        F.cosine_embedding_loss,
        functools.partial(cosine_data, unbatched=True),
        {"margin": 0.2},
    ),
}
DIFF = {
    "margin_ranking": ("input1", "input2"),
    "hinge": ("input",),
    "soft_margin": ("input",),
    "cosine": ("input1", "input2"),
}


def diff_of(case: str) -> tuple[str, ...]:
    return next(v for k, v in DIFF.items() if case.startswith(k))


@pytest.mark.parametrize("dtype, reduction", PRECISIONS)
@pytest.mark.parametrize("case", SIMPLE)
def test_margin_and_embedding_losses(case, reduction, dtype):
    our_fn, torch_fn, data, options = SIMPLE[case]
    run_parity(
        our_fn,
        torch_fn,
        data(),
        diff=diff_of(case),
        dtype=dtype,
        options={"reduction": reduction, **options},
        # cosine's 'none' gradients cancel in float32: compared relative to their maximum
        metric=elementwise_error
        if reduction == "none" and not case.startswith("cosine")
        else relative_error,
    )


def test_hinge_slope_at_the_margin_is_torchs():
    """clamp_min's slope at 0 is 1 in torch; jnp.maximum(z, 0) gives 1/2."""
    data = {
        "input1": np.array([1.0, 0.0]),
        "input2": np.array([0.5, 0.0]),
        "target": np.array([1.0, 1.0]),
    }  # z = 0 (on the hinge) and z = 0.5
    options = {"margin": 0.5, "reduction": "sum"}
    run_parity(
        ours.margin_ranking_loss, F.margin_ranking_loss, data, diff=("input1",), options=options
    )
    with precision("float64"):
        args = {k: jnp.asarray(v) for k, v in data.items()}
        grad = jax.grad(lambda x: ours.margin_ranking_loss(**{**args, "input1": x}, **options))
        np.testing.assert_array_equal(grad(args["input1"]), [-1.0, -1.0])
        naive = jax.grad(lambda x: jnp.sum(jnp.maximum(0.5 - (x - args["input2"]), 0)))
        np.testing.assert_array_equal(naive(args["input1"]), [-0.5, -1.0])


# ----------------------------------------------------------------------- likelihoods


def poisson_data(log_input: bool, seed: int = 3, full: bool = False) -> dict:
    """Counts with 1 and a fraction; zeros only without ``full`` (see below)."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(N, D)) if log_input else rng.uniform(0.1, 3.0, size=(N, D))
    y = rng.poisson(2.0, size=(N, D)).astype(float)
    y.flat[:3] = [0.0, 1.0, 2.5]
    if full:
        y[y == 0] = 0.5
    return {"input": x, "target": y}


@pytest.mark.parametrize("dtype, reduction", PRECISIONS)
@pytest.mark.parametrize("log_input, full", [(True, False), (False, False), (True, True)])
def test_poisson_nll_loss(log_input, full, reduction, dtype):
    run_parity(
        ours.poisson_nll_loss,
        F.poisson_nll_loss,
        poisson_data(log_input, full=full),
        diff=("input", "target"),
        dtype=dtype,
        options={"log_input": log_input, "full": full, "reduction": reduction},
        metric=elementwise_error if reduction == "none" else relative_error,
    )


def test_poisson_full_target_gradient_at_zero_counts_is_finite():
    """torch's full=True target gradient is nan at y = 0 (0 * log 0 behind its mask);
    ours is the slope of the loss, -x, there (the masked Stirling term adds nothing)."""
    data = poisson_data(True)
    zero = data["target"] == 0
    assert zero.any()
    target = torch.tensor(data["target"], requires_grad=True)
    F.poisson_nll_loss(torch.tensor(data["input"]), target, full=True, reduction="sum").backward()
    assert torch.isnan(target.grad[torch.tensor(zero)]).all()
    with precision("float64"):
        grad = jax.grad(ours.poisson_nll_loss, argnums=1)(
            jnp.asarray(data["input"]), jnp.asarray(data["target"]), full=True, reduction="sum"
        )
    np.testing.assert_array_equal(np.asarray(grad)[zero], -data["input"][zero])


VAR_SHAPES = {"full": (N, D), "homoscedastic": (N,), "one_axis": (N, 1)}


@pytest.mark.parametrize("dtype, reduction", PRECISIONS)
@pytest.mark.parametrize("var_shape", VAR_SHAPES)
def test_gaussian_nll_loss(var_shape, reduction, dtype):
    rng = np.random.default_rng(4)
    var = rng.uniform(0.2, 2.0, size=VAR_SHAPES[var_shape])
    var.flat[0] = 1e-8  # below eps: clamped, with the unclamped slope
    data = {"input": rng.normal(size=(N, D)), "target": rng.normal(size=(N, D)), "var": var}
    run_parity(
        ours.gaussian_nll_loss,
        F.gaussian_nll_loss,
        data,
        diff=("input", "target", "var"),
        dtype=dtype,
        options={"reduction": reduction, "full": var_shape == "full"},
    )


# --------------------------------------------------------------- multi-class margins


def multilabel_soft_data(seed: int = 5) -> dict:
    rng = np.random.default_rng(seed)
    return {
        "input": rng.normal(size=(N, D)),
        "target": rng.integers(0, 2, size=(N, D)).astype(float),
    }


@pytest.mark.parametrize("dtype, reduction", PRECISIONS)
@pytest.mark.parametrize("weighted", [False, True])
def test_multilabel_soft_margin_loss(weighted, reduction, dtype):
    data = multilabel_soft_data()
    if weighted:
        data["weight"] = np.random.default_rng(6).uniform(0.5, 2.0, size=(D,))
    run_parity(
        ours.multilabel_soft_margin_loss,
        F.multilabel_soft_margin_loss,
        data,
        diff=("input", "target"),
        dtype=dtype,
        options={"reduction": reduction},
    )


def multilabel_targets() -> np.ndarray:
    """Label lists ended by -1 (one with a repeated label, one full, one empty)."""
    t = -np.ones((N, D), np.int64)
    t[0, :2] = [3, 1]
    t[1, :3] = [0, 0, 4]
    t[2, :] = [4, 3, 2, 1, 0]
    t[4, :1] = [2]
    t[4, 2] = 1  # after the terminator: ignored
    t[5, :4] = [1, 2, 0, 3]
    return t


@pytest.mark.parametrize("dtype, reduction", PRECISIONS)
@pytest.mark.parametrize("unbatched", [False, True])
def test_multilabel_margin_loss(unbatched, reduction, dtype):
    rng = np.random.default_rng(7)
    data = {"input": 0.7 * rng.normal(size=(N, D)), "target": multilabel_targets()}
    if unbatched:
        data = {k: v[0] for k, v in data.items()}
    run_parity(
        ours.multilabel_margin_loss,
        F.multilabel_margin_loss,
        data,
        dtype=dtype,
        options={"reduction": reduction},
    )


@pytest.mark.parametrize("dtype, reduction", PRECISIONS)
@pytest.mark.parametrize("p, margin, weighted", [(1, 1.0, False), (2, 0.5, True), (1, None, True)])
def test_multi_margin_loss(p, margin, weighted, reduction, dtype):
    rng = np.random.default_rng(8)
    data = {"input": rng.normal(size=(N, D)), "target": rng.integers(0, D, size=(N,))}
    if weighted:
        data["weight"] = rng.uniform(0.5, 2.0, size=(D,))
    margin = random_margin(3) if margin is None else margin
    run_parity(
        ours.multi_margin_loss,
        F.multi_margin_loss,
        data,
        dtype=dtype,
        options={"p": p, "margin": margin, "reduction": reduction},
    )


# ---------------------------------------------------------------------------- triplet


def triplet_data(seed: int = 9) -> dict:
    rng = np.random.default_rng(seed)
    return {k: rng.normal(size=(N, D)) for k in ("anchor", "positive", "negative")}


TRIPLET_DIFF = ("anchor", "positive", "negative")


@pytest.mark.parametrize("dtype, reduction", PRECISIONS)
@pytest.mark.parametrize(
    "p, swap, margin", [(2.0, False, 1.0), (1.0, True, 0.5), (3.0, True, None)]
)
def test_triplet_margin_loss(p, swap, margin, reduction, dtype):
    margin = random_margin(4) if margin is None else margin
    run_parity(
        ours.triplet_margin_loss,
        F.triplet_margin_loss,
        triplet_data(),
        diff=TRIPLET_DIFF,
        dtype=dtype,
        options={"p": p, "swap": swap, "margin": margin, "reduction": reduction},
    )


def _squared_jax(x, y):
    return jnp.sum((x - y) ** 2, axis=-1)


def _squared_torch(x, y):
    return ((x - y) ** 2).sum(-1)


@pytest.mark.parametrize("dtype, reduction", PRECISIONS)
@pytest.mark.parametrize("custom", [False, True])
def test_triplet_margin_with_distance_loss(custom, reduction, dtype):
    options = {"swap": custom, "margin": 2.0, "reduction": reduction}
    run_parity(
        functools.partial(
            ours.triplet_margin_with_distance_loss,
            distance_function=_squared_jax if custom else None,
        ),
        functools.partial(
            F.triplet_margin_with_distance_loss,
            distance_function=_squared_torch if custom else None,
        ),
        triplet_data(),
        diff=TRIPLET_DIFF,
        dtype=dtype,
        options=options,
    )


# ---------------------------------------------------------------------- errors, jit

ALL = {
    "margin_ranking_loss": ranking_data,
    "hinge_embedding_loss": hinge_data,
    "soft_margin_loss": hinge_data,
    "cosine_embedding_loss": cosine_data,
    "poisson_nll_loss": functools.partial(poisson_data, True),
    "multilabel_soft_margin_loss": multilabel_soft_data,
    "multilabel_margin_loss": lambda: {
        "input": np.ones((N, D)),
        "target": multilabel_targets(),
    },
    "multi_margin_loss": lambda: {"input": np.ones((N, D)), "target": np.arange(N) % D},
    "triplet_margin_loss": triplet_data,
    "triplet_margin_with_distance_loss": triplet_data,
    "gaussian_nll_loss": lambda: {**bad_data("gaussian_nll_loss"), "var": np.ones((N, D))},
}


@pytest.mark.parametrize("name", ALL)
def test_bad_reduction_raises(name):
    with pytest.raises(ValueError, match="reduction"):
        getattr(ours, name)(**ALL[name](), reduction="avg")
    with pytest.raises(ValueError):
        getattr(F, name)(**{k: torch.tensor(v) for k, v in ALL[name]().items()}, reduction="avg")


@pytest.mark.parametrize("name", ALL)
def test_every_loss_and_its_gradient_trace_under_jit(name):
    data = {k: jnp.asarray(v) for k, v in ALL[name]().items()}
    first = next(iter(data))
    fn = jax.jit(
        jax.value_and_grad(lambda x: getattr(ours, name)(**{**data, first: x}, reduction="sum"))
    )
    value, grad = fn(data[first])
    eager = getattr(ours, name)(**data, reduction="sum")
    np.testing.assert_allclose(value, eager, rtol=1e-6)
    assert np.all(np.isfinite(grad))


BAD = [
    ("gaussian_nll_loss", {"var": -np.ones((N, D))}, "negative"),
    ("gaussian_nll_loss", {"var": -1.0}, "negative"),
    ("gaussian_nll_loss", {"var": np.ones((N, 2))}, "incorrect size"),
    ("multi_margin_loss", {"p": 3}, "p == 1 and p == 2"),
    ("triplet_margin_with_distance_loss", {"margin": 0.0}, "greater than 0"),
    ("triplet_margin_with_distance_loss", {"margin": -1.0}, "greater than 0"),
]


def bad_data(name: str) -> dict:
    if name == "gaussian_nll_loss":
        rng = np.random.default_rng(0)
        return {"input": rng.normal(size=(N, D)), "target": rng.normal(size=(N, D))}
    return ALL[name]()


@pytest.mark.parametrize("name, options, message", BAD)
def test_bad_arguments_raise_like_torch(name, options, message):
    data = bad_data(name)
    with pytest.raises(ValueError, match=message):
        getattr(ours, name)(**data, **options)
    torch_options = {
        k: torch.tensor(v) if isinstance(v, np.ndarray) else v for k, v in options.items()
    }
    with pytest.raises((ValueError, RuntimeError)):
        getattr(F, name)(**{k: torch.tensor(v) for k, v in data.items()}, **torch_options)


@pytest.mark.parametrize(
    "name, data",
    [
        ("margin_ranking_loss", {**ranking_data(), "target": np.ones((N,))}),
        ("cosine_embedding_loss", {**cosine_data(), "target": np.ones((N, D))}),
        ("multilabel_margin_loss", {"input": np.ones((N, D)), "target": np.zeros((N, 2), int)}),
        ("multi_margin_loss", {"input": np.ones((N, D)), "target": np.zeros((N, 2), int)}),
    ],
)
def test_shape_mismatch_raises(name, data):
    with pytest.raises(ValueError, match=name):
        getattr(ours, name)(**data)


def test_float_class_labels_are_a_type_error():
    with pytest.raises(TypeError, match="target"):
        ours.multi_margin_loss(np.ones((N, D)), np.zeros((N,)))


def test_float32_stays_float32():
    with precision("float64"):
        x = jnp.ones((N, D), jnp.float32)
        assert ours.soft_margin_loss(x, jnp.ones((N, D), jnp.int32)).dtype == jnp.float32
