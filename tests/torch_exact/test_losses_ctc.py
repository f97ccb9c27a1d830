"""torch.nn.functional.ctc_loss parity for jaxopt_adv.torch.ctc (values and gradients)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from jaxopt_adv.torch.ctc import ctc_loss
from tests.harness import precision
from tests.helpers import functional_parity
from tests.helpers.functional_parity import PRECISIONS, relative_error, run_parity

T, N, C = 12, 4, 5


def ctc_data(blank: int = 0, concatenated: bool = False, seed: int = 0) -> dict:
    """Random log-softmax frames; targets with repeats, an empty one, varied lengths."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=(T, N, C))
    log_probs = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    labels = [c for c in range(C) if c != blank]
    targets = rng.choice(labels, size=(N, 5))
    targets[0, 1] = targets[0, 0]  # a repeated label needs a blank between
    target_lengths = np.array([5, 3, 0, 4])
    input_lengths = np.array([T, 10, 7, T - 1])
    if concatenated:
        targets = np.concatenate([targets[n, :k] for n, k in enumerate(target_lengths)])
    return {
        "log_probs": log_probs,
        "targets": targets,
        "input_lengths": input_lengths,
        "target_lengths": target_lengths,
    }


@pytest.mark.parametrize("dtype, reduction", PRECISIONS)
@pytest.mark.parametrize("blank, concatenated", [(0, False), (C - 1, True), (2, False)])
def test_ctc_loss(blank, concatenated, reduction, dtype, monkeypatch):
    # torch's float32 kernel sums its alpha * beta products in another order: 3e-6 seen.
    monkeypatch.setitem(functional_parity.TOLERANCE, "float32", 1e-5)
    run_parity(
        ctc_loss,
        F.ctc_loss,
        ctc_data(blank, concatenated),
        diff=("log_probs",),
        dtype=dtype,
        options={"blank": blank, "reduction": reduction},
    )


def test_ctc_loss_unbatched():
    data = ctc_data()
    data = {
        "log_probs": data["log_probs"][:, 1],
        "targets": data["targets"][1, :3],
        "input_lengths": np.array(10),
        "target_lengths": np.array(3),
    }
    for reduction in ("mean", "none"):
        run_parity(
            ctc_loss, F.ctc_loss, data, diff=("log_probs",), options={"reduction": reduction}
        )


def impossible_data() -> dict:
    """Sample 1 needs 6 frames (3 labels, two repeats) but has 4: infinite loss."""
    data = ctc_data()
    data["targets"][1, :3] = [1, 1, 1]
    data["input_lengths"][1] = 4
    return data


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_ctc_zero_infinity(reduction):
    result = run_parity(
        ctc_loss,
        F.ctc_loss,
        impossible_data(),
        diff=("log_probs",),
        options={"reduction": reduction, "zero_infinity": True},
    )
    np.testing.assert_array_equal(result.grads["log_probs"][:, 1], 0.0)


def test_ctc_impossible_alignment_is_inf():
    data = impossible_data()
    reference = F.ctc_loss(*(torch.tensor(v) for v in data.values()), reduction="none").numpy()
    with precision("float64"):
        ours = ctc_loss(*(jnp.asarray(v) for v in data.values()), reduction="none")
    assert np.isinf(reference[1]) and np.isinf(ours[1])
    assert relative_error(ours, reference) <= 1e-12


def test_ctc_gradient_through_log_softmax_is_the_true_gradient():
    """torch's log_probs gradient chained through log_softmax equals autodiff of the loss
    of the logits: compared with finite differences."""
    data = ctc_data()
    with precision("float64"):
        logits = jnp.asarray(data["log_probs"])
        rest = [jnp.asarray(data[k]) for k in ("targets", "input_lengths", "target_lengths")]

        def loss(z):
            return ctc_loss(jax.nn.log_softmax(z, axis=-1), *rest, reduction="sum")

        grad = jax.grad(loss)(logits)
        h = 1e-6
        for index in [(0, 0, 1), (5, 1, 3), (9, 3, 0)]:
            e = jnp.zeros_like(logits).at[index].set(h)
            numeric = (loss(logits + e) - loss(logits - e)) / (2 * h)
            np.testing.assert_allclose(grad[index], numeric, rtol=1e-6, atol=1e-9)


def test_ctc_bad_arguments_raise():
    data = {k: jnp.asarray(v) for k, v in ctc_data().items()}
    with pytest.raises(ValueError, match="blank"):
        ctc_loss(**data, blank=C)
    with pytest.raises(ValueError, match="reduction"):
        ctc_loss(**data, reduction="avg")
    with pytest.raises(ValueError, match="input_lengths"):
        ctc_loss(**{**data, "input_lengths": data["input_lengths"] + T})
    with pytest.raises(RuntimeError, match="blank"):
        F.ctc_loss(*(torch.tensor(np.asarray(v)) for v in data.values()), blank=C)


def test_ctc_jit():
    data = {k: jnp.asarray(v) for k, v in ctc_data().items()}
    fn = jax.jit(jax.value_and_grad(ctc_loss))
    value, grad = fn(*data.values())
    np.testing.assert_allclose(value, ctc_loss(**data), rtol=1e-6)
    assert np.all(np.isfinite(grad))


def test_ctc_checks_and_runs_with_constant_lengths_inside_jit():
    """Lengths closed over by a jitted function are concrete: checked, not traced."""
    data = {k: jnp.asarray(v) for k, v in ctc_data().items()}
    rest = {k: v for k, v in data.items() if k != "log_probs"}
    value = jax.jit(lambda lp: ctc_loss(lp, **rest))(data["log_probs"])
    np.testing.assert_allclose(value, ctc_loss(**data), rtol=1e-6)
    too_long = {**rest, "input_lengths": rest["input_lengths"] + T}
    with pytest.raises(ValueError, match="input_lengths"):
        jax.jit(lambda lp: ctc_loss(lp, **too_long))(data["log_probs"])


def test_ctc_concatenated_targets_with_traced_lengths():
    """Under jit the padded width is the concatenation's length (no lengths to read)."""
    with precision("float64"):
        data = {k: jnp.asarray(v) for k, v in ctc_data(concatenated=True).items()}
        traced = jax.jit(ctc_loss, static_argnames="reduction")(**data, reduction="none")
        np.testing.assert_allclose(traced, ctc_loss(**data, reduction="none"), rtol=1e-12)
