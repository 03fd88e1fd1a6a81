"""Shrunk linear discriminant head (LDA) over features: class means and one pooled covariance.

The head keeps, in float64, the summed second moment G = Σ xxᵀ (d x d), the per-class sums
s_c = Σ_{x in c} x and counts n_c; nothing grows with the number of samples seen. Solving:
μ_c = s_c / n_c, pooled within-class covariance S = (G − Σ_c n_c μ_c μ_cᵀ) / N, its correlation
matrix R = D⁻¹ S D⁻¹ (D = diag(S)^½) shrunk towards the identity, R_α = (1 − α) R + α I
(α = ``shrinkage``), Σ = D R_α D. Logits are the Gaussian log-posteriors up to a constant,
z_c = w_cᵀ (x − m) − ½ (μ_c − m)ᵀ w_c + log(n_c / N) with w_c = Σ⁻¹ (μ_c − m) and m the mean
of all samples (centring keeps the float32 logits exact: uncentred, the two terms are large and
nearly cancel); a class without data gets :data:`NO_DATA_LOGIT`. With frozen features the
statistics of a stream are exactly those of all its data at once. All statistics are plain sums: with several processes,
:meth:`DiscriminantHead.finish_experience` sums them through its ``reduce`` hook before solving.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from cldf.methods.slow_fast.growth import check_batch, match_saved_shapes

NO_DATA_LOGIT = -1e9
_MIN_VARIANCE = 1e-12


def discriminant_logits(features: Tensor, weight: Tensor, bias: Tensor, center: Tensor) -> Tensor:
    """Logits of a solved discriminant (weight K x d, bias K, centre d; see :meth:`DiscriminantHead.solve`)."""
    return (features.float() - center) @ weight.T + bias


class DiscriminantHead(nn.Module):
    """Linear discriminant analysis with a shrunk pooled covariance, fitted from running sums."""

    def __init__(self, in_features: int, shrinkage: float = 0.3, num_classes: int = 0) -> None:
        super().__init__()
        if not 0.0 < shrinkage <= 1.0:
            raise ValueError(f"DiscriminantHead shrinkage={shrinkage!r} must be in (0, 1]")
        self.shrinkage = float(shrinkage)
        self.register_buffer("gram", torch.zeros(in_features, in_features, dtype=torch.float64))
        self.register_buffer("class_sums", torch.zeros(num_classes, in_features, dtype=torch.float64))
        self.register_buffer("class_counts", torch.zeros(num_classes, dtype=torch.float64))
        self.register_buffer("weight", torch.zeros(num_classes, in_features))
        self.register_buffer("bias", torch.full((num_classes,), NO_DATA_LOGIT))
        self.register_buffer("center", torch.zeros(in_features))
        self._pending: Optional[tuple[Tensor, Tensor, Tensor]] = None

    @property
    def num_classes(self) -> int:
        return self.class_counts.shape[0]

    @property
    def samples_seen(self) -> Tensor:
        """How many samples the statistics hold."""
        return self.class_counts.sum().long()

    @property
    def is_fitted(self) -> bool:
        return bool(self.samples_seen > 0)

    def forward(self, features: Tensor) -> Tensor:
        return discriminant_logits(features, self.weight, self.bias, self.center)

    def grow_classes(self, num_classes: int) -> None:
        """Add classes without data (their logits stay :data:`NO_DATA_LOGIT` until data arrives)."""
        extra = num_classes - self.num_classes
        if extra <= 0:
            return
        self.class_sums = F.pad(self.class_sums, (0, 0, 0, extra))
        self.class_counts = F.pad(self.class_counts, (0, extra))
        self.weight = F.pad(self.weight, (0, 0, 0, extra))
        self.bias = F.pad(self.bias, (0, extra), value=NO_DATA_LOGIT)
        if self._pending is not None:
            gram, sums, counts = self._pending
            self._pending = (gram, F.pad(sums, (0, 0, 0, extra)), F.pad(counts, (0, extra)))

    def begin_experience(self, first_position: int = 0) -> None:
        """Start collecting one experience's sums (``first_position`` is accepted for the
        interface the analytic heads share; the sums do not depend on sample order)."""
        self._pending = (torch.zeros_like(self.gram), torch.zeros_like(self.class_sums),
                         torch.zeros_like(self.class_counts))

    def accumulate(self, features: Tensor, targets: Tensor) -> None:
        """Add a batch (features B x d, integer targets) to the current experience's sums."""
        if self._pending is None:
            raise RuntimeError("DiscriminantHead.accumulate called before begin_experience()")
        check_batch("DiscriminantHead", features, targets, self.num_classes)
        gram, sums, counts = self._pending
        x = features.double()
        gram += x.T @ x
        sums.index_add_(0, targets.long(), x)
        counts += torch.bincount(targets.long(), minlength=self.num_classes).double()

    def finish_experience(self, reduce: Optional[Callable[[Tensor], Tensor]] = None) -> float:
        """Merge the experience's sums (first mapped by ``reduce``, e.g. an all-reduce over
        processes) and solve the discriminant. Returns the shrinkage used."""
        if self._pending is None:
            raise RuntimeError("DiscriminantHead.finish_experience called before begin_experience()")
        pending, self._pending = self._pending, None
        gram, sums, counts = (reduce(t) for t in pending) if reduce is not None else pending
        self.gram += gram
        self.class_sums += sums
        self.class_counts += counts
        self.weight, self.bias, self.center = self.solve()
        return self.shrinkage

    def shift_statistics(self, scale: Tensor, offset: Tensor) -> None:
        """Replace the stored statistics by those of every summed sample mapped to
        ``scale ⊙ x + offset`` (exact for sums: Σx'x'ᵀ = D G D + D s bᵀ + b sᵀ D + N b bᵀ) and
        solve again. For statistics summed by an earlier state of the learner (see
        :class:`~cldf.methods.slow_fast.drift.AffineDrift`); the sums of an experience in
        progress (already in the new feature space) are left as they are."""
        scale, offset = scale.double().to(self.gram.device), offset.double().to(self.gram.device)
        scaled_total = scale * self.class_sums.sum(0)
        self.gram = (scale[:, None] * self.gram * scale[None, :] + torch.outer(scaled_total, offset)
                     + torch.outer(offset, scaled_total) + self.class_counts.sum() * torch.outer(offset, offset))
        self.class_sums = self.class_sums * scale + self.class_counts[:, None] * offset
        self.weight, self.bias, self.center = self.solve()

    def solve(self) -> tuple[Tensor, Tensor, Tensor]:
        """(weight K x d, bias K, centre d) of the current statistics, float32."""
        seen = self.class_counts > 0
        weight = torch.zeros_like(self.weight)
        bias = torch.full_like(self.bias, NO_DATA_LOGIT)
        if not bool(seen.any()):
            return weight, bias, torch.zeros_like(self.center)
        counts = self.class_counts[seen]
        total = counts.sum()
        means = self.class_sums[seen] / counts[:, None]
        center = (counts @ means) / total
        within = (self.gram - (means.T * counts) @ means) / total
        means = means - center
        scale = within.diagonal().clamp_min(_MIN_VARIANCE).sqrt()
        correlation = within / scale[:, None] / scale[None, :]
        eye = torch.eye(len(scale), dtype=torch.float64, device=scale.device)
        shrunk = (1.0 - self.shrinkage) * correlation + self.shrinkage * eye
        # Σ⁻¹ (μ − m)ᵀ = D⁻¹ R_α⁻¹ D⁻¹ (μ − m)ᵀ, R_α positive definite for shrinkage > 0
        factor = torch.linalg.cholesky(shrunk)
        directions = torch.cholesky_solve((means / scale).T, factor) / scale[:, None]
        weight[seen] = directions.T.float()
        bias[seen] = (-0.5 * (means * directions.T).sum(1) + (counts / total).log()).float()
        return weight, bias, center.float()

    def _load_from_state_dict(self, state_dict: Mapping[str, Any], prefix: str, *args: Any, **kwargs: Any) -> None:
        match_saved_shapes(self, state_dict, prefix, ("class_sums", "class_counts", "weight", "bias"))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
