"""Avalanche's own regularisation and replay plug-ins as reference methods (LwF, EWC, replay).

Their cores are Avalanche's; cldf adds the settings, what each keeps (for cost accounting) and
that cldf does not checkpoint their state (a run using them cannot resume).
"""

from __future__ import annotations

from dataclasses import dataclass

from cldf.methods.entry import MethodEntry


@dataclass
class LwFConfig:
    """Avalanche's Learning without Forgetting plug-in."""

    alpha: float = 1.0
    temperature: float = 2.0


@dataclass
class EWCConfig:
    """Avalanche's Elastic Weight Consolidation plug-in."""

    ewc_lambda: float = 100.0


@dataclass
class ReplayConfig:
    """Avalanche's replay plug-in: a fixed memory of past images (breaks the no-exemplar rule)."""

    mem_size: int = 200


def _not_checkpointed(config: object) -> bool:
    return False


PLUGINS = "cldf.methods.baselines.plugins"
ENTRIES = (
    MethodEntry("lwf", LwFConfig, keeps="a copy of the previous adapters and head",
                plugin=f"{PLUGINS}:lwf", resumable=_not_checkpointed),
    MethodEntry("ewc", EWCConfig, keeps="parameter values and Fisher importances per experience",
                plugin=f"{PLUGINS}:ewc", resumable=_not_checkpointed),
    MethodEntry("replay", ReplayConfig, keeps="a memory of past images",
                plugin=f"{PLUGINS}:replay", resumable=_not_checkpointed),
)

__all__ = ["ENTRIES", "EWCConfig", "LwFConfig", "ReplayConfig"]
