"""Minimal torch frequency and rank penalties, written from the Automagic-CameAMP spec.

Spec 3.3b (frequency penalty, 2-D tensors only), with M the centred radius mask
``M[i, j] = sqrt((i - h//2)^2 + (j - w//2)^2) > radius_ratio * min(h, w)``:

    faithful (the refactored file):  P = Re(ifft2(|fft2(g)| * M))
    highpass (its intent):           P = Re(ifft2(fft2(g) * ifftshift(M)))
    g <- g - strength * P

Spec 3.3c (rank penalty, 2-D tensors with min(m, n) > rank), U, S, Vh = svd(p):

    faithful: if sum(S[rank:]) > 0:  g <- g + U diag(strength * S) Vh
    tail:     g <- g + strength * (p - U[:, :rank] diag(S[:rank]) Vh[:rank])

``PenaltySGD`` applies, per param group, AGR (optional, from ``torch_agr``), then the
frequency penalty, then the rank penalty (the spec's pre-processing order), then steps
``p -= lr * g``.
"""

from __future__ import annotations

import math

import torch

from tests.reference.torch_agr import regularize


def radius_mask(h: int, w: int, radius_ratio: float) -> torch.Tensor:
    radius = radius_ratio * min(h, w)
    rows = [
        [math.sqrt((i - h // 2) ** 2 + (j - w // 2) ** 2) > radius for j in range(w)]
        for i in range(h)
    ]
    return torch.tensor(rows, dtype=torch.bool)


def frequency_penalty(g, strength=0.05, radius_ratio=0.3, mode="highpass"):
    if g.dim() != 2:
        return g
    mask = radius_mask(g.shape[0], g.shape[1], radius_ratio).to(g.dtype)
    spectrum = torch.fft.fft2(g)
    if mode == "faithful":
        penalty = torch.fft.ifft2(spectrum.abs() * mask).real
    else:
        penalty = torch.fft.ifft2(spectrum * torch.fft.ifftshift(mask)).real
    return g - strength * penalty


def rank_penalty(g, p, strength=0.01, rank=10, mode="tail"):
    if p.dim() != 2 or min(p.shape) <= rank:
        return g
    u, s, vh = torch.linalg.svd(p, full_matrices=False)
    if mode == "faithful":
        if s[rank:].sum() > 0:
            return g + u @ torch.diag(strength * s) @ vh
        return g
    best = u[:, :rank] @ torch.diag(s[:rank]) @ vh[:rank]
    return g + strength * (p - best)


class PenaltySGD(torch.optim.Optimizer):
    def __init__(self, params, lr, *, agr=None, frequency=None, rank=None):
        super().__init__(params, dict(lr=lr))
        self.agr, self.frequency, self.rank = agr, frequency, rank

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            grads = [p.grad for p in params]
            if self.agr is not None:
                grads = regularize(grads, **self.agr)
            for p, g in zip(params, grads, strict=True):
                if self.frequency is not None:
                    g = frequency_penalty(g, **self.frequency)
                if self.rank is not None:
                    g = rank_penalty(g, p, **self.rank)
                p.sub_(group["lr"] * g)
