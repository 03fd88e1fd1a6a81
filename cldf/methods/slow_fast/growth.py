"""Loading state into heads whose class dimension grew after they were saved."""

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
