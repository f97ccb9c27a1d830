"""jaxopt_adv: torch-exact and research optimizers for JAX, as composable optax transforms.

Families:
  * :mod:`jaxopt_adv.torch` -- optimizers that reproduce ``torch.optim`` step for step.

Every user-facing factory is registered by name: :func:`get_optimizer`,
:func:`list_optimizers`.
"""

from jaxopt_adv import torch
from jaxopt_adv.registry import REGISTRY, get_optimizer, list_optimizers

__version__ = "0.1.0"

__all__ = ["REGISTRY", "get_optimizer", "list_optimizers", "torch"]
