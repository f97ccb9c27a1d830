"""torch.nn.functional parity for jaxopt_adv.torch.functional (values and gradients).

Every case evaluates the loss in both frameworks from the same float64 data, pulls one
random cotangent back through both (``jax.vjp`` / ``Tensor.backward``) and compares the
value and the gradient of every differentiable argument torch supports. The error of a
quantity is ``max|ours - torch| / max|torch|`` over its finite elements; ``nan`` and
``inf`` must sit at the same places (with the same signs) in both. Gradients torch
refuses to compute (``weight``, ``pos_weight``) are checked against central differences
of torch's own loss value.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from jaxopt_adv.torch import functional as ours
from tests.harness import precision
from tests.helpers.functional_parity import (
    DTYPES,
    PRECISIONS,
    REDUCTIONS,
    check_weight_gradient,
    elementwise_error,
    precisions,
    relative_error,
    run_parity,
)

KL_REDUCTIONS = ["mean", "batchmean", "sum", "none"]


def case_grid(cases: dict) -> list:
    """(case, dtype, reduction) for every case and precision; unbatched ``(C,)`` inputs
    only in float64 (their numerics are the batched ones, tested in both)."""
    return [
        pytest.param(case, *p.values, id=f"{case}-{p.id}")
        for case in cases
        for p in PRECISIONS
        if not ("unbatched" in case and p.values[0] == "float32")
    ]


# torch warns that kl_div's 'mean' is not the KL divergence; we mirror 'mean' on purpose.
pytestmark = pytest.mark.filterwarnings("ignore:reduction. 'mean' divides:UserWarning")


# ---------------------------------------------------------------------------- data

SHAPE = (3, 4, 5)


def regression_data(seed: int = 0) -> dict:
    """Random pairs with exact ties (d = 0) and differences on every kink tested."""
    rng = np.random.default_rng(seed)
    x = 2 * rng.normal(size=SHAPE)
    y = 2 * rng.normal(size=SHAPE)
    y.flat[:4] = x.flat[:4]
    kinks = [(1.5, 1.0), (3.0, 1.0), (0.0, 1.0), (-0.25, 2.25), (1.0, 0.7), (0.0, 2.5)]
    for i, (a, b) in enumerate(kinks, start=4):  # d = 0.5, 2, -1, -2.5, 0.3, -2.5
        x.flat[i], y.flat[i] = a, b
    return {"input": x, "target": y}


def probability_data(seed: int = 1) -> dict:
    rng = np.random.default_rng(seed)
    p = rng.uniform(0.02, 0.98, size=SHAPE)
    y = rng.uniform(size=SHAPE)
    y.flat[::3] = np.round(y.flat[::3])  # hard labels among soft ones
    return {"input": p, "target": y}


def weight_of(kind: str | None, seed: int = 2):
    rng = np.random.default_rng(seed)
    if kind == "full":
        return rng.uniform(0.5, 2.0, size=SHAPE)
    if kind == "last_axis":
        return rng.uniform(0.5, 2.0, size=SHAPE[-1:])
    return None


# ------------------------------------------------------------- regression losses

REGRESSION = {
    "mse": (ours.mse_loss, F.mse_loss, {}),
    "l1": (ours.l1_loss, F.l1_loss, {}),
    "smooth_l1": (ours.smooth_l1_loss, F.smooth_l1_loss, {}),
    "smooth_l1_beta_0.5": (ours.smooth_l1_loss, F.smooth_l1_loss, {"beta": 0.5}),
    "smooth_l1_beta_0": (ours.smooth_l1_loss, F.smooth_l1_loss, {"beta": 0.0}),
    "huber": (ours.huber_loss, F.huber_loss, {}),
    "huber_delta_2.5": (ours.huber_loss, F.huber_loss, {"delta": 2.5}),
}


@pytest.mark.parametrize("dtype, reduction", PRECISIONS)
@pytest.mark.parametrize("case", REGRESSION)
def test_regression_losses(case, reduction, dtype):
    our_fn, torch_fn, options = REGRESSION[case]
    run_parity(
        our_fn,
        torch_fn,
        regression_data(),
        diff=("input", "target"),
        dtype=dtype,
        options={"reduction": reduction, **options},
        metric=elementwise_error if reduction == "none" else relative_error,
    )


@pytest.mark.parametrize("case", ["l1", "smooth_l1_beta_0"])
def test_l1_slope_at_ties_is_zero(case):
    """torch's slope at x == y is sign(0) = 0; jax.grad(jnp.abs) there is 1."""
    our_fn, torch_fn, options = REGRESSION[case]
    data = regression_data()
    ties = data["input"] == data["target"]
    assert ties.sum() == 4
    result = run_parity(our_fn, torch_fn, data, diff=("input", "target"), options=options)
    np.testing.assert_array_equal(result.grads["input"][ties], 0.0)
    np.testing.assert_array_equal(result.grads["target"][ties], 0.0)
    assert np.all(result.grads["input"][~ties] != 0)
    assert jax.grad(lambda x: jnp.abs(x - 1.0))(1.0) == 1.0  # the naive port


