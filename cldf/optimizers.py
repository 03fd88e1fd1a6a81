"""The optimisers a recipe can name (``training.optimizer``), built over a list of parameters."""

from __future__ import annotations

from typing import Iterable

import torch
from torch import nn

OPTIMIZERS = ("adamw", "sgd")


def new_optimizer(name: str, params: Iterable[nn.Parameter], lr: float, momentum: float,
                  weight_decay: float) -> torch.optim.Optimizer:
    """AdamW, or SGD with ``momentum``, over ``params``."""
    if name not in OPTIMIZERS:
        raise ValueError(f"optimizer={name!r}; valid: {', '.join(OPTIMIZERS)}")
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)
    return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
