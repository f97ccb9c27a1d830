"""torch twins of ``jaxopt_adv.models.MLP`` and ``SmallCNN`` (imports torch: load on demand).

Same module names and order as the NNX models, so ``jaxopt_adv.interop`` pairs them by
default and the exported keys are these models' ``state_dict`` keys. Inputs are torch's
NCHW; the NNX models take NHWC.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


class TorchMLP(nn.Module):
    """``layers = Sequential([Linear, ReLU, Dropout] * len(hidden), Linear)``."""

    def __init__(
        self,
        in_features: int = 784,
        hidden_features: Sequence[int] = (512, 256),
        num_classes: int = 10,
        dropout_rate: float = 0.2,
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        width = in_features
        for hidden in hidden_features:
            layers += [nn.Linear(width, hidden), nn.ReLU(), nn.Dropout(dropout_rate)]
            width = hidden
        layers.append(nn.Linear(width, num_classes))
        self.layers = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


class TorchSmallCNN(nn.Module):
    """``features = [Conv3x3(pad 1, no bias), BN2d, ReLU, MaxPool2d(2)] * k``, Flatten, Linear."""

    def __init__(
        self,
        in_channels: int = 1,
        channels: Sequence[int] = (8, 16),
        num_classes: int = 10,
        image_size: int = 28,
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        width, size = in_channels, image_size
        for out in channels:
            layers += [
                nn.Conv2d(width, out, 3, padding=1, bias=False),
                nn.BatchNorm2d(out),
                nn.ReLU(),
                nn.MaxPool2d(2),
            ]
            width, size = out, size // 2
        self.features = nn.Sequential(*layers)
        self.flatten = nn.Flatten()
        self.classifier = nn.Linear(width * size * size, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.flatten(self.features(x)))
