"""Deepfake-detection and continual-learning metrics.

Plain functions on arrays live in :mod:`cldf.metrics.detection` and :mod:`cldf.metrics.continual`.
The Avalanche plug-in :class:`DetectionPluginMetric` is loaded on first access, so importing
this package does not import Avalanche.
"""

from cldf.metrics.continual import (
    average_after_each,
    backward_transfer,
    continual_summary,
    final_average,
    forgetting,
    forgetting_after_each,
    matrices_from_cells,
    unseen_average,
)
from cldf.metrics.detection import (
    DETECTION_METRICS,
    SingleClassWarning,
    accuracy,
    attribution_accuracy,
    attribution_predictions,
    auc,
    average_precision,
    detection_summary,
    eer,
    prediction_metrics,
)


def __getattr__(name: str):
    if name == "DetectionPluginMetric":
        from cldf.metrics.avalanche_metrics import DetectionPluginMetric

        return DetectionPluginMetric
    raise AttributeError(f"module 'cldf.metrics' has no attribute {name!r}")


__all__ = [
    "DETECTION_METRICS",
    "DetectionPluginMetric",
    "SingleClassWarning",
    "accuracy",
    "attribution_accuracy",
    "attribution_predictions",
    "auc",
    "average_after_each",
    "average_precision",
    "backward_transfer",
    "continual_summary",
    "detection_summary",
    "eer",
    "final_average",
    "forgetting",
    "forgetting_after_each",
    "matrices_from_cells",
    "prediction_metrics",
    "unseen_average",
]
