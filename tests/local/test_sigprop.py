"""SigProp: spec 3.6 case, and parity with a torch SigProp written from spec 3.2, 3.3, 3.7.

Every model-level JAX computation is jitted (one compilation per model configuration,
with XLA's optimisations mostly off: ``conftest.py``): eager NNX dispatch op by op costs
far more than the compilation.
"""

from __future__ import annotations

from collections.abc import Mapping

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import torch
from flax import nnx

from jaxopt_adv.local import (
    SigPropNet,
    create_sigprop_optimizer,
    sigprop_labels,
    sigprop_local_loss,
    sigprop_optimizer,
)
from jaxopt_adv.local.sigprop import BASES
from jaxopt_adv.models import MLP
from jaxopt_adv.torch import adam
from tests.harness import precision
from tests.reference.torch_sigprop import TorchSigProp, TorchSigPropNet, local_loss

H0 = [[1.0, 0.5], [0.2, -1.0], [0.8, 0.3]]
W = [[0.5, -0.2], [0.1, 0.4]]  # torch layout [out, in]
LABELS = [0, 1, 0]
# spec 3.6: Y = H0 W^T (W T0^T)^T
Y_SPEC = [[0.23, 0.04, 0.23], [0.112, -0.212, 0.112], [0.19, 0.012, 0.19]]
IN, HIDDEN, CLASSES, BATCH = 6, [8, 7, 6], 3, 8
CONV_IN, CONV_HIDDEN, IMAGE = 2, [4, 3], (3, 4)  # non-square: catches an H/W mix-up


def value(v):
    return np.asarray(v[...] if isinstance(v, nnx.Variable) else v)


def sanity_loss(w, kind, detach_target=False, targets="signal"):
    t0 = jax.nn.one_hot(jnp.array(LABELS), 2, dtype=w.dtype)
    h1, t1 = jnp.array(H0, w.dtype) @ w.T, t0 @ w.T
    if detach_target:
        t1 = jax.lax.stop_gradient(t1)
    if targets == "labels":
        return sigprop_local_loss(h1, t1, kind=kind, targets="labels", labels=jnp.array(LABELS))
    return sigprop_local_loss(h1, t1, t0, kind=kind)


STATIC = ("kind", "detach_target", "targets")
sanity_value_and_grad = jax.jit(jax.value_and_grad(sanity_loss), static_argnames=STATIC)
sanity_grad = jax.jit(jax.grad(sanity_loss), static_argnames=STATIC)
sanity_value = jax.jit(sanity_loss, static_argnames=STATIC)


local_loss_value_and_grad = jax.jit(
    jax.value_and_grad(sigprop_local_loss, argnums=(0, 1)), static_argnames=("kind", "k", "targets")
)


def log_softmax_rows(y):
    y = np.asarray(y, np.float64)
    return y - np.log(np.sum(np.exp(y), axis=1, keepdims=True))


# --------------------------------------------------------------------- spec 3.6, 3.7


@pytest.mark.parametrize("targets", ["signal", "labels"])
def test_spec_sanity_case(targets):
    """spec 3.6; labels [0, 1, 0] with T0 = onehot: the label mask is the YY row-max mask."""
    with precision("float64"):
        w = jnp.array(W)
        loss, grad = sanity_value_and_grad(w, kind="v9", targets=targets)
        np.testing.assert_allclose(loss, 1.82989436, rtol=0, atol=1e-8)
        expected = [[-0.28381406, -0.20948662], [-0.09984734, 0.31126192]]
        np.testing.assert_allclose(grad, expected, rtol=0, atol=1e-8)
        detached = sanity_grad(w, kind="v9", detach_target=True, targets=targets)
        wrong = [[-0.21237855, -0.28092212], [0.09101938, 0.12039520]]
        np.testing.assert_allclose(detached, wrong, rtol=0, atol=1e-8)
        v14 = sanity_value(w, kind="v14", targets=targets)
        np.testing.assert_allclose(v14, 1.13591820, rtol=0, atol=1e-8)


