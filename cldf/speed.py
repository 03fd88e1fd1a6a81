"""A run's speed settings (``training.precision``, ``channels_last``, ``num_workers``) resolved
for its device.

``precision``: ``auto`` is bf16 on a CUDA device that supports it, fp16 on one that does not,
fp32 elsewhere. ``fp16`` needs CUDA (its loss scaling is CUDA's); ``bf16`` runs on CUDA with bf16
support and on the CPU (torch's CPU autocast; fast only on CPUs with bf16 instructions, e.g.
AMX). Only the backbone passes run in reduced precision (:meth:`cldf.detector.Detector.set_speed`);
heads, losses and the analytic statistics stay float32/float64.
``channels_last``: ``auto`` is on for CUDA. ``num_workers``: ``auto`` is 0 on the CPU (workers
would compete with the training threads; one process keeps CPU runs bit-identical to earlier
ones) and up to 8 on CUDA. Batches go to pinned memory on CUDA (Avalanche's default).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Optional

import torch

from .config_io import ConfigError

if TYPE_CHECKING:
    from .recipes import TrainingConfig

PRECISIONS = ("auto", "bf16", "fp16", "fp32")
CHANNELS_LAST_CHOICES = ("auto", True, False)
AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": None}
MAX_AUTO_WORKERS = 8


@dataclass(frozen=True)
class SpeedSettings:
    """Resolved settings: ``precision`` is ``bf16``, ``fp16`` or ``fp32``."""

    precision: str
    channels_last: bool
    num_workers: int

    @property
    def autocast_dtype(self) -> Optional[torch.dtype]:
        """The backbone's autocast dtype (``None``: float32, no autocast)."""
        return AUTOCAST_DTYPES[self.precision]

    @property
    def scales_loss(self) -> bool:
        """Whether training scales its loss (fp16 gradients would underflow otherwise)."""
        return self.precision == "fp16"


def resolve_precision(setting: str, device: torch.device) -> str:
    """``bf16``/``fp16``/``fp32`` for ``training.precision`` on ``device``; a precision the device
    cannot run is a :class:`ConfigError` naming the setting and what would work."""
    cuda = device.type == "cuda"
    bf16_ok = device.type == "cpu" or (cuda and torch.cuda.is_bf16_supported())
    if setting == "auto":
        return ("bf16" if bf16_ok else "fp16") if cuda else "fp32"
    if setting == "fp16" and not cuda:
        raise ConfigError(f"training.precision=fp16 needs a CUDA device (this run is on {device}); "
                          f"use auto, bf16 (CPU autocast) or fp32")
    if setting == "bf16" and not bf16_ok:
        raise ConfigError(f"training.precision=bf16 is not supported on {device}; use auto, fp16 or fp32")
    return setting


def resolve_speed(training: "TrainingConfig", device: torch.device) -> SpeedSettings:
    """The recipe's speed settings on ``device``, every ``auto`` decided."""
    cuda = device.type == "cuda"
    workers = training.num_workers
    if workers == "auto":
        workers = min(MAX_AUTO_WORKERS, os.cpu_count() or 1) if cuda else 0
    channels_last = cuda if training.channels_last == "auto" else bool(training.channels_last)
    return SpeedSettings(resolve_precision(training.precision, device), channels_last, int(workers))
