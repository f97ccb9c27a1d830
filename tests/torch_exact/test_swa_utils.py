"""torch.optim.swa_utils parity: AveragedModel (SWA, EMA, custom averages, buffers),
SWALR and update_bn.

Averaging: a torch twin of the MLP / SmallCNN takes a random walk of >= 20 steps (its
params, and its BatchNorm statistics); after each step torch's ``AveragedModel`` is
updated, the walked weights are loaded into the NNX twin (``load_torch_state_dict``) and
ours is updated from ``nnx.state``; torch's averaged module, loaded into a second NNX
model, must equal our averages after every step (max-norm relative error per leaf,
float64 <= 1e-10, float32 <= 1e-5). SWALR: ``param_groups[i]["lr"]`` before each step
against the schedule under jit (float64 <= 1e-12 relative, float32 <= 1e-6).
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import torch
from flax import nnx
from torch.optim import lr_scheduler as torch_sched
from torch.optim import swa_utils as torch_swa

import jaxopt_adv
from jaxopt_adv.interop import load_torch_state_dict
from jaxopt_adv.models import BatchNorm
from jaxopt_adv.torch import lr_scheduler
from jaxopt_adv.torch.swa_utils import (
    averaged_model,
    get_ema_avg_fn,
    get_ema_multi_avg_fn,
    get_swa_avg_fn,
    get_swa_multi_avg_fn,
    swa_lr,
    update_bn,
)
from tests.harness import TOLERANCE, absolute_error, max_abs, precision
from tests.helpers.lr_schedules import LR, assert_sequence_close, ours_values
from tests.helpers.twins import inputs, make_pair

STEPS = 24


@functools.cache
def jitted_update(averager):
    return jax.jit(averager.update, donate_argnums=0)


def walk(reference: torch.nn.Module, rng: np.random.Generator, buffers: bool) -> None:
    """One random step of every torch param (and BatchNorm statistic)."""
    with torch.no_grad():
        for p in reference.parameters():
            p.add_(torch.as_tensor(rng.normal(scale=0.3, size=p.shape), dtype=p.dtype))
        if buffers:
            for name, b in reference.named_buffers():
                if name.endswith("running_mean"):
                    b.add_(torch.as_tensor(rng.normal(scale=0.3, size=b.shape), dtype=b.dtype))
                elif name.endswith("running_var"):
                    b.mul_(torch.as_tensor(rng.uniform(0.5, 1.5, size=b.shape), dtype=b.dtype))


def leaf_errors(ours, reference) -> float:
    """Largest per-leaf max-norm relative error between two trees of the same structure."""
    errors = [
        absolute_error(o, r) / max(max_abs(r), 1e-30)
        for o, r in zip(jax.tree.leaves(ours), jax.tree.leaves(reference), strict=True)
    ]
    return max(errors, default=0.0)


def run_averaging(
    ours_kwargs, torch_kwargs, *, kind="cnn", dtype="float64", torch_default=None, seed=0
):
    """Max relative error of our averages against torch's over ``STEPS`` updates."""
    with precision(dtype):
        if torch_default is not None:
            torch.set_default_dtype(getattr(torch, torch_default))
        reference, model = make_pair(kind, dtype)
        _, averaged_view = make_pair(kind, dtype)
        torch_averaged = torch_swa.AveragedModel(reference, **torch_kwargs)
        averager = averaged_model(**ours_kwargs)
        state = averager.init(nnx.state(model, nnx.Param), nnx.state(model, nnx.BatchStat))
        update = jitted_update(averager)
        rng = np.random.default_rng(seed)
        worst = 0.0
        for t in range(STEPS):
            walk(reference, rng, buffers=True)
            torch_averaged.update_parameters(reference)
            load_torch_state_dict(model, reference.state_dict())
            state = update(state, nnx.state(model, nnx.Param), nnx.state(model, nnx.BatchStat))
            load_torch_state_dict(averaged_view, torch_averaged.module.state_dict())
            error = max(
                leaf_errors(state.params, nnx.state(averaged_view, nnx.Param)),
                leaf_errors(state.buffers, nnx.state(averaged_view, nnx.BatchStat)),
            )
            assert error <= TOLERANCE[dtype], f"step {t + 1}: relative error {error:.3e}"
            assert int(state.n_averaged) == int(torch_averaged.n_averaged) == t + 1
            worst = max(worst, error)
    return worst


