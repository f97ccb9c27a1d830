"""The registry: one table, names resolvable, every entry covered and documented."""

import inspect
from pathlib import Path

import pytest

import jaxopt_adv
from jaxopt_adv import REGISTRY, fast, get_optimizer, list_optimizers
from jaxopt_adv.registry import TABLE
from tests.cases import CASES_BY_NAME, INVALID

README = (Path(__file__).resolve().parent.parent / "README.md").read_text()


def test_every_registered_optimizer_has_a_contract_case():
    assert sorted(CASES_BY_NAME) == list_optimizers()


def test_every_registered_optimizer_has_invalid_hyperparameters():
    """tests/test_hyperparameters.py checks these are rejected at construction."""
    assert sorted(INVALID) == list_optimizers()
    assert all(INVALID[name] for name in INVALID)


@pytest.mark.parametrize("name", list_optimizers())
def test_factory_shape_and_docs(name):
    factory = get_optimizer(name)
    first = next(iter(inspect.signature(factory).parameters))
    assert first == "learning_rate"
    doc = inspect.getdoc(factory)
    for section in ("Args:", "Returns:", "Example:", "References:"):
        assert section in doc, f"{name}: docstring lacks {section}"
    assert f"`{name}`" in README, f"{name} missing from README's table of algorithms"


def test_unknown_name_lists_close_matches():
    with pytest.raises(KeyError, match="torch.adamw"):
        get_optimizer("torch.adamww")
    with pytest.raises(KeyError, match="list_optimizers"):
        get_optimizer("no-such-thing")


def test_list_optimizers_pattern():
    assert list_optimizers("torch.rms*") == ["torch.rmsprop"]
    assert list_optimizers("nothing*") == []
    assert set(list_optimizers()) == set(REGISTRY)


def test_torch_factories_are_exported():
    for name in list_optimizers("torch.*"):
        short = name.split(".", 1)[1]
        assert getattr(jaxopt_adv.torch, short) is get_optimizer(name)


def test_every_registered_optimizer_is_described():
    assert list(jaxopt_adv.registry.TABLE) == list_optimizers()  # one table, kept sorted
    for name in list_optimizers():
        info = jaxopt_adv.describe(name)
        assert info.family and info.paper and info.torch_reference
        assert info.factory is get_optimizer(name) is REGISTRY[name]
    with pytest.raises(KeyError, match="torch.adamw"):
        jaxopt_adv.describe("torch.adamww")


def test_descriptions_point_at_nothing_that_is_not_installed():
    """``tests/`` is not shipped: a torch reference names a package class or says what it is."""
    for name, info in jaxopt_adv.registry.TABLE.items():
        assert "tests/" not in info.torch_reference, name
        assert not info.torch_reference.endswith(".py"), name


def test_registry_is_a_read_only_view_of_the_table():
    assert dict(REGISTRY) == {name: info.factory for name, info in TABLE.items()}
    with pytest.raises(TypeError):
        REGISTRY["mine"] = get_optimizer("torch.sgd")  # type: ignore[index]
    with pytest.raises(TypeError):
        TABLE["mine"] = TABLE["torch.sgd"]  # type: ignore[index]


def test_fused_column_is_fast_supported():
    """The column is derived, so it cannot drift from the kernels that exist."""
    assert {name for name, info in TABLE.items() if info.fused} == set(fast.SUPPORTED)
    assert all(TABLE[name].factory is factory for name, (factory, _) in fast.SUPPORTED.items())


def test_fast_twins_are_registered_beside_their_algorithm():
    """Every kernel-backed transform of ``jaxopt_adv.fast`` is a registered optimizer."""
    for name in ("came", "tam", "adatam"):
        assert get_optimizer(f"fast.{name}") is getattr(fast, name)
        assert TABLE[f"fast.{name}"].family == TABLE[name].family
        assert TABLE[f"fast.{name}"].torch_reference == TABLE[name].torch_reference
