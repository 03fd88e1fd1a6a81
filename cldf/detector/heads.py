"""Classification heads over a growing set of classes (class 0 = real, then generators)."""

from __future__ import annotations

import torch
from torch import Tensor, nn


class GrowingLinearHead(nn.Module):
    """A linear head whose outputs grow as new classes (generators) arrive; old rows are kept.

    :class:`cldf.avalanche.DynamicDetector` grows it before each Avalanche experience.
    """

    def __init__(self, in_features: int, num_classes: int) -> None:
        super().__init__()
        self.linear = nn.Linear(in_features, num_classes)

    @property
    def num_classes(self) -> int:
        return self.linear.out_features

    def forward(self, features: Tensor) -> Tensor:
        return self.linear(features)

    @torch.no_grad()
    def grow(self, num_classes: int) -> None:
        """Have at least ``num_classes`` outputs, keeping the existing rows unchanged."""
        old = self.linear
        if num_classes <= old.out_features:
            return
        new = nn.Linear(old.in_features, num_classes).to(old.weight.device, old.weight.dtype)
        new.weight[: old.out_features] = old.weight
        new.bias[: old.out_features] = old.bias
        new.requires_grad_(old.weight.requires_grad)
        self.linear = new
