"""Non-finite gradients and losses: what every optimizer does, and recovery under the guard.

* The table of the "Non-finite gradients" guide (``docs/nonfinite.md``) is checked against
  measurement: one NaN, +Inf or -Inf element in a matrix gradient (after one finite
  step), which updates and which state fields become non-finite, and whether later
  finite steps recover. The table is parsed, so it cannot go stale.
* ``optax.apply_if_finite``: a 50-step quadratic run with one bad step in the middle
  ends bit-exactly where the same run with that step skipped ends, for every optimizer
  and every kind of bad gradient; the stateful memories (FER's memory, CAME's factored
  statistics, Automagic's lr mask) are named and checked.
* Localized learning (not in the registry): its Hebbian updates and epoch norm
  accumulators under a bad gradient and under a bad ``value=`` (the loss), and
  ``reduce_lr_on_plateau`` under a NaN loss (as torch).

Compiled with ``quick_code_generation`` (``tests/helpers/quick.py``): runs of one setting are
compared with each other, with tolerances or with exact zeros, NaNs and infinities.
"""

from __future__ import annotations

import functools
import re
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import torch
from flax import nnx

from jaxopt_adv import get_optimizer, list_optimizers
from jaxopt_adv.correction.fer import fer_state
from jaxopt_adv.local import (
    LocalizedMLP,
    advance_boundary,
    create_localized_optimizer,
    localized_state,
)
from jaxopt_adv.torch.lr_scheduler import reduce_lr_on_plateau
from tests.cases import CASES, CASES_BY_NAME
from tests.helpers.trees import make_grads, make_params

pytestmark = pytest.mark.usefixtures("quick_code_generation")

GUIDE = Path(__file__).resolve().parent.parent / "docs" / "nonfinite.md"
BAD = (1, 2)  # the poisoned element of the (4, 3) "matrix" leaf
BAD_VALUES = {"nan": jnp.nan, "+inf": jnp.inf, "-inf": -jnp.inf}
LATER_STEPS = 3
ids = [case.name for case in CASES]
cases = pytest.mark.parametrize("case", CASES, ids=ids)


@functools.cache
def compiled(name: str):
    """``(tx, jitted tx.update)`` of a case, built once and shared by the tests."""
    case = CASES_BY_NAME[name]
    tx = get_optimizer(name)(**case.kwargs)
    return tx, jax.jit(
        lambda grads, state, params: tx.update(grads, state, params, **case.extra_args)
    )


def poison(grads, value):
    return {**grads, "matrix": grads["matrix"].at[BAD].set(value)}


def is_finite(tree) -> bool:
    return all(
        bool(jnp.all(jnp.isfinite(x)))
        for x in jax.tree.leaves(tree)
        if jnp.issubdtype(jnp.result_type(x), jnp.inexact)
    )


def nonfinite_fields(state) -> set[str]:
    """Names of the state fields (the innermost NamedTuple field) holding a NaN or an Inf."""
    fields = set()
    for path, x in jax.tree_util.tree_leaves_with_path(state):
        if jnp.issubdtype(jnp.result_type(x), jnp.inexact) and not bool(jnp.all(jnp.isfinite(x))):
            names = [k.name for k in path if isinstance(k, jax.tree_util.GetAttrKey)]
            fields.add(names[-1] if names else jax.tree_util.keystr(path))
    return fields


