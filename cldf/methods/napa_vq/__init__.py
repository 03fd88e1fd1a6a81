"""NAPA-VQ: exemplar-free protection of old classes with code vectors, a learned neighbourhood
graph, a separation loss and pseudo-features around old prototypes (algorithms.md section 2).

Plain PyTorch; the Avalanche plug-in is :class:`cldf.methods.napa_vq.plugin.NAPAVQPlugin`.
"""

from cldf.methods.napa_vq.codebook import (
    CodeBook, distance_logits, distances, nearest_code_vectors, refresh_age_prune,
    squared_distances, symmetrise,
)
from cldf.digests import sample_keys
from cldf.methods.entry import MethodEntry
from cldf.methods.napa_vq.config import NAPAVQConfig
from cldf.methods.napa_vq.learner import NAPAVQ
from cldf.methods.napa_vq.losses import distance_cross_entropy, feature_distillation, separation_loss
from cldf.methods.napa_vq.previous import (
    CachedPreviousFeatures, FrozenModelCopy, PreviousFeatures, read_last_features,
)
from cldf.methods.napa_vq.prototypes import FeatureSums, PrototypeStore, sample_pseudo_features

ENTRY = MethodEntry(
    "napa_vq", NAPAVQConfig, keeps="code vectors, their graph edges, class prototypes, the previous adapter",
    plugin="cldf.methods.napa_vq.plugin:make_plugin",
    predicts=lambda config: config.prediction == "nearest_cv",
)

__all__ = [
    "CachedPreviousFeatures", "CodeBook", "ENTRY", "FeatureSums",
    "FrozenModelCopy", "NAPAVQ", "NAPAVQConfig", "PreviousFeatures", "PrototypeStore",
    "distance_cross_entropy", "distance_logits", "distances", "feature_distillation",
    "nearest_code_vectors", "read_last_features", "refresh_age_prune", "sample_keys",
    "sample_pseudo_features", "separation_loss", "squared_distances", "symmetrise",
]
