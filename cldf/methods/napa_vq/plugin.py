"""Avalanche plug-in that adds NAPA-VQ's terms to any supervised strategy's loss.

Works with ``avalanche.training.Naive`` (features from ``strategy.model.last_features``) and with
the slow/fast strategy (pass ``feature_source`` returning the fast learner's features and
``previous=DetectorAdapterSnapshot(det, adapter="fast")``).

Cost note: at the end of each experience the plug-in needs one no-grad pass over that
experience's training data, with its eval transforms and the model in eval mode, to compute the
prototypes of the classes new in it (per-class sums and counts only; nothing per image is kept).
It joins the strategy's own end-of-experience pass where there is one (the slow/fast strategy's;
:mod:`cldf.avalanche.experience_pass`), else makes its own.
"""

from __future__ import annotations

from typing import Any, Callable, Optional

import torch
from avalanche.core import SupervisedPlugin
from avalanche.evaluation.metric_results import MetricValue
from torch import Tensor, nn

from cldf.avalanche.experience import experience_classes
from cldf.avalanche.experience_pass import join_experience_pass
from cldf.avalanche.loss_scaling import scaler_of
from cldf.distributed import all_reduce_sum, shard_loader
from cldf.detector import Detector, DetectorAdapterSnapshot
from cldf.methods.napa_vq import (
    FeatureSums, FrozenModelCopy, NAPAVQ, NAPAVQConfig, PreviousFeatures,
    read_last_features,
)

def model_last_features(strategy: Any) -> Tensor:
    """Default feature source: ``strategy.model.last_features`` from the latest forward."""
    return read_last_features(strategy.model)


def make_plugin(config: NAPAVQConfig, detector: Detector, wrapped: bool) -> "NAPAVQPlugin":
    """The plug-in on a detector; ``wrapped``: the strategy trains a model over the detector (the
    slow/fast learners), whose eval forward gives the prediction's features, so the prototypes
    are read from the adapter being trained instead."""
    return NAPAVQPlugin(config, detector.num_features, previous=default_previous(detector), device=detector.device,
                        features_of=active_adapter_features(detector) if wrapped else None)


def active_adapter_features(detector: Detector) -> Callable[[Tensor], Tensor]:
    """``x -> features`` of the detector's active adapter (the learner being trained)."""
    def features(x: Tensor) -> Tensor:
        name = detector.active_adapter
        return detector.multi_features(x, [name])[name]
    return features


def default_previous(model: nn.Module, adapter: Optional[str] = None) -> PreviousFeatures:
    """A detector keeps only its previous adapter; any other model a frozen deep copy."""
    if isinstance(model, Detector):
        return DetectorAdapterSnapshot(model, adapter=adapter)
    return FrozenModelCopy(model)