def update_effect(updates) -> str:
    """Which updates the bad element made non-finite, and to what (the table's words)."""
    arrays = {k: np.asarray(u) for k, u in updates.items()}
    masks = {k: ~np.isfinite(u) for k, u in arrays.items()}
    if not any(m.any() for m in masks.values()):
        return "finite"
    bad = np.concatenate([arrays[k][m] for k, m in masks.items()])
    value = "NaN" if np.isnan(bad).all() else "±Inf" if np.isinf(bad).all() else "NaN/±Inf"
    if any(m.any() for k, m in masks.items() if k != "matrix"):
        everything = all(m.all() for m in masks.values())
        return f"{value} in {'every leaf' if everything else 'some other leaves'}"
    matrix = masks["matrix"]
    extents = {
        "at that element": np.zeros_like(matrix),
        "in its row": np.zeros_like(matrix),
        "in its column": np.zeros_like(matrix),
        "in its leaf": np.ones_like(matrix),
    }
    extents["at that element"][BAD] = True
    extents["in its row"][BAD[0], :] = True
    extents["in its column"][:, BAD[1]] = True
    for words, extent in extents.items():
        if np.array_equal(matrix, extent):
            return f"{value} {words}"
    return f"{value} in part of its leaf"


def measure(name: str, kind: str, warm_steps: int = 1) -> dict:
    """One bad element after ``warm_steps`` finite steps, then finite steps again.

    The later steps keep the last finite parameters (the bad update is not applied), so
    only the state can carry the damage forward.
    """
    tx, step = compiled(name)
    params = CASES_BY_NAME[name].params(make_params())
    state = tx.init(params)
    for t in range(warm_steps):
        updates, state = step(make_grads(params, t), state, params)
        params = optax.apply_updates(params, updates)
    updates, state = step(poison(make_grads(params, warm_steps), BAD_VALUES[kind]), state, params)
    effect = update_effect(updates)
    fields = nonfinite_fields(state)
    for t in range(LATER_STEPS):
        updates, state = step(make_grads(params, warm_steps + 1 + t), state, params)
        fields |= nonfinite_fields(state)
    if not is_finite(updates):
        later = "poisoned"
    elif not is_finite(state):
        later = "state stays non-finite"
    else:
        later = "recovers"
    return {"updates": effect, "state": fields, "later": later, "last_state": state}


def _merge(by_kind: dict[str, str], labels: dict[str, str]) -> str:
    """One cell from per-kind texts: the text if they agree, else ``label: text; ...``."""
    if len(set(by_kind.values())) == 1:
        return next(iter(by_kind.values()))
    return "; ".join(f"{labels[k]}: {text}" for k, text in by_kind.items())


def documented_rows() -> dict[str, list[str]]:
    """The guide's table rows: name -> its four cells, remarks in parentheses removed."""
    rows = {}
    for line in GUIDE.read_text().splitlines():
        match = re.match(r"\|\s*`([^`]+)`\s*\|(.*)\|\s*$", line)
        if match:
            cells = [re.sub(r"\s*\([^()]*\)", "", c).strip() for c in match[2].split("|")]
            rows[match[1]] = cells
    return rows


def test_guide_table_lists_every_registered_optimizer():
    assert sorted(documented_rows()) == list_optimizers()


@cases
def test_guide_table_matches_behaviour(case):
    nan_cell, inf_cell, state_cell, later_cell = documented_rows()[case.name]
    results = {kind: measure(case.name, kind) for kind in BAD_VALUES}
    infs = {k: results[k]["updates"] for k in ("+inf", "-inf")}
    assert nan_cell == results["nan"]["updates"]
    assert inf_cell == _merge(infs, {"+inf": "+Inf", "-inf": "-Inf"})
    fields = set().union(*(r["state"] for r in results.values()))
    assert set(re.findall(r"`([^`]+)`", state_cell)) == fields, fields
    if not fields:
        assert state_cell == "none"
    later = {kind: results[kind]["later"] for kind in BAD_VALUES}
    if later["+inf"] == later["-inf"]:
        later = {"NaN": later["nan"], "±Inf": later["+inf"]}
    else:  # torch.lbfgs: only a -Inf element leaves a non-finite pair in its history
        later = {"NaN": later["nan"], "+Inf": later["+inf"], "-Inf": later["-inf"]}
    assert later_cell == _merge(later, {kind: kind for kind in later})