# ------------------------------------------------------------------- binary losses


@pytest.mark.parametrize("dtype, reduction", PRECISIONS)
@pytest.mark.parametrize("weight", [None, "full", "last_axis"])
def test_binary_cross_entropy(weight, reduction, dtype):
    arrays = probability_data()
    if weight is not None:
        arrays["weight"] = weight_of(weight)
    run_parity(
        ours.binary_cross_entropy,
        F.binary_cross_entropy,
        arrays,
        diff=("input", "target"),
        dtype=dtype,
        options={"reduction": reduction},
    )


def bce_edge_data() -> dict:
    """The first ten probabilities are 0 and 1, tiny (p (1 - p) below torch's 1e-12 floor)
    and next to 1; the rest is :func:`probability_data`."""
    data = probability_data()
    data["input"].flat[:10] = [0.0, 0.0, 1.0, 1.0, 1e-20, 1e-13, 1 - 2.0**-23, 0.5, 0.0, 1.0]
    data["target"].flat[:10] = [0.0, 1.0, 0.0, 1.0, 1.0, 1.0, 0.0, 0.3, 0.25, 0.6]
    return data


@pytest.mark.parametrize("dtype, reduction", PRECISIONS)
@pytest.mark.parametrize("weighted", [False, True])
def test_binary_cross_entropy_at_zero_and_one(weighted, reduction, dtype):
    """Finite values (log clamped at -100) and torch's finite input slope, element by element.

    The target slope is +-inf at p in {0, 1}, as in torch; the input slope at p = 1e-13
    needs the float32 value of torch's 1e-12 floor (1e-12 itself is 4e-9 off).
    """
    arrays = bce_edge_data()
    if weighted:
        arrays["weight"] = weight_of("full")
    result = run_parity(
        ours.binary_cross_entropy,
        F.binary_cross_entropy,
        arrays,
        diff=("input", "target"),
        dtype=dtype,
        options={"reduction": reduction},
        metric=elementwise_error,
    )
    assert set(result.errors) == {"value", "grad:input", "grad:target"}


