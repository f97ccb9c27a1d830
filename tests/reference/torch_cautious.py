"""Minimal torch Cautious masking as Automagic-CameAMP normalises it, from spec 3.5b.

Per tensor, with update ``u`` and (processed) gradient ``g``:

    M = 1[u * g > 0];   M = M / max(mean(M), mean_floor)
    if background_threshold is not None and var(g) < background_threshold:   # unbiased
        M = M * background_factor
    u = u * M

``CautiousMomentumSGD`` runs torch-SGD momentum (``b <- momentum * b + g``, ``b_1 = g``),
masks a copy of the buffer with ``g``, and steps ``p <- p - lr * u``.
"""

from __future__ import annotations

import torch

from tests.reference.momentum_sgd import ShapedMomentumSGD


def cautious_(update, grad, mean_floor=1e-3, background_threshold=None, background_factor=0.5):
    mask = (update * grad > 0).to(update.dtype)
    mask.div_(torch.clamp(mask.mean(), min=mean_floor))
    # var() of one element is NaN (torch warns), and NaN is never below the threshold.
    if background_threshold is not None and grad.numel() > 1:
        if grad.var() < background_threshold:
            mask.mul_(background_factor)
    return update.mul_(mask)


class CautiousMomentumSGD(ShapedMomentumSGD):
    def __init__(
        self,
        params,
        lr,
        momentum=0.9,
        mean_floor=1e-3,
        background_threshold=None,
        background_factor=0.5,
    ):
        defaults = dict(
            lr=lr,
            momentum=momentum,
            mean_floor=mean_floor,
            background_threshold=background_threshold,
            background_factor=background_factor,
        )
        super().__init__(params, defaults)

    def direction(self, update, g, p, state, group):
        floor, threshold = group["mean_floor"], group["background_threshold"]
        return cautious_(update, g, floor, threshold, group["background_factor"])
