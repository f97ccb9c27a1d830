"""The torch twins' docstrings, completed from jaxopt_adv.torch._docs.SHARED_ARGS."""

import inspect
import re

import pytest

from jaxopt_adv import torch as jtorch
from jaxopt_adv.torch._docs import SHARED_ARGS, shared_arg_docs

FACTORIES = ["adam", "adamw", "adamax", "nadam", "radam", "sparse_adam", "asgd", "adadelta"]


def documented(function) -> list[str]:
    section = inspect.getdoc(function).split("Args:\n", 1)[1].split("\n\n", 1)[0]
    return re.findall(r"^  (\w+):", section, re.M)


@pytest.mark.parametrize("name", FACTORIES)
def test_every_argument_is_described_in_signature_order(name):
    factory = getattr(jtorch, name)
    assert documented(factory) == list(inspect.signature(factory).parameters)


def test_the_shared_description_is_filled_in():
    doc = " ".join(inspect.getdoc(jtorch.adam).split())
    for name in ("b1", "b2", "maximize", "mu_dtype", "torch_default_dtype"):
        assert f"{name}: {SHARED_ARGS[name]}" in doc
    doc = " ".join(inspect.getdoc(jtorch.adagrad).split())
    for name in ("eps", "weight_decay"):
        assert f"{name}: {SHARED_ARGS[name]}" in doc


def test_an_entry_for_no_parameter_is_an_error():
    def factory(learning_rate=1.0):
        """A factory.

        Args:
          learning_rate: the step.
          lr: a stray.
        """

    with pytest.raises(ValueError, match="lr"):
        shared_arg_docs(factory)
