"""Small facts about Avalanche experiences that several plug-ins need."""

from __future__ import annotations

from typing import Any


def experience_classes(experience: Any) -> list[int]:
    """Class ids in an experience: ``classes_in_this_experience``, else its dataset's targets."""
    classes = getattr(experience, "classes_in_this_experience", None)
    if classes is None:
        classes = experience.dataset.targets.uniques
    return sorted(int(c) for c in classes)
