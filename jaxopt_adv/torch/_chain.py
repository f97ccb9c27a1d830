"""The wrapper every torch-exact optimizer shares: torch's order of operations.

torch.optim applies, in this order: negate the gradient (``maximize``), add coupled L2
weight decay ``wd * param``, run the algorithm, then step with ``-lr`` -- where decoupled
weight decay ``param * (1 - lr * wd)`` is the same as adding ``wd * param`` after the
algorithm and before the learning rate.  :func:`torch_chain` builds exactly that
``optax.chain``, leaving out the blocks a static option (``maximize``, no learning rate)
turns off. The weight decay block is always in (a pass-through at a Python 0), so the
state's structure does not depend on the decay's value, e.g. when it is injected.
"""

from __future__ import annotations

from typing import Any, Final

import optax

from jaxopt_adv._common import (
    check_learning_rate,
    check_nonnegative,
    requires_float_params,
    skip_at_static_zero,
    with_gradient_dtype,
)

# ``learning_rate=FINAL_UPDATE``: the core already returns the final (descent) update, as
# Rprop, ASGD and Adafactor do. A distinct marker, so a user's ``learning_rate=None`` is an error.
FINAL_UPDATE: Final = object()


def torch_chain(
    *core: optax.GradientTransformation,
    learning_rate: optax.ScalarOrSchedule | object,
    weight_decay: Any = 0.0,
    decoupled_weight_decay: bool = False,
    maximize: bool = False,
) -> optax.GradientTransformationExtraArgs:
    """``chain([scale(-1)], [coupled wd], *core, [decoupled wd], [scale_by_learning_rate])``.

    Args:
      *core: the algorithm's blocks (they return an ascent direction).
      learning_rate: scalar or schedule; :data:`FINAL_UPDATE` when ``core`` already
        returns the final (descent) update, as Rprop, ASGD and Adafactor do.
      weight_decay: L2 coefficient; at a Python ``0`` its block passes the updates through
        (``params`` are not needed), anything else (including traced values) decays.
      decoupled_weight_decay: apply ``wd * param`` after the algorithm (AdamW style).
      maximize: ascend instead of descend (torch negates the gradient first).

    Returns:
      The chained transform; its updates have the gradients' dtypes, and its ``init``
      refuses integer and complex params.
    """
    if learning_rate is not FINAL_UPDATE:
        check_learning_rate(learning_rate)
    check_nonnegative(weight_decay, "weight_decay")
    decay = [skip_at_static_zero(weight_decay, optax.add_decayed_weights(weight_decay))]
    blocks = [optax.scale(-1.0)] if maximize else []
    blocks += [] if decoupled_weight_decay else decay
    blocks += list(core)
    blocks += decay if decoupled_weight_decay else []
    if learning_rate is not FINAL_UPDATE:
        blocks.append(optax.scale_by_learning_rate(learning_rate))
    # the decay and optax's blocks promote a bfloat16 gradient to the params' / state's dtype
    return requires_float_params(with_gradient_dtype(optax.chain(*blocks)))
