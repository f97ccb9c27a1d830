"""find_state / replace_state (jaxopt_adv/_state.py): one block's state wherever the
optimizer's composition puts it."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxopt_adv._state import find_state, replace_state
from jaxopt_adv.torch.adam import ScaleByAdamState, adam

PARAMS = {"a": jnp.zeros(2), "b": jnp.zeros((2, 3))}


def composed_states() -> dict[str, optax.OptState]:
    """One torch Adam state in each composition the helpers must see through."""
    return {
        "bare": adam(0.1).init(PARAMS),
        "chain": optax.chain(optax.clip(1.0), optax.chain(adam(0.1))).init(PARAMS),
        "inject_hyperparams": optax.inject_hyperparams(adam)(learning_rate=0.1).init(PARAMS),
        "multi_steps": optax.MultiSteps(adam(0.1), 3).init(PARAMS),
        "multi_steps_injected": optax.MultiSteps(
            optax.inject_hyperparams(adam)(learning_rate=0.1), 3
        ).init(PARAMS),
        "masked": optax.masked(adam(0.1), {"a": True, "b": False}).init(PARAMS),
    }


@pytest.mark.parametrize("where", list(composed_states()))
def test_find_and_replace_through_compositions(where):
    state = composed_states()[where]
    found = find_state(state, ScaleByAdamState)
    assert isinstance(found, ScaleByAdamState)
    assert int(found.count) == 0
    mu = optax.tree.full_like(found.mu, 2.0)
    new = replace_state(state, ScaleByAdamState, count=jnp.int32(5), mu=mu)
    assert type(new) is type(state)
    again = find_state(new, ScaleByAdamState)
    assert int(again.count) == 5
    for leaf in optax.tree_utils.tree_get_all_with_path(again.mu, "a"):
        np.testing.assert_array_equal(leaf[1], 2.0)
    # the rest of the state is untouched, and the given state is not changed
    assert int(find_state(state, ScaleByAdamState).count) == 0
    np.testing.assert_array_equal(again.nu["b"], found.nu["b"])


def test_a_state_of_the_class_itself_is_found_and_replaced():
    state = find_state(adam(0.1).init(PARAMS), ScaleByAdamState)
    assert find_state(state, ScaleByAdamState) is state
    assert int(replace_state(state, ScaleByAdamState, count=jnp.int32(1)).count) == 1


def test_the_class_not_its_name_is_matched():
    """optax.ScaleByAdamState and jaxopt_adv's torch ScaleByAdamState share a name."""
    state = optax.chain(optax.scale_by_adam(), adam(0.1)).init(PARAMS)
    assert isinstance(find_state(state, ScaleByAdamState), ScaleByAdamState)
    assert isinstance(find_state(state, optax.ScaleByAdamState), optax.ScaleByAdamState)
    new = replace_state(state, optax.ScaleByAdamState, count=jnp.int32(7))
    assert int(new[0].count) == 7
    assert int(find_state(new[1], ScaleByAdamState).count) == 0


def test_a_missing_class_is_a_clear_error():
    with pytest.raises(ValueError, match=r"^no ScaleByAdamState in this optimizer state$"):
        find_state(optax.sgd(0.1).init(PARAMS), ScaleByAdamState)
    with pytest.raises(ValueError, match="no ScaleByAdamState in this optimizer state .see x.$"):
        find_state((), ScaleByAdamState, " (see x)")
    with pytest.raises(ValueError, match="no ScaleByAdamState"):
        replace_state(optax.sgd(0.1).init(PARAMS), ScaleByAdamState, count=1)


def test_two_states_of_the_class_are_an_error():
    state = optax.chain(adam(0.1), adam(0.2)).init(PARAMS)
    with pytest.raises(ValueError, match="ScaleByAdamState occurs 2 times"):
        find_state(state, ScaleByAdamState)


def test_an_unknown_field_is_a_type_error():
    with pytest.raises(TypeError, match="ScaleByAdamState has no field moo"):
        replace_state(adam(0.1).init(PARAMS), ScaleByAdamState, moo=1)
