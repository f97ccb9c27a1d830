"""Minimal torch AdamSPD written from the SPD paper and the Automagic-CameAMP spec, 3.7.

Adam as torch.optim.Adam computes it, then selective projection decay per tensor:

    p~   = p - lr / (1 - b1^t) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)     (the Adam step)
    cond = -sum(g * (p - pre))                                             (raw gradient)
    if cond < 0:
        ratio = clamp((||p~ - pre|| - ||p - pre||) / (||p~ - pre|| + ratio_eps), 0, 1)
        p~    = p~ - lam * ratio * (p~ - pre)
    p = p~

``pre`` is the anchor: the initial weights (``anchor="init"``, full fine-tune), zeros
(``"zeros"``, LoRA) or the previous iterate saved after the step (``"previous"``, the
refactored Automagic file). ``lam = weight_decay``, times ``1 + mean_k exp(-0.1 k)``
(``k < min(m, n)``) for matrices when ``rank_aware``. With ``active_steps = w`` SPD only
acts on steps ``t < w``. The paper's adamSPD has ``ratio_eps = 0``; Automagic uses 1e-8.
"""

from __future__ import annotations

import math

import torch


class AdamSPD(torch.optim.Optimizer):
    def __init__(
        self,
        params,
        lr=1e-3,
        betas=(0.9, 0.999),
        eps=1e-8,
        weight_decay=5e-4,
        *,
        anchor="init",
        ratio_eps=0.0,
        rank_aware=False,
        active_steps=None,
    ):
        defaults = dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay)
        super().__init__(params, defaults)
        self.anchor = anchor
        self.ratio_eps = ratio_eps
        self.rank_aware = rank_aware
        self.active_steps = active_steps
        if anchor == "init":
            for group in self.param_groups:
                for p in group["params"]:
                    self.state[p]["pre"] = p.detach().clone()

    def _decay(self, p, weight_decay):
        if self.rank_aware and p.dim() == 2:
            k = torch.arange(min(p.shape))
            weight_decay = weight_decay * (1 + torch.exp(-0.1 * k).mean())
        return weight_decay

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            b1, b2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                g = p.grad
                state = self.state[p]
                if "step" not in state:
                    state["step"] = 0
                    state["exp_avg"] = torch.zeros_like(p)
                    state["exp_avg_sq"] = torch.zeros_like(p)
                state["step"] += 1
                t = state["step"]
                m, v = state["exp_avg"], state["exp_avg_sq"]
                m.mul_(b1).add_(g, alpha=1 - b1)
                v.mul_(b2).addcmul_(g, g, value=1 - b2)
                denom = v.sqrt() / math.sqrt(1 - b2**t) + group["eps"]
                candidate = p - group["lr"] / (1 - b1**t) * m / denom

                pre = state.get("pre", torch.zeros_like(p))
                active = self.active_steps is None or t < self.active_steps
                if active and -(g * (p - pre)).sum() < 0:
                    new_dist = (candidate - pre).norm()
                    ratio = (new_dist - (p - pre).norm()) / (new_dist + self.ratio_eps)
                    ratio = ratio.clamp(0.0, 1.0)
                    lam = self._decay(p, group["weight_decay"])
                    candidate = candidate - lam * ratio * (candidate - pre)
                p.copy_(candidate)
                if self.anchor == "previous":
                    state["pre"] = p.clone()
