"""Slow/fast PEFT learners (SAFE) with analytic heads and entropy aggregation; plain PyTorch."""

from cldf.methods.slow_fast.aggregation import MergedLogits, merge_logits, prediction_entropy
from cldf.methods.slow_fast.ridge_head import RidgeHead
from cldf.methods.slow_fast.config import SlowFastConfig
from cldf.methods.slow_fast.cosine_head import CosineHead
from cldf.methods.slow_fast.discriminant_head import DiscriminantHead
from cldf.methods.slow_fast.learners import FAST, SLOW, SlowFastLearners
from cldf.methods.slow_fast.losses import cross_classification_loss, feature_alignment_loss, transfer_loss
from cldf.methods.entry import MethodEntry

ENTRY = MethodEntry(
    "slow_fast", SlowFastConfig,
    keeps="slow and fast adapters, cosine heads, analytic heads' class statistics",
    template="cldf.methods.slow_fast.strategy:make_strategy",
    model="cldf.methods.slow_fast.learners:SlowFastLearners",
    predicts=lambda config: True,
)

__all__ = [
    "ENTRY", "RidgeHead", "CosineHead", "DiscriminantHead", "FAST", "MergedLogits", "SLOW", "SlowFastConfig", "SlowFastLearners",
    "cross_classification_loss", "feature_alignment_loss", "merge_logits", "prediction_entropy", "transfer_loss",
]
