"""The CPU fast path: one fused pass per optimizer step (XLA FFI kernels in C++).

:func:`fused` builds a torch-exact optimizer (``torch.adam``, ``torch.adamw``,
``torch.sgd``, ``torch.rmsprop``, ``torch.adagrad``, ``torch.adadelta``, ``torch.adamax``,
``torch.nadam``, ``torch.radam``, ``torch.rprop``, ``torch.asgd``,
``torch.sparse_adam``) whose
``step(params, grads, state)`` runs one C++ kernel that reads and writes every array
once, bit-identical to the optax transform's ``update`` + ``optax.apply_updates`` under
``jax.jit``; :func:`jit_step` jits it with params and state donated; ``flat_state=True``
keeps each state field one flat array (:mod:`.flat`: fewer arrays through the jitted
call on many-leaf trees). The kernels are
compiled on first use (:mod:`.build`); where they cannot be used the step takes the
pure-JAX path (:func:`unavailable_reason`).
:func:`came` and :func:`scale_by_came` are CAME with each matrix scaled by one kernel
call in four passes (agreeing with :mod:`jaxopt_adv.automagic` to rounding).
:func:`automagic_lr_mask` is Automagic's per-element learning-rate mask with each
leaf's step in one kernel pass (bit-identical outputs; ``avg_lr`` to rounding);
:func:`scale_by_automagic_came` is Automagic-CameAMP's scaling (CAME, torque-aware
momentum or the decaying EMA, confidence) with each matrix stepped by one kernel call in
four passes (to rounding); :func:`jaxopt_adv.fast.automagic_body.scale_and_direct` runs
that scaling and the direction control in one call (five passes early, four later), as
``automagic_came_amp(kernel=True)`` does.
:func:`tam`, :func:`adatam`, :func:`scale_by_tam` and :func:`scale_by_adatam` are
torque-aware momentum with each leaf's step in one kernel call (to rounding).
:func:`tune_malloc` keeps XLA:CPU's large step temporaries on the heap (glibc), which
speeds up steps that materialise whole-leaf intermediates (CAME, Adafactor).
"""

from jaxopt_adv.fast.automagic import scale_by_automagic_came
from jaxopt_adv.fast.came import came, scale_by_came
from jaxopt_adv.fast.lr_mask import automagic_lr_mask
from jaxopt_adv.fast.malloc import tune_malloc
from jaxopt_adv.fast.step import (
    SUPPORTED,
    FusedOptimizer,
    available,
    fused,
    jit_step,
    unavailable_reason,
)
from jaxopt_adv.fast.tam import adatam, scale_by_adatam, scale_by_tam, tam

__all__ = [
    "SUPPORTED",
    "FusedOptimizer",
    "adatam",
    "automagic_lr_mask",
    "available",
    "came",
    "fused",
    "jit_step",
    "scale_by_adatam",
    "scale_by_automagic_came",
    "scale_by_came",
    "scale_by_tam",
    "tam",
    "tune_malloc",
    "unavailable_reason",
]
