"""Detection scores from classifier logits (label space of algorithms.md section 0).

A class id is *real* when it is listed in ``real_classes``; every other class is a forgery
(``fake:<generator>``). The detection score is ``p_fake = 1 - sum_{c real} softmax(z)_c`` over
the classes the model has learned: a stream's class map may hold more classes than the logits
have columns (heads grow as generators arrive) and, where a head grows while evaluating an
unseen generator (Avalanche adapts models to test experiences too), columns it has never been
trained on. ``num_classes`` (the class map's size) and ``learned_classes`` say which columns
count; the others contribute nothing. Rankings (AUC, EER, AP) use the log-odds of ``p_fake``,
which orders samples the same way but does not round confident predictions to exactly 0 or 1.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch


def detection_columns(
    width: int,
    real_classes: Sequence[int],
    num_classes: int | None = None,
    learned_classes: Sequence[int] | None = None,
) -> tuple[list[int], list[int]]:
    """``(real columns, fake columns)`` of logits with ``width`` columns.

    ``num_classes`` is the size of the stream's class map (default: ``width``): a real id outside
    ``0..num_classes-1`` is an error, an id at or beyond ``width`` a class the head has not grown
    to yet. ``learned_classes`` (default: every column) leaves out columns never trained.
    """
    ids = sorted({int(c) for c in real_classes})
    if not ids:
        raise ValueError("real_classes is empty: name at least one real class id, e.g. [0]")
    limit = width if num_classes is None else int(num_classes)
    if limit < width:
        raise ValueError(f"the logits have {width} columns but the class map only {limit} classes")
    bad = [c for c in ids if not 0 <= c < limit]
    if bad:
        raise ValueError(f"real_classes {bad} are outside the class map's ids 0..{limit - 1}")
    columns = range(width) if learned_classes is None else sorted(
        {int(c) for c in learned_classes if 0 <= int(c) < width})
    real = set(ids)
    return [c for c in columns if c in real], [c for c in columns if c not in real]


def fake_log_odds_from_logits(
    logits: torch.Tensor,
    real_classes: Sequence[int],
    num_classes: int | None = None,
    learned_classes: Sequence[int] | None = None,
) -> torch.Tensor:
    """``log(p_fake / (1 - p_fake)) = logsumexp(z_fake) - logsumexp(z_real)`` in float64: the same
    order as :func:`p_fake_from_logits` without its rounding at either end (the lowest float64
    for every sample when no learned class is fake, the highest when none is real)."""
    real, fake = detection_columns(_width(logits), real_classes, num_classes, learned_classes)
    if not fake or not real:
        extreme = torch.finfo(torch.float64).max if fake else torch.finfo(torch.float64).min
        return torch.full((logits.shape[0],), extreme, dtype=torch.float64, device=logits.device)
    z = logits.double()
    return torch.logsumexp(z[:, fake], dim=1) - torch.logsumexp(z[:, real], dim=1)


def p_fake_from_logits(
    logits: torch.Tensor,
    real_classes: Sequence[int],
    num_classes: int | None = None,
    learned_classes: Sequence[int] | None = None,
) -> torch.Tensor:
    """Probability that each sample is fake: ``1 - sum_{c in real_classes} softmax(logits)_c``,
    the softmax taken over the learned classes (see :func:`detection_columns`).

    Computed as ``exp(logsumexp(z_fake) - logsumexp(z))`` so that confident real predictions
    keep their ranking instead of rounding to exactly 0. Shape ``(B, C) -> (B,)``.
    """
    real, fake = detection_columns(_width(logits), real_classes, num_classes, learned_classes)
    if not fake or not real:
        return torch.full((logits.shape[0],), float(bool(fake)), dtype=logits.dtype, device=logits.device)
    z = logits.float()
    log_p_fake = torch.logsumexp(z[:, fake], dim=1) - torch.logsumexp(z[:, real + fake], dim=1)
    return log_p_fake.exp().to(logits.dtype)


def is_fake_target(
    class_ids: torch.Tensor | np.ndarray | Sequence[int], real_classes: Sequence[int]
) -> torch.Tensor | np.ndarray:
    """Binary detection target: 1 where the class id is not a real class, else 0 (a real image
    of a source no head has learned yet is still real).

    Returns a ``torch.long`` tensor for tensor input, otherwise a numpy ``int64`` array.
    """
    if not real_classes:
        raise ValueError("real_classes is empty: name at least one real class id, e.g. [0]")
    if isinstance(class_ids, torch.Tensor):
        real = torch.as_tensor(list(real_classes), dtype=class_ids.dtype, device=class_ids.device)
        return (~torch.isin(class_ids, real)).long()
    return (~np.isin(np.asarray(class_ids), list(real_classes))).astype(np.int64)


def _width(logits: torch.Tensor) -> int:
    if logits.ndim != 2:
        raise ValueError(f"logits must have shape (batch, classes), got {tuple(logits.shape)}")
    return int(logits.shape[1])
