"""Minimal torch SigProp written from spec 3.2, 3.3, 3.5 and 3.7 (the official code's math).

MLP layout: ``signal_in`` = Linear(in, D0) (+ BatchNorm1d) + ReLU on x; ``signal_ctx`` =
Linear(C, D0, no bias) + LayerNorm + ReLU on ``c = onehot(y)``; blocks Linear (+
BatchNorm1d) + ReLU run on both streams with ``.detach()`` at their inputs; head Linear
on the detached last ``h``. A layer followed by BatchNorm has no bias (BatchNorm removes
it; under Adam its round-off gradient would be amplified to lr-sized steps).
Conv layout (``image_size=(H, W)``, NCHW as torch): Conv2d 3x3 / padding 1 (+
BatchNorm2d) + ReLU for ``signal_in`` and the blocks, ``signal_ctx`` projects to
``D0 * H * W`` features (LayerNorm over all of them) viewed as ``(B, D0, H, W)``, the
head reads the flattened map. Dropout (``nn.Dropout``) follows the
signal generator and every block, on both streams. Each block (the signal generator
counting as one) has its own optimizer, stepped inside the forward with its local loss;
the head's optimizer is stepped with the cross-entropy. The next block receives the
*pre-update* outputs, detached. A block is called on the input stream and then on the
target stream, so BatchNorm's running statistics are updated twice, in that order.

``mode="hybrid"`` (spec 3.3): no ``.detach()`` anywhere; one backward of
``CE + local_loss_weight * sum(local losses)``, then every optimizer steps.

Local losses, ``Y = H1 T1^T``, ``YY = T0 T0^T`` (B x B); for 4-D maps ``H (B,C,h,w) ->
(hw, B, C)``, ``T -> (hw, C, B)`` and ``Y`` (likewise ``YY``) is the mean over positions:
  v14:  CE(Y, argmax_j YY)                      (first maximum)
  v9:   mean_i sum_j -[YY_ij == max_j YY_ij] log_softmax(Y_i)_j
  topk: as v9 with the mask of the k largest entries per row of YY
With ``labels`` given (``targets="labels"``, spec 3.7), ``YY_ij = [y_i == y_j]``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def similarity(a, b) -> torch.Tensor:
    """``a b^T``; for (B, C, h, w) maps the mean over the h*w positions (spec 3.2 point 4)."""
    if a.dim() == 4:
        positions = a.shape[2] * a.shape[3]
        a_pos = a.flatten(2).permute(2, 0, 1)  # (hw, B, C)
        b_pos = b.flatten(2).permute(2, 1, 0)  # (hw, C, B)
        return torch.bmm(a_pos, b_pos).sum(0) / positions
    return a.flatten(1) @ b.flatten(1).t()


def local_loss(h1, t1, t0, kind: str, k: int = 1, labels=None) -> torch.Tensor:
    y = similarity(h1, t1)
    if labels is None:
        yy = similarity(t0, t0).detach()
    else:
        yy = (labels[:, None] == labels[None, :]).to(y.dtype)
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
    def __init__(
        self,
        in_features: int,
        hidden: list[int],
        num_classes: int,
        *,
        batch_norm: bool = False,
        dropout: float = 0.0,
        image_size: tuple[int, int] | None = None,
    ) -> None:
        super().__init__()
        self.num_classes, self.image_size = num_classes, image_size
        bias = not batch_norm  # BatchNorm removes a bias of the layer before it
        if image_size is None:
            positions = 1
            layer = lambda a, b: nn.Linear(a, b, bias=bias)  # noqa: E731
            norm = nn.BatchNorm1d
        else:
            positions = image_size[0] * image_size[1]
            layer = lambda a, b: nn.Conv2d(a, b, 3, padding=1, bias=bias)  # noqa: E731
            norm = nn.BatchNorm2d
        self.signal_in = layer(in_features, hidden[0])
        self.signal_ctx = nn.Linear(num_classes, positions * hidden[0], bias=False)
        self.signal_norm = nn.LayerNorm(positions * hidden[0], eps=1e-5)
        self.blocks = nn.ModuleList(
            layer(a, b) for a, b in zip(hidden[:-1], hidden[1:], strict=True)
        )
        self.head = nn.Linear(positions * hidden[-1], num_classes)
        self.signal_in_norm = norm(hidden[0]) if batch_norm else nn.Identity()
        self.block_norms = nn.ModuleList(
            (norm(b) if batch_norm else nn.Identity()) for b in hidden[1:]
        )
        self.dropout = nn.Dropout(dropout)

    def signal_params(self) -> list[nn.Parameter]:
        return [
            *self.signal_in.parameters(),
            *self.signal_in_norm.parameters(),
            *self.signal_ctx.parameters(),
            *self.signal_norm.parameters(),
        ]

    def block_params(self, index: int) -> list[nn.Parameter]:
        return [*self.blocks[index].parameters(), *self.block_norms[index].parameters()]

    def input_signal(self, x) -> torch.Tensor:
        return torch.relu(self.signal_in_norm(self.signal_in(x)))

    def target_signal(self, c, like) -> torch.Tensor:
        return torch.relu(self.signal_norm(self.signal_ctx(c))).view(like.shape)

    def block(self, index: int, x) -> torch.Tensor:
        return torch.relu(self.block_norms[index](self.blocks[index](x)))


class TorchSigProp:
    """Per-block optimizers (Adam, or SGD) and the training step."""

    def __init__(
        self,
        net: TorchSigPropNet,
        lr,
        signal_lr,
        signal_momentum,
        *,
        kind="v14",
        k=1,
        base="adam",
        targets="signal",
        mode="sigprop",
        local_loss_weight=1.0,
    ) -> None:
        self.net, self.kind, self.k = net, kind, k
        self.targets, self.mode, self.weight = targets, mode, local_loss_weight
        if base == "adam":
            make = lambda ps, lr_, m=0.9: torch.optim.Adam(ps, lr=lr_, betas=(m, 0.999))  # noqa: E731
        else:
            make = lambda ps, lr_, m=0.0: torch.optim.SGD(ps, lr=lr_, momentum=m)  # noqa: E731
        self.signal_opt = make(net.signal_params(), signal_lr, signal_momentum)
        self.block_opts = [make(net.block_params(i), lr) for i in range(len(net.blocks))]
        self.head_opt = make(list(net.head.parameters()), lr)

    def _loss(self, h1, t1, t0, y) -> torch.Tensor:
        labels = y if self.targets == "labels" else None
        return local_loss(h1, t1, t0, self.kind, self.k, labels)

    def _learn(self, opt, loss, step: bool) -> None:
        opt.zero_grad()
        (self.weight * loss).backward()
        if step:
            opt.step()

    def step(self, x, y, *, step: bool = True) -> list[torch.Tensor]:
        """One training step; returns the local losses and the CE (signal first).

        With ``step=False`` only the gradients are computed (left in ``.grad``).
        """
        if self.mode == "hybrid":
            return self._hybrid_step(x, y, step)
        net = self.net
        c = F.one_hot(y, net.num_classes).to(x.dtype)
        h = net.input_signal(x)
        t = net.target_signal(c, h)
        loss = self._loss(h, t, c, y)
        self._learn(self.signal_opt, loss, step)
        losses = [loss.detach()]
        h, t = net.dropout(h).detach(), net.dropout(t).detach()
        for index, opt in enumerate(self.block_opts):
            h1 = net.block(index, h)  # input stream first, then the target stream
            t1 = net.block(index, t)
            loss = self._loss(h1, t1, t, y)
            self._learn(opt, loss, step)
            losses.append(loss.detach())
            h, t = net.dropout(h1).detach(), net.dropout(t1).detach()
        ce = F.cross_entropy(net.head(h.flatten(1)), y)
        self.head_opt.zero_grad()
        ce.backward()
        if step:
            self.head_opt.step()
        return [*losses, ce.detach()]

    def _hybrid_step(self, x, y, step: bool) -> list[torch.Tensor]:
        net = self.net
        c = F.one_hot(y, net.num_classes).to(x.dtype)
        h = net.input_signal(x)
        t = net.target_signal(c, h)
        losses = [self._loss(h, t, c, y)]
        h, t = net.dropout(h), net.dropout(t)
        for index in range(len(net.blocks)):
            h1 = net.block(index, h)
            t1 = net.block(index, t)
            losses.append(self._loss(h1, t1, t, y))
            h, t = net.dropout(h1), net.dropout(t1)
        ce = F.cross_entropy(net.head(h.flatten(1)), y)
        opts = [self.signal_opt, *self.block_opts, self.head_opt]
        for opt in opts:
            opt.zero_grad()
        (ce + self.weight * sum(losses)).backward()
        if step:
            for opt in opts:
                opt.step()
        return [*(loss.detach() for loss in losses), ce.detach()]
