"""jaxopt_adv: torch-exact and research optimizers for JAX, as composable optax transforms.

Families:
  * :mod:`jaxopt_adv.torch` -- optimizers that reproduce ``torch.optim`` step for step.
  * :mod:`jaxopt_adv.came` -- CAME; :mod:`jaxopt_adv.tam` -- TAM/AdaTAM;
    :mod:`jaxopt_adv.automagic` -- Automagic-CameAMP and its blocks.
  * :mod:`jaxopt_adv.mup` -- muP width transfer: torch-exact ``mu_adam`` / ``mu_adamw`` /
    ``mu_sgd`` (PyPI ``mup`` rules), shape inference, ``MuReadout`` and the init rescale,
    the coordinate check.
  * :mod:`jaxopt_adv.correction` -- FER (:func:`fer`, :func:`create_fer_optimizer`) and
    gradient correction (:func:`gradient_correction`,
    :func:`create_gradient_correction_optimizer`).
  * :mod:`jaxopt_adv.local` -- local learning rules: SigProp (:class:`SigPropNet`,
    :func:`sigprop_optimizer`, :func:`create_sigprop_optimizer`) and Hebbian localized
    learning (:func:`localized_learning`, :func:`create_localized_optimizer`). The old
    modules ``jaxopt_adv.sigprop`` and ``jaxopt_adv.localized`` still resolve these
    names, with a ``DeprecationWarning``.

Utilities:
  * :mod:`jaxopt_adv.models` -- torch's layers and two models (MLP, SmallCNN) in Flax NNX
    with torch's semantics (BatchNorm momentum and unbiased running variance, default
    init); images NHWC.
  * :mod:`jaxopt_adv.interop` -- torch ``state_dict`` <-> Flax NNX parameters and batch
    statistics.
  * :mod:`jaxopt_adv.train` -- a jitted, donated train step, an epoch loop and orbax
    checkpoints (imported on demand: ``from jaxopt_adv.train import fit``).

Every user-facing factory is registered by name: :func:`get_optimizer`,
:func:`list_optimizers`.
"""

import importlib
from typing import Any

from jaxopt_adv import (
    automagic,
    came,
    correction,
    interop,
    local,
    models,
    mup,
    tam,
    torch,
)
from jaxopt_adv.correction import (
    create_fer_optimizer,
    create_gradient_correction_optimizer,
    fer,
    gradient_correction,
)
from jaxopt_adv.local import (
    create_localized_optimizer,
    create_sigprop_optimizer,
    localized_learning,
    sigprop_optimizer,
)
from jaxopt_adv.registry import REGISTRY, describe, get_optimizer, list_optimizers

__version__ = "0.1.0"

__all__ = [
    "REGISTRY",
    "automagic",
    "came",
    "describe",
    "correction",
    "create_fer_optimizer",
    "create_gradient_correction_optimizer",
    "create_localized_optimizer",
    "create_sigprop_optimizer",
    "fer",
    "get_optimizer",
    "gradient_correction",
    "interop",
    "list_optimizers",
    "local",
    "localized_learning",
    "models",
    "mup",
    "sigprop_optimizer",
    "tam",
    "torch",
]


def __getattr__(name: str) -> Any:
    """The deprecated modules ``sigprop`` and ``localized``, imported on first use (their
    names warn and resolve to :mod:`jaxopt_adv.local`'s)."""
    if name not in ("sigprop", "localized"):
        raise AttributeError(f"module 'jaxopt_adv' has no attribute {name!r}")
    return importlib.import_module(f"jaxopt_adv.{name}")