def test_asgd_average_keeps_a_nan_once_averaging_started():
    """The guide's remark on torch.asgd: after step t0 + 1 ``ax`` is a running mean,
    so a NaN stays in it, while the updates (from the params) recover."""
    t0 = CASES_BY_NAME["torch.asgd"].kwargs["t0"]
    result = measure("torch.asgd", "nan", warm_steps=int(t0) + 3)
    assert result["later"] == "state stays non-finite"
    assert result["state"] == {"ax"}


# ------------------------------------------------------------------ recovery under the guard

RECOVERY_STEPS, BAD_STEP = 50, 25
# fields that must exist (and come back unchanged) in these optimizers' states
MEMORIES = {
    "fer": ("memory", "ever_correct"),
    "came": ("v_row", "v_col", "r_row", "r_col"),
    "automagic_came_amp": ("lr_mask", "v_row", "v_col", "spatial_variance"),
}


def quadratic(params):
    return sum(0.5 * jnp.sum(p**2) for p in jax.tree.leaves(params))


quadratic_grad = jax.jit(jax.grad(quadratic))


def guarded_runs(case):
    """A jitted 50-step guarded run: ``run(params, value, everywhere, skip)`` puts ``value``
    into the gradient element at step 25 (NaN into every element with ``everywhere``),
    or with ``skip`` leaves step 25 out altogether."""
    tx = optax.apply_if_finite(get_optimizer(case.name)(**case.kwargs), max_consecutive_errors=3)

    @jax.jit
    def run(params, value, everywhere, skip):
        def body(carry, t):
            params, state = carry
            grads = jax.grad(quadratic)(params)
            at_bad = t == BAD_STEP
            matrix = grads["matrix"]
            grads = {**grads, "matrix": matrix.at[BAD].set(jnp.where(at_bad, value, matrix[BAD]))}
            grads = jax.tree.map(lambda g: jnp.where(at_bad & everywhere, jnp.nan, g), grads)

            def step():
                updates, new_state = tx.update(grads, state, params, **case.extra_args)
                return optax.apply_updates(params, updates), new_state

            carry = jax.lax.cond(at_bad & skip, lambda: (params, state), step)
            return carry, quadratic(carry[0])

        (params, state), losses = jax.lax.scan(
            body, (params, tx.init(params)), jnp.arange(RECOVERY_STEPS)
        )
        return params, state, losses

    return run


def field_leaves(state, name: str) -> list:
    return [
        x
        for path, x in jax.tree_util.tree_leaves_with_path(state)
        if any(isinstance(k, jax.tree_util.GetAttrKey) and k.name == name for k in path)
    ]


@cases
def test_guarded_bad_step_equals_skipped_step(case):
    run = guarded_runs(case)
    params0 = case.params(make_params())
    false, true = jnp.asarray(False), jnp.asarray(True)
    ref_params, ref_state, ref_losses = run(params0, jnp.float32(0.0), false, true)
    assert is_finite(ref_params) and is_finite(ref_state)
    assert float(ref_losses[-1]) < float(quadratic(params0))  # it trains
    bad_runs = {kind: (v, false) for kind, v in BAD_VALUES.items()}
    bad_runs["nan everywhere"] = (jnp.nan, true)
    for kind, (value, everywhere) in bad_runs.items():
        params, state, losses = run(params0, jnp.float32(value), everywhere, false)
        assert int(state.total_notfinite) == 1, kind  # the bad step was seen and skipped
        assert int(state.notfinite_count) == 0, kind  # and training went on
        jax.tree.map(np.testing.assert_array_equal, params, ref_params)
        jax.tree.map(np.testing.assert_array_equal, state.inner_state, ref_state.inner_state)
        np.testing.assert_array_equal(losses, ref_losses)
        for name in MEMORIES.get(case.name, ()):
            leaves = field_leaves(state.inner_state, name)
            assert leaves, f"{case.name} has no state field {name!r}"
            assert is_finite(leaves), (kind, name)
            jax.tree.map(np.testing.assert_array_equal, leaves, field_leaves(ref_state, name))

    # the same 49 steps without the guard (the case's own jitted update, step by step)
    tx, step = compiled(case.name)
    params, state = params0, tx.init(params0)
    for t in range(RECOVERY_STEPS):
        if t != BAD_STEP:
            updates, state = step(quadratic_grad(params), state, params)
            params = optax.apply_updates(params, updates)
    jax.tree.map(
        lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7), params, ref_params
    )


