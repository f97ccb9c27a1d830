"""Minimal torch FER written from spec 1.2 (the ``train_fer`` math of Xiang-Deng-DL/FER).

Per training sample ``i``: soft memory ``s[i]`` (zeros, never renormalised) and flag
``c[i]`` ("ever correct", False). In the 1-based epoch ``e`` of ``E``, for a batch with
dataset indices ``idx``, logits ``z`` and labels ``y``:

    e <= init:  L = mean CE(z, y)
    else:       lam = fer_weight * e / E;   t = c[idx]            (read before the write)
                KD  = T^2 * (-(s[idx] * log_softmax(z / T)).sum(1))
                L   = mean( t * ((1 - lam) * CE + lam * KD) + (1 - t) * CE )
    then, in every epoch, from z.detach():
        correct = argmax(z) == y;   flips = #(c[idx] & ~correct);   c[idx] |= correct
        for each correct b:  w = 1 - exp(-mu * softmax(z_b)[y_b])
                             s[idx_b] = (1 - w) * s[idx_b] + w * softmax(z_b / T)
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


class FERMemory:
    """``s`` and ``c`` for ``num_samples`` samples, and the batch write."""

    def __init__(self, num_samples: int, num_classes: int, dtype: torch.dtype) -> None:
        self.s = torch.zeros(num_samples, num_classes, dtype=dtype)
        self.c = torch.zeros(num_samples, dtype=torch.bool)

    @torch.no_grad()
    def update(self, logits, labels, idx, mu: float, T: float) -> tuple[int, int]:
        """Record the batch; returns (wrongly flipped, misclassified) of the batch."""
        z = logits.detach()
        correct = z.argmax(dim=1) == labels
        flips = int((self.c[idx] & ~correct).sum())
        wrong = int((~correct).sum())
        self.c[idx] = self.c[idx] | correct
        for b in range(len(idx)):
            if correct[b]:
                w = 1 - torch.exp(-mu * F.softmax(z[b], dim=0)[labels[b]])
                i = int(idx[b])
                self.s[i] = (1 - w) * self.s[i] + w * F.softmax(z[b] / T, dim=0)
        return flips, wrong


def fer_loss_torch(
    logits, labels, idx, memory: FERMemory, *, e: int, E: int, fer_weight, T, init
) -> torch.Tensor:
    """The loss of the batch in 1-based epoch ``e``."""
    ce = F.cross_entropy(logits, labels, reduction="none")
    if e <= init:
        return ce.mean()
    lam = fer_weight * e / E
    t = memory.c[idx].to(logits.dtype)
    kd = T**2 * -(memory.s[idx] * F.log_softmax(logits / T, dim=1)).sum(dim=1)
    return (t * ((1 - lam) * ce + lam * kd) + (1 - t) * ce).mean()