def custom_average(averaged, current, n_averaged):
    return averaged + (current - averaged) * 0.25 / (n_averaged + 1) ** 0.5


def torch_custom_multi(averaged, current, n_averaged):
    for a, c in zip(averaged, current, strict=True):
        a.copy_(0.8 * a + 0.2 * c)


def ours_custom_multi(averaged, current, n_averaged):
    return [0.8 * a + 0.2 * c for a, c in zip(averaged, current, strict=True)]


# name -> (our averaged_model kwargs, torch AveragedModel kwargs)
AVERAGES = {
    "swa": ({}, {}),
    "swa_buffers": ({"use_buffers": True}, {"use_buffers": True}),
    "swa_avg_fn": ({"avg_fn": get_swa_avg_fn()}, {"avg_fn": torch_swa.get_swa_avg_fn()}),
    "ema_0.999": (
        {"multi_avg_fn": get_ema_multi_avg_fn(0.999)},
        {"multi_avg_fn": torch_swa.get_ema_multi_avg_fn(0.999)},
    ),
    "ema_0.9_buffers": (
        {"multi_avg_fn": get_ema_multi_avg_fn(0.9), "use_buffers": True},
        {"multi_avg_fn": torch_swa.get_ema_multi_avg_fn(0.9), "use_buffers": True},
    ),
    "ema_0.3_buffers": (  # weight 0.7 >= 0.5: lerp's other branch
        {"multi_avg_fn": get_ema_multi_avg_fn(0.3), "use_buffers": True},
        {"multi_avg_fn": torch_swa.get_ema_multi_avg_fn(0.3), "use_buffers": True},
    ),
    "ema_0": (
        {"multi_avg_fn": get_ema_multi_avg_fn(0.0)},
        {"multi_avg_fn": torch_swa.get_ema_multi_avg_fn(0.0)},
    ),
    "ema_1": (
        {"multi_avg_fn": get_ema_multi_avg_fn(1.0)},
        {"multi_avg_fn": torch_swa.get_ema_multi_avg_fn(1.0)},
    ),
    "ema_avg_fn_0.95": (
        {"avg_fn": get_ema_avg_fn(0.95), "use_buffers": True},
        {"avg_fn": torch_swa.get_ema_avg_fn(0.95), "use_buffers": True},
    ),
    "custom_avg_fn": ({"avg_fn": custom_average}, {"avg_fn": custom_average}),
    "custom_multi_avg_fn": (
        {"multi_avg_fn": ours_custom_multi, "use_buffers": True},
        {"multi_avg_fn": torch_custom_multi, "use_buffers": True},
    ),
}


@pytest.mark.parametrize(
    "name, kind, dtype",
    [(name, "cnn", "float64") for name in AVERAGES]
    + [("swa", "mlp", "float64"), ("ema_0.999", "mlp", "float64")]
    + [(name, "cnn", "float32") for name in ("swa_buffers", "ema_0.9_buffers", "ema_0.3_buffers")]
    + [("swa", "mlp", "float32")],
)
def test_averaging_matches_torch(name, kind, dtype):
    ours_kwargs, torch_kwargs = AVERAGES[name]
    run_averaging(ours_kwargs, torch_kwargs, kind=kind, dtype=dtype)


@pytest.mark.parametrize("seed", [0, 1])
def test_random_ema_decays_match_torch(seed):
    rng = np.random.default_rng(seed)
    for decay in [float(rng.uniform(0.0, 1.0)), float(1 - 10 ** rng.uniform(-4, -1))]:
        run_averaging(
            {"multi_avg_fn": get_ema_multi_avg_fn(decay), "use_buffers": bool(seed)},
            {"multi_avg_fn": torch_swa.get_ema_multi_avg_fn(decay), "use_buffers": bool(seed)},
            seed=seed + 10,
        )