def test_fer_memory_ignores_nonfinite_logits():
    """FER writes its memory from the logits, not the gradients: a NaN or Inf row of
    logits writes nothing (counted as misclassified), the other rows are recorded."""
    case = CASES_BY_NAME["fer"]
    tx = get_optimizer("fer")(**case.kwargs)
    params = make_params()
    state = tx.init(params)
    logits = jnp.array([[2.0, 0.5, -1.0], [jnp.nan, 0.0, 0.0], [jnp.inf, 0.0, 0.0]])
    indices, labels = jnp.array([0, 1, 2]), jnp.array([0, 0, 0])
    _, state = jax.jit(tx.update)(
        make_grads(params, 0), state, params, logits=logits, labels=labels, indices=indices
    )
    memory = fer_state(state)
    assert is_finite(memory.memory)
    assert np.any(memory.memory[0] > 0) and bool(memory.ever_correct[0])
    np.testing.assert_array_equal(memory.memory[1:3], 0.0)
    assert not np.any(memory.ever_correct[1:3])
    assert int(memory.batch_wrong) == 2


# ------------------------------------------------------------------ localized learning


@functools.cache
def localized():
    """LocalizedMLP 4-[6, 5]-3 with layers/0 localized (T = 1) and layers/1 the transition
    layer; jitted pieces shared by the tests below."""
    model = LocalizedMLP(4, [6, 5], 3, rngs=nnx.Rngs(0))
    tx = create_localized_optimizer(model, 0.05, 0.01, supervision_strength=0.1, num_localized=1)
    guarded = optax.apply_if_finite(tx, max_consecutive_errors=3)
    graphdef, params = nnx.split(model, nnx.Param)
    x = jax.random.normal(jax.random.key(1), (8, 4))
    y = jnp.arange(8) % 3

    def loss_fn(params):
        logits, activations = nnx.merge(graphdef, params)(x, num_localized=1)
        return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean(), activations

    @jax.jit
    def update(params, state, nan_grads, loss_shift):
        """One unguarded step: NaN gradients if asked, ``value = loss + loss_shift``."""
        (loss, activations), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
        grads = jax.tree.map(lambda g: jnp.where(nan_grads, jnp.nan, g), grads)
        value = loss + loss_shift
        return tx.update(grads, state, params, activations=activations, value=value)

    @jax.jit
    def guarded_step(params, state, nan_grads, loss_shift):
        (loss, activations), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
        grads = jax.tree.map(lambda g: jnp.where(nan_grads, jnp.nan, g), grads)
        value = loss + loss_shift
        updates, state = guarded.update(grads, state, params, activations=activations, value=value)
        return optax.apply_updates(params, updates), state, updates

    return {
        "tx": tx,
        "guarded": guarded,
        "params": nnx.as_pure(params),
        "update": update,
        "guarded_step": guarded_step,
    }


def test_localized_guarded_bad_gradient_equals_skipped_step():
    """Under apply_if_finite the Hebbian statistics and the epoch norm accumulators come
    back unchanged from a NaN gradient, and the run ends where the skipping run ends."""
    setup = localized()
    step, params0 = setup["guarded_step"], setup["params"]

    def train(bad_step):
        params, state = params0, setup["guarded"].init(params0)
        for t in range(20):
            if t == bad_step:
                before = state.inner_state
                params, state, _ = step(params, state, True, 0.0)
                jax.tree.map(np.testing.assert_array_equal, state.inner_state, before)
            elif t != 10:
                params, state, _ = step(params, state, False, 0.0)
        return params, state

    params, state = train(bad_step=10)
    ref_params, ref_state = train(bad_step=None)
    jax.tree.map(np.testing.assert_array_equal, params, ref_params)
    jax.tree.map(np.testing.assert_array_equal, state.inner_state, ref_state.inner_state)
    norms = localized_state(state.inner_state).epoch_sq_norm
    assert np.all(np.isfinite(norms)) and np.all(norms > 0)