class NAPAVQPlugin(SupervisedPlugin, supports_distributed=True):
    """NAPA-VQ as a plug-in: loss terms, code-vector optimiser, prototypes, optional prediction.

    Args:
        config: method settings.
        feature_dim: dimension d of the features the terms act on.
        previous: the previous model's features for distillation (``None``: no distillation);
            see :func:`default_previous`.
        feature_source: ``strategy -> Tensor`` giving the batch features (B x d, with grad)
            after the strategy's forward.
        features_of: ``x -> Tensor`` running the model on extra inputs (rotated views, the
            prototype pass); default: ``strategy.model(x)`` then ``feature_source``.
        device: where code vectors and prototypes live.

    Under a process group (:mod:`cldf.distributed`) every process keeps the same code vectors,
    edges and prototypes: the learner sums edge counts, code-vector gradients and prototype sums
    over processes, and each process runs the prototype pass on its block of the experience.
    """

    def __init__(self, config: NAPAVQConfig, feature_dim: int, *,
                 previous: Optional[PreviousFeatures] = None,
                 feature_source: Callable[[Any], Tensor] = model_last_features,
                 features_of: Optional[Callable[[Tensor], Tensor]] = None,
                 device: torch.device | str = "cpu") -> None:
        super().__init__()
        self.config = config
        self.learner = NAPAVQ(config, feature_dim, previous=previous, device=device, reduce=all_reduce_sum)
        self.feature_source = feature_source
        self.features_of = features_of

    # ------------------------------------------------------------------ training
    def before_training_exp(self, strategy: Any, *args, **kwargs) -> None:
        self.learner.begin_experience(experience_classes(strategy.experience))
        self._epoch_terms: dict[str, list[float]] = {}

    def before_backward(self, strategy: Any, *args, **kwargs) -> None:
        z = self.feature_source(strategy)
        views = [z]
        if self.config.use_rotations:
            views += self._rotated_views(strategy, z)
        z_old = self.learner.previous_features(strategy.mb_x)
        strategy.loss = strategy.loss + self.learner.training_loss(views, strategy.mb_y, z_old)
        for name, value in self.learner.last_terms.items():
            self._epoch_terms.setdefault(name, []).append(value)

    def after_update(self, strategy: Any, *args, **kwargs) -> None:
        self.learner.step(scaler_of(strategy))

    def after_training_epoch(self, strategy: Any, *args, **kwargs) -> None:
        self.learner.end_epoch()
        exp_id, x_plot = strategy.experience.current_experience, strategy.clock.train_iterations
        for name, values in self._epoch_terms.items():  # the epoch's mean of each loss term, to the loggers
            metric = f"NAPAVQ/{name}/train_phase/Exp{exp_id:03d}"
            strategy.evaluator.publish_metric_value(MetricValue(self, metric, sum(values) / len(values), x_plot))
        self._epoch_terms = {}

    def after_training_exp(self, strategy: Any, *args, **kwargs) -> None:
        prototypes = _PrototypePass(self.learner)
        if not join_experience_pass(strategy, prototypes):
            prototypes.sums = self._experience_feature_sums(strategy)
            prototypes.finish()

    # ------------------------------------------------------------------ prediction
    def after_eval_forward(self, strategy: Any, *args, **kwargs) -> None:
        if self.config.prediction == "nearest_cv":
            strategy.mb_output = self.learner.prediction(self.feature_source(strategy), strategy.mb_output)

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Tensor]:
        """Tensors only: code vectors, edges, prototypes, previous-model snapshot."""
        return self.learner.state_dict()

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        self.learner.load_state_dict(state)

    # ------------------------------------------------------------------ helpers
    def _features(self, strategy: Any, x: Tensor) -> Tensor:
        if self.features_of is not None:
            return self.features_of(x)
        strategy.model(x)
        return self.feature_source(strategy)

    def _rotated_views(self, strategy: Any, z: Tensor) -> list[Tensor]:
        x = strategy.mb_x
        if x.ndim != 4 or x.shape[2] != x.shape[3]:
            raise ValueError(f"use_rotations needs square image batches (B x C x H x H), got {tuple(x.shape)}")
        rotated = torch.cat([torch.rot90(x, r, dims=(2, 3)) for r in (1, 2, 3)])
        views = list(self._features(strategy, rotated).chunk(3))
        if hasattr(strategy.model, "last_features"):
            strategy.model.last_features = z  # later readers see the batch's own features
        return views

    @torch.no_grad()
    def _experience_feature_sums(self, strategy: Any) -> FeatureSums:
        model = strategy.model
        was_training = model.training
        model.eval()
        # each process adds its block of the experience; the learner sums them over processes
        loader, _ = shard_loader(strategy.experience.dataset.eval(), strategy.train_mb_size)
        prototypes = _PrototypePass(self.learner)
        prototypes.begin()
        for batch in loader:
            prototypes.add(self._features(strategy, batch[0].to(strategy.device)), batch[1])
        model.train(was_training)
        return prototypes.sums


class _PrototypePass:
    """The prototype sums of one experience, fed batch by batch by a strategy's shared
    end-of-experience pass or by the plug-in's own."""

    def __init__(self, learner: NAPAVQ) -> None:
        self.learner = learner
        self.sums: Optional[FeatureSums] = None

    def begin(self) -> None:
        self.sums = self.learner.new_feature_sums()

    def add(self, features: Tensor, targets: Tensor) -> None:
        device = self.learner.device
        self.sums.add(self.learner.embed(features.to(device)), self.learner.prototype_labels(targets.to(device)))

    def finish(self) -> None:
        self.learner.end_experience(self.sums)