@pytest.mark.parametrize("torch_default", ["float32", "float64"])
def test_swa_multi_avg_fn_rounds_its_weight_as_torch(torch_default):
    """torch's lerp weight ``1 / (n + 1)`` is a tensor of torch's default dtype: in float32
    it moves a float64 average by ~1e-8, far beyond the 1e-10 tolerance. (Params only:
    torch's function fails on the integer ``num_batches_tracked`` buffer.)"""
    weight_dtype = getattr(jnp, torch_default)
    torch_kwargs = {"multi_avg_fn": torch_swa.get_swa_multi_avg_fn()}
    error = run_averaging(
        {"multi_avg_fn": get_swa_multi_avg_fn(weight_dtype=weight_dtype)},
        torch_kwargs,
        torch_default=torch_default,
    )
    assert error <= 1e-10
    if torch_default == "float32":  # the exact weight misses torch's rounding
        exact = get_swa_multi_avg_fn(weight_dtype=jnp.float64)
        with pytest.raises(AssertionError, match="relative error"):
            run_averaging({"multi_avg_fn": exact}, torch_kwargs, torch_default="float32")


def test_buffers_are_copied_without_use_buffers():
    averager = averaged_model(multi_avg_fn=get_ema_multi_avg_fn(0.5))
    params, buffers = {"w": jnp.zeros(3)}, {"mean": jnp.zeros(3)}
    state = averager.init(params, buffers)
    for value in (1.0, 3.0):
        state = averager.update(state, {"w": jnp.full(3, value)}, {"mean": jnp.full(3, value)})
    np.testing.assert_array_equal(state.params["w"], np.full(3, 2.0))  # 1, then (1 + 3) / 2
    np.testing.assert_array_equal(state.buffers["mean"], np.full(3, 3.0))  # the model's


def test_training_loop_with_jit_and_donation():
    """As in the module docstring: params, optimizer state and averages all donated."""
    tx = jaxopt_adv.torch.sgd(0.1, momentum=0.9)
    swa = averaged_model()
    params = {"w": jnp.arange(4.0), "b": jnp.ones(())}
    opt_state, swa_state = tx.init(params), swa.init(params)

    @functools.partial(jax.jit, donate_argnums=(0, 1, 2))
    def train_step(params, opt_state, swa_state, target):
        grads = jax.grad(lambda p: sum(jnp.sum((x - target) ** 2) for x in jax.tree.leaves(p)))(
            params
        )
        updates, opt_state = tx.update(grads, opt_state, params)
        params = optax.apply_updates(params, updates)
        return params, opt_state, swa.update(swa_state, params)

    history = []
    for t in range(5):
        params, opt_state, swa_state = train_step(params, opt_state, swa_state, float(t))
        history.append(jax.tree.map(np.asarray, params))
    expected = jax.tree.map(lambda *xs: np.mean(xs, axis=0), *history)
    for key in params:
        np.testing.assert_allclose(swa_state.params[key], expected[key], rtol=1e-6)
    assert int(swa_state.n_averaged) == 5


def test_init_copies_so_donating_params_keeps_the_averages():
    params = {"w": jnp.arange(3.0)}
    state = averaged_model().init(params)
    jax.jit(lambda p: jax.tree.map(lambda x: x + 1, p), donate_argnums=0)(params)
    np.testing.assert_array_equal(state.params["w"], np.arange(3.0))


def test_n_averaged_is_torch_long_with_x64():
    with precision("float64"):
        state = averaged_model().init({"w": jnp.zeros(2)})
        assert state.n_averaged.dtype == jnp.int64
    assert torch_swa.AveragedModel(torch.nn.Linear(1, 1)).n_averaged.dtype == torch.long


# ----------------------------------------------------------------------------------- SWALR


