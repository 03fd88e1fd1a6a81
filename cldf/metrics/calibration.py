"""Decisions a user can act on: a calibrated ``p_fake``, a threshold at a target false-positive
rate, and a novelty score with its alarm threshold.

Fitted after each experience on that experience's validation images (scalars only: nothing
per image is kept). Calibration is Platt scaling of the detector's fake log-odds (a one-feature
logistic regression, scikit-learn), kept monotone: a fitted slope that is not positive (a small
validation split on which the detector ranks no better than chance) would turn every ranking
upside down, so the raw log-odds are kept instead (slope 1, intercept 0); the decision
threshold is the lowest calibrated ``p_fake`` at which at most ``target_fpr`` of the validation
real images are called fake. The novelty score of an image is the free energy of the learned
classes' logits, ``-logsumexp(z)``: high when no learned class (real source or generator) claims
the image; its alarm threshold is the ``1 - novelty_rate`` quantile of the validation images'
scores.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
import torch
from scipy.special import expit
from sklearn.linear_model import LogisticRegression

LOG_ODDS_CLIP = 1e6  # keeps the extreme values of a column-less class finite (see cldf.scores)


@dataclass(frozen=True)
class Calibration:
    """Platt scaling of the fake log-odds, a decision threshold and a novelty threshold."""

    slope: float = 1.0
    intercept: float = 0.0
    threshold: float = 0.5
    target_fpr: float = 0.05
    novelty_threshold: float = float("inf")

    def log_odds(self, log_odds: np.ndarray | torch.Tensor) -> np.ndarray:
        """Calibrated log-odds of fake from the detector's log-odds."""
        z = np.clip(np.asarray(log_odds, dtype=np.float64), -LOG_ODDS_CLIP, LOG_ODDS_CLIP)
        return self.slope * z + self.intercept

    def p_fake(self, log_odds: np.ndarray | torch.Tensor) -> np.ndarray:
        """Calibrated probability that each image is fake."""
        return expit(self.log_odds(log_odds))

    def decide(self, p_fake: np.ndarray) -> np.ndarray:
        """``True`` where the calibrated ``p_fake`` reaches the threshold (called fake)."""
        return np.asarray(p_fake) >= self.threshold

    def to_dict(self) -> dict[str, float]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, float]) -> "Calibration":
        return cls(**{k: float(v) for k, v in values.items()})


def novelty_scores(logits: torch.Tensor, learned_classes: Sequence[int] | None = None) -> np.ndarray:
    """Free energy ``-logsumexp`` of the learned classes' logits (higher = less like anything
    learned)."""
    columns = list(range(logits.shape[1])) if learned_classes is None else \
        [c for c in learned_classes if c < logits.shape[1]]
    return (-torch.logsumexp(logits.double()[:, columns], dim=1)).cpu().numpy()


def fit_calibration(log_odds: np.ndarray, is_fake: np.ndarray, novelty: np.ndarray | None = None,
                    target_fpr: float = 0.05, novelty_rate: float = 0.05) -> Calibration:
    """Fit :class:`Calibration` on one validation set (both classes needed for the scaling)."""
    if not 0.0 < target_fpr < 1.0:
        raise ValueError(f"target_fpr={target_fpr!r} must be in (0, 1)")
    z = np.clip(np.asarray(log_odds, dtype=np.float64), -LOG_ODDS_CLIP, LOG_ODDS_CLIP)
    y = np.asarray(is_fake, dtype=np.int64)
    if z.shape != y.shape or len(np.unique(y)) < 2:
        raise ValueError("calibration needs real and fake validation images with one score each")
    platt = LogisticRegression(C=1e4).fit(z[:, None], y)
    slope, intercept = float(platt.coef_[0, 0]), float(platt.intercept_[0])
    if slope <= 0.0:  # a scaling that would invert the ranking: keep the raw log-odds
        slope, intercept = 1.0, 0.0
    calibration = Calibration(slope, intercept, 0.5, target_fpr)
    p_real = np.sort(calibration.p_fake(z[y == 0]))
    # the lowest threshold above the (1 - target_fpr) quantile of the reals' calibrated scores
    allowed = int(np.floor(target_fpr * len(p_real)))
    threshold = float(np.nextafter(p_real[len(p_real) - allowed - 1], 1.0)) if allowed < len(p_real) else 0.0
    novelty_threshold = float(np.quantile(novelty, 1.0 - novelty_rate)) if novelty is not None else float("inf")
    return Calibration(calibration.slope, calibration.intercept, threshold, target_fpr, novelty_threshold)


def expected_calibration_error(p_fake: np.ndarray, is_fake: np.ndarray, bins: int = 10) -> float:
    """ECE: over equal-width bins of ``p_fake`` (:func:`reliability_bins`), the sample-weighted gap
    between the mean predicted probability and the share of fakes."""
    return float(sum(count * abs(mean - share) for mean, share, count in reliability_bins(p_fake, is_fake, bins))
                 / len(p_fake))


def decision_rates(decided_fake: np.ndarray, is_fake: np.ndarray) -> dict[str, float]:
    """False-positive rate on real images and true-positive rate on fakes (NaN without one)."""
    d = np.asarray(decided_fake, dtype=bool)
    y = np.asarray(is_fake, dtype=bool)
    return {"fpr": float(d[~y].mean()) if (~y).any() else float("nan"),
            "tpr": float(d[y].mean()) if y.any() else float("nan")}


def reliability_bins(p_fake: np.ndarray, is_fake: np.ndarray, bins: int = 10) -> list[tuple[float, float, int]]:
    """``(mean predicted, share of fakes, count)`` of each non-empty bin, for a reliability plot."""
    p = np.asarray(p_fake, dtype=np.float64)
    y = np.asarray(is_fake, dtype=np.float64)
    index = np.minimum((p * bins).astype(np.int64), bins - 1)
    return [(float(p[index == b].mean()), float(y[index == b].mean()), int(np.sum(index == b)))
            for b in range(bins) if np.any(index == b)]
