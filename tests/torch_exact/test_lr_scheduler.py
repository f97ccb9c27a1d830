"""torch.optim.lr_scheduler parity for jaxopt_adv.torch.lr_scheduler.

Every schedule is checked twice against torch's own scheduler stepped once after every
``optimizer.step()``: the lr sequence (float64 <= 1e-12 relative, float32 <= 1e-6) and a
parity run of parameters through the harness, where torch's scheduler drives torch's
optimizer and ours is an optax schedule inside the torch-exact optimizer.
"""

import math
import warnings
from fractions import Fraction

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import torch
from torch.optim import lr_scheduler as torch_sched

import jaxopt_adv
from jaxopt_adv.torch.lr_scheduler import (
    ReduceLROnPlateauState,
    cosine_annealing_lr,
    exponential_lr,
    linear_lr,
    multistep_lr,
    one_cycle_lr,
    one_cycle_momentum,
    reduce_lr_on_plateau,
    step_lr,
)
from tests.harness import gradient_stream, make_params, precision, run_parity
from tests.helpers.lr_schedules import (
    LR,
    assert_sequence_close,
    ours_values,
    plateau_losses,
    torch_values,
    with_scheduler,
)

# name -> (our factory(lr) -> schedule, torch factory(optimizer) -> scheduler, steps)
SCHEDULES = {
    "step_3_half": (
        lambda lr: step_lr(lr, 3, 0.5),
        lambda o: torch_sched.StepLR(o, 3, 0.5),
        20,
    ),
    "step_1": (lambda lr: step_lr(lr, 1, 0.9), lambda o: torch_sched.StepLR(o, 1, 0.9), 20),
    "step_7_default_gamma": (lambda lr: step_lr(lr, 7), lambda o: torch_sched.StepLR(o, 7), 22),
    "multistep": (
        lambda lr: multistep_lr(lr, [2, 5, 9], 0.5),
        lambda o: torch_sched.MultiStepLR(o, [2, 5, 9], 0.5),
        20,
    ),
    "multistep_zero_and_repeat": (
        lambda lr: multistep_lr(lr, [0, 4, 4, 11], 0.3),
        lambda o: torch_sched.MultiStepLR(o, [0, 4, 4, 11], 0.3),
        20,
    ),
    "multistep_unsorted": (
        lambda lr: multistep_lr(lr, [10, 3]),
        lambda o: torch_sched.MultiStepLR(o, [10, 3]),
        20,
    ),
    "exponential": (
        lambda lr: exponential_lr(lr, 0.9),
        lambda o: torch_sched.ExponentialLR(o, 0.9),
        20,
    ),
    "exponential_half": (
        lambda lr: exponential_lr(lr, 0.5),
        lambda o: torch_sched.ExponentialLR(o, 0.5),
        30,
    ),
    "exponential_growth": (
        lambda lr: exponential_lr(lr, 1.05),
        lambda o: torch_sched.ExponentialLR(o, 1.05),
        20,
    ),
    "cosine_T5": (
        lambda lr: cosine_annealing_lr(lr, 5),
        lambda o: torch_sched.CosineAnnealingLR(o, 5),
        3 * 5 + 3,
    ),
    "cosine_T7_eta_min": (
        lambda lr: cosine_annealing_lr(lr, 7, 0.01),
        lambda o: torch_sched.CosineAnnealingLR(o, 7, 0.01),
        3 * 7 + 3,
    ),
    "cosine_T1": (
        lambda lr: cosine_annealing_lr(lr, 1),
        lambda o: torch_sched.CosineAnnealingLR(o, 1),
        8,
    ),
    "cosine_T40_eta_min": (
        lambda lr: cosine_annealing_lr(lr, 40, 1e-3),
        lambda o: torch_sched.CosineAnnealingLR(o, 40, 1e-3),
        3 * 40 + 3,
    ),
    "linear_default": (linear_lr, torch_sched.LinearLR, 12),
    "linear_decay": (
        lambda lr: linear_lr(lr, 1.0, 0.1, 8),
        lambda o: torch_sched.LinearLR(o, 1.0, 0.1, 8),
        14,
    ),
    "linear_to_zero": (
        lambda lr: linear_lr(lr, 0.5, 0.0, 3),
        lambda o: torch_sched.LinearLR(o, 0.5, 0.0, 3),
        8,
    ),
    "linear_zero_iters": (
        lambda lr: linear_lr(lr, 0.25, 1.0, 0),
        lambda o: torch_sched.LinearLR(o, 0.25, 1.0, 0),
        6,
    ),
}