def test_label_targets_differ_from_signal_targets_when_norms_differ():
    """spec 3.7: the third target vector is twice as long, so row 0's max of YY picks only
    sample 2 (signal targets), while the label mask keeps samples 0 and 2 of class 0."""
    with precision("float64"):
        y = np.array(Y_SPEC)
        h1 = jnp.array(H0) @ jnp.array(W).T
        t1 = jnp.array([[0.5, 0.1], [-0.2, 0.4], [0.5, 0.1]])  # H1 T1^T = Y_SPEC
        np.testing.assert_allclose(h1 @ t1.T, y, atol=1e-15)
        t0 = jnp.array([[1.0, 0.0], [0.0, 1.0], [2.0, 0.0]])  # YY = [[1,0,2],[0,1,0],[2,0,4]]
        logp = log_softmax_rows(y)
        by_hand_signal = -np.mean([logp[0, 2], logp[1, 1], logp[2, 2]])  # M: [2], [1], [2]
        label_mask = np.array([[1, 0, 1], [0, 1, 0], [1, 0, 1]])
        by_hand_labels = -np.mean(np.sum(label_mask * logp, axis=1))
        np.testing.assert_allclose(by_hand_labels, 1.82989436, atol=1e-8)  # spec 3.6 value
        labels = jnp.array(LABELS)
        for kind in ("v9", "v14"):
            signal = sigprop_local_loss(h1, t1, t0, kind=kind)
            np.testing.assert_allclose(signal, by_hand_signal, rtol=1e-13)
        v9 = sigprop_local_loss(h1, t1, kind="v9", targets="labels", labels=labels)
        np.testing.assert_allclose(v9, by_hand_labels, rtol=1e-13)
        v14 = sigprop_local_loss(h1, t1, kind="v14", targets="labels", labels=labels)
        np.testing.assert_allclose(v14, -np.mean([logp[0, 0], logp[1, 1], logp[2, 0]]), rtol=1e-13)
        top2 = sigprop_local_loss(h1, t1, kind="topk", k=2, targets="labels", labels=labels)
        # row 1 has one same-label entry; its second pick is the lowest-index tie (sample 0)
        rows = [logp[0, 0] + logp[0, 2], logp[1, 0] + logp[1, 1], logp[2, 0] + logp[2, 2]]
        np.testing.assert_allclose(top2, -np.mean(rows), rtol=1e-13)


def test_topk_one_is_v14_and_topk_all_is_uniform_mask():
    with precision("float64"):
        rng = np.random.default_rng(0)
        h1, t1, t0 = (jnp.asarray(rng.normal(size=(5, 3))) for _ in range(3))
        v14 = sigprop_local_loss(h1, t1, t0, kind="v14")
        np.testing.assert_allclose(sigprop_local_loss(h1, t1, t0, kind="topk", k=1), v14)
        every = -jnp.mean(jnp.sum(jax.nn.log_softmax(h1 @ t1.T), axis=-1))
        np.testing.assert_allclose(sigprop_local_loss(h1, t1, t0, kind="topk", k=5), every)


@pytest.mark.parametrize(
    ("kind", "k", "targets", "conv"),
    [
        ("v14", 1, "signal", False),
        ("v9", 1, "signal", False),
        ("topk", 2, "signal", False),
        ("v9", 1, "labels", False),
        ("v14", 1, "labels", False),
        ("v9", 1, "signal", True),
        ("v14", 1, "labels", True),
    ],
)
def test_local_loss_matches_torch(kind, k, targets, conv):
    """Conv maps: ours NHWC, torch's reference (B, C, h, w) -> (hw, B, C) per spec 3.2."""
    with precision("float64"):
        rng = np.random.default_rng(1)
        shape = (6, 3, 2, 4) if conv else (6, 4)  # NHWC / [B, D]
        arrays = [rng.normal(size=shape) for _ in range(3)]
        labels = rng.integers(0, 3, size=6)
        extra = {"targets": "labels", "labels": jnp.asarray(labels)} if targets == "labels" else {}
        t_prev = None if targets == "labels" else jnp.asarray(arrays[2])
        ours, grads = local_loss_value_and_grad(
            jnp.asarray(arrays[0]), jnp.asarray(arrays[1]), t_prev, kind=kind, k=k, **extra
        )
        nchw = (lambda a: a.transpose(0, 3, 1, 2)) if conv else (lambda a: a)
        h, t = (torch.tensor(nchw(a), requires_grad=True) for a in arrays[:2])
        torch_labels = torch.tensor(labels) if targets == "labels" else None
        theirs = local_loss(h, t, torch.tensor(nchw(arrays[2])), kind, k, torch_labels)
        theirs.backward()
        back = (lambda a: a.transpose(0, 2, 3, 1)) if conv else (lambda a: a)
        np.testing.assert_allclose(ours, theirs.item(), rtol=1e-12)
        np.testing.assert_allclose(grads[0], back(h.grad.numpy()), rtol=1e-10, atol=1e-14)
        np.testing.assert_allclose(grads[1], back(t.grad.numpy()), rtol=1e-10, atol=1e-14)


