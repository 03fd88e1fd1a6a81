"""Plug-in keeping each image's frozen-pass outputs within each training experience."""

from __future__ import annotations

from typing import Any

from avalanche.core import SupervisedPlugin

from cldf.detector import Detector


class FrozenPassMemoPlugin(SupervisedPlugin, supports_distributed=True):
    """Each image's frozen passes (the prefix, the tails of frozen adapters: a teacher, a previous
    adapter) are computed once per training experience: in every epoch after the first and in the
    end-of-experience passes (NAPA-VQ's prototypes, the analytic heads) they are looked up
    (:mod:`cldf.detector.frozen_pass_memo`). A new memo starts with each experience and is dropped
    after training (``after_training`` follows every plug-in's ``after_training_exp``), so nothing
    per image outlives the experience."""

    def __init__(self, detector: Detector, budget_mb: float) -> None:
        super().__init__()
        self.detector = detector
        self.budget_mb = budget_mb

    def before_training_exp(self, strategy: Any, *args, **kwargs) -> None:
        self.detector.start_frozen_pass_memo(self.budget_mb)

    def after_training(self, strategy: Any, *args, **kwargs) -> None:
        self.detector.drop_frozen_pass_memo()
