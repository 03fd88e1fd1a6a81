"""The embedded offline stream: real photos shipped with scikit-image/scikit-learn and
procedural forgery families, generated lazily and deterministically from a seed."""

from cldf.streams.embedded.dataset import EmbeddedSplit, embedded_split
from cldf.streams.embedded.families import FORGERY_FAMILIES

__all__ = ["FORGERY_FAMILIES", "EmbeddedSplit", "embedded_split"]