# --------------------------------------------------------------------- model parity


def chw_to_hwc(array, image_size):
    """Leading axis ordered as torch's flattened (C, H, W) -> ours (H, W, C)."""
    if image_size is None:
        return array
    h, w = image_size
    rest = array.shape[1:]
    split = array.reshape(array.shape[0] // (h * w), h, w, *rest)
    return np.moveaxis(split, 0, 2).reshape(array.shape)


def variable_pairs(model, net, image_size):
    """``(our path, torch path, torch -> ours layout)`` of every parameter and batch stat."""
    same = lambda a: a  # noqa: E731
    layer = (lambda w: w.T) if image_size is None else (lambda w: w.transpose(2, 3, 1, 0))
    features = lambda a: chw_to_hwc(a, image_size)  # noqa: E731
    pairs = [
        (("signal_in", "kernel"), ("signal_in", "weight"), layer),
        (("signal_ctx", "kernel"), ("signal_ctx", "weight"), lambda w: features(w).T),
        (("signal_norm", "scale"), ("signal_norm", "weight"), features),
        (("signal_norm", "bias"), ("signal_norm", "bias"), features),
        (("head", "kernel"), ("head", "weight"), lambda w: features(w.T)),
        (("head", "bias"), ("head", "bias"), same),
    ]
    for i in range(len(model.blocks)):
        pairs.append((("blocks", i, "kernel"), ("blocks", i, "weight"), layer))
    if model.signal_in_norm is None:  # layers followed by BatchNorm have no bias
        pairs.append((("signal_in", "bias"), ("signal_in", "bias"), same))
        pairs += [
            (("blocks", i, "bias"), ("blocks", i, "bias"), same) for i in range(len(model.blocks))
        ]
    else:
        norms = [(("signal_in_norm",), ("signal_in_norm",))]
        norms += [(("block_norms", i), ("block_norms", i)) for i in range(len(model.blocks))]
        for ours, theirs in norms:
            for a, b in [
                ("scale", "weight"),
                ("bias", "bias"),
                ("mean", "running_mean"),
                ("var", "running_var"),
            ]:
                pairs.append(((*ours, a), (*theirs, b), same))
    return pairs


def pick(tree, path):
    """``tree.a[0].b`` (modules) or ``tree["a"][0]["b"]`` (states) for ``("a", 0, "b")``."""
    for key in path:
        tree = (
            tree[key] if isinstance(key, int) or isinstance(tree, Mapping) else getattr(tree, key)
        )
    return tree


def numpy_copy(tensor):
    """A copy: ``jnp.asarray`` of a contiguous array may alias it, and torch steps in place."""
    return tensor.detach().numpy().copy()


def rel(a, b):
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-300))


