"""What a run costs: the state a strategy keeps between experiences, in bytes, and peak memory.

Adapters, heads and method statistics count; so do the images a reference strategy stores
(replay memory, joint/cumulative data), which is exactly what the exemplar-free methods avoid.
A plug-in reports what it keeps through ``kept_bytes()``, else through its ``state_dict()``; a
strategy template holding data of its own through ``kept_bytes()`` too.
"""

from __future__ import annotations

import resource
import sys
from typing import Any

from cldf.detector import learned_state_dict
from cldf.state_size import state_bytes


def kept_state_bytes(strategy: Any) -> int:
    """Bytes of the state ``strategy`` keeps between experiences (the backbone excluded)."""
    total = state_bytes(learned_state_dict(strategy.model))
    for holder in (strategy, *strategy.plugins):
        if hasattr(holder, "kept_bytes"):
            total += holder.kept_bytes()
        elif holder is not strategy and hasattr(holder, "state_dict"):
            total += state_bytes(holder.state_dict())
    return total


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, in MiB."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10
