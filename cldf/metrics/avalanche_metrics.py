"""Avalanche plug-in metric: detection metrics per test experience and the R matrices.

Add ``DetectionPluginMetric(real_classes=[0])`` to ``EvaluationPlugin(...)``. During evaluation it
keeps ``strategy.mb_output`` (logits) and ``strategy.mb_y`` of each test experience, then emits
``AUC/eval_phase/test_stream/Exp001`` and likewise ``EER``, ``AP``, ``DetAcc`` (accuracy at the
threshold) and ``AttributionAcc`` (argmax over the classes trained so far), all computed by
:func:`cldf.metrics.prediction_metrics`; after the stream it emits the mean over the evaluated
experiences as ``AUC/eval_phase/test_stream``; after an evaluation of the test stream that follows
training, also ``AUCSeen/eval_phase/test_stream`` (mean AUC over the experiences trained so far)
and ``ForgettingAUC/eval_phase/test_stream`` (:mod:`cldf.metrics.continual`). Evaluations made after a training experience has
finished fill row ``strategy.clock.train_exp_counter - 1`` of the R matrices
(:meth:`DetectionPluginMetric.matrix`); periodic evaluations during training, or before any
training, are logged but not put in the matrices.

With a validation stream (``validation_stream``, Avalanche's ``valid`` stream of
:func:`cldf.streams.to_benchmark`), evaluating the experience just trained on it fits a
:class:`~cldf.metrics.calibration.Calibration` (Platt scaling, a threshold at ``target_fpr``, a
novelty threshold); later test cells then add ``fpr``, ``tpr`` (at that threshold) and ``ece``.
Each evaluation after training also fills the upper triangle of ``novelty_auc``: how well the
novelty score tells the fakes of each later experience from the test images learned so far.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from sklearn.metrics import roc_auc_score
from avalanche.evaluation.metric_definitions import PluginMetric
from avalanche.evaluation.metric_results import MetricValue
from avalanche.evaluation.metric_utils import get_metric_name

from cldf.distributed import gather_cat, is_distributed
from cldf.metrics.continual import average_after_each, forgetting_after_each, matrices_from_cells
from cldf.metrics.calibration import (
    Calibration, decision_rates, expected_calibration_error, fit_calibration, novelty_scores,
    reliability_bins)
from cldf.metrics.detection import prediction_metrics
from cldf.scores import fake_log_odds_from_logits, is_fake_target

DISPLAY_NAMES = {
    "auc": "AUC",
    "eer": "EER",
    "ap": "AP",
    "acc": "DetAcc",
    "attribution": "AttributionAcc",
    "fpr": "FPRAtThreshold",
    "tpr": "TPRAtThreshold",
    "ece": "ECE",
    "novelty_auc": "NoveltyAUC",
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
        target_fpr: float = 0.05,
        novelty_rate: float = 0.05,
        validation_stream: str = "valid",
    ):
        super().__init__()
        if not real_classes:
            raise ValueError("real_classes is empty: name at least one real class id, e.g. [0]")
        self.real_classes = [int(c) for c in real_classes]
        self.stream_name = stream_name
        self.threshold = threshold
        self.num_classes = num_classes
        self.target_fpr = target_fpr
        self.novelty_rate = novelty_rate
        self.validation_stream = validation_stream
        self.calibration: Calibration | None = None
        if num_classes is not None and max(self.real_classes) >= num_classes:
            raise ValueError(f"real_classes {self.real_classes} reach outside the class map's "
                             f"ids 0..{num_classes - 1}")
        self.reset()

    def reset(self) -> None:
        """Forget everything: seen classes, collected predictions, matrix cells, calibration."""
        self.calibration = None
        self.calibrations: dict[int, Calibration] = {}
        self.reliability: list[tuple[float, float, int]] = []
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
        if self.calibration is not None:
            state["calibration"] = torch.tensor(list(self.calibration.to_dict().values()), dtype=torch.float64)
            rows = sorted(self.calibrations)
            state["calibrations.index"] = torch.tensor(rows, dtype=torch.int64)
            state["calibrations"] = torch.tensor([list(self.calibrations[r].to_dict().values()) for r in rows],
                                                 dtype=torch.float64)
        for name in names:
            state[f"cells.{name}"] = torch.tensor(
                [self._cells[c].get(name, float("nan")) for c in cells], dtype=torch.float64
            )
        return state

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Restore what :meth:`state_dict` returned (replaces the cells and seen classes)."""
        self.reset()
        self._seen_classes = {int(c) for c in state["seen_classes"].tolist()}
        if "calibration" in state:
            self.calibration = calibration_from_tensor(state["calibration"])
            self.calibrations = {int(r): calibration_from_tensor(v)
                                 for r, v in zip(state["calibrations.index"].tolist(), state["calibrations"])}
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
        self._novelty: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        self._calibrated: list[tuple[np.ndarray, np.ndarray]] = []

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
        stream = strategy.experience.origin_stream.name
        after_training = not self._training_in_progress and row >= 0
        log_odds = fake_log_odds_from_logits(logits, self.real_classes, self.num_classes, seen).numpy()
        is_fake = np.asarray(is_fake_target(targets.numpy(), self.real_classes))
        novelty = novelty_scores(logits, seen)
        fits = len(np.unique(is_fake)) == 2  # a validation split of one class keeps the earlier calibration
        if after_training and fits and stream == self.validation_stream and strategy.experience.current_experience == row:
            self.calibration = fit_calibration(log_odds, is_fake, novelty, self.target_fpr, self.novelty_rate)
            self.calibrations[row] = self.calibration
        if after_training and stream == self.stream_name:
            if self.calibration is not None:
                p_fake = self.calibration.p_fake(log_odds)
                values.update(calibrated_cell(self.calibration, p_fake, is_fake))
                self._calibrated.append((p_fake, is_fake))
            self._novelty[strategy.experience.current_experience] = (novelty, is_fake)
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
        row = strategy.clock.train_exp_counter - 1
        for j, auroc in novelty_row(self._novelty, row).items():
            self._cells[(row, j)]["novelty_auc"] = auroc
        if self._calibrated:  # the reliability of the latest row, all test experiences pooled
            p, is_fake = (np.concatenate(parts) for parts in zip(*self._calibrated))
            self.reliability = reliability_bins(p, is_fake)
        x = strategy.clock.train_iterations
        emitted = []
        for name, values in self._stream_values.items():
            finite = [v for v in values if not np.isnan(v)]
            mean = float(np.mean(finite)) if finite else float("nan")
            full_name = get_metric_name(
                DISPLAY_NAMES[name], strategy, add_experience=False, add_task=False
            )
            emitted.append(MetricValue(self, full_name, mean, x))
        if (row, row) in self._cells and self._novelty:  # this evaluation filled row ``row``
            auc = self.matrix("auc")[: row + 1, : row + 1]
            stream = f"eval_phase/{self.stream_name}_stream"
            emitted.append(MetricValue(self, f"AUCSeen/{stream}", float(average_after_each(auc)[-1]), x))
            emitted.append(MetricValue(self, f"ForgettingAUC/{stream}", float(forgetting_after_each(auc)[-1]), x))
        return emitted

    def _clear_experience_buffers(self) -> None:
        self._logits: list[torch.Tensor] = []
        self._targets: list[torch.Tensor] = []

    def _observed_size(self) -> int:
        return 1 + max((max(i, j) for i, j in self._cells), default=-1)

    def __str__(self) -> str:
        return "DetectionMetrics"


