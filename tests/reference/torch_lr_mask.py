"""Minimal torch Automagic lr mask written from the Automagic-CameAMP spec, section 3.6.

A tiny optimizer around the mask: the processed gradient is ``ref = g + l2 * p``, the
update is heavy-ball momentum on it (``buf = momentum * buf + ref``; the update is ``ref``
itself when ``momentum == 0``) and the step is ``p -= update * lr`` with ``lr`` from the
mask. Per parameter, with t the 1-based step, w the warmup and ``group["lr"]`` the torch
group lr (set by a scheduler):

    t < w:  pos = source > 0                  (source: ref / raw gradient / update)
            bump = lr_bump * clamp(detail * SV, 0.5, 1.5)  if spatial  else lr_bump
            mask = mask + bump where last_polarity == pos, mask - bump elsewhere
            if group lr > lr_max:  mask += group lr - lr_max;  lr_max = group lr
            mask = clamp(mask, min_lr, max_lr);  last_polarity = pos;  lr = mask
    t >= w: lr = mask, and
            persistent (base/gesen): lr_max = max(lr_max, group lr);
                if group lr < lr_max: lr = mask * max(group lr / lr_max, 0.1)
            one-step (refactored):  if group lr != lr_max:
                lr = mask * group lr / lr_max;  lr_max = group lr     (mask not stored)
    spatial, ndim >= 2, every step after the update:
            SV = 0.9 SV + 0.1 var(ref, dim=-1, unbiased)   (ones if the last dim is 1)

The mask is stored in ``mask_dtype`` (float32 in the source) and every mask operation is
done in it. SV is kept per row (``keepdim``), which is exact since it is constant along
the last dim; it stays a scalar 1 for tensors with fewer than two dims. ``avg_lr`` is the
mean of the lr used for the step (the source only records it during warmup).
"""

from __future__ import annotations

import torch


class AutomagicLrMaskSGD(torch.optim.Optimizer):
    def __init__(
        self,
        params,
        lr=1e-6,
        *,
        min_lr=1e-7,
        max_lr=1e-3,
        lr_bump=3e-6,
        warmup_steps=500,
        spatial=False,
        detail_preservation=0.8,
        polarity_source="ref",
        persistent_schedule=True,
        momentum=0.0,
        l2=0.0,
        mask_dtype=torch.float32,
    ):
        super().__init__(params, dict(lr=lr))
        self.initial_lr = lr
        self.min_lr, self.max_lr, self.lr_bump = min_lr, max_lr, lr_bump
        self.warmup_steps = warmup_steps
        self.spatial, self.detail = spatial, detail_preservation
        self.polarity_source = polarity_source
        self.persistent = persistent_schedule
        self.momentum, self.l2 = momentum, l2
        self.mask_dtype = mask_dtype

    def _init_state(self, p):
        state = self.state[p]
        state["step"] = 0
        state["lr_mask"] = torch.full(p.shape, self.initial_lr, dtype=self.mask_dtype)
        state["last_polarity"] = torch.zeros(p.shape, dtype=torch.bool)
        state["lr_max_value"] = self.initial_lr
        state["buf"] = torch.zeros_like(p)
        if self.spatial:
            sv_shape = (*p.shape[:-1], 1) if p.dim() >= 2 else ()
            state["spatial_variance"] = torch.ones(sv_shape, dtype=p.dtype)

    def _mask(self, t: torch.Tensor) -> torch.Tensor:
        return torch.as_tensor(t, dtype=self.mask_dtype)

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            group_lr = group["lr"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if not state:
                    self._init_state(p)
                state["step"] += 1
                t = state["step"]
                raw = p.grad
                ref = raw + self.l2 * p
                if self.momentum:
                    state["buf"] = self.momentum * state["buf"] + ref
                    update = state["buf"]
                else:
                    update = ref
                source = {"ref": ref, "raw": raw, "update": update}[self.polarity_source]

                mask, lr_max = state["lr_mask"], state["lr_max_value"]
                if t < self.warmup_steps:
                    pos = source > 0
                    if self.spatial:
                        sv = state["spatial_variance"]
                        bump = self._mask(self.lr_bump * (self.detail * sv).clamp(0.5, 1.5))
                    else:
                        bump = self._mask(self.lr_bump)
                    mask = mask + torch.where(state["last_polarity"] == pos, bump, -bump)
                    if group_lr > lr_max:
                        mask = mask + self._mask(group_lr - lr_max)
                        lr_max = group_lr
                    mask = mask.clamp(self.min_lr, self.max_lr)
                    state["lr_mask"], state["last_polarity"] = mask, pos
                    lr = mask
                elif self.persistent:
                    lr = mask
                    lr_max = max(lr_max, group_lr)
                    if group_lr < lr_max:
                        lr = mask * self._mask(max(group_lr / lr_max, 0.1))
                else:
                    lr = mask
                    if group_lr != lr_max:
                        lr = mask * self._mask(group_lr / lr_max)
                        lr_max = group_lr
                state["lr_max_value"] = lr_max
                state["lr_max"] = torch.tensor(lr_max, dtype=torch.float64)
                p.sub_(update * lr)
                state["avg_lr"] = lr.to(p.dtype).mean()

                if self.spatial and p.dim() >= 2:
                    if p.shape[-1] > 1:
                        variance = ref.var(dim=-1, keepdim=True)
                    else:
                        variance = torch.ones_like(state["spatial_variance"])
                    sv = state["spatial_variance"]
                    state["spatial_variance"] = 0.9 * sv + 0.1 * variance
