"""Avalanche plug-in metric: detection metrics per test experience and the R matrices.

Add ``DetectionPluginMetric(real_classes=[0])`` to ``EvaluationPlugin(...)``. During evaluation it
keeps ``strategy.mb_output`` (logits) and ``strategy.mb_y`` of each test experience, then emits
``AUC/eval_phase/test_stream/Exp001`` and likewise ``EER``, ``AP``, ``DetAcc`` (accuracy at the
threshold) and ``AttributionAcc`` (argmax over the classes trained so far), all computed by
:func:`cldf.metrics.prediction_metrics`; after the stream it emits the mean over the evaluated
experiences as ``AUC/eval_phase/test_stream``. Evaluations made after a training experience has
finished fill row ``strategy.clock.train_exp_counter - 1`` of the R matrices
(:meth:`DetectionPluginMetric.matrix`); periodic evaluations during training, or before any
training, are logged but not put in the matrices.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from avalanche.evaluation.metric_definitions import PluginMetric
from avalanche.evaluation.metric_results import MetricValue
from avalanche.evaluation.metric_utils import get_metric_name

from cldf.distributed import gather_cat, is_distributed
from cldf.metrics.continual import matrices_from_cells
from cldf.metrics.detection import prediction_metrics

DISPLAY_NAMES = {
    "auc": "AUC",
    "eer": "EER",
    "ap": "AP",
    "acc": "DetAcc",
    "attribution": "AttributionAcc",
}


class DetectionPluginMetric(PluginMetric[dict[str, np.ndarray]]):
    """AUC, EER, AP, accuracy at ``threshold`` and attribution accuracy for each test experience.

    :param real_classes: class ids that are real images; every other class is fake.
    :param stream_name: only evaluations on this stream enter the R matrices.
    :param threshold: ``p_fake >= threshold`` counts as a fake prediction for ``DetAcc``.
    :param num_classes: size of the stream's class map (default: the logits' width). Real
        classes the heads have not grown to yet add nothing to ``p_fake``; their images are
        still real ground truth.
    """

    def __init__(
        self,
        real_classes: Sequence[int] = (0,),
        stream_name: str = "test",
        threshold: float = 0.5,
        num_classes: int | None = None,
    ):
        super().__init__()
        if not real_classes:
            raise ValueError("real_classes is empty: name at least one real class id, e.g. [0]")
        self.real_classes = [int(c) for c in real_classes]
        self.stream_name = stream_name
        self.threshold = threshold
        self.num_classes = num_classes
        if num_classes is not None and max(self.real_classes) >= num_classes:
            raise ValueError(f"real_classes {self.real_classes} reach outside the class map's "
                             f"ids 0..{num_classes - 1}")
        self.reset()

    def reset(self) -> None:
        """Forget everything: seen classes, collected predictions and matrix cells."""
        self._seen_classes: set[int] = set()
        self._training_in_progress = False
        self._cells: dict[tuple[int, int], dict[str, float]] = {}
        self._stream_values: dict[str, list[float]] = {}
        self._clear_experience_buffers()

    def result(self) -> dict[str, np.ndarray]:
        """The R matrices accumulated so far, keyed by metric name."""
        return self.matrices()

    def matrices(self, num_experiences: int | None = None) -> dict[str, np.ndarray]:
        """Per-metric ``T x T`` matrices (NaN where not evaluated); T defaults to the largest
        experience index seen plus one."""
        size = num_experiences if num_experiences is not None else self._observed_size()
        return matrices_from_cells(self._cells, size)

    def matrix(self, name: str, num_experiences: int | None = None) -> np.ndarray:
        """The R matrix of one metric: one of ``auc, eer, ap, acc, attribution``."""
        if name not in DISPLAY_NAMES:
            raise KeyError(f"unknown metric {name!r}; valid names: {', '.join(DISPLAY_NAMES)}")
        size = num_experiences if num_experiences is not None else self._observed_size()
        return self.matrices(size).get(name, np.full((size, size), np.nan))

    @property
    def seen_classes(self) -> list[int]:
        """Class ids of every training experience so far."""
        return sorted(self._seen_classes)

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The matrix cells and seen classes as tensors (NaN kept), for checkpoints."""
        cells = sorted(self._cells)
        names = sorted({name for values in self._cells.values() for name in values})
        state = {
            "seen_classes": torch.tensor(self.seen_classes, dtype=torch.int64),
            "cells.index": torch.tensor(cells, dtype=torch.int64).reshape(-1, 2),
        }
        for name in names:
            state[f"cells.{name}"] = torch.tensor(
                [self._cells[c].get(name, float("nan")) for c in cells], dtype=torch.float64
            )
        return state

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Restore what :meth:`state_dict` returned (replaces the cells and seen classes)."""
        self.reset()
        self._seen_classes = {int(c) for c in state["seen_classes"].tolist()}
        columns = {k.removeprefix("cells."): v.tolist() for k, v in state.items() if k.startswith("cells.") and k != "cells.index"}
        for n, (i, j) in enumerate(state["cells.index"].tolist()):
            self._cells[(i, j)] = {name: values[n] for name, values in columns.items()}

    def before_training_exp(self, strategy) -> None:
        self._training_in_progress = True
        experience = strategy.experience
        classes = getattr(experience, "classes_in_this_experience", None)
        if classes is None:
            classes = {int(t) for t in experience.dataset.targets}
        self._seen_classes.update(int(c) for c in classes)

    def after_training_exp(self, strategy) -> None:
        self._training_in_progress = False

    def before_eval(self, strategy) -> None:
        self._stream_values = {}

    def before_eval_exp(self, strategy) -> None:
        self._clear_experience_buffers()

    def after_eval_iteration(self, strategy) -> None:
        super().after_eval_iteration(strategy)
        self._logits.append(strategy.mb_output.detach().float().cpu())
        self._targets.append(strategy.mb_y.detach().cpu())

    def after_eval_exp(self, strategy) -> list[MetricValue]:
        if not self._logits and not is_distributed():
            return []
        # with several processes each evaluated a shard: metrics on the union of their predictions
        logits, targets = gather_predictions(self._logits, self._targets)
        if not len(targets):
            self._clear_experience_buffers()
            return []
        seen = [c for c in self._seen_classes if c < logits.shape[1]]
        values = prediction_metrics(logits, targets, self.real_classes, seen, self.threshold, self.num_classes)
        self._clear_experience_buffers()
        row = strategy.clock.train_exp_counter - 1
        if (
            not self._training_in_progress
            and row >= 0
            and strategy.experience.origin_stream.name == self.stream_name
        ):
            self._cells[(row, strategy.experience.current_experience)] = values
        x = strategy.clock.train_iterations
        emitted = []
        for name, value in values.items():
            self._stream_values.setdefault(name, []).append(value)
            full_name = get_metric_name(
                DISPLAY_NAMES[name], strategy, add_experience=True, add_task=False
            )
            emitted.append(MetricValue(self, full_name, value, x))
        return emitted

    def after_eval(self, strategy) -> list[MetricValue]:
        x = strategy.clock.train_iterations
        emitted = []
        for name, values in self._stream_values.items():
            finite = [v for v in values if not np.isnan(v)]
            mean = float(np.mean(finite)) if finite else float("nan")
            full_name = get_metric_name(
                DISPLAY_NAMES[name], strategy, add_experience=False, add_task=False
            )
            emitted.append(MetricValue(self, full_name, mean, x))
        return emitted

    def _clear_experience_buffers(self) -> None:
        self._logits: list[torch.Tensor] = []
        self._targets: list[torch.Tensor] = []

    def _observed_size(self) -> int:
        return 1 + max((max(i, j) for i, j in self._cells), default=-1)

    def __str__(self) -> str:
        return "DetectionMetrics"


def gather_predictions(logits: list[torch.Tensor], targets: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Every process's mini-batch logits and targets, concatenated in rank order (this process's
    own without a process group). Run by all processes, also those with no mini-batch."""
    if not is_distributed():
        return torch.cat(logits), torch.cat(targets)
    width = torch.tensor([logits[0].shape[1] if logits else 0])
    width = int(gather_cat(width).max())
    local_logits = torch.cat(logits) if logits else torch.zeros(0, width)
    local_targets = torch.cat(targets).long() if targets else torch.zeros(0, dtype=torch.long)
    return gather_cat(local_logits), gather_cat(local_targets)


__all__ = ["DISPLAY_NAMES", "DetectionPluginMetric", "gather_predictions"]