def test_binary_cross_entropy_floor_is_the_float32_literal():
    """p = 1e-13, y = 1: p (1 - p) is below the floor; torch divides by float32(1e-12)."""
    data = bce_edge_data()
    with precision("float64"):
        p, y = (jnp.asarray(data[k]) for k in ("input", "target"))
        grad = jax.grad(ours.binary_cross_entropy)(p, y, reduction="sum").reshape(-1)[5]

        def clamped(p):  # the formula itself: jax.grad is nan at p in {0, 1}
            log_p, log_1mp = jnp.log(p), jnp.log1p(-p)
            return -jnp.sum(y * jnp.maximum(log_p, -100.0) + (1 - y) * jnp.maximum(log_1mp, -100.0))

        naive = jax.grad(clamped)(p).reshape(-1)
    t_p = torch.tensor(data["input"], requires_grad=True)
    F.binary_cross_entropy(t_p, torch.tensor(data["target"]), reduction="sum").backward()
    torch_grad = float(t_p.grad.reshape(-1)[5])
    assert float(grad) == torch_grad == (1e-13 - 1.0) / float(np.float32(1e-12))
    assert abs(float(grad) / ((1e-13 - 1.0) / 1e-12) - 1) > 1e-9  # 1e-12 itself is 4e-9 off
    assert np.all(np.isnan(naive[:4]))  # p in {0, 1}


LOGIT_CASES = {
    "plain": {},
    "weight": {"weight": "full"},
    "pos_weight": {"pos_weight": True},
    "weight_and_pos_weight": {"weight": "last_axis", "pos_weight": True},
    "large_logits": {"large": True, "pos_weight": True},
}


