"""Sizes of kept state in bytes: tensors, arrays, and datasets of stored samples."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch


def state_bytes(state: Any) -> int:
    """Bytes held by tensors and arrays in a (nested) dict/list/tuple of strategy state."""
    if isinstance(state, torch.Tensor):
        return state.element_size() * state.numel()
    if isinstance(state, np.ndarray):
        return int(state.nbytes)
    if isinstance(state, Mapping):
        return sum(state_bytes(v) for v in state.values())
    if isinstance(state, (list, tuple)):
        return sum(state_bytes(v) for v in state)
    if isinstance(state, (bool, int, float)):
        return 8
    raise TypeError(f"state_bytes cannot size a {type(state).__name__}; pass tensors or arrays")


def dataset_bytes(dataset: Any) -> int:
    """Bytes of a dataset's samples, sized from its first input (0 for an empty dataset)."""
    if dataset is None or not len(dataset):
        return 0
    x = dataset[0][0]
    return len(dataset) * x.numel() * x.element_size() if isinstance(x, torch.Tensor) else 0
