"""The contract between the fused kernels and their torch factories (fast/contracts.py).

Every argument of every fused factory is either read by its kernel's plan (a field of
the family's record, and the plan reads that field) or listed, with where it goes
instead, in ``NOT_READ`` below; a declaration whose factory lost or renamed an argument
the kernel reads fails when it is made (at import), not when a step is traced.
"""

from __future__ import annotations

import ast
import inspect
import textwrap

import pytest

from jaxopt_adv.fast import SUPPORTED
from jaxopt_adv.fast.contracts import Fused
from jaxopt_adv.fast.plans import ADAM, BY_NAME, FUSED

# fused optimizer -> the factory arguments its kernel does not read, and why
NOT_READ = {
    "torch.adagrad": {
        "initial_accumulator_value": "fills the state at init (tx.init); the kernel reads "
        "the state",
    },
    "torch.rprop": {
        "learning_rate": "the initial step size: fills the state at init (tx.init); the "
        "kernel reads the state",
    },
}
# fused optimizer -> record fields its factory fixes instead of taking them
FIXED = {"torch.adamw": {"decoupled_weight_decay": True}}


def plan_reads(fused: Fused) -> set[str]:
    """The record fields the family's plan reads (``args.<field>`` in its source)."""
    plan = fused.family.plan
    tree = ast.parse(textwrap.dedent(inspect.getsource(plan)))
    (record,) = [a.arg for a in tree.body[0].args.args[:1]]
    return {
        node.attr
        for node in ast.walk(tree)
        if isinstance(node, ast.Attribute)
        and isinstance(node.value, ast.Name)
        and node.value.id == record
    }


def test_supported_is_derived_from_one_declaration_per_fused_optimizer():
    names = [fused.name for fused in FUSED]
    assert len(names) == len(set(names))
    assert SUPPORTED == {f.name: (f.factory, f.family.name) for f in FUSED}
    assert set(SUPPORTED) == {
        "torch.adam",
        "torch.adamw",
        "torch.sgd",
        "torch.rmsprop",
        "torch.adagrad",
        "torch.adamax",
        "torch.nadam",
        "torch.radam",
        "torch.adadelta",
        "torch.rprop",
        "torch.asgd",
        "torch.sparse_adam",
    }


@pytest.mark.parametrize("name", list(BY_NAME))
def test_every_factory_argument_is_read_by_the_kernel_or_routed(name):
    fused = BY_NAME[name]
    parameters = set(inspect.signature(fused.factory).parameters)
    read = set(fused.family.args._fields)
    not_read = {arg: fused.family.not_read[arg] for arg in parameters - read}
    assert not_read == NOT_READ.get(name, {})
    assert dict(fused.fixed) == FIXED.get(name, {})
    assert read == (parameters - set(not_read)) | set(fused.fixed)


@pytest.mark.parametrize("name", list(BY_NAME))
def test_every_record_field_is_read_by_the_plan(name):
    fused = BY_NAME[name]
    assert plan_reads(fused) == set(fused.family.args._fields)


def test_the_record_is_built_from_the_bound_arguments():
    fused = BY_NAME["torch.adamw"]
    args = fused.args(fused.arguments({"learning_rate": 0.5, "b2": 0.9}))
    assert (args.learning_rate, args.b1, args.b2) == (0.5, 0.9, 0.9)
    assert args.weight_decay == 0.01  # adamw's default
    assert args.decoupled_weight_decay is True


def with_signature(parameters: list[inspect.Parameter]):
    """A factory that takes ``parameters`` (never called)."""

    def factory(*args, **kwargs):
        raise AssertionError("never called")

    factory.__signature__ = inspect.Signature(parameters)
    return factory


ADAM_PARAMETERS = list(inspect.signature(BY_NAME["torch.adam"].factory).parameters.values())
# Adam's signature with b1 renamed, and with an argument the kernel does not know
adam_with_renamed_beta = with_signature(
    [p.replace(name="beta1") if p.name == "b1" else p for p in ADAM_PARAMETERS]
)
adam_with_an_extra_argument = with_signature(
    [*ADAM_PARAMETERS, inspect.Parameter("foreach", inspect.Parameter.KEYWORD_ONLY, default=None)]
)


def test_a_renamed_argument_fails_the_declaration():
    with pytest.raises(TypeError, match="has no argument b1, which the adam kernel reads"):
        Fused("torch.adam", adam_with_renamed_beta, ADAM)


def test_an_argument_the_kernel_does_not_know_fails_the_declaration():
    with pytest.raises(TypeError, match="argument foreach is neither read by the adam kernel"):
        Fused("torch.adam", adam_with_an_extra_argument, ADAM)


def test_a_fixed_value_that_is_also_an_argument_fails_the_declaration():
    with pytest.raises(TypeError, match="decoupled_weight_decay is an argument"):
        Fused("torch.adam", BY_NAME["torch.adam"].factory, ADAM, {"decoupled_weight_decay": True})
