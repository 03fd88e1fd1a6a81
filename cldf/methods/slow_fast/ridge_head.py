"""Analytic ridge-regression head on randomly projected features (RanPAC-style).

h(f) = ReLU(f W_rand); the head keeps only the summed statistics G = Σ hᵀh (M x M) and
Q = Σ hᵀy (M x K, y one-hot) in float64 and solves W_o = ((G + λI)⁻¹ Q)ᵀ. Within each
experience a deterministic, evenly spread ``holdout_fraction`` of the samples is kept apart
(as statistics too) to choose λ: the candidate fitted on all earlier data plus the rest of the
experience that gives the lowest mean squared error on the held-out part wins. All statistics
are plain sums: with several processes, each accumulates a contiguous block of the experience
(``begin_experience(first_position)``) and :meth:`RidgeHead.finish_experience` sums the blocks
through its ``reduce`` hook before solving, giving the single-process statistics. Nothing grows
with the number of samples seen, only with the number of classes.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from cldf.methods.slow_fast.growth import check_batch, match_saved_shapes


class _ExperienceStatistics:
    """Sums of one experience, split into a fitting part and a held-out part."""

    def __init__(self, dim: int, num_classes: int, device: torch.device, first_position: int = 0) -> None:
        zeros = dict(dtype=torch.float64, device=device)
        self.fit_gram = torch.zeros(dim, dim, **zeros)
        self.fit_cross = torch.zeros(dim, num_classes, **zeros)
        self.hold_gram = torch.zeros(dim, dim, **zeros)
        self.hold_cross = torch.zeros(dim, num_classes, **zeros)
        self.hold_count = 0
        self.count = 0
        self.position = first_position

    def reduce(self, reduce: Callable[[Tensor], Tensor]) -> None:
        """Replace every sum by ``reduce(sum)`` (e.g. the sum over processes)."""
        self.fit_gram, self.fit_cross = reduce(self.fit_gram), reduce(self.fit_cross)
        self.hold_gram, self.hold_cross = reduce(self.hold_gram), reduce(self.hold_cross)
        counts = reduce(torch.tensor([self.hold_count, self.count], dtype=torch.int64, device=self.fit_gram.device))
        self.hold_count, self.count = (int(c) for c in counts)


class RidgeHead(nn.Module):
    """Ridge head over ReLU random features with per-experience λ selection."""

    def __init__(
        self,
        in_features: int,
        projection_dim: int,
        ridge_lambdas: Sequence[float] = (1e3, 1e4, 1e5, 1e6, 1e7, 1e8),
        holdout_fraction: float = 0.2,
        num_classes: int = 0,
        generator: Optional[torch.Generator] = None,
    ) -> None:
        super().__init__()
        if not ridge_lambdas or not 0.0 < holdout_fraction < 1.0:
            raise ValueError(
                f"RidgeHead needs ridge_lambdas (got {tuple(ridge_lambdas)}) and holdout_fraction in (0, 1) "
                f"(got {holdout_fraction})"
            )
        self.ridge_lambdas = tuple(float(v) for v in ridge_lambdas)
        self.holdout_fraction = float(holdout_fraction)
        self.register_buffer("projection", torch.randn(in_features, projection_dim, generator=generator))
        self.register_buffer("gram", torch.zeros(projection_dim, projection_dim, dtype=torch.float64))
        self.register_buffer("cross", torch.zeros(projection_dim, num_classes, dtype=torch.float64))
        self.register_buffer("weight", torch.zeros(num_classes, projection_dim))
        self.register_buffer("ridge", torch.tensor(float("nan"), dtype=torch.float64))
        self.register_buffer("samples_seen", torch.tensor(0, dtype=torch.int64))
        self._pending: Optional[_ExperienceStatistics] = None

    @property
    def num_classes(self) -> int:
        return self.cross.shape[1]

    @property
    def is_fitted(self) -> bool:
        return bool(self.samples_seen > 0)

    def embed(self, features: Tensor) -> Tensor:
        """ReLU random features h(f), float32."""
        return F.relu(features.float() @ self.projection)

    def forward(self, features: Tensor) -> Tensor:
        return self.embed(features) @ self.weight.T

    def grow_classes(self, num_classes: int) -> None:
        """Add zero columns/rows for new classes (their logits stay 0 until data arrives)."""
        extra = num_classes - self.num_classes
        if extra <= 0:
            return
        self.cross = F.pad(self.cross, (0, extra))
        self.weight = F.pad(self.weight, (0, 0, 0, extra))
        if self._pending is not None:
            self._pending.fit_cross = F.pad(self._pending.fit_cross, (0, extra))
            self._pending.hold_cross = F.pad(self._pending.hold_cross, (0, extra))

    def begin_experience(self, first_position: int = 0) -> None:
        """Start collecting the statistics of a new experience; ``first_position`` is the index,
        within the experience, of the first sample this process will add (its block's start)."""
        self._pending = _ExperienceStatistics(self.gram.shape[0], self.num_classes, self.gram.device, first_position)

    def accumulate(self, features: Tensor, targets: Tensor) -> None:
        """Add a batch (features B x d, integer targets) to the current experience's sums."""
        if self._pending is None:
            raise RuntimeError("RidgeHead.accumulate called before begin_experience()")
        check_batch("RidgeHead", features, targets, self.num_classes)
        pending = self._pending
        h = self.embed(features).double()
        y = F.one_hot(targets.long(), self.num_classes).double()
        positions = torch.arange(pending.position, pending.position + len(targets), device=h.device)
        f = self.holdout_fraction
        held = torch.floor((positions + 1) * f) > torch.floor(positions * f)
        pending.position += len(targets)
        pending.count += len(targets)
        pending.fit_gram += h[~held].T @ h[~held]
        pending.fit_cross += h[~held].T @ y[~held]
        pending.hold_gram += h[held].T @ h[held]
        pending.hold_cross += h[held].T @ y[held]
        pending.hold_count += int(held.sum())

    def finish_experience(self, reduce: Optional[Callable[[Tensor], Tensor]] = None) -> float:
        """Choose λ on the held-out part, merge the experience into G and Q, solve W_o.

        ``reduce`` first maps every sum of the experience to its total over processes (e.g. an
        all-reduce); without it the sums are this process's. Returns the chosen λ. With no
        held-out sample (fewer than 1/holdout_fraction samples) the previous λ is kept, or the
        largest candidate on the first experience.
        """
        if self._pending is None:
            raise RuntimeError("RidgeHead.finish_experience called before begin_experience()")
        pending, self._pending = self._pending, None
        if reduce is not None:
            pending.reduce(reduce)
        if pending.hold_count > 0:
            ridge = self._select_ridge(pending)
        elif self.is_fitted:
            ridge = float(self.ridge)
        else:
            ridge = max(self.ridge_lambdas)
        self.gram += pending.fit_gram + pending.hold_gram
        self.cross += pending.fit_cross + pending.hold_cross
        self.samples_seen += pending.count
        self.ridge.fill_(ridge)
        self.weight = self.solve(self.gram, self.cross, ridge).T.float().contiguous()
        return ridge

    def _select_ridge(self, pending: _ExperienceStatistics) -> float:
        gram = self.gram + pending.fit_gram
        cross = self.cross + pending.fit_cross
        errors = []
        for ridge in self.ridge_lambdas:
            w = self.solve(gram, cross, ridge)
            # Σ‖H_h W - Y_h‖² = tr(Wᵀ G_h W) - 2 tr(Wᵀ Q_h) + n_h for one-hot Y_h.
            squared = (w * (pending.hold_gram @ w)).sum() - 2.0 * (w * pending.hold_cross).sum() + pending.hold_count
            errors.append(float(squared) / (pending.hold_count * max(self.num_classes, 1)))
        best = min(range(len(errors)), key=errors.__getitem__)
        return self.ridge_lambdas[best]

    @staticmethod
    def solve(gram: Tensor, cross: Tensor, ridge: float) -> Tensor:
        """(G + λI)⁻¹ Q in float64 through a Cholesky factorisation (G + λI is positive definite)."""
        eye = torch.eye(gram.shape[0], dtype=torch.float64, device=gram.device)
        factor = torch.linalg.cholesky(gram.double() + ridge * eye)
        return torch.cholesky_solve(cross.double(), factor)

    def _load_from_state_dict(self, state_dict: Mapping[str, Any], prefix: str, *args: Any, **kwargs: Any) -> None:
        match_saved_shapes(self, state_dict, prefix, ("cross", "weight"))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