# (total_steps, pct_start, anneal_strategy, three_phase, div_factor, final_div_factor)
ONE_CYCLE = {
    "cos": (20, 0.3, "cos", False, 25.0, 1e4),
    "linear": (23, 0.25, "linear", False, 10.0, 100.0),
    "three_phase_cos": (30, 0.3, "cos", True, 25.0, 1e4),
    "three_phase_linear": (21, 0.4, "linear", True, 5.0, 1e3),
    "pct_29_of_100": (100, 0.29, "cos", False, 25.0, 1e4),  # 0.29 * 100 = 28.999999999999996
    "pct_0": (12, 0.0, "cos", False, 25.0, 1e4),  # starts in the second phase
    "pct_1": (12, 1.0, "linear", False, 25.0, 1e4),  # zero-length last phase
    "short": (3, 0.5, "cos", True, 25.0, 1e4),
}


def one_cycle_args(name):
    total, pct, strategy, three, div, final_div = ONE_CYCLE[name]
    ours = {
        "total_steps": total,
        "pct_start": pct,
        "anneal_strategy": strategy,
        "three_phase": three,
    }
    return ours, {"div_factor": div, "final_div_factor": final_div}


def torch_one_cycle(name, max_lr=LR, **kwargs):
    ours, factors = one_cycle_args(name)
    return lambda o: torch_sched.OneCycleLR(o, max_lr, **ours, **factors, **kwargs)


# float32 on one configuration per schedule (the compilations dominate the test time).
FLOAT32_SCHEDULES = [
    "step_3_half",
    "multistep_zero_and_repeat",
    "exponential_half",
    "cosine_T7_eta_min",
    "cosine_T40_eta_min",
    "linear_to_zero",
]
SEQUENCE_CASES = [(name, "float64", 1e-12) for name in SCHEDULES] + [
    (name, "float32", 1e-6) for name in FLOAT32_SCHEDULES
]


@pytest.mark.parametrize("name, dtype, tolerance", SEQUENCE_CASES)
def test_lr_sequence_matches_torch(name, dtype, tolerance):
    ours_factory, torch_factory, steps = SCHEDULES[name]
    with precision(dtype):
        values = ours_values(ours_factory(LR), steps)
        assert values.dtype == np.dtype(dtype)
    assert_sequence_close(values, torch_values(torch_factory, steps)[0], tolerance)


@pytest.mark.parametrize("name", SCHEDULES)
def test_sgd_parity_with_torch_scheduler(name):
    ours_factory, torch_factory, steps = SCHEDULES[name]
    run_parity(
        jaxopt_adv.torch.sgd(ours_factory(LR), momentum=0.9, weight_decay=1e-3),
        with_scheduler(torch.optim.SGD, torch_factory, lr=LR, momentum=0.9, weight_decay=1e-3),
        num_steps=steps,
        state_map={"trace": "momentum_buffer"},
    )


@pytest.mark.parametrize("name", ["cosine_T7_eta_min"])
def test_adam_parity_with_torch_scheduler_float32(name):
    ours_factory, torch_factory, steps = SCHEDULES[name]
    run_parity(
        jaxopt_adv.torch.adam(ours_factory(LR)),
        with_scheduler(torch.optim.Adam, torch_factory, lr=LR),
        dtype="float32",
        num_steps=steps,
        state_map={"mu": "exp_avg", "nu": "exp_avg_sq"},
    )


