"""Heads whose class dimension grows: checking targets against it, and loading state saved
before it grew."""

from __future__ import annotations

from typing import Mapping

import torch
from torch import Tensor, nn


def match_saved_shapes(
    module: nn.Module, state_dict: Mapping[str, Tensor], prefix: str, names: tuple[str, ...]
) -> None:
    """Resize the named parameters/buffers of ``module`` to the shapes found in ``state_dict``.

    Only the sizes change (values come from the subsequent load); a parameter keeps its
    ``requires_grad`` flag.
    """
    for name in names:
        saved = state_dict.get(prefix + name)
        current = getattr(module, name)
        if saved is None or saved.shape == current.shape:
            continue
        fresh = torch.zeros(saved.shape, dtype=current.dtype, device=current.device)
        if isinstance(current, nn.Parameter):
            setattr(module, name, nn.Parameter(fresh, requires_grad=current.requires_grad))
        else:
            module.register_buffer(name, fresh)


def check_finite(owner: str, features: Tensor) -> None:
    """Raise a ValueError naming ``owner`` if a feature is NaN or infinite (one such batch would
    make every statistic the head has summed unusable)."""
    if not bool(torch.isfinite(features).all()):
        bad = int((~torch.isfinite(features)).flatten(1).any(1).sum())
        raise ValueError(f"{owner} got non-finite features ({bad} of {len(features)} samples): the adapter "
                         "has probably diverged; lower training.lr or check the input images")


def check_targets(owner: str, targets: Tensor, num_classes: int) -> None:
    """Raise a ValueError naming ``owner`` unless every target lies in ``[0, num_classes)``."""
    if targets.numel() and (int(targets.min()) < 0 or int(targets.max()) >= num_classes):
        raise ValueError(
            f"{owner} targets must lie in [0, {num_classes}); got "
            f"[{int(targets.min())}, {int(targets.max())}]; call grow_classes first"
        )
