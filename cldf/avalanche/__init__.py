"""Avalanche glue shared by every method: the detector as a dynamic module, experience facts,
and the recipe -> strategy builder (:mod:`cldf.avalanche.build`). Each method's own plug-in lives
beside its core in :mod:`cldf.methods`."""

from cldf.avalanche.dynamic_detector import DynamicDetector

__all__ = ["DynamicDetector"]
