"""Entropy-based merge of the slow and fast learners' predictions (SAFE inference)."""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

_LOG_EPS = 1e-9


class MergedLogits(NamedTuple):
    """Merged logits and the per-sample weight of each learner (w_slow + w_fast = 1)."""

    logits: Tensor
    w_slow: Tensor
    w_fast: Tensor


def prediction_entropy(logits: Tensor) -> Tensor:
    """H(softmax(z)) = -Σ_c p_c log(p_c + 1e-9), one value per row."""
    probs = logits.softmax(dim=1)
    return -(probs * (probs + _LOG_EPS).log()).sum(dim=1)


def merge_logits(slow_logits: Tensor, fast_logits: Tensor, gamma: float) -> MergedLogits:
    """[w_slow, w_fast] = softmax(-γ [H(p_S), H(p_F)]) per sample; z = w_slow z_S + w_fast z_F."""
    if slow_logits.shape != fast_logits.shape:
        raise ValueError(
            f"merge_logits needs logits of equal shape, got {tuple(slow_logits.shape)} and {tuple(fast_logits.shape)}"
        )
    entropies = torch.stack([prediction_entropy(slow_logits), prediction_entropy(fast_logits)], dim=1)
    weights = torch.softmax(-gamma * entropies, dim=1)
    w_slow, w_fast = weights[:, 0], weights[:, 1]
    merged = w_slow.unsqueeze(1) * slow_logits + w_fast.unsqueeze(1) * fast_logits
    return MergedLogits(merged, w_slow, w_fast)
