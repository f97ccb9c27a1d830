"""The catalogue: one explicit dict from optimizer name to factory.

Every family registers its user-facing factories here, so the whole catalogue is
visible in one place and the contract tests can run over all of it.
"""

from __future__ import annotations

import difflib
import fnmatch
from collections.abc import Callable
from typing import NamedTuple

import optax

from jaxopt_adv import fast
from jaxopt_adv import torch as torch_exact
from jaxopt_adv.automagic import automagic_came_amp
from jaxopt_adv.came import came
from jaxopt_adv.correction import create_fer_optimizer, create_gradient_correction_optimizer
from jaxopt_adv.local import sigprop_optimizer
from jaxopt_adv.mup import mu_adam, mu_adamw, mu_sgd
from jaxopt_adv.tam import adatam, tam

OptimizerFactory = Callable[..., optax.GradientTransformation]

REGISTRY: dict[str, OptimizerFactory] = {
    "adatam": adatam,
    "automagic_came_amp": automagic_came_amp,
    "came": came,
    "fast.came": fast.came,
    "fer": create_fer_optimizer,
    "gradient_correction": create_gradient_correction_optimizer,
    "mu_adam": mu_adam,
    "mu_adamw": mu_adamw,
    "mu_sgd": mu_sgd,
    "sigprop": sigprop_optimizer,
    "tam": tam,
    "torch.adadelta": torch_exact.adadelta,
    "torch.adafactor": torch_exact.adafactor,
    "torch.adagrad": torch_exact.adagrad,
    "torch.adam": torch_exact.adam,
    "torch.adamax": torch_exact.adamax,
    "torch.adamw": torch_exact.adamw,
    "torch.asgd": torch_exact.asgd,
    "torch.lbfgs": torch_exact.lbfgs,
    "torch.muon": torch_exact.muon,
    "torch.nadam": torch_exact.nadam,
    "torch.radam": torch_exact.radam,
    "torch.rmsprop": torch_exact.rmsprop,
    "torch.rprop": torch_exact.rprop,
    "torch.sgd": torch_exact.sgd,
    "torch.sparse_adam": torch_exact.sparse_adam,
}


class OptimizerInfo(NamedTuple):
    """What ``jaxopt-adv list`` shows for a registered optimizer."""

    family: str
    paper: str
    torch_reference: str  # the independent torch implementation its parity is tested against


