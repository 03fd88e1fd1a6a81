"""cldf: continual learning for deepfake detection without stored exemplars."""

__version__ = "0.1.0"
