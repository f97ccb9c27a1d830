"""FER: spec 1.6 case, and parity with a torch FER written from spec 1.2.

Compiled with ``quick_compilation`` (``tests/helpers/quick.py``: why that is safe here).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import torch

import jaxopt_adv
from jaxopt_adv.correction import (
    FERState,
    create_fer_optimizer,
    distillation_loss,
    fer,
    fer_loss,
    fer_state,
    get_fer_stats,
)
from jaxopt_adv.torch import adam, sgd
from tests.harness import TOLERANCE, ParityReport, _log, absolute_error, max_abs, precision
from tests.reference.torch_fer import FERMemory, fer_loss_torch

pytestmark = pytest.mark.usefixtures("quick_compilation")

LOGITS = [[2.0, 0.5, -1.0], [0.2, 0.1, 1.5]]
LABELS = [0, 1]
INDICES = [3, 7]


def with_memory(state, memory, ever_correct):
    """``state`` (of ``fer``) with its FER memory replaced."""
    return jax.tree.map(
        lambda s: (
            s._replace(memory=memory, ever_correct=ever_correct) if isinstance(s, FERState) else s
        ),
        state,
        is_leaf=lambda s: isinstance(s, FERState),
    )


# --------------------------------------------------------------------- spec 1.6


def test_spec_sanity_case():
    """T=5, mu=0.9, gamma=0.1 (fer_weight 0.9), e=2 of E=10 (epoch index 1), N=10, C=3."""
    with precision("float64"):
        tx = fer(
            optax.sgd(0.1),
            num_classes=3,
            memory_size=10,
            num_epochs=10,
            fer_weight=0.9,
            consistency_threshold=0.9,
            temperature=5.0,
            warmup_epochs=1,
        )
        state = tx.init(jnp.zeros(2))
        memory = jnp.zeros((10, 3)).at[3].set(jnp.array([0.5, 0.3, 0.2]))
        state = with_memory(state, memory, jnp.zeros(10, bool).at[3].set(True))
        logits, labels, idx = jnp.array(LOGITS), jnp.array(LABELS), jnp.array(INDICES)

        ce = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
        np.testing.assert_allclose(ce, [0.24131130, 1.81813698], rtol=0, atol=1e-8)
        kd = distillation_loss(logits[0], memory[3], 5.0)
        np.testing.assert_allclose(kd, 25.95975425, rtol=0, atol=1e-8)
        loss, grad = jax.jit(jax.value_and_grad(fer_loss), static_argnames="epoch")(
            logits, labels, idx, state, epoch=1
        )
        np.testing.assert_allclose(loss, 3.34438401, rtol=0, atol=1e-8)
        expected_grad = [
            [-0.11636690, 0.08246823, 0.03389867],
            [0.08970003, -0.41883606, 0.32913602],
        ]
        np.testing.assert_allclose(grad, expected_grad, rtol=0, atol=1e-8)

        _, state = jax.jit(tx.update)(
            jnp.zeros(2), state, logits=logits, labels=labels, indices=idx
        )
        after = fer_state(state)
        np.testing.assert_allclose(
            after.memory[3], [0.46793968, 0.31193930, 0.22012101], rtol=0, atol=1e-8
        )
        np.testing.assert_array_equal(after.memory[7], 0.0)
        assert bool(after.ever_correct[3]) and not bool(after.ever_correct[7])
        assert int(after.batch_flips) == 0 and int(after.batch_wrong) == 1


# ------------------------------------------------------------ parity with torch

NUM_SAMPLES, NUM_FEATURES, NUM_CLASSES, HIDDEN, BATCH, EPOCHS = 48, 6, 4, 16, 8, 3
CONFIGS = {
    "paper": {"fer_weight": 0.9, "consistency_threshold": 0.9, "temperature": 5.0},
    "mild": {"fer_weight": 0.5, "consistency_threshold": 0.3, "temperature": 2.0},
}
BASES = {
    "adam": (lambda: adam(0.05), lambda p: torch.optim.Adam(p, lr=0.05)),
    "sgd": (
        lambda: sgd(0.5, momentum=0.9),
        lambda p: torch.optim.SGD(p, lr=0.5, momentum=0.9),
    ),
}
RUNS = [
    ("adam", "paper", "float64"),
    ("sgd", "paper", "float64"),
    ("adam", "mild", "float64"),
    ("adam", "paper", "float32"),
    ("sgd", "mild", "float32"),
]


class TorchMLP(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.hidden = torch.nn.Linear(NUM_FEATURES, HIDDEN)
        self.out = torch.nn.Linear(HIDDEN, NUM_CLASSES)

    def forward(self, x):
        return self.out(torch.tanh(self.hidden(x)))


def mlp(params, x):
    return (
        jnp.tanh(x @ params["hidden.weight"].T + params["hidden.bias"]) @ params["out.weight"].T
        + params["out.bias"]
    )


def make_data():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(NUM_SAMPLES, NUM_FEATURES))
    labels = np.argmax(x @ rng.normal(size=(NUM_FEATURES, NUM_CLASSES)), axis=1)
    orders = [np.random.default_rng([7, e]).permutation(NUM_SAMPLES) for e in range(EPOCHS)]
    return x, labels, orders


@pytest.mark.parametrize("base, config, dtype", RUNS, ids=["-".join(r) for r in RUNS])
def test_parity_with_torch(base, config, dtype):
    """1 warm-up + 2 FER epochs (E=3): loss, gradients, memory, flags, flip counts and
    parameters after every step, relative to the largest torch value seen so far."""
    kwargs = CONFIGS[config]
    ours, theirs = BASES[base]
    x, labels, orders = make_data()
    errors, scales, flips_seen, kd_active = {}, {}, 0, False

    def record(key, got, reference):
        scales[key] = max(scales.get(key, 0.0), max_abs(reference))
        error = absolute_error(got, reference) / max(scales[key], 1e-30)
        errors[key] = max(errors.get(key, 0.0), error)

    with precision(dtype):
        torch_dtype = getattr(torch, dtype)
        torch.manual_seed(0)
        model = TorchMLP().to(torch_dtype)
        optimizer = theirs(list(model.parameters()))
        memory = FERMemory(NUM_SAMPLES, NUM_CLASSES, torch_dtype)
        params = {k: jnp.asarray(v.detach().numpy()) for k, v in model.named_parameters()}
        tx = fer(
            ours(),
            num_classes=NUM_CLASSES,
            memory_size=NUM_SAMPLES,
            num_epochs=EPOCHS,
            warmup_epochs=1,
            num_samples=NUM_SAMPLES,
            **kwargs,
        )
        state = tx.init(params)

        @jax.jit
        def step(params, state, xb, yb, idx, epoch):
            def loss_fn(p):
                logits = mlp(p, xb)
                return fer_loss(logits, yb, idx, state, epoch=epoch), logits

            (loss, logits), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
            ce = optax.softmax_cross_entropy_with_integer_labels(logits, yb).mean()
            updates, state = tx.update(grads, state, params, logits=logits, labels=yb, indices=idx)
            return optax.apply_updates(params, updates), state, loss, grads, ce

        for epoch, order in enumerate(orders):
            for start in range(0, NUM_SAMPLES, BATCH):
                idx = order[start : start + BATCH]
                params, state, loss, grads, ce = step(
                    params,
                    state,
                    jnp.asarray(x[idx]),
                    jnp.asarray(labels[idx]),
                    jnp.asarray(idx),
                    epoch,
                )
                optimizer.zero_grad()
                logits = model(torch.tensor(x[idx], dtype=torch_dtype))
                t_labels, t_idx = torch.tensor(labels[idx]), torch.tensor(idx)
                t_loss = fer_loss_torch(
                    logits,
                    t_labels,
                    t_idx,
                    memory,
                    e=epoch + 1,
                    E=EPOCHS,
                    init=1,
                    fer_weight=kwargs["fer_weight"],
                    T=kwargs["temperature"],
                )
                t_loss.backward()
                flips, wrong = memory.update(
                    logits, t_labels, t_idx, kwargs["consistency_threshold"], kwargs["temperature"]
                )
                optimizer.step()

                record("loss", loss, t_loss.item())
                ours_state = fer_state(state)
                record("memory", ours_state.memory, memory.s.numpy())
                np.testing.assert_array_equal(ours_state.ever_correct, memory.c.numpy())
                assert (int(ours_state.batch_flips), int(ours_state.batch_wrong)) == (flips, wrong)
                for name, p in model.named_parameters():
                    record(f"grad:{name}", grads[name], p.grad.numpy())
                    record(f"param:{name}", params[name], p.detach().numpy())
                flips_seen += flips
                kd_active |= epoch >= 1 and abs(float(loss) - float(ce)) > 1e-3
    report = ParityReport(errors, EPOCHS * NUM_SAMPLES // BATCH)
    _log(report, dtype)  # $JAXOPT_ADV_PARITY_LOG, as run_parity does
    worst = max(errors, key=errors.get)
    assert report.max_error <= TOLERANCE[dtype], (worst, errors[worst])
    # not vacuous: the KD term acted, samples flipped, some (not all) are remembered
    assert kd_active and flips_seen > 0
    assert 0 < int(jnp.sum(fer_state(state).ever_correct)) < NUM_SAMPLES


# ------------------------------------------------------------------- behaviour


def make_fer(**overrides):
    kwargs = {"num_classes": 3, "memory_size": 10, "num_epochs": 4, **overrides}
    return fer(optax.sgd(0.1), **kwargs)


@pytest.mark.usefixtures("default_compilation")
def test_parity_with_xlas_default_compilation():
    """This module compiles quickly (its ``pytestmark``); the parity with the torch
    reference also holds compiled with XLA's default settings, the code users run."""
    test_parity_with_torch("adam", "paper", "float64")
    test_parity_with_torch("adam", "paper", "float32")