def calibrated_cell(calibration: Calibration, p_fake: np.ndarray, is_fake: np.ndarray) -> dict[str, float]:
    """FPR and TPR at the calibrated threshold and the expected calibration error of one test set
    (``p_fake`` calibrated)."""
    return {**decision_rates(calibration.decide(p_fake), is_fake),
            "ece": expected_calibration_error(p_fake, is_fake)}


def novelty_row(novelty: dict[int, tuple[np.ndarray, np.ndarray]], row: int) -> dict[int, float]:
    """After training experience ``row``: for each later experience j, the AUROC of the novelty
    score separating j's fakes from every test image of the experiences learned so far."""
    if row < 0 or not all(j in novelty for j in range(row + 1)):
        return {}
    known = np.concatenate([novelty[j][0] for j in range(row + 1)])
    out = {}
    for j in sorted(k for k in novelty if k > row):
        scores, is_fake = novelty[j]
        new = scores[is_fake.astype(bool)]
        if len(new) and len(known):
            labels = np.r_[np.zeros(len(known)), np.ones(len(new))]
            out[j] = float(roc_auc_score(labels, np.r_[known, new]))
    return out


def calibration_from_tensor(values: torch.Tensor) -> Calibration:
    """The :class:`Calibration` stored by :meth:`DetectionPluginMetric.state_dict`."""
    return Calibration.from_dict(dict(zip(Calibration().to_dict(), values.tolist())))


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