def make_pair(dtype, config, seed=0):
    """A torch net and our model with its weights (built abstractly, then filled: drawing
    initial weights would compile ``jax.random.uniform`` once per shape)."""
    image_size = config.get("image_size")
    in_features, hidden = (IN, HIDDEN) if image_size is None else (CONV_IN, CONV_HIDDEN)
    torch_keys = ("batch_norm", "dropout", "image_size")
    torch.manual_seed(seed)
    net = TorchSigPropNet(
        in_features, hidden, CLASSES, **{key: config[key] for key in torch_keys if key in config}
    ).to(dtype)
    jdtype = jnp.float64 if dtype == torch.float64 else jnp.float32
    model_keys = ("kind", "k", "targets", "mode", "local_loss_weight", *torch_keys)
    kwargs = {key: config[key] for key in model_keys if key in config}
    model = nnx.eval_shape(
        lambda: SigPropNet(
            in_features, hidden, CLASSES, **kwargs, param_dtype=jdtype, rngs=nnx.Rngs(0)
        )
    )
    pairs = variable_pairs(model, net, image_size)
    for ours, theirs, layout in pairs:
        array = jnp.asarray(layout(numpy_copy(pick(net, theirs))), jdtype)
        pick(model, ours).set_value(array)
    for path, variable in nnx.iter_graph(model):
        if isinstance(variable, nnx.RngKey):
            variable.set_value(jax.random.key(seed))
        elif isinstance(variable, nnx.RngCount):
            variable.set_value(jnp.zeros((), jnp.uint32))
        elif isinstance(variable, nnx.Variable):
            assert not isinstance(variable.get_value(), jax.ShapeDtypeStruct), path
    return model, net, pairs


def batches(n, dtype, image_size=None, seed=0):
    rng = np.random.default_rng(seed)
    for _ in range(n):
        if image_size is None:
            x = rng.normal(size=(BATCH, IN))
        else:
            x = rng.normal(size=(BATCH, *image_size, CONV_IN))  # NHWC
        y = rng.integers(0, CLASSES, size=BATCH)
        yield x.astype(dtype), y


def torch_input(x):
    return torch.tensor(x.transpose(0, 3, 1, 2).copy() if x.ndim == 4 else x)


LR, SIGNAL_LR, SIGNAL_MOMENTUM = 1e-2, 2e-2, 0.8
# One instance per base: the optimizer is part of the jitted step's static graph, so equal
# configurations then share one compilation.
TX = {base: sigprop_optimizer(LR, SIGNAL_LR, SIGNAL_MOMENTUM, base=base) for base in BASES}


def _train_step(model, optimizer, x, y):
    grads = nnx.grad(lambda m: m.loss(x, y))(model)
    optimizer.update(model, grads)
    return grads


train_step = nnx.jit(_train_step)


def train_both(dtype, config, steps=10, hook=None):
    """``(first-step gradient error, parameter + batch-stat error after the steps)``;
    ``hook(model, net)`` runs after the first step, with ``net.block_inputs`` the inputs
    of the first block's torch BatchNorm in that step."""
    model, net, pairs = make_pair(dtype, config)
    if config.get("batch_norm"):
        net.block_inputs = []
        net.block_norms[0].register_forward_pre_hook(
            lambda module, inputs: net.block_inputs.append(inputs[0].detach().clone())
        )
    base = config.get("base", "adam")
    ref_keys = ("kind", "k", "targets", "mode", "local_loss_weight")
    opt = TorchSigProp(
        net,
        LR,
        SIGNAL_LR,
        SIGNAL_MOMENTUM,
        base=base,
        **{key: config[key] for key in ref_keys if key in config},
    )
    optimizer = nnx.Optimizer(model, TX[base], wrt=nnx.Param)
    npdtype = np.float64 if dtype == torch.float64 else np.float32
    jdtype = jnp.float64 if dtype == torch.float64 else jnp.float32
    grad_error = None
    for x, y in batches(steps, npdtype, config.get("image_size")):
        opt.step(torch_input(x), torch.tensor(y))
        grads = train_step(model, optimizer, jnp.asarray(x, jdtype), jnp.asarray(y))
        if grad_error is None:
            errors = []
            for ours, theirs, layout in pairs:
                torch_param = pick(net, theirs)
                if isinstance(torch_param, torch.nn.Parameter):
                    torch_grad = layout(torch_param.grad.numpy())
                    errors.append(rel(value(pick(grads, ours)), torch_grad))
                    assert np.max(np.abs(torch_grad)) > 1e-4, theirs  # every path is used
            grad_error = max(errors)
            if hook is not None:
                hook(model, net)
    errors = [
        rel(value(pick(model, ours)), layout(numpy_copy(pick(net, theirs))))
        for ours, theirs, layout in pairs
    ]
    return grad_error, max(errors)


