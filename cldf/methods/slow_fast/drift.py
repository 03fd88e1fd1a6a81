"""Per-dimension affine drift of a learner's features between two adapter states.

The fast learner's analytic statistics of an old experience were summed with the features it
had then. At the end of each later experience the current images are passed through the fast
adapter as it was at the start of the experience (x_o) and as it is now (x_n); a least-squares
fit per feature dimension, x_n ≈ a ⊙ x_o + b, gives the map that
:meth:`~cldf.methods.slow_fast.DiscriminantHead.shift_statistics` applies to the old statistics.
Only five d-vectors of sums are kept (no sample); with several processes they are summed
through :meth:`AffineDrift.fit`'s ``reduce`` hook.
"""

from __future__ import annotations

from typing import Callable, Optional

import torch
from torch import Tensor

_MIN_VARIANCE = 1e-12


class AffineDrift:
    """Running sums of paired features (old adapter, new adapter) and their per-dimension fit."""

    def __init__(self, dim: int, device: torch.device | str = "cpu") -> None:
        zeros = dict(dtype=torch.float64, device=device)
        self.count = torch.zeros((), **zeros)
        self.old_sum = torch.zeros(dim, **zeros)
        self.new_sum = torch.zeros(dim, **zeros)
        self.old_square_sum = torch.zeros(dim, **zeros)
        self.cross_sum = torch.zeros(dim, **zeros)

    def accumulate(self, old: Tensor, new: Tensor) -> None:
        """Add a batch of the same images' features through the old and the new adapter."""
        if old.shape != new.shape:
            raise ValueError(f"AffineDrift needs paired features of one shape, got {tuple(old.shape)} and {tuple(new.shape)}")
        old, new = old.double(), new.double()
        self.count += len(old)
        self.old_sum += old.sum(0)
        self.new_sum += new.sum(0)
        self.old_square_sum += (old * old).sum(0)
        self.cross_sum += (old * new).sum(0)

    def fit(self, reduce: Optional[Callable[[Tensor], Tensor]] = None) -> tuple[Tensor, Tensor]:
        """``(a, b)`` of x_n ≈ a ⊙ x_o + b (float64); a dimension that did not vary keeps a = 1."""
        sums = [self.count, self.old_sum, self.new_sum, self.old_square_sum, self.cross_sum]
        if reduce is not None:
            sums = [reduce(s) for s in sums]
        count, old_sum, new_sum, old_square_sum, cross_sum = sums
        if not bool(count > 0):
            raise RuntimeError("AffineDrift.fit needs at least one accumulated sample")
        old_mean, new_mean = old_sum / count, new_sum / count
        variance = old_square_sum / count - old_mean * old_mean
        covariance = cross_sum / count - old_mean * new_mean
        varied = variance > _MIN_VARIANCE * (1.0 + old_mean * old_mean)
        scale = torch.where(varied, covariance / variance.clamp_min(_MIN_VARIANCE), torch.ones_like(variance))
        return scale, new_mean - scale * old_mean
