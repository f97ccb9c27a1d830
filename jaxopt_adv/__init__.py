"""jaxopt_adv: torch-exact and research optimizers for JAX, as composable optax transforms.

Families:
  * :mod:`jaxopt_adv.torch` -- optimizers that reproduce ``torch.optim`` step for step.
  * :mod:`jaxopt_adv.came` -- CAME and the Automagic-CameAMP optimizer as optax blocks.

Utilities:
  * :mod:`jaxopt_adv.models` -- the seed-003 layers and models (MLP, SmallCNN) in Flax NNX
    with torch's semantics (BatchNorm momentum and unbiased running variance, default
    init); images NHWC.
  * :mod:`jaxopt_adv.interop` -- torch ``state_dict`` <-> Flax NNX parameters and batch
    statistics.
  * :mod:`jaxopt_adv.train` -- a jitted, donated train step, an epoch loop and orbax
    checkpoints (imported on demand: ``from jaxopt_adv.train import fit``).

Every user-facing factory is registered by name: :func:`get_optimizer`,
:func:`list_optimizers`.
"""

from jaxopt_adv import came, interop, models, torch
from jaxopt_adv.registry import REGISTRY, get_optimizer, list_optimizers

__version__ = "0.1.0"

__all__ = [
    "REGISTRY",
    "came",
    "get_optimizer",
    "interop",
    "list_optimizers",
    "models",
    "torch",
]
