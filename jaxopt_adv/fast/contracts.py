"""What each fused kernel reads from its torch optimizer's arguments, as typed records.

A kernel family's plan (:mod:`.plans`) reads the hyperparameters of the optax
transform it replaces from a NamedTuple (:class:`AdamArgs`, :class:`SgdArgs`, ...)
whose fields are the factory's argument names. :class:`Fused` declares one fused
optimizer (registered name, factory, kernel :class:`Family`) and checks, when the
declaration is made (at import), that each field is an argument of the factory (or a
value the optimizer fixes, as AdamW fixes ``decoupled_weight_decay``) and that each
argument of the factory is either a field or listed in the family's ``not_read`` with
where it goes instead: renaming an argument in :mod:`jaxopt_adv.torch` fails the import
of :mod:`jaxopt_adv.fast`, not a traced step.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import optax

__all__ = [
    "AdadeltaArgs",
    "AdagradArgs",
    "AdamArgs",
    "AdamaxArgs",
    "AsgdArgs",
    "Family",
    "Fused",
    "NadamArgs",
    "RadamArgs",
    "RmspropArgs",
    "RpropArgs",
    "SgdArgs",
    "SparseAdamArgs",
]


class AdamArgs(NamedTuple):
    """What Adam's kernel reads (``jaxopt_adv.torch.adam`` / ``adamw``)."""

    learning_rate: Any
    b1: Any
    b2: Any
    eps: Any
    weight_decay: Any
    amsgrad: bool
    maximize: bool
    decoupled_weight_decay: bool
    mu_dtype: Any
    torch_default_dtype: Any


class SgdArgs(NamedTuple):
    """What SGD's kernel reads (``jaxopt_adv.torch.sgd``)."""

    learning_rate: Any
    momentum: Any
    dampening: Any
    weight_decay: Any
    nesterov: bool
    maximize: bool
    accumulator_dtype: Any


class RmspropArgs(NamedTuple):
    """What RMSprop's kernel reads (``jaxopt_adv.torch.rmsprop``)."""

    learning_rate: Any
    alpha: Any
    eps: Any
    weight_decay: Any
    momentum: Any
    centered: bool
    maximize: bool


class AdagradArgs(NamedTuple):
    """What Adagrad's kernel reads (``jaxopt_adv.torch.adagrad``)."""

    learning_rate: Any
    lr_decay: Any
    weight_decay: Any
    eps: Any
    maximize: bool
    torch_default_dtype: Any


class AdadeltaArgs(NamedTuple):
    """What Adadelta's kernel reads (``jaxopt_adv.torch.adadelta``)."""

    learning_rate: Any
    rho: Any
    eps: Any
    weight_decay: Any
    maximize: bool


class AdamaxArgs(NamedTuple):
    """What Adamax's kernel reads (``jaxopt_adv.torch.adamax``)."""

    learning_rate: Any
    b1: Any
    b2: Any
    eps: Any
    weight_decay: Any
    maximize: bool
    torch_default_dtype: Any


class NadamArgs(NamedTuple):
    """What NAdam's kernel reads (``jaxopt_adv.torch.nadam``)."""

    learning_rate: Any
    b1: Any
    b2: Any
    eps: Any
    weight_decay: Any
    momentum_decay: Any
    decoupled_weight_decay: bool
    maximize: bool
    mu_dtype: Any
    torch_default_dtype: Any


class RadamArgs(NamedTuple):
    """What RAdam's kernel reads (``jaxopt_adv.torch.radam``)."""

    learning_rate: Any
    b1: Any
    b2: Any
    eps: Any
    weight_decay: Any
    decoupled_weight_decay: bool
    maximize: bool
    mu_dtype: Any
    torch_default_dtype: Any


class RpropArgs(NamedTuple):
    """What Rprop's kernel reads (``jaxopt_adv.torch.rprop``)."""

    etas: tuple[Any, Any]
    step_sizes: tuple[Any, Any]
    maximize: bool


class AsgdArgs(NamedTuple):
    """What ASGD's kernel reads (``jaxopt_adv.torch.asgd``)."""

    learning_rate: Any
    lambd: Any
    alpha: Any
    t0: Any
    weight_decay: Any
    maximize: bool
    torch_default_dtype: Any


class SparseAdamArgs(NamedTuple):
    """What SparseAdam's kernel reads (``jaxopt_adv.torch.sparse_adam``)."""

    learning_rate: Any
    b1: Any
    b2: Any
    eps: Any
    maximize: bool
    torch_default_dtype: Any


@dataclass(frozen=True)
class Family:
    """One kernel: the record of what it reads, its plan and its self-check.

    ``plan(args, old_inner, new_inner, checked)`` gives a :class:`jaxopt_adv.fast.plans.Plan`
    (``checked(check)``: why a self-check family failed on this host, or ``None``);
    ``check`` is the self-check family that gates the kernel (:mod:`.selfcheck`);
    ``not_read`` maps the factory arguments the kernel does not read to where they take
    effect instead.
    """

    name: str
    args: type
    plan: Callable[..., Any]
    check: str
    not_read: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Fused:
    """One fused optimizer: its registered name, the optax factory it mirrors and its
    kernel family; ``fixed`` gives the record fields the factory fixes.

    Raises:
      TypeError: (at construction) a field of the family's record is neither an argument
        of the factory nor fixed, or an argument of the factory is neither a field nor in
        the family's ``not_read``.
    """

    name: str
    factory: Callable[..., optax.GradientTransformation]
    family: Family
    fixed: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        parameters = set(inspect.signature(self.factory).parameters)
        fields = set(self.family.args._fields)
        where = f"{self.name} ({self.factory.__module__}.{self.factory.__qualname__})"
        missing = sorted(fields - parameters - set(self.fixed))
        if missing:
            raise TypeError(
                f"{where} has no argument {', '.join(missing)}, which the "
                f"{self.family.name} kernel reads ({self.family.args.__name__})"
            )
        unrouted = sorted(parameters - fields - set(self.family.not_read))
        if unrouted:
            raise TypeError(
                f"{where}: argument {', '.join(unrouted)} is neither read by the "
                f"{self.family.name} kernel ({self.family.args.__name__}) nor in its not_read"
            )
        both = sorted(set(self.fixed) & parameters)
        if both:
            raise TypeError(f"{where}: {', '.join(both)} is an argument, not a fixed value")

    def arguments(self, hyperparams: Mapping[str, Any]) -> dict[str, Any]:
        """The factory's arguments for ``hyperparams`` (defaults filled in) and the fixed
        values."""
        bound = inspect.signature(self.factory).bind(**hyperparams)
        bound.apply_defaults()
        return {**bound.arguments, **self.fixed}

    def args(self, arguments: Mapping[str, Any]) -> Any:
        """The family's record of ``arguments`` (see :meth:`arguments`)."""
        return self.family.args._make(arguments[name] for name in self.family.args._fields)
