"""The detector as an Avalanche ``DynamicModule``: any Avalanche template grows its head."""

from __future__ import annotations

from typing import Any

from avalanche.models import DynamicModule

from cldf.detector import Detector


class DynamicDetector(Detector, DynamicModule):
    """A :class:`cldf.detector.Detector` that grows its head to cover each experience's classes
    when an Avalanche strategy adapts the model (before training and before evaluating an
    experience), so the strategy's optimiser sees the new rows."""

    def adaptation(self, experience: Any) -> None:
        classes = getattr(experience, "classes_in_this_experience", None)
        if classes:
            self.grow_classes(max(classes) + 1)
