"""Avalanche's LwF, EWC and replay plug-ins, each able to say what it keeps (``kept_bytes``)."""

from __future__ import annotations

from typing import Any

from avalanche.training.plugins import EWCPlugin, LwFPlugin, ReplayPlugin

from cldf.detector import learned_state_dict
from cldf.methods.baselines import EWCConfig, LwFConfig, ReplayConfig
from cldf.state_size import dataset_bytes, state_bytes


class KeptLwF(LwFPlugin):
    """LwF; keeps the previous model's adapters and head."""

    def kept_bytes(self) -> int:
        previous = self.lwf.prev_model
        return 0 if previous is None else state_bytes(learned_state_dict(previous))


class KeptEWC(EWCPlugin):
    """EWC; keeps the parameter values and importances of every past experience."""

    def kept_bytes(self) -> int:
        return state_bytes([p.data for d in (*self.saved_params.values(), *self.importances.values())
                            for p in d.values()])


class KeptReplay(ReplayPlugin):
    """Replay; keeps its memory of past images."""

    def kept_bytes(self) -> int:
        return dataset_bytes(self.storage_policy.buffer)


def lwf(config: LwFConfig, detector: Any, recipe: Any) -> KeptLwF:
    return KeptLwF(alpha=config.alpha, temperature=config.temperature)


def ewc(config: EWCConfig, detector: Any, recipe: Any) -> KeptEWC:
    return KeptEWC(ewc_lambda=config.ewc_lambda)


def replay(config: ReplayConfig, detector: Any, recipe: Any) -> KeptReplay:
    return KeptReplay(mem_size=config.mem_size)
