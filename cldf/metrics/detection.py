"""Detection metrics on ``p_fake`` scores: AUC, EER, AP, accuracy, and attribution accuracy.

Inputs are 1-D arrays: ``scores`` (higher = more likely fake) and ``labels`` (1 = fake, 0 = real).
AUC, EER and AP need both classes; on a single-class test set they return NaN and emit
:class:`SingleClassWarning` instead of failing or returning a meaningless 0.5.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence

import numpy as np
import torch
from sklearn.metrics import average_precision_score, roc_auc_score, roc_curve

from cldf.scores import fake_log_odds_from_logits, is_fake_target

ArrayLike = np.ndarray | torch.Tensor | Sequence[float]

DETECTION_METRICS = ("auc", "eer", "ap", "acc")


class SingleClassWarning(UserWarning):
    """A ranking metric was asked for on a test set holding only real or only fake samples."""


def _as_numpy(values: ArrayLike, name: str) -> np.ndarray:
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu().numpy()
    array = np.asarray(values)
    if array.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional, got shape {array.shape}")
    return array


def _binary_inputs(scores: ArrayLike, labels: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    s = _as_numpy(scores, "scores").astype(np.float64)
    y = _as_numpy(labels, "labels")
    if s.shape != y.shape:
        raise ValueError(f"scores ({s.shape[0]}) and labels ({y.shape[0]}) differ in length")
    if s.size == 0:
        raise ValueError("scores and labels are empty: the test set has no samples")
    if not np.isfinite(s).all():
        raise ValueError("scores contain NaN or infinite values")
    if not np.isin(y, (0, 1)).all():
        raise ValueError(f"labels must be 0 (real) or 1 (fake), got values {np.unique(y)}")
    return s, y.astype(np.int64)


def _both_classes(y: np.ndarray, metric: str) -> bool:
    if 0 < y.sum() < y.size:
        return True
    only = "fake" if y[0] == 1 else "real"
    warnings.warn(
        f"{metric} is undefined on a test set with only {only} samples ({y.size}); returning NaN",
        SingleClassWarning,
        stacklevel=3,
    )
    return False


def auc(scores: ArrayLike, labels: ArrayLike) -> float:
    """Area under the ROC curve (tied scores count one half, as in scikit-learn)."""
    s, y = _binary_inputs(scores, labels)
    return float(roc_auc_score(y, s)) if _both_classes(y, "AUC") else float("nan")


def eer(scores: ArrayLike, labels: ArrayLike) -> float:
    """Equal error rate: the error where the false-positive rate equals the false-negative rate.

    The ROC points (FPR_k, FNR_k = 1 - TPR_k), one per distinct score threshold, from
    scikit-learn's ``roc_curve`` (all points kept, starting at (0, 1)), are joined by straight
    segments. ``d_k = FPR_k - FNR_k`` rises from -1 to 1; on the first segment where it reaches
    0, ``t = d_{k-1} / (d_{k-1} - d_k)`` and EER = ``FPR_{k-1} + t (FPR_k - FPR_{k-1})``, which
    equals the FNR at that point. Perfect separation gives 0, perfect inversion 1.
    """
    s, y = _binary_inputs(scores, labels)
    if not _both_classes(y, "EER"):
        return float("nan")
    fpr, tpr, _ = roc_curve(y, s, drop_intermediate=False)
    d = fpr - (1.0 - tpr)
    k = int(np.argmax(d >= 0))
    if d[k] == 0:
        return float(fpr[k])
    t = d[k - 1] / (d[k - 1] - d[k])
    return float(fpr[k - 1] + t * (fpr[k] - fpr[k - 1]))


def average_precision(scores: ArrayLike, labels: ArrayLike) -> float:
    """Average precision with fakes as positives: sum_n (R_n - R_{n-1}) P_n (scikit-learn,
    no interpolation; tied scores form a single threshold)."""
    s, y = _binary_inputs(scores, labels)
    return float(average_precision_score(y, s)) if _both_classes(y, "AP") else float("nan")


def accuracy(scores: ArrayLike, labels: ArrayLike, threshold: float = 0.5) -> float:
    """Share of samples classified correctly when ``score >= threshold`` means fake.

    Defined for single-class test sets too.
    """
    s, y = _binary_inputs(scores, labels)
    return float(np.mean((s >= threshold).astype(np.int64) == y))


def detection_summary(
    scores: ArrayLike, labels: ArrayLike, threshold: float = 0.5
) -> dict[str, float]:
    """All of :data:`DETECTION_METRICS` for one test set, as ``{"auc": ..., "eer": ..., ...}``."""
    return {
        "auc": auc(scores, labels),
        "eer": eer(scores, labels),
        "ap": average_precision(scores, labels),
        "acc": accuracy(scores, labels, threshold),
    }


def attribution_predictions(
    logits: torch.Tensor | np.ndarray, seen_classes: Sequence[int] | None = None
) -> np.ndarray:
    """Predicted class ids: argmax over the logits of ``seen_classes`` (all columns if None)."""
    z = _as_numpy_2d(logits)
    if seen_classes is None:
        return z.argmax(axis=1)
    classes = np.array(sorted({int(c) for c in seen_classes}), dtype=np.int64)
    if classes.size == 0:
        raise ValueError("seen_classes is empty: attribution needs at least one class")
    if classes[0] < 0 or classes[-1] >= z.shape[1]:
        raise ValueError(
            f"seen_classes {classes.tolist()} reach outside the logits' columns 0..{z.shape[1] - 1}"
        )
    return classes[z[:, classes].argmax(axis=1)]


def attribution_accuracy(
    logits: torch.Tensor | np.ndarray,
    targets: ArrayLike,
    seen_classes: Sequence[int] | None = None,
    real_classes: Sequence[int] | None = None,
) -> float:
    """Share of samples whose predicted class (argmax over the seen classes) equals the target.

    With ``real_classes``, attribution names the generator: every real class is the one answer
    "real", so a real image attributed to another real source (CDDB's per-generator real
    folders) counts as correct.
    """
    y = _as_numpy(targets, "targets")
    predicted = attribution_predictions(logits, seen_classes)
    if predicted.shape[0] != y.shape[0]:
        raise ValueError(
            f"logits ({predicted.shape[0]}) and targets ({y.shape[0]}) differ in length"
        )
    if y.size == 0:
        raise ValueError("logits and targets are empty: the test set has no samples")
    if real_classes is not None:
        real = np.array(sorted({int(c) for c in real_classes}), dtype=np.int64)
        predicted = np.where(np.isin(predicted, real), -1, predicted)
        y = np.where(np.isin(y, real), -1, y)
    return float(np.mean(predicted == y))


def prediction_metrics(
    logits: torch.Tensor,
    targets: torch.Tensor,
    real_classes: Sequence[int],
    seen_classes: Sequence[int] | None = None,
    threshold: float = 0.5,
    num_classes: int | None = None,
) -> dict[str, float]:
    """Metrics of one (train experience, test experience) cell from a model's outputs.

    ``auc, eer, ap, acc`` on ``p_fake`` and the binary target (computed on its log-odds, the
    same ranking without float rounding of confident scores to 0 or 1; ``acc`` counts
    ``p_fake >= threshold``), and ``attribution``: accuracy of the argmax over ``seen_classes``
    (all columns if None; NaN if empty, i.e. nothing trained yet), every real class counting as
    one answer. ``p_fake`` too is taken over ``seen_classes`` only: a column the head grew while
    evaluating an unseen generator was never trained and adds nothing. ``num_classes``: the size
    of the stream's class map (real images of a source not learned yet are still real).
    """
    if not 0.0 < threshold < 1.0:
        raise ValueError(f"threshold={threshold!r} must be a probability in (0, 1)")
    values = detection_summary(
        fake_log_odds_from_logits(logits, real_classes, num_classes, seen_classes),
        is_fake_target(targets, real_classes),
        math.log(threshold / (1.0 - threshold)),
    )
    if seen_classes is not None and len(seen_classes) == 0:
        values["attribution"] = float("nan")
    else:
        values["attribution"] = attribution_accuracy(logits, targets, seen_classes, real_classes)
    return values


def _as_numpy_2d(logits: torch.Tensor | np.ndarray) -> np.ndarray:
    if isinstance(logits, torch.Tensor):
        logits = logits.detach().float().cpu().numpy()
    z = np.asarray(logits)
    if z.ndim != 2:
        raise ValueError(f"logits must have shape (samples, classes), got {z.shape}")
    return z
