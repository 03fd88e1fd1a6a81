"""Cosine classifier with a learnable scale, used to train the slow and fast learners."""

from __future__ import annotations

import math
from typing import Any, Mapping, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from cldf.methods.slow_fast.growth import match_saved_shapes


class CosineHead(nn.Module):
    """logits = σ · cos(W_c, f); W has one row per class and grows with the class count."""

    def __init__(
        self, in_features: int, num_classes: int, scale_init: float = 10.0, generator: Optional[torch.Generator] = None
    ) -> None:
        super().__init__()
        if in_features < 1 or num_classes < 1:
            raise ValueError(
                f"CosineHead needs in_features >= 1 and num_classes >= 1, got {in_features}, {num_classes}"
            )
        self.in_features = in_features
        self.weight = nn.Parameter(self._new_rows(num_classes, generator))
        self.scale = nn.Parameter(torch.tensor(float(scale_init)))

    def _new_rows(self, count: int, generator: Optional[torch.Generator]) -> Tensor:
        return torch.randn(count, self.in_features, generator=generator) / math.sqrt(self.in_features)

    @property
    def num_classes(self) -> int:
        return self.weight.shape[0]

    def forward(self, features: Tensor) -> Tensor:
        return self.scale * F.normalize(features, dim=1) @ F.normalize(self.weight, dim=1).T

    def grow_classes(self, num_classes: int, generator: Optional[torch.Generator] = None) -> None:
        """Append freshly drawn rows until there are ``num_classes``; old rows are kept."""
        extra = num_classes - self.num_classes
        if extra <= 0:
            return
        rows = self._new_rows(extra, generator).to(self.weight.device, self.weight.dtype)
        self.weight = nn.Parameter(torch.cat([self.weight.detach(), rows]), requires_grad=self.weight.requires_grad)

    def _load_from_state_dict(self, state_dict: Mapping[str, Any], prefix: str, *args: Any, **kwargs: Any) -> None:
        match_saved_shapes(self, state_dict, prefix, ("weight",))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