def test_cosine_keeps_cycling_past_t_max_unlike_optax():
    """torch (and ours) go back up after T_max; optax's cosine decay stays at eta_min."""
    steps = 6 * 10 + 1
    reference = torch_values(lambda o: torch_sched.CosineAnnealingLR(o, 10, 1e-3), steps)[0]
    with precision("float64"):
        ours = ours_values(cosine_annealing_lr(LR, 10, 1e-3), steps)
        optax_values = ours_values(optax.cosine_decay_schedule(LR, 10, alpha=1e-3 / LR), steps)
    assert_sequence_close(ours, reference, 1e-12)
    assert reference[20] == pytest.approx(LR) and reference[30] == pytest.approx(1e-3)
    assert np.max(np.abs(optax_values[:11] - reference[:11])) < 1e-15
    assert np.max(np.abs(optax_values - reference)) > 0.09


# ----------------------------------------------------------------------------- OneCycle


@pytest.mark.parametrize(
    "name, dtype, tolerance",
    [(name, "float64", 1e-12) for name in ONE_CYCLE]
    + [(name, "float32", 1e-6) for name in ["cos", "three_phase_linear", "pct_1", "short"]],
)
def test_one_cycle_sequence_matches_torch(name, dtype, tolerance):
    """lr and momentum at every step torch allows, 0..total_steps."""
    ours, factors = one_cycle_args(name)
    total = ours["total_steps"]
    # torch can evaluate step total_steps, except where its last phase has zero length.
    steps = total if ours["pct_start"] == 1.0 else total + 1
    lrs, momenta = torch_values(torch_one_cycle(name), steps, momentum=0.9)
    lr_schedule = one_cycle_lr(LR, **ours, **factors)
    momentum_schedule = one_cycle_momentum(**ours)
    with precision(dtype):  # one compilation for both
        our_lrs, our_momenta = ours_values(
            lambda k: jnp.stack([lr_schedule(k), momentum_schedule(k)]), 2 * total + 2
        ).T
    assert_sequence_close(our_lrs[:steps], lrs, tolerance)
    assert_sequence_close(our_momenta[:steps], momenta, tolerance)
    # Past torch's range (it raises), the schedules hold the final values.
    final_lr = LR / factors["div_factor"] / factors["final_div_factor"]
    np.testing.assert_allclose(our_lrs[steps:], final_lr, rtol=1e-6)
    np.testing.assert_allclose(our_momenta[steps:], 0.95, rtol=1e-6)


def test_one_cycle_phase_boundary_uses_torch_float_end():
    """0.29 * 100 - 1 = 27.999999999999996: step 28 is already in the second phase."""
    lrs, _ = torch_values(torch_one_cycle("pct_29_of_100"), 30)
    with precision("float32"):
        ours = ours_values(one_cycle_lr(LR, 100, 0.29), 30)
    assert lrs[27] < lrs[28] == pytest.approx(LR) and lrs[29] < LR  # peak at step 28
    assert_sequence_close(ours, lrs, 1e-6)


def test_one_cycle_linear_final_lr_is_exact_where_torch_rounds():
    """Default factors, linear: torch's ``(end - start) * pct + start`` cancels near the
    final lr (max_lr / 2.5e5); ours stays at the exact value, torch is 1e-11 off it."""
    total, max_lr = 50, 0.3
    lrs, _ = torch_values(
        lambda o: torch_sched.OneCycleLR(o, max_lr, total, anneal_strategy="linear"), total
    )
    start, end = float(0.3 * total) - 1, total - 1
    v0, v1 = Fraction(max_lr), Fraction(max_lr / 25.0 / 1e4)
    exact = np.array(
        [float(v0 + (v1 - v0) * (Fraction(k) - Fraction(start)) / (end - Fraction(start)))
         for k in range(int(start) + 1, total)]
    )  # fmt: skip
    with precision("float64"):
        ours = ours_values(one_cycle_lr(max_lr, total, anneal_strategy="linear"), total)
    decay = slice(int(start) + 1, total)
    assert_sequence_close(ours[decay], exact, 1e-14)
    torch_error = np.max(np.abs(lrs[decay] - exact) / exact)
    assert 1e-13 < torch_error < 5e-11
    assert_sequence_close(ours, lrs, 5e-11)


def test_one_cycle_differs_from_optax():
    lrs, _ = torch_values(torch_one_cycle("cos"), 20)
    with precision("float64"):
        optax_values = ours_values(optax.cosine_onecycle_schedule(20, LR, 0.3, 25.0, 1e4), 20)
    assert np.max(np.abs(optax_values - lrs)) / LR > 1e-2


