"""Detection scores from classifier logits (label space of algorithms.md section 0).

A class id is *real* when it is listed in ``real_classes``; every other class is a forgery
(``fake:<generator>``). The detection score is ``p_fake = 1 - sum_{c real} softmax(z)_c``;
rankings (AUC, EER, AP) use its log-odds, which orders samples the same way but does not round
confident predictions to exactly 0 or 1.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch


def _checked_real_classes(real_classes: Sequence[int], num_classes: int) -> list[int]:
    ids = sorted({int(c) for c in real_classes})
    if not ids:
        raise ValueError("real_classes is empty: name at least one real class id, e.g. [0]")
    bad = [c for c in ids if not 0 <= c < num_classes]
    if bad:
        raise ValueError(
            f"real_classes {bad} are outside the logits' class range 0..{num_classes - 1}"
        )
    return ids


def _fake_mask(logits: torch.Tensor, real_classes: Sequence[int]) -> torch.Tensor:
    if logits.ndim != 2:
        raise ValueError(f"logits must have shape (batch, classes), got {tuple(logits.shape)}")
    real = _checked_real_classes(real_classes, logits.shape[1])
    fake_mask = torch.ones(logits.shape[1], dtype=torch.bool, device=logits.device)
    fake_mask[real] = False
    return fake_mask


def fake_log_odds_from_logits(logits: torch.Tensor, real_classes: Sequence[int]) -> torch.Tensor:
    """``log(p_fake / (1 - p_fake)) = logsumexp(z_fake) - logsumexp(z_real)`` in float64: the same
    order as :func:`p_fake_from_logits` without its rounding at either end (the lowest float64
    for every sample when no class is fake: p_fake = 0)."""
    fake_mask = _fake_mask(logits, real_classes)
    z = logits.double()
    if not bool(fake_mask.any()):
        return torch.full((logits.shape[0],), torch.finfo(torch.float64).min, dtype=torch.float64, device=logits.device)
    return torch.logsumexp(z[:, fake_mask], dim=1) - torch.logsumexp(z[:, ~fake_mask], dim=1)


def p_fake_from_logits(logits: torch.Tensor, real_classes: Sequence[int]) -> torch.Tensor:
    """Probability that each sample is fake: ``1 - sum_{c in real_classes} softmax(logits)_c``.

    Computed as ``exp(logsumexp(z_fake) - logsumexp(z))`` so that confident real predictions
    keep their ranking instead of rounding to exactly 0. Shape ``(B, C) -> (B,)``.
    """
    fake_mask = _fake_mask(logits, real_classes)
    if not bool(fake_mask.any()):
        return torch.zeros(logits.shape[0], dtype=logits.dtype, device=logits.device)
    z = logits.float()
    log_p_fake = torch.logsumexp(z[:, fake_mask], dim=1) - torch.logsumexp(z, dim=1)
    return log_p_fake.exp().to(logits.dtype)


def is_fake_target(
    class_ids: torch.Tensor | np.ndarray | Sequence[int], real_classes: Sequence[int]
) -> torch.Tensor | np.ndarray:
    """Binary detection target: 1 where the class id is not a real class, else 0.

    Returns a ``torch.long`` tensor for tensor input, otherwise a numpy ``int64`` array.
    """
    if not real_classes:
        raise ValueError("real_classes is empty: name at least one real class id, e.g. [0]")
    if isinstance(class_ids, torch.Tensor):
        real = torch.as_tensor(list(real_classes), dtype=class_ids.dtype, device=class_ids.device)
        return (~torch.isin(class_ids, real)).long()
    return (~np.isin(np.asarray(class_ids), list(real_classes))).astype(np.int64)
