"""Minimal torch LoCal+SGD written from spec 4.3 / 4.5 (no public implementation exists).

An MLP of Linear + ReLU hidden layers and a Linear head. A step with boundary ``T``:
the forward records ``(x_l, y_l)`` (input, post-ReLU output) of every hidden layer and
detaches ``h`` after hidden layer ``T - 1``; the cross-entropy's backward then reaches only
layers ``>= T`` and the head, which ``torch.optim.SGD(momentum)`` steps (parameters
without a gradient are skipped by torch). Under ``torch.no_grad`` the first ``T`` layers
get, with ``eta = hebbian_lr * (1 + lam * tanh(loss))`` and torch weights ``W [out, in]``:

  hebb:  W += eta * y^T x / B;                          b += eta * mean_b y
  oja:   W += eta * (y^T x - diag(sum_b y^2) W) / B      (bias unchanged)
  "layer" normalisation divides the bracket by (1e-8 + its max magnitude) before eta.
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


class TorchLocalized:
    def __init__(self, net: TorchLocalMLP, lr, momentum, hebbian_lr, lam, *, rule, normalize):
        self.net, self.hebbian_lr, self.lam = net, hebbian_lr, lam
        self.rule, self.normalize = rule, normalize
        self.sgd = torch.optim.SGD(net.parameters(), lr=lr, momentum=momentum)

    def step(self, x, labels, num_localized: int) -> float:
        net, records, h = self.net, [], x
        for i, layer in enumerate(net.layers):
            out = torch.relu(layer(h))
            records.append((h.detach(), out.detach()))
            h = out.detach() if i + 1 == num_localized else out
        loss = F.cross_entropy(net.head(h), labels)
        self.sgd.zero_grad(set_to_none=True)
        loss.backward()
        self.sgd.step()
        eta = self.hebbian_lr * (1 + self.lam * math.tanh(loss.item()))
        for layer, (xi, yi) in list(zip(net.layers, records, strict=True))[:num_localized]:
            hebbian_step(layer, xi, yi, eta, self.rule, self.normalize)
        return loss.item()
