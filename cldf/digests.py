"""Per-sample digests of a batch: the keys of the caches that keep a frozen pass's outputs
within one experience (the detector's frozen-pass memo, NAPA-VQ's previous-model features)."""

from __future__ import annotations

import hashlib

import torch
from torch import Tensor


def sample_keys(x: Tensor) -> list[bytes]:
    """A 128-bit BLAKE2b digest of each sample's bytes (dtype and shape included)."""
    x = x.detach().cpu().contiguous()
    header = f"{x.dtype}{tuple(x.shape[1:])}".encode()
    rows = x.reshape(len(x), -1).view(torch.uint8).numpy()
    return [hashlib.blake2b(header + row.tobytes(), digest_size=16).digest() for row in rows]
