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


def check_batch(owner: str, features: Tensor, targets: Tensor, num_classes: int) -> None:
    """Raise a ValueError naming ``owner`` unless every target lies in ``[0, num_classes)`` and
    every feature is finite (one NaN batch would make every statistic the head summed unusable)."""
    if targets.numel() and (int(targets.min()) < 0 or int(targets.max()) >= num_classes):
        raise ValueError(
            f"{owner} targets must lie in [0, {num_classes}); got "
            f"[{int(targets.min())}, {int(targets.max())}]; call grow_classes first"
        )
    finite = torch.isfinite(features).flatten(1).all(1)
    if not bool(finite.all()):
        raise ValueError(f"{owner} got non-finite features ({int((~finite).sum())} of {len(features)} samples): "
                         "the adapter has probably diverged; lower training.lr or check the input images")