CONFIGS = {
    "v14": {"kind": "v14"},
    # one step: ReLU zeros make ties in YY, whose top-k order torch does not specify.
    # SGD: lambda = 0.5 scales the blocks' and the signal generator's gradients, not the head's
    "topk2-sgd": {"kind": "topk", "k": 2, "base": "sgd", "local_loss_weight": 0.5, "steps": 1},
    # lambda = 0.3 weighs the local losses against the cross-entropy in every step; the
    # label-equality targets are as constant as YY's, so the gradient paths are the same
    "hybrid-v9-labels-sgd": {
        "mode": "hybrid",
        "kind": "v9",
        "targets": "labels",
        "local_loss_weight": 0.3,
        "base": "sgd",
    },
    # BatchNorm2d on the conv net: the MLP's BatchNorm1d is the same module on [B, C]
    "conv-batchnorm": {"image_size": IMAGE, "batch_norm": True},
}


def check_batchnorm_order(model, net):
    """spec 3.7: after one step from ``r = 0``, ``r = 0.9 (0.1 s_h) + 0.1 s_t`` with
    ``s_h``, ``s_t`` the batch means of the block's calls on the input stream and then
    the target stream (the reverse order gives a visibly different value)."""
    channel_means = [
        a.numpy().mean(axis=tuple(i for i in range(a.ndim) if i != 1)) for a in net.block_inputs
    ]
    s_h, s_t = channel_means[:2]
    in_order, reversed_order = 0.9 * 0.1 * s_h + 0.1 * s_t, 0.9 * 0.1 * s_t + 0.1 * s_h
    ours = value(model.block_norms[0].mean)
    np.testing.assert_allclose(ours, in_order, rtol=1e-12)
    assert np.max(np.abs(ours - reversed_order)) > 1e-3


@pytest.mark.parametrize("name", list(CONFIGS))
def test_gradients_and_ten_steps_match_torch_float64(name):
    """First-step gradients (per block for SigProp; of CE + lambda sum L without stop
    gradients for hybrid) and parameters and BatchNorm running statistics after 10 steps."""
    with precision("float64"):
        config = CONFIGS[name]
        hook = check_batchnorm_order if config.get("batch_norm") else None
        grad_error, error = train_both(torch.float64, config, config.get("steps", 10), hook)
        assert grad_error < 1e-10, grad_error
        assert error < 1e-8, error


@pytest.mark.usefixtures("default_compilation")
def test_parity_with_xlas_default_compilation():
    """The package compiles quickly (``conftest.py``); the parity also holds compiled with
    XLA's default settings, the code users run."""
    test_gradients_and_ten_steps_match_torch_float64("v14")


def test_ten_steps_match_torch_float32():
    """SGD base: with Adam, float32 rounding of near-zero gradients (dead ReLU units) is
    amplified to +-lr by g / (|g| + eps), so Adam parity is checked in float64 only."""
    with precision("float32"):
        grad_error, error = train_both(torch.float32, {"kind": "v14", "base": "sgd"})
        assert grad_error < 1e-5 and error < 1e-5, (grad_error, error)


# --------------------------------------------------------------------- BatchNorm, dropout


def _forward(model, x, labels):
    return model(x, labels)


def _inference(model, x):
    return model(x)


def _inference_not_training(model, x):
    return model(x, train=False)


forward = nnx.jit(_forward)
inference = nnx.jit(_inference)