def test_warmup_loss_is_cross_entropy_even_for_remembered_samples():
    tx = make_fer(fer_weight=1.0, warmup_epochs=2)
    state = tx.init(jnp.zeros(2))
    memory = jnp.full((10, 3), 0.2).at[3].set(jnp.array([0.1, 0.1, 0.8]))
    state = with_memory(state, memory, jnp.ones(10, bool))
    logits, labels, idx = jnp.array(LOGITS), jnp.array(LABELS), jnp.array(INDICES)
    ce = optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
    loss = jax.jit(lambda epoch: fer_loss(logits, labels, idx, state, epoch=epoch))
    for epoch in (0, 1):
        np.testing.assert_allclose(loss(epoch), ce, rtol=1e-7)
    # epoch index 3 of 4 with fer_weight 1: only the KD term is left
    kd = distillation_loss(logits, memory[idx], 5.0).mean()
    np.testing.assert_allclose(loss(3), kd, rtol=1e-6)


def test_flip_counts_and_stats():
    tx = make_fer()
    state, update = tx.init(jnp.zeros(2)), jax.jit(tx.update)
    logits, labels, idx = jnp.array(LOGITS), jnp.array(LABELS), jnp.array(INDICES)
    _, state = update(jnp.zeros(2), state, logits=logits, labels=labels, indices=idx)
    # sample 3 was correct and now is wrong (predicts class 2): a wrongly flipped sample
    flipped = jnp.array([[0.0, 0.0, 3.0], [0.2, 0.1, 1.5]])
    _, state = update(jnp.zeros(2), state, logits=flipped, labels=labels, indices=idx)
    stats = jax.jit(get_fer_stats)(state)
    assert int(stats["batch_wrongly_flipped"]) == 1
    assert float(stats["flip_rate"]) == 0.5  # 1 of the 2 misclassified
    assert float(stats["frac_ever_correct"]) == pytest.approx(0.1)
    confidence = float(jnp.max(fer_state(state).memory[3])) / 10
    assert float(stats["memory_confidence"]) == pytest.approx(confidence)
    assert int(fer_state(state).count) == 2
    with pytest.raises(ValueError, match="no FERState"):
        get_fer_stats(optax.adam(1e-3).init(jnp.zeros(2)))


