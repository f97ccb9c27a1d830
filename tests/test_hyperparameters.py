"""Bad hyperparameters are rejected at construction; traced ones are not.

Driven by ``tests/cases.py``: every entry of ``INVALID`` must raise a ``ValueError`` that
names the argument and its allowed range, for every registered optimizer; and every
case must build and step with its numeric hyperparameters injected
(``optax.inject_hyperparams``) or passed as tracers inside ``jax.jit``.

Compiled with ``quick_compilation`` (``tests/helpers/quick.py``): runs of one setting are
compared with each other, with tolerances or with exact zeros, NaNs and infinities.
"""

from __future__ import annotations

import dataclasses
import inspect
import numbers
import re
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxopt_adv import get_optimizer, list_optimizers
from tests.cases import CASES, CASES_BY_NAME, INVALID, numeric_arguments
from tests.helpers.trees import make_grads, make_params

pytestmark = pytest.mark.usefixtures("quick_compilation")

# Not real numbers: each must be a TypeError naming the argument, wherever a number is
# expected (a bool is not accepted as 0 / 1).
WRONG_KINDS: dict[str, Any] = {
    "True": True,
    "False": False,
    "np.bool_": np.bool_(True),
    "complex": complex(0.5, 0.5),
    "np.complex64": np.complex64(0.5),
    "str": "0.1",
    "None": None,
    "bool_array": np.array(True),
    "complex_array": jnp.asarray(0.5 + 0.5j),
}

# Concrete containers of a number: their value is validated as the number's would be
# (``jnp.asarray`` is what ``optax.inject_hyperparams`` hands the factory at ``init``).
CONCRETE_ARRAYS: dict[str, Any] = {
    "np.asarray": np.asarray,
    "numpy_scalar": lambda value: np.asarray(value)[()],  # np.float64 / np.int64
    "jnp.asarray": jnp.asarray,
}

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


def test_every_numeric_hyperparameter_has_invalid_values():
    """The table covers each numeric argument (and each field of a config dataclass)."""
    for name in list_optimizers():
        covered = {entry.argument for entry in INVALID[name]}
        wanted = set(numeric_arguments(name)) | set(CASES_BY_NAME[name].static_args)
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
    numeric = numeric_arguments(case.name)
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


def _with_value(name, argument, value, index=None):
    """The case's kwargs with ``argument`` (or entry ``index`` of its tuple) set to
    ``value``."""
    kwargs = dict(CASES_BY_NAME[name].kwargs)
    if index is not None:
        entries = list(numeric_arguments(name)[argument])
        entries[index] = value
        value = tuple(entries)
    kwargs[argument] = value
    return kwargs


def _numeric_slots(name):
    """(argument, tuple index or None) of every numeric hyperparameter of ``name``."""
    slots = []
    for argument, value in numeric_arguments(name).items():
        if isinstance(value, tuple):
            slots += [(argument, i) for i in range(len(value))]
        else:
            slots.append((argument, None))
    return slots


SLOTS = [(name, *slot) for name in list_optimizers() for slot in _numeric_slots(name)]


@pytest.mark.parametrize("name", list_optimizers())
def test_learning_rate_none_is_rejected(name):
    """``learning_rate=None`` once built a chain without the learning-rate step (an
    uphill step of size 1 for the torch family)."""
    with pytest.raises(TypeError, match=r"learning_rate must be a real number, not a NoneType"):
        get_optimizer(name)(**_with_value(name, "learning_rate", None))


@pytest.mark.parametrize(
    ("name", "argument", "index"),
    SLOTS,
    ids=[f"{n}-{a}{'' if i is None else i}" for n, a, i in SLOTS],
)
def test_wrong_kind_of_hyperparameter_is_rejected(name, argument, index):
    """A bool, complex number, string or None where a number is expected is a TypeError
    naming the argument (``b1=True`` once passed as 1.0's neighbour and gave NaN)."""
    shown = argument if index is None else rf"{argument}\[{index}\]"
    default = inspect.signature(get_optimizer(name)).parameters[argument].default
    if index is not None and isinstance(default, tuple):
        default = default[index]  # Adafactor's eps=(None, 1e-3)
    for label, value in WRONG_KINDS.items():
        if value is None and default is None:
            continue  # None is this argument's "off" (SGD's momentum=None: no buffer)
        with pytest.raises(TypeError, match=rf"Invalid {shown} value: .* must be a real number"):
            get_optimizer(name)(**_with_value(name, argument, value, index))
            pytest.fail(f"{label} accepted")


ARRAY_ENTRIES = [
    (name, entry, convert)
    for name, entry in ENTRIES
    if isinstance(entry.value, numbers.Real) and not isinstance(entry.value, bool)
    for convert in CONCRETE_ARRAYS
]


@pytest.mark.parametrize(
    ("name", "entry", "convert"),
    ARRAY_ENTRIES,
    ids=[f"{n}-{e}-{c}" for n, e, c in ARRAY_ENTRIES],
)
def test_invalid_value_as_concrete_array_is_rejected(name, entry, convert):
    """Every invalid number of ``INVALID`` is rejected the same way as a 0-d NumPy / JAX
    array or NumPy scalar (``learning_rate=np.array(nan)`` once made the params NaN)."""
    array_entry = dataclasses.replace(entry, value=CONCRETE_ARRAYS[convert](entry.value))
    with pytest.raises(ValueError, match=entry.match):
        _build_invalid(name, array_entry)


@pytest.mark.parametrize("convert", CONCRETE_ARRAYS)
@pytest.mark.parametrize("case", CASES, ids=str)
def test_valid_concrete_arrays_are_accepted(case, convert):
    """Valid values as concrete arrays build and step as the Python numbers do (to float32
    rounding: an array hyperparameter takes the traced path, e.g. ``b2**t`` in float32)."""
    factory = get_optimizer(case.name)
    params = case.params({"vector": make_params()["vector"]})
    grads = make_grads(params, 0)
    to_array = CONCRETE_ARRAYS[convert]
    arrays = {
        k: tuple(to_array(x) for x in v) if isinstance(v, tuple) else to_array(v)
        for k, v in numeric_arguments(case.name).items()
    }

    def first_update(tx):
        return tx.update(grads, tx.init(params), params, **case.extra_args)[0]

    expected = first_update(factory(**case.kwargs))
    got = first_update(factory(**{**case.kwargs, **arrays}))
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7), got, expected)
