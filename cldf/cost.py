"""What a strategy keeps between experiences besides the frozen backbone, in bytes.

Adapters, heads and method statistics count; so do the images a reference strategy stores
(replay memory, joint/cumulative data), which is exactly what the exemplar-free methods avoid.
"""

from __future__ import annotations

from typing import Any

from avalanche.training import Cumulative
from avalanche.training.plugins import EWCPlugin, LwFPlugin, ReplayPlugin
from torch import Tensor

from .detector import learned_state_dict
from .report.results import state_bytes


def _sample_bytes(dataset: Any) -> int:
    x = dataset[0][0]
    return x.numel() * x.element_size() if isinstance(x, Tensor) else 0


def kept_state_bytes(strategy: Any) -> int:
    """Bytes of the state ``strategy`` keeps between experiences (the backbone excluded)."""
    total = state_bytes(learned_state_dict(strategy.model))
    if isinstance(strategy, Cumulative) and strategy.dataset is not None and len(strategy.dataset):
        total += len(strategy.dataset) * _sample_bytes(strategy.dataset)
    for plugin in strategy.plugins:
        if isinstance(plugin, EWCPlugin):
            total += state_bytes([p.data for d in (*plugin.saved_params.values(), *plugin.importances.values()) for p in d.values()])
        elif isinstance(plugin, LwFPlugin) and plugin.lwf.prev_model is not None:
            total += state_bytes(learned_state_dict(plugin.lwf.prev_model))
        elif isinstance(plugin, ReplayPlugin) and len(plugin.storage_policy.buffer):
            buffer = plugin.storage_policy.buffer
            total += len(buffer) * _sample_bytes(buffer)
        elif hasattr(plugin, "state_dict"):
            total += state_bytes(plugin.state_dict())
    return total