@pytest.mark.parametrize(
    "name, dtype",
    [("cos", "float64"), ("three_phase_linear", "float64"), ("pct_1", "float64"),
     ("cos", "float32")],
)  # fmt: skip
def test_one_cycle_sgd_momentum_parity(name, dtype):
    ours, factors = one_cycle_args(name)
    ours_opt = optax.inject_hyperparams(jaxopt_adv.torch.sgd)(
        learning_rate=one_cycle_lr(LR, **ours, **factors),
        momentum=one_cycle_momentum(**ours, base_momentum=0.8, max_momentum=0.9),
        weight_decay=1e-3,
    )
    torch_factory = torch_one_cycle(name, base_momentum=0.8, max_momentum=0.9)
    total = ours["total_steps"]
    run_parity(
        ours_opt,
        with_scheduler(
            torch.optim.SGD,
            torch_factory,
            scheduler_steps=total - 1,  # the lr of step total_steps is never used
            lr=LR,
            momentum=0.5,
            weight_decay=1e-3,
        ),
        dtype=dtype,
        num_steps=ours["total_steps"],  # torch's scheduler raises after total_steps steps
        state_map={"trace": "momentum_buffer"},
    )


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("name", ["cos", "three_phase_cos"])
def test_one_cycle_adam_beta1_parity(name, dtype):
    """torch's OneCycleLR writes the cycled momentum into Adam's betas[0].

    b2 and eps stay static: injected as float32 arrays, ``1 - b2`` would be 4.7e-5 off
    the double torch uses (``1 - float32(0.999)``).
    """
    ours, factors = one_cycle_args(name)
    ours_opt = optax.inject_hyperparams(jaxopt_adv.torch.adam, static_args=("b2", "eps"))(
        learning_rate=one_cycle_lr(LR, **ours, **factors),
        b1=one_cycle_momentum(**ours),
    )
    betas = torch_values(torch_one_cycle(name), 5, torch.optim.Adam)[1]
    assert betas[0] == 0.95 and betas[4] < 0.95  # torch does cycle beta1
    run_parity(
        ours_opt,
        with_scheduler(torch.optim.Adam, torch_one_cycle(name), lr=LR),
        dtype=dtype,
        num_steps=ours["total_steps"],
        state_map={"mu": "exp_avg", "nu": "exp_avg_sq"},
    )


def test_one_cycle_without_momentum_cycling_parity():
    ours, factors = one_cycle_args("linear")
    run_parity(
        jaxopt_adv.torch.sgd(one_cycle_lr(LR, **ours, **factors), momentum=0.9),
        with_scheduler(
            torch.optim.SGD, torch_one_cycle("linear", cycle_momentum=False), lr=LR, momentum=0.9
        ),
        num_steps=ours["total_steps"],
        state_map={"trace": "momentum_buffer"},
    )


# ----------------------------------------------------------------------- ReduceLROnPlateau


# name -> (our kwargs, torch kwargs, loss sign (+1 min, -1 max)); base lr LR.
PLATEAU = {
    "min_rel": (
        {"factor": 0.5, "patience": 2, "threshold": 1e-2},
        {"factor": 0.5, "patience": 2, "threshold": 1e-2},
        1,
    ),
    "min_abs_cooldown_floor": (
        {"factor": 0.3, "patience": 1, "threshold": 0.05, "threshold_mode": "abs",
         "cooldown": 3, "min_scale": 0.05},
        {"factor": 0.3, "patience": 1, "threshold": 0.05, "threshold_mode": "abs",
         "cooldown": 3, "min_lr": 0.05 * LR},
        1,
    ),
    "max_rel_cooldown": (
        {"mode": "max", "factor": 0.7, "patience": 3, "cooldown": 1, "threshold": 1e-3},
        {"mode": "max", "factor": 0.7, "patience": 3, "cooldown": 1, "threshold": 1e-3},
        -1,
    ),
    "max_abs": (
        {"mode": "max", "factor": 0.5, "patience": 0, "threshold": 0.01,
         "threshold_mode": "abs", "cooldown": 2},
        {"mode": "max", "factor": 0.5, "patience": 0, "threshold": 0.01,
         "threshold_mode": "abs", "cooldown": 2},
        -1,
    ),
    "defaults": ({}, {}, 1),
}  # fmt: skip


