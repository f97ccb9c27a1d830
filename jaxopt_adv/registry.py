"""The catalogue: one table from optimizer name to its factory and what it is.

Every family registers its user-facing factories in :data:`TABLE`, so the whole
catalogue is visible in one place and the contract tests can run over all of it.
:data:`REGISTRY` is the same table read as ``name -> factory``.
"""

from __future__ import annotations

import difflib
import fnmatch
import types
from collections.abc import Callable, Iterator, Mapping
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


class OptimizerInfo(NamedTuple):
    """One row of the catalogue (what ``jaxopt-adv list`` shows).

    ``factory``: call it with hyperparameters to get the optax transform; ``family``: the
    subpackage it comes from (``torch-exact``, ``came``, ``tam``, ...); ``paper``: the
    paper (and the original implementation where it matters); ``torch_reference``: the
    independent torch implementation its parity is tested against; ``needs``: what it
    takes beyond ``update(grads, state, params)`` ("" for nothing); ``fused``:
    :func:`jaxopt_adv.fast.fused` has a one-pass CPU kernel step for it (derived from
    :data:`jaxopt_adv.fast.SUPPORTED`).
    """

    factory: OptimizerFactory
    family: str
    paper: str
    torch_reference: str
    needs: str
    fused: bool


def _row(
    name: str,
    factory: OptimizerFactory,
    family: str,
    paper: str,
    torch_reference: str,
    needs: str = "",
) -> tuple[str, OptimizerInfo]:
    """``(name, info)`` with the ``fused`` column read from :data:`fast.SUPPORTED`."""
    fused = name in fast.SUPPORTED
    return name, OptimizerInfo(factory, family, paper, torch_reference, needs, fused)


_TORCH = "torch-exact"
# a torch version written from the paper or the original code, kept in the source
# repository's test suite (not installed with the package)
_RESTATEMENT = "minimal torch restatement (jaxopt_adv's test suite)"
_MUP = "Yang et al., Tensor Programs V, 2021"
_MUP_NEEDS = "infshapes= (muP base shapes)"
_CAME = "Luo et al., ACL 2023 (CAME)"
_CAME_TORCH = "came_pytorch.CAME, pytorch_optimizer.CAME"
_TAM = "Malviya et al. 2024 (TAM)"
_ADATAM = "Malviya et al. 2024 (AdaTAM)"
_ON_CPU = "; each leaf's momentum step in a C++ kernel on CPU)"

