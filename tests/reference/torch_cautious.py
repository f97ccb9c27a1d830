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


def cautious_(update, grad, mean_floor=1e-3, background_threshold=None, background_factor=0.5):
    mask = (update * grad > 0).to(update.dtype)
    mask.div_(torch.clamp(mask.mean(), min=mean_floor))
    # var() of one element is NaN (torch warns), and NaN is never below the threshold.
    if background_threshold is not None and grad.numel() > 1:
        if grad.var() < background_threshold:
            mask.mul_(background_factor)
    return update.mul_(mask)


class CautiousMomentumSGD(torch.optim.Optimizer):
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

    @torch.no_grad()
    def step(self):
        for group in self.param_groups:
            for p in group["params"]:
                g = p.grad
                state = self.state[p]
                if not state:
                    state["momentum_buffer"] = g.clone()
                else:
                    state["momentum_buffer"].mul_(group["momentum"]).add_(g)
                update = cautious_(
                    state["momentum_buffer"].clone(),
                    g,
                    group["mean_floor"],
                    group["background_threshold"],
                    group["background_factor"],
                )
                p.add_(update, alpha=-group["lr"])
