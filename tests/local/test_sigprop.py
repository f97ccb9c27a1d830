"""SigProp: spec 3.6 case, and parity with a torch SigProp written from spec 3.2."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import torch
from flax import nnx

from jaxopt_adv.models import MLP
from jaxopt_adv.sigprop import (
    SigPropNet,
    create_sigprop_optimizer,
    sigprop_labels,
    sigprop_local_loss,
    sigprop_optimizer,
)
from tests.harness import precision
from tests.reference.torch_sigprop import TorchSigProp, TorchSigPropNet, local_loss

H0 = [[1.0, 0.5], [0.2, -1.0], [0.8, 0.3]]
W = [[0.5, -0.2], [0.1, 0.4]]  # torch layout [out, in]
LABELS = [0, 1, 0]
IN, HIDDEN, CLASSES, BATCH = 6, [8, 7, 6], 3, 8


def value(v):
    return np.asarray(v[...] if isinstance(v, nnx.Variable) else v)


def sanity_loss(w, kind, detach_target=False):
    t0 = jax.nn.one_hot(jnp.array(LABELS), 2, dtype=w.dtype)
    h1, t1 = jnp.array(H0, w.dtype) @ w.T, t0 @ w.T
    if detach_target:
        t1 = jax.lax.stop_gradient(t1)
    return sigprop_local_loss(h1, t1, t0, kind=kind)


# --------------------------------------------------------------------- spec 3.6


def test_spec_sanity_case():
    with precision("float64"):
        w = jnp.array(W)
        loss, grad = jax.value_and_grad(sanity_loss)(w, "v9")
        np.testing.assert_allclose(loss, 1.82989436, rtol=0, atol=1e-8)
        expected = [[-0.28381406, -0.20948662], [-0.09984734, 0.31126192]]
        np.testing.assert_allclose(grad, expected, rtol=0, atol=1e-8)
        detached = jax.grad(sanity_loss)(w, "v9", detach_target=True)
        wrong = [[-0.21237855, -0.28092212], [0.09101938, 0.12039520]]
        np.testing.assert_allclose(detached, wrong, rtol=0, atol=1e-8)
        np.testing.assert_allclose(sanity_loss(w, "v14"), 1.13591820, rtol=0, atol=1e-8)


def test_topk_one_is_v14_and_topk_all_is_uniform_mask():
    with precision("float64"):
        rng = np.random.default_rng(0)
        h1, t1, t0 = (jnp.asarray(rng.normal(size=(5, 3))) for _ in range(3))
        v14 = sigprop_local_loss(h1, t1, t0, kind="v14")
        np.testing.assert_allclose(sigprop_local_loss(h1, t1, t0, kind="topk", k=1), v14)
        every = -jnp.mean(jnp.sum(jax.nn.log_softmax(h1 @ t1.T), axis=-1))
        np.testing.assert_allclose(sigprop_local_loss(h1, t1, t0, kind="topk", k=5), every)


@pytest.mark.parametrize(("kind", "k"), [("v14", 1), ("v9", 1), ("topk", 2)])
def test_local_loss_matches_torch(kind, k):
    with precision("float64"):
        rng = np.random.default_rng(1)
        arrays = [rng.normal(size=(6, 4)) for _ in range(3)]
        ours, grads = jax.value_and_grad(
            lambda h, t: sigprop_local_loss(h, t, jnp.asarray(arrays[2]), kind=kind, k=k),
            argnums=(0, 1),
        )(jnp.asarray(arrays[0]), jnp.asarray(arrays[1]))
        h, t = (torch.tensor(a, requires_grad=True) for a in arrays[:2])
        theirs = local_loss(h, t, torch.tensor(arrays[2]), kind, k)
        theirs.backward()
        np.testing.assert_allclose(ours, theirs.item(), rtol=1e-12)
        np.testing.assert_allclose(grads[0], h.grad.numpy(), rtol=1e-10, atol=1e-14)
        np.testing.assert_allclose(grads[1], t.grad.numpy(), rtol=1e-10, atol=1e-14)


# --------------------------------------------------------------------- model parity


def linear_pairs(model, net):
    pairs = [(model.signal_in, net.signal_in), (model.signal_ctx, net.signal_ctx)]
    pairs += list(zip(model.blocks, net.blocks, strict=True))
    return [*pairs, (model.head, net.head)]


def numpy_copy(tensor):
    """A copy: ``jnp.asarray`` of a contiguous array may alias it, and torch steps in place."""
    return tensor.detach().numpy().copy()


def copy_from_torch(model, net, dtype):
    for ours, theirs in linear_pairs(model, net):
        ours.kernel[...] = jnp.asarray(numpy_copy(theirs.weight).T, dtype)
        if theirs.bias is not None:
            ours.bias[...] = jnp.asarray(numpy_copy(theirs.bias), dtype)
    model.signal_norm.scale[...] = jnp.asarray(numpy_copy(net.signal_norm.weight), dtype)
    model.signal_norm.bias[...] = jnp.asarray(numpy_copy(net.signal_norm.bias), dtype)


def max_rel_error(model, net):
    errors = []
    for ours, theirs in linear_pairs(model, net):
        errors.append(rel(value(ours.kernel), theirs.weight.detach().numpy().T))
        if theirs.bias is not None:
            errors.append(rel(value(ours.bias), theirs.bias.detach().numpy()))
    errors.append(rel(value(model.signal_norm.scale), net.signal_norm.weight.detach().numpy()))
    return max(errors)


def rel(a, b):
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-300))


def make_pair(dtype, kind, k, seed=0):
    torch.manual_seed(seed)
    net = TorchSigPropNet(IN, HIDDEN, CLASSES).to(dtype)
    jdtype = jnp.float64 if dtype == torch.float64 else jnp.float32
    model = SigPropNet(IN, HIDDEN, CLASSES, kind=kind, k=k, param_dtype=jdtype, rngs=nnx.Rngs(0))
    copy_from_torch(model, net, jdtype)
    return model, net, jdtype


def batches(n, dtype, seed=0):
    rng = np.random.default_rng(seed)
    for _ in range(n):
        x = rng.normal(size=(BATCH, IN))
        y = rng.integers(0, CLASSES, size=BATCH)
        yield x.astype(dtype), y


@pytest.mark.parametrize(("kind", "k"), [("v14", 1), ("v9", 1), ("topk", 2)])
def test_gradients_match_torch_per_block(kind, k):
    with precision("float64"):
        model, net, _ = make_pair(torch.float64, kind, k)
        opt = TorchSigProp(net, 1e-3, 1e-3, 0.9, kind=kind, k=k)
        x, y = next(batches(1, np.float64))
        opt.step(torch.tensor(x), torch.tensor(y), step=False)
        assert all(p.grad.abs().max() > 0 for p in net.parameters())  # every path is exercised
        grads = nnx.grad(lambda m: m.loss(jnp.asarray(x), jnp.asarray(y)))(model)
        errors = []
        for name, theirs in [
            ("signal_in", net.signal_in),
            ("signal_ctx", net.signal_ctx),
            ("head", net.head),
        ]:
            errors.append(rel(value(grads[name]["kernel"]), theirs.weight.grad.numpy().T))
        for i, block in enumerate(net.blocks):
            errors.append(rel(value(grads["blocks"][i]["kernel"]), block.weight.grad.numpy().T))
            errors.append(rel(value(grads["blocks"][i]["bias"]), block.bias.grad.numpy()))
        ln = net.signal_norm
        errors.append(rel(value(grads["signal_norm"]["scale"]), ln.weight.grad.numpy()))
        errors.append(rel(value(grads["signal_norm"]["bias"]), ln.bias.grad.numpy()))
        assert max(errors) < 1e-10, errors


def train_both(dtype, kind, k, base, steps=10):
    model, net, jdtype = make_pair(dtype, kind, k)
    lr, signal_lr, signal_momentum = 1e-2, 2e-2, 0.8
    opt = TorchSigProp(net, lr, signal_lr, signal_momentum, kind=kind, k=k, base=base)
    tx = sigprop_optimizer(lr, signal_lr, signal_momentum, base=base)
    optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)

    @nnx.jit
    def step(model, optimizer, x, y):
        grads = nnx.grad(lambda m: m.loss(x, y))(model)
        optimizer.update(model, grads)

    npdtype = np.float64 if dtype == torch.float64 else np.float32
    for x, y in batches(steps, npdtype):
        opt.step(torch.tensor(x), torch.tensor(y))
        step(model, optimizer, jnp.asarray(x, jdtype), jnp.asarray(y))
    return max_rel_error(model, net)


@pytest.mark.parametrize(("kind", "base"), [("v14", "adam"), ("v9", "adam"), ("v14", "sgd")])
def test_ten_steps_match_torch_float64(kind, base):
    with precision("float64"):
        error = train_both(torch.float64, kind, 1, base)
        assert error < 1e-8, error


def test_ten_steps_match_torch_float32():
    """SGD base: with Adam, float32 rounding of near-zero gradients (dead ReLU units) is
    amplified to +-lr by g / (|g| + eps), so Adam parity is checked in float64 only."""
    with precision("float32"):
        error = train_both(torch.float32, "v14", 1, "sgd")
        assert error < 1e-5, error


# --------------------------------------------------------------------- behaviour


def test_inference_runs_the_input_stream_only():
    model = SigPropNet(IN, HIDDEN, CLASSES, rngs=nnx.Rngs(0))
    x, y = next(batches(1, np.float32))
    logits, local = model(jnp.asarray(x), jnp.asarray(y))
    inference, none = model(jnp.asarray(x))
    assert none is None and local.shape == (len(HIDDEN),)
    np.testing.assert_allclose(inference, logits, rtol=1e-6)


def test_labels_split_signal_generator_from_net():
    model = SigPropNet(IN, HIDDEN, CLASSES, rngs=nnx.Rngs(0))
    labels = sigprop_labels(nnx.state(model, nnx.Param))
    flat = {jax.tree_util.keystr(p): v for p, v in jax.tree_util.tree_leaves_with_path(labels)}
    assert {v for p, v in flat.items() if "signal" in p} == {"signal"}
    assert {v for p, v in flat.items() if "signal" not in p} == {"net"}


def test_local_loss_weight_scales_block_gradients_only():
    x, y = (jnp.asarray(a) for a in next(batches(1, np.float32)))
    grads = []
    for weight in (1.0, 0.1):
        model = SigPropNet(IN, HIDDEN, CLASSES, local_loss_weight=weight, rngs=nnx.Rngs(0))
        grads.append(nnx.grad(lambda m: m.loss(x, y))(model))
    for name in ("head",):
        np.testing.assert_allclose(value(grads[1][name]["kernel"]), value(grads[0][name]["kernel"]))
    np.testing.assert_allclose(
        value(grads[1]["blocks"][0]["kernel"]),
        0.1 * value(grads[0]["blocks"][0]["kernel"]),
        rtol=1e-5,
        atol=1e-9,
    )


def test_non_finite_gradient_propagates_and_apply_if_finite_skips():
    params = {"signal_in": {"kernel": jnp.ones(3)}, "head": {"kernel": jnp.ones(3)}}
    grads = {
        "signal_in": {"kernel": jnp.ones(3)},
        "head": {"kernel": jnp.array([1.0, jnp.nan, 1.0])},
    }
    tx = sigprop_optimizer(1e-3, 1e-3, 0.9)
    updates, _ = tx.update(grads, tx.init(params), params)
    assert np.all(np.isfinite(updates["signal_in"]["kernel"]))  # partitions are independent
    assert np.isnan(updates["head"]["kernel"][1])
    guarded = optax.apply_if_finite(tx, max_consecutive_errors=5)
    updates, state = guarded.update(grads, guarded.init(params), params)
    assert int(state.notfinite_count) == 1
    np.testing.assert_array_equal(updates["head"]["kernel"], 0.0)


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: sigprop_optimizer(-1.0, 1e-3, 0.9), "learning rate"),
        (lambda: sigprop_optimizer(1e-3, -1e-3, 0.9), "learning rate"),
        (lambda: sigprop_optimizer(1e-3, 1e-3, 1.0), "signal_momentum"),
        (lambda: sigprop_optimizer(1e-3, 1e-3, 0.9, base="rmsprop"), "base"),
        (
            lambda: sigprop_local_loss(
                jnp.ones((2, 2)), jnp.ones((2, 2)), jnp.ones((2, 2)), kind="v10"
            ),
            "kind",
        ),
        (
            lambda: sigprop_local_loss(
                jnp.ones((2, 2)), jnp.ones((2, 2)), jnp.ones((2, 2)), kind="topk", k=0
            ),
            "k",
        ),
        (lambda: SigPropNet(4, [], 3, rngs=nnx.Rngs(0)), "hidden"),
        (
            lambda: SigPropNet(4, [3], 3, local_loss_weight=-1.0, rngs=nnx.Rngs(0)),
            "local_loss_weight",
        ),
        (lambda: create_sigprop_optimizer(MLP(4, (3,), 2, rngs=nnx.Rngs(0))), "SigPropNet"),
    ],
)
def test_bad_arguments_raise(call, match):
    with pytest.raises(ValueError, match=match):
        call()
