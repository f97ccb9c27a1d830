"""Localized learning: spec 4.6 case, Oja's bounded norms, parity with a torch LoCal+SGD.

Model-level steps are jitted, one compilation per configuration (``conftest.py``: with XLA's
optimisations mostly off).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import torch
from flax import nnx

from jaxopt_adv.local import (
    LocalizedMLP,
    advance_boundary,
    create_localized_optimizer,
    get_boundary,
    hebbian_delta,
    localized_learning,
    localized_state,
    set_boundary,
)
from jaxopt_adv.models import MLP
from jaxopt_adv.torch import sgd
from tests.harness import precision
from tests.reference.torch_localized import TorchLocalized, TorchLocalMLP

X = [[1.0, 0.0, 2.0], [0.0, 1.0, -1.0]]
W = [[0.1, 0.2, 0.3], [-0.2, 0.1, 0.0]]  # torch layout [out, in]
ETA, LAM, LOSS = 0.01, 0.1, 2.0
HEBB = [[0.00383741, -0.00054820, 0.00822302], [-0.00109640, 0.00054820, -0.00274101]]
LAYER = [[0.00511655, -0.00073094, 0.01096403], [-0.00146187, 0.00073094, -0.00365468]]
OJA = [[0.00356331, -0.00109640, 0.00740072], [-0.00104158, 0.00052079, -0.00274101]]
BIAS = [0.00328921, -0.00054820]
IN, HIDDEN, CLASSES, BATCH = 6, [7, 6, 5], 3, 8


def value(v):
    return np.asarray(v[...] if isinstance(v, nnx.Variable) else v)


def spec_update(activations, **kwargs):
    """The update of the spec 4.6 layer (``W``, zero bias) from ``activations["dense"]``."""
    kernel = jnp.array(W).T
    tx = localized_learning(
        optax.sgd(1.0),
        hebbian_lr=ETA,
        localized_layers=["dense"],
        supervision_strength=LAM,
        **kwargs,
    )
    params = {"dense": {"kernel": kernel, "bias": jnp.zeros(2)}}
    updates, _ = tx.update(
        jax.tree.map(jnp.ones_like, params),
        tx.init(params),
        params,
        activations={"dense": activations},
        value=jnp.array(LOSS),
    )
    return updates["dense"]


def spec_activations():
    """``(x, pre, post)``: the spec's ``Y = X W^T`` is the pre-activation; ReLU zeroes two
    of its entries, so reading the wrong one changes the update."""
    x = jnp.array(X)
    pre = x @ jnp.array(W).T
    return x, pre, jax.nn.relu(pre)


@pytest.mark.parametrize(
    ("kwargs", "expected", "bias"),
    [
        ({"rule": "hebb", "post": "pre"}, HEBB, BIAS),
        ({"rule": "hebb", "normalize": "layer", "post": "pre"}, LAYER, BIAS),
        ({"legacy": True}, LAYER, BIAS),  # the seed: layer-normalised Hebb, its bias rule
        ({"legacy": True, "rule": "oja", "post": "activation"}, LAYER, BIAS),  # overridden
        ({"rule": "oja", "post": "pre"}, OJA, [0, 0]),
    ],
)
def test_spec_sanity_case(kwargs, expected, bias):
    with precision("float64"):
        x, k = jnp.array(X), jnp.array(W).T
        delta, _ = hebbian_delta(x, x @ k, k, rule="hebb")
        np.testing.assert_allclose(delta.T, [[0.35, -0.05, 0.75], [-0.1, 0.05, -0.25]], atol=1e-12)
        update = spec_update(spec_activations(), **kwargs)
        np.testing.assert_allclose(update["kernel"].T, expected, rtol=0, atol=1e-8)
        np.testing.assert_allclose(update["bias"], bias, rtol=0, atol=1e-8)


def test_post_activation_reads_the_last_output_and_pairs_are_x_post():
    """Default ``post="activation"``: ``y = relu(Y)``, from the triple's last entry or from
    an ``(x, y)`` pair; the spec's numbers hold for the pair ``(X, Y)``."""
    with precision("float64"):
        x, pre, post = spec_activations()
        by_hand = ETA * (1 + LAM * np.tanh(LOSS)) * np.asarray(post).T @ np.asarray(x) / 2
        update = spec_update((x, pre, post), rule="hebb")
        np.testing.assert_allclose(update["kernel"].T, by_hand, rtol=1e-12)
        np.testing.assert_allclose(spec_update((x, post), rule="hebb")["kernel"].T, by_hand)
        np.testing.assert_allclose(spec_update((x, pre), rule="hebb")["kernel"].T, HEBB, atol=1e-8)
        with pytest.raises(ValueError, match="post='pre' needs"):
            spec_update((x, pre), post="pre")
        with pytest.raises(ValueError, match="must be"):
            spec_update((x,), rule="hebb")


