"""Minimal torch SigProp written from spec 3.2 / 3.5 (``amassivek/signalpropagation`` math).

MLP layout: ``signal_in`` = Linear(in, D0) + ReLU on x; ``signal_ctx`` = Linear(C, D0, no
bias) + LayerNorm + ReLU on ``c = onehot(y)``; blocks Linear + ReLU run on both streams
with ``.detach()`` at their inputs; head Linear on the detached last ``h``. Each block
(the signal generator counting as one) has its own optimizer, stepped inside the
forward with its local loss; the head's optimizer is stepped with the cross-entropy.
The next block receives the *pre-update* outputs, detached.

Local losses, ``Y = H1 T1^T``, ``YY = T0 T0^T`` (B x B):
  v14:  CE(Y, argmax_j YY)                      (first maximum)
  v9:   mean_i sum_j -[YY_ij == max_j YY_ij] log_softmax(Y_i)_j
  topk: as v9 with the mask of the k largest entries per row of YY
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def local_loss(h1, t1, t0, kind: str, k: int = 1) -> torch.Tensor:
    y = h1 @ t1.t()
    yy = (t0 @ t0.t()).detach()
    logp = F.log_softmax(y, dim=1)
    if kind == "v14":
        return F.cross_entropy(y, yy.argmax(dim=1))
    if kind == "v9":
        mask = (yy == yy.max(dim=1, keepdim=True).values).to(y.dtype)
    else:
        idx = yy.topk(k, dim=1).indices
        mask = F.one_hot(idx, yy.shape[1]).sum(dim=1).clamp(0, 1).to(y.dtype)
    return (-(mask * logp).sum(dim=1)).mean()


class TorchSigPropNet(nn.Module):
    def __init__(self, in_features: int, hidden: list[int], num_classes: int) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.signal_in = nn.Linear(in_features, hidden[0])
        self.signal_ctx = nn.Linear(num_classes, hidden[0], bias=False)
        self.signal_norm = nn.LayerNorm(hidden[0], eps=1e-5)
        self.blocks = nn.ModuleList(
            nn.Linear(a, b) for a, b in zip(hidden[:-1], hidden[1:], strict=True)
        )
        self.head = nn.Linear(hidden[-1], num_classes)

    def signal_params(self) -> list[nn.Parameter]:
        return [
            *self.signal_in.parameters(),
            *self.signal_ctx.parameters(),
            *self.signal_norm.parameters(),
        ]


class TorchSigProp:
    """Per-block optimizers (Adam, or SGD) and the training step."""

    def __init__(
        self, net: TorchSigPropNet, lr, signal_lr, signal_momentum, *, kind="v14", k=1, base="adam"
    ) -> None:
        self.net, self.kind, self.k = net, kind, k
        if base == "adam":
            make = lambda ps, lr_, m=0.9: torch.optim.Adam(ps, lr=lr_, betas=(m, 0.999))  # noqa: E731
        else:
            make = lambda ps, lr_, m=0.0: torch.optim.SGD(ps, lr=lr_, momentum=m)  # noqa: E731
        self.signal_opt = make(net.signal_params(), signal_lr, signal_momentum)
        self.block_opts = [make(list(b.parameters()), lr) for b in net.blocks]
        self.head_opt = make(list(net.head.parameters()), lr)

    @staticmethod
    def _learn(opt, loss, step: bool) -> None:
        opt.zero_grad()
        loss.backward()
        if step:
            opt.step()

    def step(self, x, y, *, step: bool = True) -> list[torch.Tensor]:
        """One training step; returns the local losses and the CE (signal first).

        With ``step=False`` only the gradients are computed (left in ``.grad``).
        """
        net = self.net
        c = F.one_hot(y, net.num_classes).to(x.dtype)
        h = torch.relu(net.signal_in(x))
        t = torch.relu(net.signal_norm(net.signal_ctx(c)))
        loss = local_loss(h, t, c, self.kind, self.k)
        self._learn(self.signal_opt, loss, step)
        losses = [loss.detach()]
        h, t = h.detach(), t.detach()
        for block, opt in zip(net.blocks, self.block_opts, strict=True):
            h1, t1 = torch.relu(block(h)), torch.relu(block(t))
            loss = local_loss(h1, t1, t, self.kind, self.k)
            self._learn(opt, loss, step)
            losses.append(loss.detach())
            h, t = h1.detach(), t1.detach()
        ce = F.cross_entropy(net.head(h), y)
        self._learn(self.head_opt, ce, step)
        return [*losses, ce.detach()]