def logits_data(case: dict) -> dict:
    rng = np.random.default_rng(3)
    x = 3 * rng.normal(size=SHAPE)
    if case.get("large"):
        x.flat[::2] = np.resize([100.0, -100.0, 800.0, -800.0, 30.0, -30.0, 0.0], x.size // 2)
    y = rng.uniform(size=SHAPE)
    y.flat[::4] = np.round(y.flat[::4])
    arrays = {"input": x, "target": y}
    if case.get("weight"):
        arrays["weight"] = weight_of(case["weight"])
    if case.get("pos_weight"):
        arrays["pos_weight"] = rng.uniform(0.2, 4.0, size=SHAPE[-1:])
    return arrays


@pytest.mark.parametrize("dtype, reduction", PRECISIONS)
@pytest.mark.parametrize("case", LOGIT_CASES)
def test_binary_cross_entropy_with_logits(case, reduction, dtype):
    run_parity(
        ours.binary_cross_entropy_with_logits,
        F.binary_cross_entropy_with_logits,
        logits_data(LOGIT_CASES[case]),
        diff=("input", "target"),
        dtype=dtype,
        options={"reduction": reduction},
    )


# -------------------------------------------------------------- classification losses

NUM_CLASSES = 5
# (N, C, H, W) with N H W = 8 rows, like the (8, C) cases: they share compiled kernels.
ND_SHAPE = (2, NUM_CLASSES, 2, 2)

CLASS_CASES = {
    "plain": {},
    "ignore": {"ignore": True},
    "ignore_valid_class": {"ignore_index": 2},
    "weight_ignore": {"weight": True, "ignore": True},
    "smoothing": {"label_smoothing": 0.2},
    "smoothing_weight_ignore": {"label_smoothing": 0.3, "weight": True, "ignore": True},
    "smoothing_one": {"label_smoothing": 1.0, "weight": True},
    "nd_smoothing_weight_ignore": {
        "shape": ND_SHAPE,
        "label_smoothing": 0.15,
        "weight": True,
        "ignore": True,
    },
    "unbatched_smoothing_weight": {"shape": (NUM_CLASSES,), "weight": True, "label_smoothing": 0.1},
    "large_logits": {"large": True, "weight": True, "ignore": True, "label_smoothing": 0.1},
}


def class_data(case: dict, *, probabilities: bool = False) -> tuple[dict, dict]:
    """Logits, targets (indices, or probabilities of the logits' shape) and options."""
    rng = np.random.default_rng(4)
    shape = case.get("shape", (8, NUM_CLASSES))
    x = 2 * rng.normal(size=shape)
    if case.get("large"):
        x.flat[::3] = np.resize([100.0, -100.0, 50.0], x.flat[::3].size)
    class_axis = 0 if len(shape) == 1 else 1
    if probabilities:
        target = rng.dirichlet(np.ones(NUM_CLASSES), size=x.size // NUM_CLASSES)
        target[0] = np.eye(NUM_CLASSES)[1]  # a one-hot row: zeros times log-probabilities
        other = [s for i, s in enumerate(shape) if i != class_axis]
        target = np.moveaxis(target.reshape(*other, NUM_CLASSES), -1, class_axis)
    else:
        target = rng.integers(0, NUM_CLASSES, size=shape[:class_axis] + shape[class_axis + 1 :])
        if case.get("ignore"):
            target.flat[1::3] = -100
    arrays = {"input": x, "target": target}
    if case.get("weight"):
        arrays["weight"] = rng.uniform(0.2, 3.0, size=NUM_CLASSES)
    options = {k: case[k] for k in ("ignore_index", "label_smoothing") if k in case}
    return arrays, options


@pytest.mark.parametrize("case, dtype, reduction", case_grid(CLASS_CASES))
def test_cross_entropy_class_targets(case, reduction, dtype):
    arrays, options = class_data(CLASS_CASES[case])
    run_parity(
        ours.cross_entropy,
        F.cross_entropy,
        arrays,
        dtype=dtype,
        options={"reduction": reduction, **options},
    )


PROBABILITY_CASES = {
    "plain": {},
    "smoothing": {"label_smoothing": 0.2},
    "weight_smoothing_negative_ignore_index": {
        "weight": True,
        "label_smoothing": 0.25,
        "ignore_index": -5,  # accepted (and unused) with probability targets, as in torch
    },
    "nd": {"shape": ND_SHAPE, "weight": True, "label_smoothing": 0.1},
    "unbatched": {"shape": (NUM_CLASSES,), "weight": True},
    "large_logits": {"large": True, "weight": True},
}


@pytest.mark.parametrize("case, dtype, reduction", case_grid(PROBABILITY_CASES))
def test_cross_entropy_probability_targets(case, reduction, dtype):
    arrays, options = class_data(PROBABILITY_CASES[case], probabilities=True)
    run_parity(
        ours.cross_entropy,
        F.cross_entropy,
        arrays,
        diff=("input", "target"),
        dtype=dtype,
        options={"reduction": reduction, **options},
    )


NLL_CASES = {
    "plain": {},
    "ignore_valid_class": {"ignore_index": 2},
    "weight_ignore": {"weight": True, "ignore": True},
    "nd_weight_ignore": {"shape": ND_SHAPE, "weight": True, "ignore": True},
    "unbatched_weight": {"shape": (NUM_CLASSES,), "weight": True},
}


@pytest.mark.parametrize("case, dtype, reduction", case_grid(NLL_CASES))
def test_nll_loss(case, reduction, dtype):
    arrays, options = class_data(NLL_CASES[case])
    class_axis = 0 if arrays["input"].ndim == 1 else 1
    arrays["input"] = np.asarray(torch.log_softmax(torch.tensor(arrays["input"]), class_axis))
    run_parity(
        ours.nll_loss,
        F.nll_loss,
        arrays,
        dtype=dtype,
        options={"reduction": reduction, **options},
    )


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(
    "our_fn, torch_fn, options",
    [
        (ours.cross_entropy, F.cross_entropy, {}),
        (ours.cross_entropy, F.cross_entropy, {"label_smoothing": 0.2}),
        (ours.nll_loss, F.nll_loss, {}),
    ],
    ids=["cross_entropy", "cross_entropy_smoothing", "nll_loss"],
)
@pytest.mark.parametrize("weighted", [False, True])
def test_all_targets_ignored_mean_is_nan(our_fn, torch_fn, options, weighted, dtype):
    """0 / 0 = nan for the value, as in torch; the gradient is 0 in both."""
    arrays, _ = class_data({"weight": weighted})
    arrays["target"] = np.full_like(arrays["target"], -100)
    for reduction in REDUCTIONS if dtype == "float64" else ["mean"]:
        result = run_parity(
            our_fn, torch_fn, arrays, dtype=dtype, options={"reduction": reduction, **options}
        )
        assert np.all(np.isnan(result.value)) == (reduction == "mean")
        np.testing.assert_array_equal(result.grads["input"], 0.0)


def kl_data(log_target: bool) -> dict:
    """Distributions over the last axis of SHAPE; with zeros in the (non-log) target."""
    rng = np.random.default_rng(5)
    log_q = np.log(rng.dirichlet(np.ones(SHAPE[-1]), size=SHAPE[:-1]))
    p = rng.dirichlet(np.ones(SHAPE[-1]), size=SHAPE[:-1])
    p[0, 0, :3] = 0.0  # 0 * log 0 = 0 for the value, and torch's nan target slope
    p[1, 2] = np.eye(SHAPE[-1])[2]
    if log_target:
        p = np.log(rng.dirichlet(np.ones(SHAPE[-1]), size=SHAPE[:-1]))
    return {"input": log_q, "target": p}


@pytest.mark.parametrize("dtype, reduction", precisions(KL_REDUCTIONS))
@pytest.mark.parametrize("log_target", [False, True])
def test_kl_div(log_target, reduction, dtype):
    result = run_parity(
        ours.kl_div,
        F.kl_div,
        kl_data(log_target),
        diff=("input", "target"),
        dtype=dtype,
        options={"reduction": reduction, "log_target": log_target},
    )
    assert set(result.errors) == {"value", "grad:input", "grad:target"}


def test_kl_div_zero_target_conventions():
    """0 * (log 0 - x) = 0 for the value; torch's target slope there is nan, ours too."""
    data = kl_data(log_target=False)
    zeros = data["target"] == 0
    result = run_parity(
        ours.kl_div, F.kl_div, data, diff=("input", "target"), options={"reduction": "none"}
    )
    np.testing.assert_array_equal(result.value[zeros], 0.0)
    np.testing.assert_array_equal(result.grads["input"][zeros], 0.0)
    assert np.all(np.isnan(result.grads["target"][zeros]))
    assert np.all(np.isfinite(result.grads["target"][~zeros]))
    assert np.all(np.isfinite(result.value))


@pytest.mark.parametrize("shape", [(), SHAPE])
@pytest.mark.parametrize("log_target", [False, True])
def test_kl_div_batchmean_shapes(shape, log_target):
    rng = np.random.default_rng(6)
    arrays = {"input": -rng.uniform(0.1, 3.0, size=shape), "target": rng.uniform(size=shape)}
    for reduction in KL_REDUCTIONS:
        options = {"reduction": reduction, "log_target": log_target}
        run_parity(ours.kl_div, F.kl_div, arrays, diff=("input", "target"), options=options)


# ---------------------------------------------------- weights torch does not differentiate

WEIGHT_GRADIENT_CASES = {
    "bce_weight": (ours.binary_cross_entropy, F.binary_cross_entropy, "weight", {}),
    "bce_logits_weight": (
        ours.binary_cross_entropy_with_logits,
        F.binary_cross_entropy_with_logits,
        "weight",
        {},
    ),
    "bce_logits_pos_weight": (
        ours.binary_cross_entropy_with_logits,
        F.binary_cross_entropy_with_logits,
        "pos_weight",
        {},
    ),
    "cross_entropy_weight": (
        ours.cross_entropy,
        F.cross_entropy,
        "weight",
        {"label_smoothing": 0.2},
    ),
    "cross_entropy_probability_weight": (ours.cross_entropy, F.cross_entropy, "weight", {}),
    "nll_weight": (ours.nll_loss, F.nll_loss, "weight", {}),
}


@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize("case", WEIGHT_GRADIENT_CASES)
def test_weight_gradients_match_torch_finite_differences(case, reduction):
    our_fn, torch_fn, name, options = WEIGHT_GRADIENT_CASES[case]
    if case.startswith("bce_logits"):
        arrays = logits_data({"weight": "last_axis", "pos_weight": True})
    elif case.startswith("bce"):
        arrays = {**probability_data(), "weight": weight_of("last_axis")}
    else:
        arrays, _ = class_data(
            {"weight": True, "ignore": True}, probabilities="probability" in case
        )
    if case.startswith("nll"):
        arrays["input"] = np.asarray(torch.log_softmax(torch.tensor(arrays["input"]), 1))
    options = {"reduction": reduction, **options}
    check_weight_gradient(our_fn, torch_fn, arrays, name, options)


# ------------------------------------------------------------------------ jit


JIT_CALLS = {  # function, data, options passed traced
    "mse_loss": (ours.mse_loss, "regression", {}),
    "l1_loss": (ours.l1_loss, "regression", {}),
    "smooth_l1_loss": (ours.smooth_l1_loss, "regression", {"beta": 0.5}),
    "huber_loss": (ours.huber_loss, "regression", {"delta": 0.5}),
    "binary_cross_entropy": (ours.binary_cross_entropy, "probability", {"weight": 1.5}),
    "binary_cross_entropy_with_logits": (
        ours.binary_cross_entropy_with_logits,
        "regression",
        {"weight": 1.5, "pos_weight": 2.0},
    ),
    "cross_entropy": (ours.cross_entropy, "class", {"label_smoothing": 0.1, "ignore_index": 1}),
    "nll_loss": (ours.nll_loss, "class", {"ignore_index": 1}),
    "kl_div": (ours.kl_div, "kl", {}),
}


@pytest.mark.parametrize("reduction", ["mean", "none"])
@pytest.mark.parametrize("name", JIT_CALLS)
def test_every_loss_and_its_gradient_trace_under_jit(name, reduction):
    """jit with the reduction static and numeric options traced (lowered, not compiled)."""
    fn, data, options = JIT_CALLS[name]
    arrays = {
        "regression": regression_data,
        "probability": probability_data,
        "class": lambda: class_data({})[0],
        "kl": lambda: kl_data(False),
    }[data]()
    x, y = jnp.asarray(arrays["input"]), jnp.asarray(arrays["target"])
    traced = {k: jnp.asarray(v) for k, v in options.items()}

    def total(x, y, options):
        return jnp.sum(fn(x, y, reduction=reduction, **options))

    jax.jit(total).lower(x, y, traced)
    jax.jit(jax.grad(total)).lower(x, y, traced)


def test_jit_matches_torch_with_traced_hyperparameters():
    """Compiled, with a traced beta of 0 (the L1 fallback) and traced label smoothing."""
    with precision("float32"):
        _check_jit_against_torch()


def _check_jit_against_torch() -> None:
    data = regression_data()
    x, y = jnp.asarray(data["input"]), jnp.asarray(data["target"])
    smooth_l1 = jax.jit(jax.value_and_grad(functools.partial(ours.smooth_l1_loss, reduction="sum")))
    for beta in (0.0, 0.5):
        value, grad = smooth_l1(x, y, beta=jnp.asarray(beta))
        t_x = torch.tensor(data["input"], dtype=torch.float32, requires_grad=True)
        t_y = torch.tensor(data["target"], dtype=torch.float32)
        reference = F.smooth_l1_loss(t_x, t_y, reduction="sum", beta=beta)
        reference.backward()
        np.testing.assert_allclose(value, reference.item(), rtol=1e-6)
        np.testing.assert_allclose(grad, t_x.grad.numpy(), rtol=1e-6, atol=1e-7)

    arrays, _ = class_data({"weight": True, "ignore": True})
    logits = jnp.asarray(arrays["input"]).at[:, 3].set(-jnp.inf)  # a masked-out class
    target = jnp.asarray(np.where(arrays["target"] == 3, 0, arrays["target"]))
    weight = jnp.asarray(arrays["weight"])
    cross_entropy = jax.jit(jax.value_and_grad(ours.cross_entropy))
    for smoothing in (0.0, 0.2):
        value, grad = cross_entropy(logits, target, weight, label_smoothing=jnp.asarray(smoothing))
        t_logits = torch.tensor(np.asarray(logits), requires_grad=True)
        reference = F.cross_entropy(
            t_logits,
            torch.tensor(np.asarray(target), dtype=torch.int64),
            torch.tensor(np.asarray(weight)),
            label_smoothing=smoothing,
        )
        reference.backward()
        # A traced smoothing of 0 stays finite, as torch (which skips the smoothing term).
        assert np.isfinite(value) == (smoothing == 0)
        np.testing.assert_allclose(value, reference.item(), rtol=1e-6)
        np.testing.assert_allclose(grad, t_logits.grad.numpy(), rtol=1e-5, atol=1e-7)


# ----------------------------------------------------------------- bad arguments

X = np.ones((2, 3))
LABELS = np.array([0, 2])

ALL_LOSSES = {
    "mse_loss": (ours.mse_loss, X, X),
    "l1_loss": (ours.l1_loss, X, X),
    "smooth_l1_loss": (ours.smooth_l1_loss, X, X),
    "huber_loss": (ours.huber_loss, X, X),
    "binary_cross_entropy": (ours.binary_cross_entropy, X / 2, X),
    "binary_cross_entropy_with_logits": (ours.binary_cross_entropy_with_logits, X, X),
    "cross_entropy": (ours.cross_entropy, X, LABELS),
    "nll_loss": (ours.nll_loss, X, LABELS),
    "kl_div": (ours.kl_div, X, X),
}


@pytest.mark.parametrize("reduction", ["avg", "batchmean", "MEAN", None])
@pytest.mark.parametrize("name", ALL_LOSSES)
def test_bad_reduction_raises(name, reduction):
    fn, x, y = ALL_LOSSES[name]
    if name == "kl_div" and reduction == "batchmean":
        jax.eval_shape(functools.partial(fn, reduction=reduction), x, y)  # kl_div only
        return
    jax.eval_shape(functools.partial(fn, reduction="sum"), x, y)  # a valid reduction works
    with pytest.raises(ValueError, match="is not a valid value for reduction"):
        jax.eval_shape(functools.partial(fn, reduction=reduction), x, y)


@pytest.mark.parametrize("name", [k for k in ALL_LOSSES if k not in ("cross_entropy", "nll_loss")])
def test_shape_mismatch_raises(name):
    fn = ALL_LOSSES[name][0]
    with pytest.raises(ValueError, match=r"target shape \(2, 1\) must equal input shape \(2, 3\)"):
        fn(X / 2, X[:, :1] / 2)


BAD_ARGUMENTS = {
    "negative beta": (lambda: ours.smooth_l1_loss(X, X, beta=-1.0), "Invalid beta value"),
    "zero delta": (lambda: ours.huber_loss(X, X, delta=0.0), "Invalid delta value"),
    "negative delta": (lambda: ours.huber_loss(X, X, delta=-1.0), "Invalid delta value"),
    "label_smoothing > 1": (
        lambda: ours.cross_entropy(X, LABELS, label_smoothing=1.5),
        "Invalid label_smoothing value",
    ),
    "label_smoothing < 0": (
        lambda: ours.cross_entropy(X, LABELS, label_smoothing=-0.1),
        "Invalid label_smoothing value",
    ),
    "class weight shape": (
        lambda: ours.cross_entropy(X, LABELS, weight=np.ones(2)),
        r"weight shape \(2,\) must be \(3,\)",
    ),
    "nll class weight shape": (
        lambda: ours.nll_loss(X, LABELS, weight=np.ones((1, 3))),
        r"weight shape \(1, 3\) must be \(3,\)",
    ),
    "class target shape": (
        lambda: ours.cross_entropy(X, np.array([0, 1, 2])),
        r"target shape \(3,\) must be \(2,\)",
    ),
    "nd class target shape": (
        lambda: ours.cross_entropy(np.ones((2, 3, 4)), np.zeros((2, 3), int)),
        r"target shape \(2, 3\) must be \(2, 4\)",
    ),
    "unbatched class target shape": (
        lambda: ours.cross_entropy(np.ones(3), np.array([1])),
        r"target shape \(1,\) must be \(\)",
    ),
    "probability target shape": (
        lambda: ours.cross_entropy(X, np.ones((2,))),
        "probability target shape",
    ),
    "probability target with ignore_index >= 0": (
        lambda: ours.cross_entropy(X, X / 3, ignore_index=0),
        "ignore_index=0 is not supported for probability targets",
    ),
    "float class indices for nll_loss": (
        lambda: ours.nll_loss(X, np.array([0.0, 1.0])),
        "integer dtype",
    ),
    "0-d input": (lambda: ours.cross_entropy(np.float64(1.0), np.int64(0)), "class axis"),
    "0-d input, probability target": (
        lambda: ours.cross_entropy(np.float64(1.0), np.float64(1.0)),
        "class axis",
    ),
    "0-d input to nll_loss": (lambda: ours.nll_loss(np.float64(1.0), np.int64(0)), "class axis"),
    "bce weight shape": (
        lambda: ours.binary_cross_entropy(X / 2, X, weight=np.ones(2)),
        r"weight shape \(2,\) must broadcast",
    ),
    "bce weight too big": (
        lambda: ours.binary_cross_entropy(X / 2, X, weight=np.ones((3, 2, 3))),
        r"weight shape \(3, 2, 3\) must broadcast",
    ),
    "pos_weight shape": (
        lambda: ours.binary_cross_entropy_with_logits(X, X, pos_weight=np.ones(2)),
        r"pos_weight shape \(2,\) must broadcast",
    ),
}


@pytest.mark.parametrize("case", BAD_ARGUMENTS)
def test_bad_arguments_raise(case):
    call, message = BAD_ARGUMENTS[case]
    with pytest.raises(ValueError, match=message):
        jax.eval_shape(call)  # raised while tracing: nothing to compile


@pytest.mark.parametrize("name", [k for k in ALL_LOSSES if k not in ("cross_entropy", "nll_loss")])
def test_integer_targets_take_the_input_dtype(name):
    """0/1 integer labels do not promote a float32 loss to float64 (x64 on)."""
    fn = ALL_LOSSES[name][0]
    with precision("float64"):
        x = jax.ShapeDtypeStruct((2, 3), jnp.float32)
        for target_dtype in (jnp.int32, jnp.bool_):
            y = jax.ShapeDtypeStruct((2, 3), target_dtype)
            assert jax.eval_shape(fn, x, y).dtype == jnp.float32
        labels = jax.ShapeDtypeStruct((2, 3), jnp.int32)
        assert jax.eval_shape(fn, labels, labels).dtype == jnp.float64  # the default float


def test_out_of_range_label_gives_nan():
    """torch raises an IndexError; a check of traced labels cannot, so the loss is nan."""
    arrays, _ = class_data({})
    arrays["target"][:2] = [NUM_CLASSES, -1]
    with precision("float32"):
        logits = jnp.asarray(arrays["input"], jnp.float32)
        loss = ours.cross_entropy(logits, jnp.asarray(arrays["target"]), reduction="none")
    assert np.all(np.isnan(loss[:2])) and np.all(np.isfinite(loss[2:]))
    for label in (NUM_CLASSES, -1):
        with pytest.raises(IndexError):
            F.cross_entropy(torch.zeros(2, NUM_CLASSES), torch.tensor([0, label]))