def run_hebbian(rule, steps=1000):
    """Norms of the kernel columns after ``steps`` Hebbian steps on ReLU data."""
    tx = localized_learning(optax.sgd(0.0), hebbian_lr=0.05, localized_layers=["dense"], rule=rule)
    rng = np.random.default_rng(0)
    data = jnp.asarray(np.abs(rng.normal(size=(steps, 16, 5))), jnp.float32)
    params = {"dense": {"kernel": jnp.asarray(rng.normal(size=(5, 4)) * 0.3, jnp.float32)}}

    def body(carry, x):
        params, state = carry
        y = jax.nn.relu(x @ params["dense"]["kernel"])
        zeros = jax.tree.map(jnp.zeros_like, params)
        updates, state = tx.update(zeros, state, params, activations={"dense": (x, y)}, value=0.0)
        return (optax.apply_updates(params, updates), state), None

    (params, _), _ = jax.lax.scan(body, (params, tx.init(params)), data)
    return np.linalg.norm(params["dense"]["kernel"], axis=0)


def test_oja_keeps_weight_norms_bounded_and_hebb_does_not():
    oja = run_hebbian("oja")
    assert np.all(np.isfinite(oja)) and np.all(oja < 2.0), oja
    alive = oja > 1e-3  # units that ever fired converge to unit norm
    np.testing.assert_allclose(oja[alive], 1.0, atol=0.1)
    assert np.max(run_hebbian("hebb")) > 100.0


# ------------------------------------------------------------------ torch parity


def numpy_copy(tensor):
    """A copy: ``jnp.asarray`` of a contiguous array may alias it, and torch steps in place."""
    return tensor.detach().numpy().copy()


def layer_pairs(model, net):
    return [*zip(model.layers, net.layers, strict=True), (model.head, net.head)]


def make_pair(seed=0):
    """A torch MLP and ours with its weights (built abstractly, then filled: drawing
    initial weights would compile ``jax.random.uniform`` once per shape)."""
    torch.manual_seed(seed)
    net = TorchLocalMLP(IN, HIDDEN, CLASSES).double()
    model = nnx.eval_shape(
        lambda: LocalizedMLP(IN, HIDDEN, CLASSES, param_dtype=jnp.float64, rngs=nnx.Rngs(0))
    )
    for ours, theirs in layer_pairs(model, net):
        ours.kernel.set_value(jnp.asarray(numpy_copy(theirs.weight).T))
        ours.bias.set_value(jnp.asarray(numpy_copy(theirs.bias)))
    return model, net


def max_rel_error(model, net):
    errors = []
    for ours, theirs in layer_pairs(model, net):
        for a, b in [(ours.kernel, theirs.weight.detach().numpy().T), (ours.bias, theirs.bias)]:
            b = np.asarray(b.detach().numpy() if isinstance(b, torch.Tensor) else b)
            errors.append(np.max(np.abs(value(a) - b)) / np.max(np.abs(b)))
    return max(errors)


PARITY = {
    "oja-T1": ({"rule": "oja"}, 1),
    "oja-pre-T2": ({"rule": "oja", "post": "pre"}, 2),
    "hebb-layer-T2": ({"rule": "hebb", "normalize": "layer"}, 2),
    "legacy-T2": ({"legacy": True}, 2),
}