TABLE: Mapping[str, OptimizerInfo] = types.MappingProxyType(
    dict(
        [
            _row("adatam", adatam, "tam", _ADATAM, "pytorch_optimizer.AdaTAM"),
            _row(
                "automagic_came_amp",
                automagic_came_amp,
                "automagic",
                "Automagic-CameAMP (after hinablue's refactored torch optimizer, corrected)",
                _RESTATEMENT,
            ),
            _row("came", came, "came", _CAME, _CAME_TORCH),
            _row(
                "fast.adatam",
                fast.adatam,
                "tam",
                _ADATAM[:-1] + _ON_CPU,
                "pytorch_optimizer.AdaTAM",
            ),
            _row(
                "fast.came",
                fast.came,
                "came",
                _CAME[:-1] + "; matrices scaled by a C++ kernel on CPU)",
                _CAME_TORCH,
            ),
            _row("fast.tam", fast.tam, "tam", _TAM[:-1] + _ON_CPU, "pytorch_optimizer.TAM"),
            _row(
                "fer",
                create_fer_optimizer,
                "correction",
                "Deng et al., AAAI 2022 (FER)",
                _RESTATEMENT,
                "update(logits=, labels=, indices=)",
            ),
            _row(
                "gradient_correction",
                create_gradient_correction_optimizer,
                "correction",
                "GC-W + GC-ODE (arXiv 2203.08345, withdrawn; jaxopt_adv's definition)",
                _RESTATEMENT,
            ),
            _row("mu_adam", mu_adam, "mup", _MUP, "mup.MuAdam 1.0.0", _MUP_NEEDS),
            _row("mu_adamw", mu_adamw, "mup", _MUP, "mup.MuAdamW 1.0.0", _MUP_NEEDS),
            _row("mu_sgd", mu_sgd, "mup", _MUP, "mup.MuSGD 1.0.0", _MUP_NEEDS),
            _row(
                "sigprop",
                sigprop_optimizer,
                "local",
                "Kohan, Rietman, Siegelmann, IEEE TNNLS 2023 (SigProp)",
                _RESTATEMENT,
                "a SigPropNet's params",
            ),
            _row("tam", tam, "tam", _TAM, "pytorch_optimizer.TAM"),
            _row(
                "torch.adadelta",
                torch_exact.adadelta,
                _TORCH,
                "Zeiler 2012",
                "torch.optim.Adadelta",
            ),
            _row(
                "torch.adafactor",
                torch_exact.adafactor,
                _TORCH,
                "Shazeer & Stern 2018",
                "torch.optim.Adafactor",
            ),
            _row(
                "torch.adagrad",
                torch_exact.adagrad,
                _TORCH,
                "Duchi et al. 2011",
                "torch.optim.Adagrad",
            ),
            _row("torch.adam", torch_exact.adam, _TORCH, "Kingma & Ba 2015", "torch.optim.Adam"),
            _row(
                "torch.adamax",
                torch_exact.adamax,
                _TORCH,
                "Kingma & Ba 2015, sec. 7.1",
                "torch.optim.Adamax",
            ),
            _row(
                "torch.adamw",
                torch_exact.adamw,
                _TORCH,
                "Loshchilov & Hutter 2019",
                "torch.optim.AdamW",
            ),
            _row(
                "torch.asgd",
                torch_exact.asgd,
                _TORCH,
                "Polyak & Juditsky 1992",
                "torch.optim.ASGD",
            ),
            _row(
                "torch.lbfgs",
                torch_exact.lbfgs,
                _TORCH,
                "Nocedal 1980 (L-BFGS); Nocedal & Wright 2006 (strong Wolfe)",
                "torch.optim.LBFGS",
                "update(value_fn=) (the loss closure)",
            ),
            _row(
                "torch.muon",
                torch_exact.muon,
                _TORCH,
                "Jordan et al. 2024 (Muon; Newton-Schulz in bfloat16)",
                "torch.optim.Muon",
                "2-D params only",
            ),
            _row("torch.nadam", torch_exact.nadam, _TORCH, "Dozat 2016", "torch.optim.NAdam"),
            _row("torch.radam", torch_exact.radam, _TORCH, "Liu et al. 2020", "torch.optim.RAdam"),
            _row(
                "torch.rmsprop",
                torch_exact.rmsprop,
                _TORCH,
                "Tieleman & Hinton 2012",
                "torch.optim.RMSprop",
            ),
            _row(
                "torch.rprop",
                torch_exact.rprop,
                _TORCH,
                "Riedmiller & Braun 1993",
                "torch.optim.Rprop",
            ),
            _row(
                "torch.sgd",
                torch_exact.sgd,
                _TORCH,
                "Sutskever et al. 2013 (momentum)",
                "torch.optim.SGD",
            ),
            _row(
                "torch.sparse_adam",
                torch_exact.sparse_adam,
                _TORCH,
                "Kingma & Ba 2015 (masked to the gradient's support)",
                "torch.optim.SparseAdam",
            ),
        ]
    )
)


class _Factories(Mapping[str, OptimizerFactory]):
    """:data:`TABLE` read as ``name -> factory`` (read-only)."""

    def __getitem__(self, name: str) -> OptimizerFactory:
        return TABLE[name].factory

    def __iter__(self) -> Iterator[str]:
        return iter(TABLE)

    def __len__(self) -> int:
        return len(TABLE)

    def __repr__(self) -> str:
        return f"REGISTRY({sorted(TABLE)})"


REGISTRY: Mapping[str, OptimizerFactory] = _Factories()


def describe(name: str) -> OptimizerInfo:
    """The catalogue's row of a registered optimizer: factory, family, paper, torch
    reference, what it needs, whether it has a fused step.

    Example:
      >>> import jaxopt_adv
      >>> jaxopt_adv.describe("torch.adamw").torch_reference
      'torch.optim.AdamW'
      >>> jaxopt_adv.describe("torch.adamw").fused
      True
    """
    get_optimizer(name)  # the same error, with close matches, for unknown names
    return TABLE[name]


def close_matches(name: str) -> list[str]:
    """Up to three registered names close to ``name``."""
    return difflib.get_close_matches(name, TABLE, n=3, cutoff=0.5)


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
        return TABLE[name].factory
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
    return sorted(fnmatch.filter(TABLE, pattern))
