"""Minimal torch Laplacian edge strength and edge damping, from spec 3.3a and 3.5a.

    lap(x): over the last two dims (h, w); the row term x[i+1] - 2x[i] + x[i-1] is added on
            rows 1..h-2 (only if h > 2), the column term on columns 1..w-2 (only if w > 2);
            zero for tensors with fewer than two dims.
    E(x)  = 1[|lap x| > threshold] * |lap x| * scale
    damping of an update C (ndim >= 2):  H <- decay * H + (1 - decay) * E(C);
                                         C <- C * clamp(1 - H, floor, 1)

``EdgeDampedMomentumSGD`` damps a copy of the torch-SGD momentum buffer (``b_1 = g``,
``b <- momentum * b + g``) and steps ``p <- p - lr * C``. Tensors with fewer than two dims
keep an empty ``edge_history`` (as the JAX state does) and are not damped.
"""

from __future__ import annotations

import torch

from tests.reference.momentum_sgd import ShapedMomentumSGD


def laplacian(x: torch.Tensor) -> torch.Tensor:
    out = torch.zeros_like(x)
    if x.dim() < 2:
        return out
    h, w = x.shape[-2], x.shape[-1]
    if h > 2:
        out[..., 1 : h - 1, :] += x[..., 2:, :] - 2 * x[..., 1 : h - 1, :] + x[..., : h - 2, :]
    if w > 2:
        out[..., :, 1 : w - 1] += x[..., :, 2:] - 2 * x[..., :, 1 : w - 1] + x[..., :, : w - 2]
    return out


def edge_strength(x: torch.Tensor, threshold: float = 0.6, scale: float = 0.1) -> torch.Tensor:
    magnitude = laplacian(x).abs()
    return torch.where(magnitude > threshold, magnitude * scale, torch.zeros_like(magnitude))


class EdgeDampedMomentumSGD(ShapedMomentumSGD):
    def __init__(self, params, lr, momentum=0.9, decay=0.9, threshold=0.6, scale=0.1, floor=0.1):
        defaults = dict(
            lr=lr, momentum=momentum, decay=decay, threshold=threshold, scale=scale, floor=floor
        )
        super().__init__(params, defaults)

    def init_state(self, p, state):
        state["edge_history"] = torch.zeros_like(p) if p.dim() >= 2 else p.new_zeros(0)

    def direction(self, update, g, p, state, group):
        if p.dim() >= 2:
            h = state["edge_history"]
            strength = edge_strength(update, group["threshold"], group["scale"])
            h.mul_(group["decay"]).add_(strength, alpha=1.0 - group["decay"])
            update.mul_(torch.clamp(1.0 - h, min=group["floor"], max=1.0))
        return update