def test_nonfinite_logits_and_out_of_range_indices_write_nothing():
    tx = make_fer()
    state = tx.init(jnp.zeros(2))
    logits = jnp.array([[jnp.nan, 0.0, -1.0], [3.0, 0.1, 0.0], [3.0, 0.0, 0.0]])
    labels, idx = jnp.array([0, 0, 0]), jnp.array([1, 2, 10])
    _, state = jax.jit(tx.update)(jnp.zeros(2), state, logits=logits, labels=labels, indices=idx)
    after = fer_state(state)
    np.testing.assert_array_equal(after.ever_correct, np.arange(10) == 2)
    assert bool(jnp.all(jnp.isfinite(after.memory)))
    np.testing.assert_array_equal(jnp.sum(after.memory, axis=1) > 0, np.arange(10) == 2)
    assert int(after.batch_wrong) == 1  # the NaN row; index 10 is correct but not stored
    loss = fer_loss(logits[1:], labels[1:], idx[1:], state, epoch=3)
    assert bool(jnp.isfinite(loss))


@pytest.mark.parametrize("bad", [jnp.nan, jnp.inf])
def test_nonfinite_gradient_and_apply_if_finite(bad):
    """A NaN/Inf gradient goes through the base as usual (non-finite in the poisoned
    elements); the memory is still written from the logits. Under apply_if_finite the
    step is skipped: nothing is recorded."""
    params = {"w": jnp.ones(3)}
    nan_grads = {"w": jnp.array([1.0, bad, 0.0])}
    logits, labels, idx = jnp.array(LOGITS), jnp.array(LABELS), jnp.array(INDICES)
    extras = {"logits": logits, "labels": labels, "indices": idx}
    tx = create_fer_optimizer(1e-2, num_classes=3, num_samples=10, num_epochs=3)
    updates, state = jax.jit(tx.update)(nan_grads, tx.init(params), params, **extras)
    np.testing.assert_array_equal(jnp.isfinite(updates["w"]), [True, False, True])
    assert bool(fer_state(state).ever_correct[3])

    guarded = optax.apply_if_finite(tx, max_consecutive_errors=2)
    state, update = guarded.init(params), jax.jit(guarded.update)
    before = state.inner_state
    updates, state = update(nan_grads, state, params, **extras)
    assert all(float(jnp.max(jnp.abs(u))) == 0.0 for u in jax.tree.leaves(updates))
    jax.tree.map(np.testing.assert_array_equal, state.inner_state, before)
    assert not bool(jnp.any(fer_state(state).ever_correct))
    updates, state = update({"w": jnp.ones(3)}, state, params, **extras)
    assert bool(fer_state(state).ever_correct[3]) and int(state.notfinite_count) == 0


