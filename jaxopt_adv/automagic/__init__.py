"""Automagic-CameAMP and its building blocks, as composable optax transforms.

The optimizer: :func:`automagic_came_amp` (with :func:`create_lora_optimizer` and
:func:`create_full_finetune_optimizer`, and the :class:`AutomagicConfig` presets
:func:`lora_config` / :func:`full_finetune_config`). Its blocks, each usable on its own in an
``optax.chain``: :func:`agr` (adaptive gradient regularisation), :func:`frequency_penalty`,
:func:`low_rank_penalty`, :func:`grams`, :func:`cautious`, :func:`edge_damping`,
:func:`orthogonalize_update`, :func:`automagic_lr_mask`, :func:`selective_projection_decay`;
:func:`~jaxopt_adv.automagic.composition.with_reference_grads` hands the processed and the
raw gradient to the blocks that need them. CAME itself lives in :mod:`jaxopt_adv.came`, the
torque-aware momentum in :mod:`jaxopt_adv.tam`.
"""

from jaxopt_adv.automagic.agr import agr, edge_strength, laplacian
from jaxopt_adv.automagic.automagic import (
    AutomagicConfig,
    automagic_came_amp,
    automagic_stats,
    create_full_finetune_optimizer,
    create_lora_optimizer,
    full_finetune_config,
    lora_config,
    with_torch_layout,
)
from jaxopt_adv.automagic.composition import phase_of, with_reference_grads
from jaxopt_adv.automagic.direction import (
    EdgeDampingState,
    cautious,
    edge_damping,
    grams,
    orthogonalize_update,
)
from jaxopt_adv.automagic.lr_mask import AutomagicLrMaskState, automagic_lr_mask
from jaxopt_adv.automagic.penalties import frequency_penalty, low_rank_penalty
from jaxopt_adv.automagic.spd import SelectiveProjectionDecayState, selective_projection_decay

__all__ = [
    "AutomagicConfig",
    "AutomagicLrMaskState",
    "EdgeDampingState",
    "SelectiveProjectionDecayState",
    "agr",
    "automagic_came_amp",
    "automagic_lr_mask",
    "automagic_stats",
    "cautious",
    "create_full_finetune_optimizer",
    "create_lora_optimizer",
    "edge_damping",
    "edge_strength",
    "frequency_penalty",
    "full_finetune_config",
    "grams",
    "laplacian",
    "lora_config",
    "low_rank_penalty",
    "orthogonalize_update",
    "phase_of",
    "selective_projection_decay",
    "with_reference_grads",
    "with_torch_layout",
]