def run_plateau(ours_kwargs, torch_kwargs, losses, *, dtype="float64", lr=LR, base=None):
    """Our chain and torch's SGD + ReduceLROnPlateau over the harness gradient stream.

    Returns the max relative parameter error, our lrs and torch's lrs (per step), and the
    number of torch steps spent in cooldown.
    """
    stream = gradient_stream(len(losses))
    start = make_params()
    names = list(start)
    sgd_kwargs = {"momentum": 0.9, "weight_decay": 1e-3}
    plateau = reduce_lr_on_plateau(
        **ours_kwargs, **({} if base is None else {"base_learning_rate": base})
    )
    ours = optax.chain(jaxopt_adv.torch.sgd(lr, **sgd_kwargs), plateau)
    errors, our_lrs, torch_lrs, cooldown_steps = [], [], [], 0
    with precision(dtype):
        params = {k: jnp.asarray(v, dtype) for k, v in start.items()}
        state = ours.init(params)

        @jax.jit
        def step(grads, state, params, loss):
            updates, state = ours.update(grads, state, params, value=loss)
            return optax.apply_updates(params, updates), state

        t_params = [torch.tensor(start[k], dtype=getattr(torch, dtype)) for k in names]
        for p in t_params:
            p.requires_grad_(True)
        optimizer = torch.optim.SGD(t_params, lr=lr, **sgd_kwargs)
        scheduler = torch_sched.ReduceLROnPlateau(optimizer, **torch_kwargs)
        for g, loss in zip(stream, losses, strict=True):
            torch_lrs.append(optimizer.param_groups[0]["lr"])
            our_lrs.append(lr * float(state[1].scale))
            params, state = step({k: jnp.asarray(v, dtype) for k, v in g.items()}, state,
                                 params, loss)  # fmt: skip
            for p, k in zip(t_params, names, strict=True):
                p.grad = torch.tensor(g[k], dtype=p.dtype)
            optimizer.step()
            scheduler.step(loss)
            cooldown_steps += scheduler.in_cooldown
            ps = state[1]
            assert isinstance(ps, ReduceLROnPlateauState)
            assert int(ps.num_bad_epochs) == scheduler.num_bad_epochs
            assert int(ps.cooldown_counter) == scheduler.cooldown_counter
            assert int(ps.count) == scheduler.last_epoch
            assert float(ps.best) == pytest.approx(scheduler.best, rel=1e-6)
            scale = max(np.max(np.abs(start[k])) for k in names)
            errors.append(
                max(np.max(np.abs(np.asarray(params[k]) - p.detach().numpy())) for p, k in
                    zip(t_params, names, strict=True)) / scale
            )  # fmt: skip
    return max(errors), np.array(our_lrs), np.array(torch_lrs), cooldown_steps


@pytest.mark.parametrize("name", PLATEAU)
def test_reduce_lr_on_plateau_matches_torch(name):
    ours_kwargs, torch_kwargs, sign = PLATEAU[name]
    losses = [sign * x for x in plateau_losses()]
    error, our_lrs, torch_lrs, cooldown_steps = run_plateau(ours_kwargs, torch_kwargs, losses)
    assert error <= 1e-10
    assert_sequence_close(our_lrs, torch_lrs, 1e-12)
    reductions = int(np.sum(np.diff(torch_lrs) < 0))
    assert reductions >= (1 if name == "defaults" else 3), torch_lrs  # patience 10: once
    if ours_kwargs.get("cooldown"):
        assert cooldown_steps > 0
    if "min_scale" in ours_kwargs:
        assert torch_lrs[-1] == pytest.approx(0.05 * LR)  # the floor is reached


def test_reduce_lr_on_plateau_float32():
    ours_kwargs, torch_kwargs, sign = PLATEAU["min_rel"]
    error, our_lrs, torch_lrs, _ = run_plateau(
        ours_kwargs, torch_kwargs, plateau_losses(), dtype="float32"
    )
    assert error <= 1e-5
    assert_sequence_close(our_lrs, torch_lrs, 1e-6)