def test_zero_gradients_and_jit():
    params = {"w": jnp.zeros((2, 3)), "b": jnp.zeros(0)}
    tx = create_fer_optimizer(1e-2, num_classes=3, num_samples=10, num_epochs=3)
    state = tx.init(params)
    traces = []

    @jax.jit
    def step(state, logits):
        traces.append(None)
        grads = jax.tree.map(jnp.zeros_like, params)
        return tx.update(
            grads,
            state,
            params,
            logits=logits,
            labels=jnp.array(LABELS),
            indices=jnp.array(INDICES),
        )

    for t in range(3):
        updates, state = step(state, jnp.array(LOGITS) * (t + 1))
        assert all(bool(jnp.all(u == 0)) for u in jax.tree.leaves(updates))
    assert len(traces) == 1
    assert bool(jnp.all(jnp.isfinite(fer_state(state).memory)))


def test_missing_extra_arguments():
    tx = make_fer()
    state = tx.init(jnp.zeros(2))
    with pytest.raises(ValueError, match="logits=, labels= and indices="):
        tx.update(jnp.zeros(2), state, logits=jnp.array(LOGITS), labels=jnp.array(LABELS))


@pytest.mark.parametrize(
    "overrides, match",
    [
        ({"memory_size": 1000, "num_samples": 60000}, r"memory_size=1000 .*60000 samples"),
        ({"num_classes": 0}, "num_classes"),
        ({"memory_size": 2.5}, "memory_size"),
        ({"num_epochs": 0}, "num_epochs"),
        ({"fer_weight": 1.5}, "fer_weight"),
        ({"consistency_threshold": -0.1}, "consistency_threshold"),
        ({"temperature": 0.0}, "temperature"),
        ({"warmup_epochs": -1}, "warmup_epochs"),
        ({"warmup_epochs": 0.5}, "warmup_epochs"),
    ],
)
def test_bad_arguments(overrides, match):
    with pytest.raises(ValueError, match=match):
        make_fer(**overrides)