_TORCH = "torch-exact"
# a torch version written from the paper or the original code, kept in the source
# repository's test suite (not installed with the package)
_RESTATEMENT = "minimal torch restatement (jaxopt_adv's test suite)"
INFO: dict[str, OptimizerInfo] = {
    "adatam": OptimizerInfo("came", "Malviya et al. 2024 (AdaTAM)", "pytorch_optimizer.AdaTAM"),
    "automagic_came_amp": OptimizerInfo(
        "came",
        "Automagic-CameAMP (after hinablue's refactored torch optimizer, corrected)",
        _RESTATEMENT,
    ),
    "came": OptimizerInfo(
        "came", "Luo et al., ACL 2023 (CAME)", "came_pytorch.CAME, pytorch_optimizer.CAME"
    ),
    "fast.came": OptimizerInfo(
        "came",
        "Luo et al., ACL 2023 (CAME; matrices scaled by a C++ kernel on CPU)",
        "came_pytorch.CAME, pytorch_optimizer.CAME",
    ),
    "fer": OptimizerInfo(
        "correction",
        "Deng et al., AAAI 2022 (FER)",
        _RESTATEMENT,
    ),
    "gradient_correction": OptimizerInfo(
        "correction",
        "GC-W + GC-ODE (arXiv 2203.08345, withdrawn; jaxopt_adv's definition)",
        _RESTATEMENT,
    ),
    "mu_adam": OptimizerInfo("mup", "Yang et al., Tensor Programs V, 2021", "mup.MuAdam 1.0.0"),
    "mu_adamw": OptimizerInfo("mup", "Yang et al., Tensor Programs V, 2021", "mup.MuAdamW 1.0.0"),
    "mu_sgd": OptimizerInfo("mup", "Yang et al., Tensor Programs V, 2021", "mup.MuSGD 1.0.0"),
    "sigprop": OptimizerInfo(
        "local",
        "Kohan, Rietman, Siegelmann, IEEE TNNLS 2023 (SigProp)",
        _RESTATEMENT,
    ),
    "tam": OptimizerInfo("came", "Malviya et al. 2024 (TAM)", "pytorch_optimizer.TAM"),
    "torch.adadelta": OptimizerInfo(_TORCH, "Zeiler 2012", "torch.optim.Adadelta"),
    "torch.adafactor": OptimizerInfo(_TORCH, "Shazeer & Stern 2018", "torch.optim.Adafactor"),
    "torch.adagrad": OptimizerInfo(_TORCH, "Duchi et al. 2011", "torch.optim.Adagrad"),
    "torch.adam": OptimizerInfo(_TORCH, "Kingma & Ba 2015", "torch.optim.Adam"),
    "torch.adamax": OptimizerInfo(_TORCH, "Kingma & Ba 2015, sec. 7.1", "torch.optim.Adamax"),
    "torch.adamw": OptimizerInfo(_TORCH, "Loshchilov & Hutter 2019", "torch.optim.AdamW"),
    "torch.asgd": OptimizerInfo(_TORCH, "Polyak & Juditsky 1992", "torch.optim.ASGD"),
    "torch.lbfgs": OptimizerInfo(
        _TORCH, "Nocedal 1980 (L-BFGS); Nocedal & Wright 2006 (strong Wolfe)", "torch.optim.LBFGS"
    ),
    "torch.muon": OptimizerInfo(
        _TORCH, "Jordan et al. 2024 (Muon; Newton-Schulz in bfloat16)", "torch.optim.Muon"
    ),
    "torch.nadam": OptimizerInfo(_TORCH, "Dozat 2016", "torch.optim.NAdam"),
    "torch.radam": OptimizerInfo(_TORCH, "Liu et al. 2020", "torch.optim.RAdam"),
    "torch.rmsprop": OptimizerInfo(_TORCH, "Tieleman & Hinton 2012", "torch.optim.RMSprop"),
    "torch.rprop": OptimizerInfo(_TORCH, "Riedmiller & Braun 1993", "torch.optim.Rprop"),
    "torch.sgd": OptimizerInfo(_TORCH, "Sutskever et al. 2013 (momentum)", "torch.optim.SGD"),
    "torch.sparse_adam": OptimizerInfo(
        _TORCH, "Kingma & Ba 2015 (masked to the gradient's support)", "torch.optim.SparseAdam"
    ),
}


def describe(name: str) -> OptimizerInfo:
    """Family, paper and torch reference of a registered optimizer.

    Example:
      >>> import jaxopt_adv
      >>> jaxopt_adv.describe("torch.adamw").torch_reference
      'torch.optim.AdamW'
    """
    get_optimizer(name)  # the same error, with close matches, for unknown names
    return INFO[name]


def close_matches(name: str) -> list[str]:
    """Up to three registered names close to ``name``."""
    return difflib.get_close_matches(name, REGISTRY, n=3, cutoff=0.5)


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
        close = close_matches(name)
        hint = f"did you mean: {', '.join(close)}?" if close else "see list_optimizers()"
        raise KeyError(f"unknown optimizer {name!r}; {hint}") from None


def list_optimizers(pattern: str = "*") -> list[str]:
    """Sorted registered names matching a shell-style ``pattern`` (e.g. ``"torch.*"``).

    Example:
      >>> import jaxopt_adv
      >>> jaxopt_adv.list_optimizers("torch.ada*")
      ['torch.adadelta', 'torch.adafactor', 'torch.adagrad', 'torch.adam', 'torch.adamax', 'torch.adamw']
    """
    return sorted(fnmatch.filter(REGISTRY, pattern))