def test_reduce_lr_on_plateau_eps_rule_needs_the_base_lr():
    """torch stops reducing once old_lr - new_lr <= eps (absolute)."""
    lr = 1e-3
    losses = [1.0] + [2.0] * 11  # patience 0: a reduction after every step from step 1 on
    kwargs = {"factor": 0.1, "patience": 0}
    error, our_lrs, torch_lrs, _ = run_plateau(kwargs, kwargs, losses, lr=lr, base=lr)
    assert error <= 1e-10
    assert_sequence_close(our_lrs, torch_lrs, 1e-12)
    assert torch_lrs[-1] == pytest.approx(1e-8)  # 1e-8 -> 1e-9 would change it by < eps
    # With the default base_learning_rate=1 the rule acts on the scale: it goes lower.
    _, default_lrs, _, _ = run_plateau(kwargs, kwargs, losses, lr=lr)
    assert default_lrs[-1] < 1e-10


def test_reduce_lr_on_plateau_loss_affects_the_next_update():
    """loss_k (taken at the params of update k) changes the scale from update k + 1 on."""
    tx = reduce_lr_on_plateau(factor=0.5, patience=0)
    state = tx.init(jnp.zeros(1))
    seen = []
    for loss in (1.0, 3.0, 3.0, 0.5, 0.7):
        updates, state = tx.update(jnp.ones(1), state, value=loss)
        seen.append(float(updates[0]))
    assert seen == [1.0, 1.0, 0.5, 0.25, 0.25]
    assert float(state.scale) == 0.125


def test_reduce_lr_on_plateau_needs_value_and_ignores_extras():
    tx = reduce_lr_on_plateau()
    state = tx.init({"w": jnp.zeros(2)})
    with pytest.raises(ValueError, match="needs the loss"):
        tx.update({"w": jnp.ones(2)}, state)
    with pytest.raises(ValueError, match="scalar loss"):
        tx.update({"w": jnp.ones(2)}, state, value=jnp.ones(2))
    updates, new_state = jax.jit(tx.update)({"w": jnp.ones(2)}, state, None, value=1.0, other=3)
    assert jax.tree.all(
        jax.tree.map(lambda a, b: a.dtype == b.dtype and a.shape == b.shape, new_state, state)
    )


def test_reduce_lr_on_plateau_under_inject_hyperparams():
    """Every numeric argument may arrive as an array (inject_hyperparams)."""
    kwargs = {"factor": 0.5, "patience": 1, "cooldown": 1, "threshold": 0.01, "eps": 0.0}
    direct = reduce_lr_on_plateau(**kwargs)
    injected = optax.inject_hyperparams(reduce_lr_on_plateau)(**kwargs)
    params = jnp.zeros(2)
    s1, s2 = direct.init(params), injected.init(params)
    step = jax.jit(injected.update)
    for loss in plateau_losses(20):
        u1, s1 = direct.update(jnp.ones(2), s1, params, value=loss)
        u2, s2 = step(jnp.ones(2), s2, params, value=loss)
        np.testing.assert_array_equal(u1, u2)
    assert float(s1.scale) < 0.2 and float(s2.inner_state.scale) == float(s1.scale)


# ------------------------------------------------------------------------ API and checks


def test_schedules_accept_traced_counts_and_return_floats():
    schedules = [factory(LR) for factory, _, _ in SCHEDULES.values()]
    schedules += [one_cycle_lr(LR, 20), one_cycle_momentum(20)]
    for schedule in schedules:
        eager = schedule(3)
        traced = jax.jit(schedule)(jnp.asarray(3, jnp.int32))
        assert traced.dtype == jnp.float32 and traced.shape == ()
        assert float(eager) == pytest.approx(float(traced), rel=1e-6)
    # No recompilation across counts: the count is a traced argument.
    jitted = jax.jit(cosine_annealing_lr(LR, 5))
    for k in range(3):
        jitted(jnp.asarray(k))
    assert jitted._cache_size() == 1