def torch_lrs(num_steps, groups, **kwargs):
    """``param_groups[i]["lr"]`` before each of ``num_steps`` SWALR-driven steps."""
    params = [torch.zeros(2, requires_grad=True) for _ in groups]
    optimizer = torch.optim.SGD(
        [{"params": [p], "lr": lr} for p, (lr, _) in zip(params, groups, strict=True)]
    )
    swa_lrs = [s for _, s in groups]
    scheduler = torch_swa.SWALR(
        optimizer, swa_lr=swa_lrs if len(groups) > 1 else swa_lrs[0], **kwargs
    )
    values = []
    for _ in range(num_steps):
        values.append([g["lr"] for g in optimizer.param_groups])
        for p in params:
            p.grad = torch.ones(2)
        optimizer.step()
        scheduler.step()
    return np.array(values).T


SWALR_CASES = {
    "cos_default": (LR, 0.05, {}),
    "linear_5": (LR, 0.01, {"anneal_epochs": 5, "anneal_strategy": "linear"}),
    "cos_20_up": (0.01, 0.3, {"anneal_epochs": 20, "anneal_strategy": "cos"}),
    "linear_1": (LR, 0.02, {"anneal_epochs": 1, "anneal_strategy": "linear"}),
    "zero_epochs": (LR, 0.02, {"anneal_epochs": 0}),
    "to_zero": (LR, 0.0, {"anneal_epochs": 7}),
    "from_zero": (0.0, 0.2, {"anneal_epochs": 3, "anneal_strategy": "linear"}),
}


@pytest.mark.parametrize(
    "name, dtype, tolerance",
    [(name, "float64", 1e-12) for name in SWALR_CASES]
    + [(name, "float32", 1e-6) for name in ("cos_default", "linear_5")],
)
def test_swa_lr_matches_torch(name, dtype, tolerance):
    lr, final, kwargs = SWALR_CASES[name]
    with precision(dtype):
        values = ours_values(swa_lr(lr, final, **kwargs), 40)
        assert values.dtype == np.dtype(dtype)
    assert_sequence_close(values, torch_lrs(40, [(lr, final)], **kwargs)[0], tolerance)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_swa_lr_random_arguments_match_torch(seed):
    rng = np.random.default_rng(seed)
    for _ in range(4):
        lr, final = 10 ** rng.uniform(-4, 0, size=2)
        kwargs = {
            "anneal_epochs": int(rng.integers(0, 30)),
            "anneal_strategy": ["cos", "linear"][int(rng.integers(0, 2))],
        }
        with precision("float64"):
            values = ours_values(swa_lr(lr, final, **kwargs), 40)
        assert_sequence_close(values, torch_lrs(40, [(lr, final)], **kwargs)[0], 1e-12)


def test_swa_lr_per_group_is_one_schedule_per_group():
    groups = [(0.1, 0.05), (0.02, 0.3)]
    reference = torch_lrs(30, groups, anneal_epochs=8, anneal_strategy="linear")
    for (lr, final), expected in zip(groups, reference, strict=True):
        with precision("float64"):
            values = ours_values(swa_lr(lr, final, anneal_epochs=8, anneal_strategy="linear"), 30)
        assert_sequence_close(values, expected, 1e-12)


@pytest.mark.parametrize("swa_start", [0, 9])
def test_swa_lr_after_a_base_schedule_as_torch_loop(swa_start):
    """torch's documented loop: ``if epoch > swa_start: swa_scheduler.step() else:
    scheduler.step()``, composed here with ``optax.join_schedules``."""
    epochs = 40
    param = torch.zeros(2, requires_grad=True)
    optimizer = torch.optim.SGD([param], lr=LR)
    scheduler = torch_sched.CosineAnnealingLR(optimizer, T_max=30)
    swa_scheduler = torch_swa.SWALR(optimizer, swa_lr=0.02, anneal_epochs=6)
    expected = []
    for epoch in range(epochs):
        expected.append(optimizer.param_groups[0]["lr"])
        param.grad = torch.ones(2)
        optimizer.step()
        if epoch > swa_start:
            swa_scheduler.step()
        else:
            scheduler.step()
    with precision("float64"):
        base = lr_scheduler.cosine_annealing_lr(LR, T_max=30)
        m = swa_start + 1
        schedule = optax.join_schedules([base, swa_lr(base(m), 0.02, anneal_epochs=6)], [m])
        values = ours_values(schedule, epochs)
    assert_sequence_close(values, expected, 1e-12)


