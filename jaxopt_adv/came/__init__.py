"""CAME and the Automagic-CameAMP optimizer, as composable optax blocks.

Optimizers: :func:`came` (official CAME), :func:`tam` / :func:`adatam` (torque-aware
momentum), :func:`automagic_came_amp` (with :func:`create_lora_optimizer` and
:func:`create_full_finetune_optimizer`). Blocks of the Automagic-CameAMP composite, each usable on its own in an
``optax.chain``: :func:`agr` (adaptive gradient regularisation), :func:`frequency_penalty`,
:func:`low_rank_penalty`, :func:`grams`, :func:`cautious`, :func:`edge_damping`,
:func:`orthogonalize_update`, :func:`automagic_lr_mask`, :func:`selective_projection_decay`;
:func:`~jaxopt_adv.came.composition.with_reference_grads` hands the processed and the
raw gradient to the blocks that need them.
"""

from jaxopt_adv.came.agr import agr, edge_strength, laplacian
from jaxopt_adv.came.automagic import (
    AutomagicConfig,
    automagic_came_amp,
    automagic_stats,
    create_full_finetune_optimizer,
    create_lora_optimizer,
    full_finetune_config,
    lora_config,
    with_torch_layout,
)
from jaxopt_adv.came.came import ScaleByCameState, came, scale_by_came
from jaxopt_adv.came.composition import phase_of, with_reference_grads
from jaxopt_adv.came.direction import (
    EdgeDampingState,
    cautious,
    edge_damping,
    grams,
    orthogonalize_update,
)
from jaxopt_adv.came.lr_mask import AutomagicLrMaskState, automagic_lr_mask
from jaxopt_adv.came.penalties import frequency_penalty, low_rank_penalty
from jaxopt_adv.came.spd import SelectiveProjectionDecayState, selective_projection_decay
from jaxopt_adv.came.tam import (
    ScaleByAdaTamState,
    ScaleByTamState,
    adatam,
    scale_by_adatam,
    scale_by_tam,
    tam,
    torque_aware_momentum_update,
)

__all__ = [
    "AutomagicConfig",
    "automagic_came_amp",
    "automagic_stats",
    "create_full_finetune_optimizer",
    "create_lora_optimizer",
    "full_finetune_config",
    "lora_config",
    "with_torch_layout",
    "AutomagicLrMaskState",
    "EdgeDampingState",
    "ScaleByAdaTamState",
    "ScaleByCameState",
    "ScaleByTamState",
    "SelectiveProjectionDecayState",
    "adatam",
    "agr",
    "automagic_lr_mask",
    "came",
    "cautious",
    "edge_damping",
    "edge_strength",
    "frequency_penalty",
    "grams",
    "laplacian",
    "low_rank_penalty",
    "orthogonalize_update",
    "phase_of",
    "scale_by_adatam",
    "scale_by_came",
    "scale_by_tam",
    "selective_projection_decay",
    "tam",
    "torque_aware_momentum_update",
    "with_reference_grads",
]