@pytest.mark.parametrize(
    "factory, kwargs, message",
    [
        (step_lr, {"learning_rate": -0.1, "step_size": 2}, "Invalid learning rate"),
        (step_lr, {"learning_rate": 0.1, "step_size": 0}, "Invalid step_size value"),
        (step_lr, {"learning_rate": 0.1, "step_size": 2.5}, "Invalid step_size value"),
        (step_lr, {"learning_rate": 0.1, "step_size": 2, "gamma": -0.5}, "Invalid gamma"),
        (multistep_lr, {"learning_rate": 0.1, "milestones": [3, -1]}, "Invalid milestone"),
        (multistep_lr, {"learning_rate": 0.1, "milestones": [2], "gamma": -1}, "Invalid gamma"),
        (exponential_lr, {"learning_rate": 0.1, "gamma": -0.9}, "Invalid gamma"),
        (cosine_annealing_lr, {"learning_rate": 0.1, "T_max": 0}, "Invalid T_max"),
        (cosine_annealing_lr, {"learning_rate": 0.1, "T_max": 5, "eta_min": -1}, "eta_min"),
        (linear_lr, {"learning_rate": 0.1, "start_factor": 0.0}, "Invalid start_factor"),
        (linear_lr, {"learning_rate": 0.1, "start_factor": 1.5}, "Invalid start_factor"),
        (linear_lr, {"learning_rate": 0.1, "end_factor": 1.5}, "Invalid end_factor"),
        (linear_lr, {"learning_rate": 0.1, "total_iters": -1}, "Invalid total_iters"),
        (one_cycle_lr, {"max_lr": -1.0, "total_steps": 10}, "Invalid learning rate"),
        (one_cycle_lr, {"max_lr": 0.1, "total_steps": 0}, "Invalid total_steps"),
        (one_cycle_lr, {"max_lr": 0.1, "total_steps": 10, "pct_start": 1.5}, "pct_start"),
        (one_cycle_lr, {"max_lr": 0.1, "total_steps": 10, "pct_start": 0.1}, "zero length"),
        (one_cycle_lr, {"max_lr": 0.1, "total_steps": 10, "anneal_strategy": "exp"}, "anneal"),
        (one_cycle_lr, {"max_lr": 0.1, "total_steps": 10, "div_factor": 0.0}, "div_factor"),
        (one_cycle_lr, {"max_lr": 0.1, "total_steps": 10, "final_div_factor": -1.0}, "final"),
        (one_cycle_momentum, {"total_steps": 10, "base_momentum": -0.1}, "base_momentum"),
        (one_cycle_momentum, {"total_steps": 10, "max_momentum": -0.1}, "max_momentum"),
        (one_cycle_momentum, {"total_steps": 5, "pct_start": 0.2}, "zero length"),
        (reduce_lr_on_plateau, {"mode": "median"}, "Invalid mode"),
        (reduce_lr_on_plateau, {"threshold_mode": "pct"}, "Invalid threshold_mode"),
        (reduce_lr_on_plateau, {"factor": 1.0}, "Invalid factor"),
        (reduce_lr_on_plateau, {"factor": -0.1}, "Invalid factor"),
        (reduce_lr_on_plateau, {"patience": -1}, "Invalid patience"),
        (reduce_lr_on_plateau, {"cooldown": 1.5}, "Invalid cooldown"),
        (reduce_lr_on_plateau, {"threshold": -1e-4}, "Invalid threshold"),
        (reduce_lr_on_plateau, {"min_scale": -0.1}, "Invalid min_scale"),
        (reduce_lr_on_plateau, {"eps": -1e-8}, "Invalid eps"),
        (reduce_lr_on_plateau, {"base_learning_rate": 0.0}, "Invalid base_learning_rate"),
    ],
)
def test_bad_arguments(factory, kwargs, message):
    with pytest.raises(ValueError, match=message):
        factory(**kwargs)


def test_torch_rejects_what_we_reject():
    """The one-cycle zero-length check mirrors a real torch failure."""
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=LR, momentum=0.9)
    with warnings.catch_warnings(), pytest.raises(ZeroDivisionError):
        warnings.simplefilter("ignore")
        torch_sched.OneCycleLR(optimizer, LR, total_steps=10, pct_start=0.1)
    assert math.isclose(0.1 * 10, 1.0)
