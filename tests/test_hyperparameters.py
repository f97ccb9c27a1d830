"""Bad hyperparameters are rejected at construction; traced ones are not.

Driven by ``tests/cases.py``: every entry of ``INVALID`` must raise a ``ValueError`` that
names the argument and its allowed range, for every registered optimizer; and every
case must build and step with its numeric hyperparameters injected
(``optax.inject_hyperparams``) or passed as tracers inside ``jax.jit``.
"""

from __future__ import annotations

import dataclasses
import inspect
import numbers
import re

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxopt_adv import get_optimizer, list_optimizers
from tests.cases import CASES, CASES_BY_NAME, INVALID
from tests.test_contract import make_grads, make_params

# Hyperparameters that set shapes (``Case.static_args``) stay Python numbers and are never
# traced. Everything else numeric must accept a tracer. ``automagic_came_amp``'s ``config``
# (a frozen dataclass of Python values) and the muP ``infshapes`` are not numbers and are
# passed through as they are.

ENTRIES = [(name, entry) for name in sorted(INVALID) for entry in INVALID[name]]


def _build_invalid(name, entry):
    """The factory called with the case's kwargs, ``entry.also`` and the bad value."""
    kwargs = {**CASES_BY_NAME[name].kwargs, **entry.also}
    if entry.argument.startswith("config."):
        field = entry.argument.removeprefix("config.")
        kwargs["config"] = dataclasses.replace(kwargs["config"], **{field: entry.value})
    else:
        kwargs[entry.argument] = entry.value
    return get_optimizer(name)(**kwargs)


@pytest.mark.parametrize(("name", "entry"), ENTRIES, ids=[f"{n}-{e}" for n, e in ENTRIES])
def test_invalid_hyperparameter_is_rejected(name, entry):
    # the same call with the case's own value builds: the bad value alone is to blame
    get_optimizer(name)(**{**CASES_BY_NAME[name].kwargs, **entry.also})
    with pytest.raises(ValueError, match=entry.match) as error:
        _build_invalid(name, entry)
    argument = entry.argument.removeprefix("config.")
    assert re.search(rf"\b{re.escape(argument)}\b", str(error.value)), str(error.value)


def _numeric_arguments(name):
    """{keyword: value} of every numeric hyperparameter (case value, else default),
    tuples of numbers included, static ones left out."""
    case = CASES_BY_NAME[name]
    found = {}
    for param in inspect.signature(get_optimizer(name)).parameters.values():
        value = case.kwargs.get(param.name, param.default)
        values = value if isinstance(value, tuple) else (value,)
        numeric = all(isinstance(v, numbers.Real) and not isinstance(v, bool) for v in values)
        if numeric and values and param.name not in CASES_BY_NAME[name].static_args:
            found[param.name] = value
    return found


def test_every_numeric_hyperparameter_has_invalid_values():
    """The table covers each numeric argument (and each field of a config dataclass)."""
    for name in list_optimizers():
        covered = {entry.argument for entry in INVALID[name]}
        wanted = set(_numeric_arguments(name)) | set(CASES_BY_NAME[name].static_args)
        config = CASES_BY_NAME[name].kwargs.get("config")
        if config is not None:
            for field in dataclasses.fields(config):
                value = getattr(config, field.name)
                if not isinstance(value, bool) and value is not None:
                    wanted.add(f"config.{field.name}")
        assert wanted <= covered, f"{name}: no invalid values for {sorted(wanted - covered)}"


@pytest.mark.parametrize("case", CASES, ids=str)
def test_array_hyperparameters_are_accepted(case):
    """Numeric hyperparameters as arrays pass the range checks, both ways users pass them:
    held in the state by ``optax.inject_hyperparams`` (init and update under jit), and
    as tracers when the factory itself is called inside jit (a tracer per tuple entry).
    Both steps agree."""
    factory = get_optimizer(case.name)
    numeric = _numeric_arguments(case.name)
    params = {"matrix": make_params()["matrix"]}  # one leaf keeps compilation short
    grads = make_grads(params, 0)

    injected = optax.inject_hyperparams(factory, static_args=case.static_args)
    tx = injected(**case.kwargs)
    state = jax.jit(tx.init)(params)
    # inject_hyperparams holds numbers, not tuples of them (etas, gcw_bounds stay static)
    assert {k for k, v in numeric.items() if not isinstance(v, tuple)} <= set(state.hyperparams)
    update = jax.jit(lambda g, s, p: tx.update(g, s, p, **case.extra_args)[0])
    expected = update(grads, state, params)

    def as_arrays(value):
        if isinstance(value, tuple):
            return tuple(jnp.asarray(v, jnp.float32) for v in value)
        return jnp.asarray(value, jnp.float32)

    @jax.jit
    def build_and_step(traced):
        assert all(isinstance(x, jax.core.Tracer) for x in jax.tree.leaves(traced))
        tx = factory(**{**case.kwargs, **traced})
        return tx.update(grads, tx.init(params), params, **case.extra_args)[0]

    got = build_and_step({k: as_arrays(v) for k, v in numeric.items()})
    assert "learning_rate" in numeric
    assert all(bool(jnp.all(jnp.isfinite(x))) for x in jax.tree.leaves(got))
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7), got, expected)
