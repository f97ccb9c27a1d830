"""torch twins of ``jaxopt_adv.mup.MuMLP`` built on PyPI ``mup`` (test references only).

Same module order as the NNX model (``layers = Sequential(Linear, ReLU, ..., MuReadout)``),
so ``jaxopt_adv.interop`` pairs them by default.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from mup import MuReadout
from torch import nn


class TorchMuMLP(nn.Module):
    """``layers = Sequential([Linear, ReLU] * len(hidden), MuReadout)``."""

    def __init__(
        self,
        in_features: int,
        hidden_features: Sequence[int],
        num_classes: int,
        output_mult: float = 1.0,
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        width = in_features
        for hidden in hidden_features:
            layers += [nn.Linear(width, hidden), nn.ReLU()]
            width = hidden
        layers.append(MuReadout(width, num_classes, output_mult=output_mult))
        self.layers = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


class TorchMuCNN(nn.Module):
    """Conv(3 -> w) , ReLU, Conv(w -> w2), ReLU, global mean, MuReadout: the conv shapes."""

    def __init__(self, width: int, width2: int, num_classes: int = 10) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, width, 3)
        self.conv2 = nn.Conv2d(width, width2, 3)
        self.readout = MuReadout(width2, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.conv2(torch.relu(self.conv1(x))))
        return self.readout(x.mean(dim=(2, 3)))