# -------------------------------------------------------------------------------- update_bn


def loaders(dtype, num_batches=5, batch=6):
    rng = np.random.default_rng(7)
    torch_loader, ours_loader = [], []
    for i in range(num_batches):
        x = (rng.normal(loc=0.5, size=(batch, 1, 8, 8)) * (1 + i)).astype(dtype)
        label = np.zeros(batch, np.int64)
        torch_loader.append((torch.as_tensor(x), torch.as_tensor(label)))
        ours_loader.append((x.transpose(0, 2, 3, 1), label) if i % 2 else x.transpose(0, 2, 3, 1))
    return torch_loader, ours_loader


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("training", [True, False])
def test_update_bn_matches_torch(dtype, training):
    with precision(dtype):
        reference, model = make_pair("cnn", dtype)
        reference.train(training)
        model.train() if training else model.eval()
        torch_loader, ours_loader = loaders(dtype)
        torch_swa.update_bn(torch_loader, reference)
        update_bn(ours_loader, model)
        _, expected = make_pair("cnn", dtype)
        load_torch_state_dict(expected, reference.state_dict())
        error = leaf_errors(nnx.state(model, nnx.BatchStat), nnx.state(expected, nnx.BatchStat))
        assert error <= TOLERANCE[dtype], error
        assert leaf_errors(nnx.state(model, nnx.Param), nnx.state(expected, nnx.Param)) == 0.0
    assert reference.training is training
    for layer in (model.features[1], model.features[5]):
        assert layer.use_running_average is not training
        assert layer.momentum == 0.1


def test_update_bn_with_an_empty_loader_resets_the_statistics_as_torch():
    reference, model = make_pair("cnn", "float32")
    torch_swa.update_bn([], reference)
    update_bn([], model)
    bn = reference.features[1]
    np.testing.assert_array_equal(model.features[1].mean[...], bn.running_mean.numpy())
    np.testing.assert_array_equal(model.features[1].var[...], bn.running_var.numpy())
    np.testing.assert_array_equal(model.features[1].var[...], np.ones(4))


def host_values(model):
    """Every variable of the model (PRNG keys as their data) as NumPy arrays."""

    def value(x):
        return np.asarray(
            jax.random.key_data(x) if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key) else x
        )

    return jax.tree.map(value, nnx.state(model))


def test_update_bn_leaves_a_model_without_batchnorm_alone():
    _, model = make_pair("mlp", "float32")
    before = host_values(model)
    x, _ = inputs("mlp", "float32")

    def loader():
        yield x
        raise AssertionError("update_bn iterated the loader of a model without BatchNorm")

    update_bn(loader(), model)
    jax.tree.map(np.testing.assert_array_equal, before, host_values(model))


def test_update_bn_averages_nnx_batchnorm_statistics():
    """nnx.BatchNorm keeps its own rule (biased variance): the cumulative average of it."""
    layer = nnx.BatchNorm(3, momentum=0.9, rngs=nnx.Rngs(0))
    layer.eval()
    rng = np.random.default_rng(0)
    batches = [rng.normal(loc=i, size=(8, 3)).astype(np.float32) for i in range(4)]
    update_bn(batches, layer)
    np.testing.assert_allclose(layer.mean[...], np.mean([b.mean(0) for b in batches], 0), rtol=1e-5)
    np.testing.assert_allclose(layer.var[...], np.mean([b.var(0) for b in batches], 0), rtol=1e-5)
    assert layer.momentum == 0.9 and layer.use_running_average