def test_localized_unguarded_bad_gradient_poisons_only_base_layers_for_two_epochs():
    """Without the guard a NaN gradient reaches the base (non-localized) layers and the
    transition layer's epoch norm; ``advance_boundary`` rolls the accumulators over, so
    two epoch ends later they are finite again (never a permanent NaN)."""
    setup = localized()
    params = setup["params"]
    updates, state = setup["update"](params, setup["tx"].init(params), True, 0.0)
    assert is_finite(updates["layers"][0])  # Hebbian: from activations and the loss
    assert not is_finite(updates["layers"][1]) and not is_finite(updates["head"])
    norms = localized_state(state).epoch_sq_norm
    assert np.isfinite(norms[0]) and np.isnan(norms[1])
    state = advance_boundary(state)  # the transition layer's NaN norm blocks no advance...
    assert int(localized_state(state).num_localized) == 1
    assert np.isnan(localized_state(state).previous_sq_norm[1])
    state = advance_boundary(state)
    assert is_finite(localized_state(state).epoch_sq_norm)
    assert is_finite(localized_state(state).previous_sq_norm)  # ...and is gone after two


@pytest.mark.parametrize("loss", [jnp.nan, jnp.inf, -jnp.inf], ids=["nan", "+inf", "-inf"])
def test_localized_nonfinite_loss(loss):
    """``value=`` sets the Hebbian rate ``eta (1 + lambda tanh(L))``: an infinite loss
    saturates tanh (finite updates), a NaN loss makes the Hebbian updates and their epoch
    norms NaN. apply_if_finite checks only the gradients, so it does not catch a NaN loss
    whose gradients are finite (the guide says to skip such a step yourself)."""
    setup = localized()
    params = setup["params"]
    updates, state = setup["update"](params, setup["tx"].init(params), False, loss)
    base = {k: v for k, v in updates.items() if k != "layers"}
    assert is_finite(base) and is_finite(updates["layers"][1])
    norms = localized_state(state).epoch_sq_norm
    if np.isnan(loss):
        assert not is_finite(updates["layers"][0]) and np.isnan(norms[0])
        guarded_state = setup["guarded"].init(params)
        _, guarded_state, updates = setup["guarded_step"](params, guarded_state, False, loss)
        assert int(guarded_state.notfinite_count) == 0
        assert not is_finite(updates["layers"][0])
    else:
        assert is_finite(updates) and is_finite(norms)
        # tanh(+-20) rounds to +-1 in float32: the infinite loss is the saturated rate
        saturated, _ = setup["update"](params, setup["tx"].init(params), False, np.sign(loss) * 20)
        jax.tree.map(np.testing.assert_array_equal, updates, saturated)


def test_reduce_lr_on_plateau_counts_a_nan_loss_as_no_improvement_like_torch():
    losses = [1.0, 0.5, float("nan"), float("nan"), 0.4, float("nan"), float("nan"), 0.3]
    tx = reduce_lr_on_plateau(factor=0.5, patience=1)
    state = tx.init(jnp.zeros(2))
    weight = torch.nn.Parameter(torch.zeros(2))
    optimizer = torch.optim.SGD([weight], lr=1.0)
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, factor=0.5, patience=1)
    for loss in losses:
        _, state = tx.update(jnp.ones(2), state, value=loss)
        scheduler.step(loss)
        assert float(state.scale) == optimizer.param_groups[0]["lr"]
        assert np.isfinite(float(state.best))
        np.testing.assert_allclose(float(state.best), scheduler.best, rtol=1e-7)
    assert float(state.scale) < 1.0  # the NaN losses did count as bad steps