@pytest.mark.parametrize("name", list(PARITY))
def test_ten_steps_match_torch_float64(name):
    with precision("float64"):
        kwargs, num_localized = PARITY[name]
        error = train_both(kwargs, num_localized)
        assert error < 1e-8, error


@pytest.mark.usefixtures("default_compilation")
def test_parity_with_xlas_default_compilation():
    """The package compiles quickly (``conftest.py``); the parity also holds compiled with
    XLA's default settings, the code users run."""
    test_ten_steps_match_torch_float64("oja-pre-T2")


def _step(model, optimizer, x, y, num_localized):
    def loss_fn(model):
        logits, activations = model(x, num_localized=num_localized)
        loss = optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
        return loss, activations

    (loss, activations), grads = nnx.value_and_grad(loss_fn, has_aux=True)(model)
    optimizer.update(model, grads, activations=activations, value=loss)
    return loss


STEPS = {t: nnx.jit(functools.partial(_step, num_localized=t)) for t in (1, 2)}


def train_both(kwargs, num_localized):
    """Max relative parameter error after 10 steps against the torch reference."""
    model, net = make_pair()
    lr, momentum, hebbian_lr, lam = 0.1, 0.9, 0.05, 0.1
    ref = TorchLocalized(net, lr, momentum, hebbian_lr, lam, **kwargs)
    tx = create_localized_optimizer(
        model,
        lr,
        hebbian_lr,
        supervision_strength=lam,
        momentum=momentum,
        num_localized=num_localized,
        **kwargs,
    )
    optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)
    rng = np.random.default_rng(0)
    before = value(model.layers[0].kernel).copy()
    for _ in range(10):
        x, y = rng.normal(size=(BATCH, IN)), rng.integers(0, CLASSES, size=BATCH)
        theirs = ref.step(torch.tensor(x), torch.tensor(y), num_localized)
        ours = STEPS[num_localized](model, optimizer, jnp.asarray(x), jnp.asarray(y))
        np.testing.assert_allclose(ours, theirs, rtol=1e-10)
    assert np.max(np.abs(value(model.layers[0].kernel) - before)) > 1e-3  # Hebbian moved it
    return max_rel_error(model, net)


def _kernel_grads(model, x):
    return nnx.grad(lambda m: jnp.sum(m(x, num_localized=2)[0]))(model)


def test_stop_gradient_removes_the_localized_prefix_from_backward():
    with precision("float64"):
        model, _ = make_pair()
        x = jnp.asarray(np.random.default_rng(0).normal(size=(BATCH, IN)))
        grads = nnx.jit(_kernel_grads)(model, x)
    assert np.all(value(grads["layers"][0]["kernel"]) == 0)
    assert np.all(value(grads["layers"][1]["kernel"]) == 0)
    assert np.any(value(grads["layers"][2]["kernel"]) != 0)


# ------------------------------------------------------------------ boundary selection


def boundary_state(num_localized, epoch_norms, previous_norms):
    tx = localized_learning(
        optax.sgd(0.1), localized_layers=["a", "b", "c"], num_localized=num_localized
    )
    params = {k: {"kernel": jnp.zeros((2, 2))} for k in "abcd"}
    state = tx.init(params)
    return state._replace(
        epoch_sq_norm=jnp.array(epoch_norms), previous_sq_norm=jnp.array(previous_norms)
    )


@pytest.mark.parametrize(
    ("start", "now", "before", "expected"),
    [
        (0, [0.2, 1, 1], [1.0, 1, 1], 1),  # ratio sqrt(0.2) = 0.447 < 0.5: advance
        (0, [0.3, 1, 1], [1.0, 1, 1], 0),  # ratio 0.548: stay
        (1, [1, 0.01, 1], [0, 0, 0], 1),  # first epoch: no previous norm, stay
        (3, [0, 0, 0.0], [1.0, 1, 1], 3),  # every candidate localized already
    ],
)
def test_dynamic_boundary(start, now, before, expected):
    state = advance_boundary(boundary_state(start, now, before))
    assert int(get_boundary(state)) == expected
    np.testing.assert_allclose(localized_state(state).previous_sq_norm, now, rtol=1e-6)
    np.testing.assert_array_equal(localized_state(state).epoch_sq_norm, 0)