def test_update_bn_cumulative_average_on_our_batchnorm():
    rng = np.random.default_rng(1)
    batches = [rng.normal(loc=i, size=(5, 2)) for i in range(3)]
    with precision("float64"):
        layer = BatchNorm(2, momentum=0.3, param_dtype=jnp.float64)
        update_bn(batches, layer)
        np.testing.assert_allclose(
            layer.mean[...], np.mean([b.mean(0) for b in batches], 0), rtol=1e-14
        )
        np.testing.assert_allclose(
            layer.var[...], np.mean([b.var(0, ddof=1) for b in batches], 0), rtol=1e-14
        )


# ------------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    "make, error, message",
    [
        (lambda: get_ema_multi_avg_fn(1.5), ValueError, "decay"),
        (lambda: get_ema_multi_avg_fn(-0.1), ValueError, "decay"),
        (lambda: get_ema_avg_fn(2.0), ValueError, "decay"),
        (lambda: get_swa_multi_avg_fn(weight_dtype=jnp.int32), TypeError, "weight_dtype"),
        (
            lambda: averaged_model(get_swa_avg_fn(), get_swa_multi_avg_fn()),
            ValueError,
            "Only one of avg_fn and multi_avg_fn",
        ),
        (lambda: averaged_model(avg_fn=0.5), TypeError, "avg_fn"),
        (lambda: averaged_model(multi_avg_fn="ema"), TypeError, "multi_avg_fn"),
        (lambda: averaged_model(use_buffers=1), TypeError, "use_buffers"),
        (lambda: averaged_model().init({"n": jnp.zeros(2, jnp.int32)}), TypeError, "params"),
        (
            lambda: averaged_model(use_buffers=True).init(
                {"w": jnp.zeros(2)}, {"n": jnp.zeros(2, jnp.int32)}
            ),
            TypeError,
            "buffers",
        ),
        (lambda: swa_lr(0.1, 0.05, anneal_strategy="cosine"), ValueError, "anneal_strategy"),
        (lambda: swa_lr(0.1, 0.05, anneal_epochs=-1), ValueError, "anneal_epochs"),
        (lambda: swa_lr(0.1, 0.05, anneal_epochs=2.5), ValueError, "anneal_epochs"),
        (lambda: swa_lr(0.1, -0.05), ValueError, "swa_lr"),
        (lambda: swa_lr(-0.1, 0.05), ValueError, "learning_rate"),
        (lambda: swa_lr(lambda k: 0.1, 0.05), TypeError, "join_schedules"),
        (lambda: swa_lr(0.1, lambda k: 0.05), TypeError, "swa_lr"),
        (lambda: update_bn([], {"w": jnp.zeros(2)}), TypeError, "model"),
    ],
)
def test_bad_arguments(make, error, message):
    with pytest.raises(error, match=message):
        make()


def test_update_checks_the_trees_against_init():
    averager = averaged_model()
    state = averager.init({"w": jnp.zeros(2)}, {"mean": jnp.zeros(2)})
    with pytest.raises(ValueError, match="params must have the tree structure"):
        averager.update(state, {"v": jnp.zeros(2)}, {"mean": jnp.zeros(2)})
    with pytest.raises(ValueError, match=r"params\['w'\] has shape \(3,\)"):
        averager.update(state, {"w": jnp.zeros(3)}, {"mean": jnp.zeros(2)})
    with pytest.raises(ValueError, match="buffers must have the tree structure"):
        averager.update(state, {"w": jnp.zeros(2)})


@pytest.mark.parametrize(
    "make",
    [
        lambda o: torch_swa.get_ema_multi_avg_fn(1.5),
        lambda o: torch_swa.SWALR(o, 0.05, anneal_strategy="cosine"),
        lambda o: torch_swa.SWALR(o, 0.05, anneal_epochs=-1),
        lambda o: torch_swa.SWALR(o, 0.05, anneal_epochs=2.5),
    ],
)
def test_torch_rejects_what_we_reject(make):
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=LR)
    with pytest.raises(ValueError):
        make(optimizer)


def test_exported_from_jaxopt_adv_torch():
    from jaxopt_adv.torch import swa_utils

    for name in swa_utils.__all__:
        assert getattr(jaxopt_adv.torch, name) is getattr(swa_utils, name)
    assert "swa_utils" in jaxopt_adv.torch.__all__
