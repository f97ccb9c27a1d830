"""Minimal torch LoCal+SGD written from spec 4.2 / 4.3 / 4.5 (no public implementation exists).

An MLP of Linear + ReLU hidden layers and a Linear head. A step with boundary ``T``:
the forward records ``(x_l, z_l, a_l)`` (input, pre-activation output ``z = x W^T + b``,
post-ReLU output ``a``) of every hidden layer and detaches ``h`` after hidden layer
``T - 1``; the cross-entropy's backward then reaches only layers ``>= T`` and the head,
which ``torch.optim.SGD(momentum)`` steps (parameters without a gradient are skipped by
torch). Under ``torch.no_grad`` the first ``T`` layers get, with
``eta = hebbian_lr * (1 + lam * tanh(loss))``, torch weights ``W [out, in]`` and ``y``
the post-activation ``a`` (``post="activation"``) or the pre-activation ``z``
(``post="pre"``):

  hebb:  W += eta * y^T x / B;                          b += eta * mean_b y
  oja:   W += eta * (y^T x - diag(sum_b y^2) W) / B      (bias unchanged)
  "layer" normalisation divides the bracket by (1e-8 + its max magnitude) before eta.

``legacy=True`` applies the seed's intended formulas of spec 4.2 instead, on the
pre-activation ``Y = z``:

  W += eta * (Y^T X / B) / (1e-8 + max|Y^T X / B|) * (1 + lam * tanh(loss))
  b += eta * mean_b(Y) * (1 + lam * tanh(loss))
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class TorchLocalMLP(nn.Module):
    def __init__(self, in_features: int, hidden: list[int], num_classes: int) -> None:
        super().__init__()
        dims = [in_features, *hidden]
        self.layers = nn.ModuleList(
            nn.Linear(a, b) for a, b in zip(dims[:-1], dims[1:], strict=True)
        )
        self.head = nn.Linear(dims[-1], num_classes)


def hebbian_step(layer: nn.Linear, x, y, eta: float, rule: str, normalize) -> None:
    with torch.no_grad():
        b = x.shape[0]
        delta = y.t() @ x
        if rule == "oja":
            delta = delta - (y * y).sum(0)[:, None] * layer.weight
        delta = delta / b
        if normalize == "layer":
            delta = delta / (1e-8 + delta.abs().max())
        layer.weight += eta * delta
        if rule == "hebb":
            layer.bias += eta * y.mean(0)


def seed_hebbian_step(layer: nn.Linear, x, pre, hebbian_lr: float, lam: float, loss: float):
    """spec 4.2, the seed's ``_apply_hebbian_update`` as it was meant to run."""
    with torch.no_grad():
        factor = 1 + lam * math.tanh(loss)
        correlation = pre.t() @ x / x.shape[0]
        correlation = correlation / (1e-8 + correlation.abs().max())
        layer.weight += hebbian_lr * correlation * factor
        layer.bias += hebbian_lr * pre.mean(0) * factor


class TorchLocalized:
    def __init__(
        self,
        net: TorchLocalMLP,
        lr,
        momentum,
        hebbian_lr,
        lam,
        *,
        rule="oja",
        normalize=None,
        post="activation",
        legacy=False,
    ):
        self.net, self.hebbian_lr, self.lam = net, hebbian_lr, lam
        self.rule, self.normalize, self.post, self.legacy = rule, normalize, post, legacy
        self.sgd = torch.optim.SGD(net.parameters(), lr=lr, momentum=momentum)

    def step(self, x, labels, num_localized: int) -> float:
        net, records, h = self.net, [], x
        for i, layer in enumerate(net.layers):
            pre = layer(h)
            out = torch.relu(pre)
            records.append((h.detach(), pre.detach(), out.detach()))
            h = out.detach() if i + 1 == num_localized else out
        loss = F.cross_entropy(net.head(h), labels)
        self.sgd.zero_grad(set_to_none=True)
        loss.backward()
        self.sgd.step()
        value = loss.item()
        eta = self.hebbian_lr * (1 + self.lam * math.tanh(value))
        for layer, (xi, pre, out) in list(zip(net.layers, records, strict=True))[:num_localized]:
            if self.legacy:
                seed_hebbian_step(layer, xi, pre, self.hebbian_lr, self.lam, value)
            else:
                y = pre if self.post == "pre" else out
                hebbian_step(layer, xi, y, eta, self.rule, self.normalize)
        return value
