"""Minimal torch AGR written from the Automagic-CameAMP spec, section 3.3a.

For every param group, before the wrapped torch optimizer steps, each gradient becomes

    g <- g * (1 - alpha),   alpha = |g| / (S + eps) * (1 + E(g))   [edge factor optional]

with S the sum of |g| over the tensor (scope "leaf", official AGR) or over every gradient
of the param group (scope "tree", Automagic-CameAMP's torch.cat sum). E is the Laplacian
edge strength: the second differences over the last two dims (row term on rows 1..h-2 if
h > 2, column term on columns 1..w-2 if w > 2), kept where |.| > threshold, times scale;
zero for tensors with fewer than two dims. With cap_alpha, alpha is capped at 1 - 1/n,
n the number of elements S sums over (the tensor's, or the group's), so that an element
carrying the whole sum keeps 1/n of itself and a one-element sum leaves it unchanged.
"""

from __future__ import annotations

import torch


def edge_strength(x: torch.Tensor, threshold: float, scale: float) -> torch.Tensor:
    lap = torch.zeros_like(x)
    if x.dim() >= 2:
        h, w = x.shape[-2], x.shape[-1]
        if h > 2:
            lap[..., 1 : h - 1, :] += x[..., 2:, :] - 2 * x[..., 1 : h - 1, :] + x[..., : h - 2, :]
        if w > 2:
            lap[..., 1 : w - 1] += x[..., 2:] - 2 * x[..., 1 : w - 1] + x[..., : w - 2]
    strength = lap.abs()
    return torch.where(strength > threshold, strength * scale, torch.zeros_like(strength))


def regularize(grads, *, scope, edge, edge_threshold, edge_scale, eps, cap_alpha=False):
    """The AGR-processed copies of one param group's gradients."""
    flat = torch.cat([g.reshape(-1) for g in grads])
    group_sum = flat.abs().sum()
    out = []
    for g in grads:
        total = g.abs().sum() if scope == "leaf" else group_sum
        alpha = g.abs() / (total + eps)
        if edge:
            alpha = alpha * (1 + edge_strength(g, edge_threshold, edge_scale))
        if cap_alpha:
            n = g.numel() if scope == "leaf" else flat.numel()
            alpha = torch.clamp(alpha, max=1 - 1 / n)
        out.append(g * (1 - alpha))
    return out


class _AGRMixin:
    """Replace every group's gradients by their AGR version, then step the base optimizer."""

    def _set_agr(
        self,
        scope="leaf",
        edge=False,
        edge_threshold=0.6,
        edge_scale=0.1,
        eps=1e-10,
        cap_alpha=False,
    ):
        self.agr_options = dict(
            scope=scope,
            edge=edge,
            edge_threshold=edge_threshold,
            edge_scale=edge_scale,
            eps=eps,
            cap_alpha=cap_alpha,
        )

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            new = regularize([p.grad for p in params], **self.agr_options)
            for p, g in zip(params, new, strict=True):
                p.grad = g
        return super().step(closure)


class AGRSGD(_AGRMixin, torch.optim.SGD):
    def __init__(self, params, lr, *, momentum=0.0, **agr_options):
        super().__init__(params, lr=lr, momentum=momentum)
        self._set_agr(**agr_options)


class AGRAdamW(_AGRMixin, torch.optim.AdamW):
    def __init__(self, params, lr, *, weight_decay=1e-2, **agr_options):
        super().__init__(params, lr=lr, weight_decay=weight_decay)
        self._set_agr(**agr_options)