def test_eval_mode_uses_running_stats_and_no_dropout():
    """Eval (``model.eval()``, or ``train=False`` on a model in training mode): torch's
    eval-mode logits, with running statistics far from the batch's and dropout 0.5
    switched off, and no statistics update; in training mode, fresh dropout masks."""
    with precision("float64"):
        model, net, _ = make_pair(torch.float64, {"batch_norm": True, "dropout": 0.5})
        rng = np.random.default_rng(3)
        norms = [("signal_in_norm",), *(("block_norms", i) for i in range(len(HIDDEN) - 1))]
        for path in norms:
            size = pick(net, path).num_features
            mean, var = rng.normal(size=size), rng.uniform(0.5, 2.0, size=size)
            pick(net, path).running_mean.copy_(torch.tensor(mean))
            pick(net, path).running_var.copy_(torch.tensor(var))
            pick(model, path).mean.set_value(jnp.asarray(mean))
            pick(model, path).var.set_value(jnp.asarray(var))
        net.eval()
        x = jnp.asarray(next(batches(1, np.float64))[0])
        with torch.no_grad():
            h = net.input_signal(torch_input(np.asarray(x)))
            for i in range(len(net.blocks)):
                h = net.block(i, net.dropout(h))
            expected = net.head(net.dropout(h)).numpy()
        stats = value(model.block_norms[0].mean).copy()
        overridden, _ = nnx.jit(_inference_not_training)(model, x)  # in training mode
        np.testing.assert_allclose(overridden, expected, rtol=1e-12)
        model.eval()
        ours, _ = inference(model, x)
        np.testing.assert_allclose(ours, expected, rtol=1e-12)
        np.testing.assert_array_equal(value(model.block_norms[0].mean), stats)  # not updated
        model.train()
        first, _ = inference(model, x)
        second, _ = inference(model, x)
        assert np.max(np.abs(value(model.block_norms[0].mean) - stats)) > 0  # updated
        assert np.max(np.abs(first - second)) > 1e-3  # a fresh dropout mask per call


# --------------------------------------------------------------------- behaviour


def test_inference_runs_the_input_stream_only():
    model, _, _ = make_pair(torch.float32, {})
    x, y = next(batches(1, np.float32))
    logits, local = forward(model, jnp.asarray(x), jnp.asarray(y))
    logits_only, none = inference(model, jnp.asarray(x))
    assert none is None and local.shape == (len(HIDDEN),)
    np.testing.assert_allclose(logits_only, logits, rtol=1e-6)


def test_labels_split_signal_generator_from_net():
    model = nnx.eval_shape(
        lambda: SigPropNet(IN, HIDDEN, CLASSES, batch_norm=True, rngs=nnx.Rngs(0))
    )
    labels = sigprop_labels(nnx.state(model, nnx.Param))
    flat = {jax.tree_util.keystr(p): v for p, v in jax.tree_util.tree_leaves_with_path(labels)}
    assert any(p.startswith("['signal_in_norm']['scale']") for p in flat)
    assert any(p.startswith("['block_norms'][1]['bias']") for p in flat)
    assert {v for p, v in flat.items() if "signal" in p} == {"signal"}
    assert {v for p, v in flat.items() if "signal" not in p} == {"net"}


def test_non_finite_gradient_propagates_and_apply_if_finite_skips():
    params = {"signal_in": {"kernel": jnp.ones(3)}, "head": {"kernel": jnp.ones(3)}}
    grads = {
        "signal_in": {"kernel": jnp.ones(3)},
        "head": {"kernel": jnp.array([1.0, jnp.nan, 1.0])},
    }
    tx = sigprop_optimizer(1e-3, 1e-3, 0.9)
    updates, _ = jax.jit(tx.update)(grads, tx.init(params), params)
    assert np.all(np.isfinite(updates["signal_in"]["kernel"]))  # partitions are independent
    assert np.isnan(updates["head"]["kernel"][1])
    guarded = optax.apply_if_finite(tx, max_consecutive_errors=5)
    updates, state = jax.jit(guarded.update)(grads, guarded.init(params), params)
    assert int(state.notfinite_count) == 1
    np.testing.assert_array_equal(updates["head"]["kernel"], 0.0)