def test_create_fer_optimizer():
    tx = jaxopt_adv.create_fer_optimizer(
        1e-2, 0.3, num_classes=3, num_samples=10, num_epochs=3, base_optimizer=optax.sgd
    )
    state = tx.init({"w": jnp.zeros(2)})
    assert fer_state(state).memory.shape == (10, 3)  # memory_size defaults to num_samples
    assert float(fer_state(state).fer_weight) == pytest.approx(0.3)
    extras = {
        "logits": jnp.array(LOGITS),
        "labels": jnp.array(LABELS),
        "indices": jnp.array(INDICES),
    }
    updates, _ = jax.jit(tx.update)({"w": jnp.ones(2)}, state, **extras)
    np.testing.assert_allclose(updates["w"], -0.01)  # plain SGD
    default = create_fer_optimizer(1e-2, num_classes=3, num_samples=10, num_epochs=3)
    state = default.init({"w": jnp.zeros(2)})
    updates, _ = jax.jit(default.update)({"w": jnp.full(2, 5.0)}, state, **extras)
    np.testing.assert_allclose(updates["w"], -0.01, rtol=1e-5)  # Adam's first step: -lr sign(g)
    with pytest.raises(ValueError, match=r"memory_size=5 is smaller than the dataset \(10"):
        create_fer_optimizer(num_classes=3, num_samples=10, num_epochs=3, memory_size=5)


def test_memory_dtype():
    for param_dtype, expected in [(jnp.bfloat16, jnp.float32), (jnp.float32, jnp.float32)]:
        state = make_fer().init({"w": jnp.zeros(2, param_dtype)})
        assert fer_state(state).memory.dtype == expected
    state = make_fer(memory_dtype=jnp.bfloat16).init({"w": jnp.zeros(2)})
    assert fer_state(state).memory.dtype == jnp.bfloat16
    with precision("float64"):
        state = make_fer().init({"w": jnp.zeros(2, jnp.float64)})
        assert fer_state(state).memory.dtype == jnp.float64


def test_injected_hyperparameters_reach_the_loss():
    """Under inject_hyperparams the state holds the injected values after an update."""
    tx = optax.inject_hyperparams(create_fer_optimizer)(
        learning_rate=1e-2, fer_weight=0.2, num_classes=3, num_samples=10, num_epochs=3
    )
    params = {"w": jnp.zeros(2)}
    extras = {
        "logits": jnp.array(LOGITS),
        "labels": jnp.array(LABELS),
        "indices": jnp.array(INDICES),
    }
    state = tx.init(params)
    assert float(fer_state(state).fer_weight) == pytest.approx(0.2)
    state.hyperparams["fer_weight"] = jnp.asarray(0.7)
    _, state = jax.jit(tx.update)({"w": jnp.ones(2)}, state, params, **extras)
    assert float(fer_state(state).fer_weight) == pytest.approx(0.7)


def test_chain_serialization_and_no_host_transfers():
    """Spec 6's generic checks: inside ``chain(clip, .)``, a flax.serialization round
    trip of the state, and jitted updates without host transfers."""
    from flax import serialization

    params = {"w": jnp.ones(3)}
    fer_tx = create_fer_optimizer(1e-2, num_classes=3, num_samples=10, num_epochs=3)
    tx = optax.chain(optax.clip_by_global_norm(1.0), fer_tx)
    step = jax.jit(tx.update)
    logits, labels, idx = jnp.array(LOGITS), jnp.array(LABELS), jnp.array(INDICES)
    extras = {"logits": logits, "labels": labels, "indices": idx}
    _, state = step({"w": jnp.ones(3)}, tx.init(params), params, **extras)
    restored = serialization.from_state_dict(
        tx.init(params), serialization.to_state_dict(jax.device_get(state))
    )
    restored = jax.device_put(restored)  # checkpoints restore to the host
    grads = {"w": jnp.array([3.0, -1.0, 0.5])}
    with jax.transfer_guard("disallow"):
        expected, state = step(grads, state, params, **extras)
        got, restored = step(grads, restored, params, **extras)
    jax.tree.map(np.testing.assert_array_equal, got, expected)
    jax.tree.map(np.testing.assert_array_equal, restored, state)
    assert bool(fer_state(state).ever_correct[3])
