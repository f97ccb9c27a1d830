"""The catalogue: one explicit dict from optimizer name to factory.

Every family registers its user-facing factories here, so the whole catalogue is
visible in one place and the contract tests can run over all of it.
"""

from __future__ import annotations

import difflib
import fnmatch
from collections.abc import Callable

import optax

from jaxopt_adv import torch as torch_exact
from jaxopt_adv.came import adatam, automagic_came_amp, came, tam

OptimizerFactory = Callable[..., optax.GradientTransformation]

REGISTRY: dict[str, OptimizerFactory] = {
    "adatam": adatam,
    "automagic_came_amp": automagic_came_amp,
    "came": came,
    "tam": tam,
    "torch.adadelta": torch_exact.adadelta,
    "torch.adagrad": torch_exact.adagrad,
    "torch.adam": torch_exact.adam,
    "torch.adamax": torch_exact.adamax,
    "torch.adamw": torch_exact.adamw,
    "torch.asgd": torch_exact.asgd,
    "torch.nadam": torch_exact.nadam,
    "torch.radam": torch_exact.radam,
    "torch.rmsprop": torch_exact.rmsprop,
    "torch.rprop": torch_exact.rprop,
    "torch.sgd": torch_exact.sgd,
}


def get_optimizer(name: str) -> OptimizerFactory:
    """Return the factory registered as ``name``; call it with hyperparameters.

    Args:
      name: a registered name such as ``"torch.adamw"``.

    Returns:
      The factory, e.g. :func:`jaxopt_adv.torch.adamw`.

    Raises:
      KeyError: for an unknown name, listing the closest registered names.

    Example:
      >>> import jaxopt_adv
      >>> opt = jaxopt_adv.get_optimizer("torch.adamw")(learning_rate=1e-3)
      >>> jaxopt_adv.get_optimizer("torch.adamm")
      Traceback (most recent call last):
      ...
      KeyError: "unknown optimizer 'torch.adamm'; did you mean: torch.adam, ...?"
    """
    try:
        return REGISTRY[name]
    except KeyError:
        close = difflib.get_close_matches(name, REGISTRY, n=3, cutoff=0.5)
        hint = f"did you mean: {', '.join(close)}?" if close else "see list_optimizers()"
        raise KeyError(f"unknown optimizer {name!r}; {hint}") from None


def list_optimizers(pattern: str = "*") -> list[str]:
    """Sorted registered names matching a shell-style ``pattern`` (e.g. ``"torch.*"``).

    Example:
      >>> import jaxopt_adv
      >>> jaxopt_adv.list_optimizers("torch.ada*")
      ['torch.adadelta', 'torch.adagrad', 'torch.adam', 'torch.adamax', 'torch.adamw']
    """
    return sorted(fnmatch.filter(REGISTRY, pattern))