def local(**kwargs):
    return lambda: sigprop_local_loss(jnp.ones((2, 2)), jnp.ones((2, 2)), **kwargs)


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: sigprop_optimizer(-1.0, 1e-3, 0.9), "learning rate"),
        (lambda: sigprop_optimizer(1e-3, -1e-3, 0.9), "learning rate"),
        (lambda: sigprop_optimizer(1e-3, 1e-3, 1.0), "signal_momentum"),
        (lambda: sigprop_optimizer(1e-3, 1e-3, 0.9, base="rmsprop"), "base"),
        (local(t_prev=jnp.ones((2, 2)), kind="v10"), "kind"),
        (local(t_prev=jnp.ones((2, 2)), kind="topk", k=0), "k"),
        (local(t_prev=jnp.ones((2, 2)), targets="classes"), "targets"),
        (local(), "t_prev"),
        (local(targets="labels"), "labels="),
        (local(t_prev=jnp.ones((2, 2)), labels=jnp.zeros(2, int)), "only with targets"),
        (lambda: SigPropNet(4, [], 3, rngs=nnx.Rngs(0)), "hidden"),
        (
            lambda: SigPropNet(4, [3], 3, local_loss_weight=-1.0, rngs=nnx.Rngs(0)),
            "local_loss_weight",
        ),
        (lambda: SigPropNet(4, [3], 3, mode="global", rngs=nnx.Rngs(0)), "mode"),
        (lambda: SigPropNet(4, [3], 3, targets="onehot", rngs=nnx.Rngs(0)), "targets"),
        (lambda: SigPropNet(4, [3], 3, dropout=1.0, rngs=nnx.Rngs(0)), "dropout"),
        (lambda: SigPropNet(4, [3], 3, image_size=(4,), rngs=nnx.Rngs(0)), "image_size"),
        (
            lambda: create_sigprop_optimizer(
                nnx.eval_shape(lambda: MLP(4, (3,), 2, rngs=nnx.Rngs(0)))
            ),
            "SigPropNet",
        ),
    ],
)
def test_bad_arguments_raise(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_base_may_be_an_optax_transform_like_fer_and_gradient_correction():
    """A transform ``base`` updates the blocks and head (with its own rate) and the signal
    generator keeps Adam: ``base=torch adam(lr)`` is ``base="adam"`` at ``lr``, step for
    step; any other optax transform runs too."""
    model = SigPropNet(4, [8, 6], 3, rngs=nnx.Rngs(0))
    params = nnx.state(model, nnx.Param)
    x, y = jnp.linspace(-1.0, 1.0, 20).reshape(5, 4), jnp.array([0, 1, 2, 0, 1])
    grads = nnx.grad(lambda m: m.loss(x, y))(model)
    named = sigprop_optimizer(0.01, 2e-3, 0.8, base="adam")
    given = sigprop_optimizer(signal_lr=2e-3, signal_momentum=0.8, base=adam(0.01))
    named_state, given_state = named.init(params), given.init(params)
    for _ in range(3):
        want, named_state = named.update(grads, named_state, params)
        got, given_state = given.update(grads, given_state, params)
        for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
            np.testing.assert_array_equal(a, b)
    lion = sigprop_optimizer(signal_lr=2e-3, base=optax.lion(1e-4, weight_decay=0.0))
    updates, _ = lion.update(grads, lion.init(params), params)
    labels = jax.tree.leaves(sigprop_labels(params))
    net = [u for u, label in zip(jax.tree.leaves(updates), labels, strict=True) if label == "net"]
    for u in net:  # lion's updates are +-lr (or 0) on the blocks and head
        np.testing.assert_allclose(np.abs(u[u != 0]), 1e-4, rtol=1e-6)
    assert any(np.any(u != 0) for u in net)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"learning_rate": 0.01, "base": optax.sgd(0.1)}, ValueError, "learning_rate.*own"),
        ({"learning_rate": lambda t: 1e-3, "base": optax.sgd(0.1)}, ValueError, "own"),
        ({"base": 3}, TypeError, "base must be one of adam, sgd or an optax transform"),
        ({"base": optax.sgd}, TypeError, "base must be"),  # a factory, not a transform
    ],
)
def test_a_transform_base_rejects_what_it_would_ignore(kwargs, error, match):
    with pytest.raises(error, match=match):
        sigprop_optimizer(**kwargs)


def test_a_transform_base_under_inject_hyperparams():
    """The injected rates are arrays at init and tracers at update: the default passes."""
    model = SigPropNet(4, [8, 6], 3, rngs=nnx.Rngs(0))
    params = nnx.state(model, nnx.Param)
    grads = jax.tree.map(jnp.ones_like, params)
    injected = optax.inject_hyperparams(sigprop_optimizer)(signal_lr=2e-3, base=adam(0.01))
    plain = sigprop_optimizer(signal_lr=2e-3, base=adam(0.01))
    got, _ = jax.jit(injected.update)(grads, injected.init(params), params)
    want, _ = plain.update(grads, plain.init(params), params)
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6)