def test_static_boundary_and_accumulated_norms():
    tx = localized_learning(optax.sgd(0.1), hebbian_lr=0.0, localized_layers=["a", "b"])
    params = {"a": {"kernel": jnp.ones((2, 2))}, "b": {"kernel": jnp.ones((2, 2))}}
    state = set_boundary(tx.init(params), 1)
    activations = {k: (jnp.ones((1, 2)), jnp.ones((1, 2))) for k in "ab"}
    grads = jax.tree.map(jnp.ones_like, params)
    updates, state = tx.update(grads, state, params, activations=activations, value=0.0)
    np.testing.assert_array_equal(updates["a"]["kernel"], 0.0)  # Hebbian with lr 0
    np.testing.assert_allclose(updates["b"]["kernel"], -0.1)  # SGD
    np.testing.assert_allclose(localized_state(state).epoch_sq_norm, [0.0, 4 * 0.01], rtol=1e-6)
    assert int(get_boundary(set_boundary(state, 7))) == 2  # clipped to the candidates


def test_non_finite_gradient_reaches_only_base_layers():
    tx = localized_learning(optax.sgd(0.1), hebbian_lr=0.1, localized_layers=["a"])
    params = {"a": {"kernel": jnp.ones((2, 2))}, "b": {"kernel": jnp.ones((2, 2))}}
    grads = jax.tree.map(lambda p: jnp.full_like(p, jnp.nan), params)
    activations = {"a": (jnp.ones((1, 2)), jnp.ones((1, 2)))}
    updates, _ = tx.update(grads, tx.init(params), params, activations=activations, value=1.0)
    assert np.all(np.isfinite(updates["a"]["kernel"]))
    assert np.all(np.isnan(updates["b"]["kernel"]))
    guarded = optax.apply_if_finite(tx, max_consecutive_errors=3)
    updates, state = guarded.update(
        grads, guarded.init(params), params, activations=activations, value=1.0
    )
    assert int(state.notfinite_count) == 1
    np.testing.assert_array_equal(updates["a"]["kernel"], 0.0)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"hebbian_lr": -1.0}, "hebbian_lr"),
        ({"supervision_strength": -0.1}, "supervision_strength"),
        ({"rule": "bcm"}, "rule"),
        ({"normalize": "global"}, "normalize"),
        ({"localized_layers": []}, "localized_layers"),
        ({"localized_layers": "a"}, "localized_layers"),
        ({"num_localized": 3}, "num_localized"),
        ({"post": "output"}, "post"),
        ({"legacy": "yes"}, "legacy"),
    ],
)
def test_bad_arguments_raise(kwargs, match):
    arguments = {"localized_layers": ["a", "b"], **kwargs}
    with pytest.raises(ValueError, match=match):
        localized_learning(sgd(0.1), **arguments)


def test_update_errors():
    tx = localized_learning(sgd(0.1), localized_layers=["a"])
    params = {"a": {"kernel": jnp.ones((2, 2))}}
    activations = {"a": (jnp.ones((1, 2)), jnp.ones((1, 2)))}
    with pytest.raises(ValueError, match="params"):
        tx.update(params, tx.init(params), activations=activations, value=0.0)
    with pytest.raises(ValueError, match="activations= and value="):
        tx.update(params, tx.init(params), params)
    wrong = localized_learning(sgd(0.1), localized_layers=["z"])
    with pytest.raises(ValueError, match="no 'kernel'"):
        wrong.update(params, wrong.init(params), params, activations=activations, value=0.0)
    with pytest.raises(ValueError, match="LocalizedMLP"):
        create_localized_optimizer(nnx.eval_shape(lambda: MLP(4, (3,), 2, rngs=nnx.Rngs(0))))
    with pytest.raises(ValueError, match="hidden layers"):
        create_localized_optimizer(
            nnx.eval_shape(lambda: LocalizedMLP(4, [3], 2, rngs=nnx.Rngs(0))),
            localized_layers=["head"],
        )
