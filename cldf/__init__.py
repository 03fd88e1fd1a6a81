"""cldf: continual learning for deepfake detection without stored exemplars."""

import warnings

__version__ = "0.1.0"

# Avalanche imports qpsolvers (for GEM, which cldf does not use); without a QP solver installed it
# warns on import. Silence only that warning, before cldf first imports Avalanche.
warnings.filterwarnings("ignore", message="no QP solver found", category=UserWarning, module=r"qpsolvers(\.|$)")
