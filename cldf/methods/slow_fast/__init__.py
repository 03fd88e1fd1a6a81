"""Slow/fast PEFT learners (SAFE) with analytic heads and entropy aggregation; plain PyTorch."""

from cldf.methods.slow_fast.aggregation import MergedLogits, merge_logits, prediction_entropy
from cldf.methods.slow_fast.analytic_head import AnalyticHead
from cldf.methods.slow_fast.config import SlowFastConfig
from cldf.methods.slow_fast.cosine_head import CosineHead
from cldf.methods.slow_fast.discriminant_head import DiscriminantHead
from cldf.methods.slow_fast.learners import FAST, SLOW, SlowFastLearners
from cldf.methods.slow_fast.losses import cross_classification_loss, feature_alignment_loss, transfer_loss

__all__ = [
    "AnalyticHead", "CosineHead", "DiscriminantHead", "FAST", "MergedLogits", "SLOW", "SlowFastConfig", "SlowFastLearners",
    "cross_classification_loss", "feature_alignment_loss", "merge_logits", "prediction_entropy", "transfer_loss",
]
