"""The frozen prefix's output of each image, computed once per experience.

The prefix before the tuned stages never changes and always runs in eval mode, and cldf's
input transforms are deterministic, so an image seen again within an experience (a later epoch,
the end-of-experience passes of NAPA-VQ's prototypes and the analytic heads) has the same prefix
output. :class:`PrefixMemo` keeps those outputs, keyed by a digest of the input image, up to a
memory budget; the detector drops it when the experience ends, so nothing per image outlives it.
"""

from __future__ import annotations

import hashlib
from typing import Callable, Iterable

import torch
from torch import Tensor


def image_digest(image: Tensor) -> bytes:
    """A 16-byte digest of one input image's values (and shape)."""
    data = image.detach().contiguous().cpu()
    return hashlib.blake2b(data.numpy().tobytes() + str(tuple(data.shape)).encode(), digest_size=16).digest()


class PrefixMemo:
    """Prefix outputs by image digest, at most ``budget_bytes`` of them."""

    def __init__(self, budget_bytes: int) -> None:
        self.budget_bytes = budget_bytes
        self.used_bytes = 0
        self.hits = 0
        self.misses = 0
        self._outputs: dict[bytes, Tensor] = {}

    def prefix(self, x: Tensor, compute: Callable[[Tensor], Tensor]) -> Tensor:
        """``compute(x)``, with the rows of images seen before taken from the memo (a batch with
        none of them is computed whole, exactly as without the memo)."""
        keys = [image_digest(row) for row in x]
        missing = [i for i, key in enumerate(keys) if key not in self._outputs]
        self.hits += len(keys) - len(missing)
        self.misses += len(missing)
        if len(missing) == len(keys):
            out = compute(x)
            self._keep(zip(keys, out))
            return out
        fresh = dict(zip((keys[i] for i in missing), compute(x[missing]))) if missing else {}
        self._keep(fresh.items())
        return torch.stack([fresh[key] if key in fresh else self._outputs[key] for key in keys])

    def _keep(self, rows: Iterable[tuple[bytes, Tensor]]) -> None:
        for key, row in rows:
            size = row.numel() * row.element_size()
            if self.used_bytes + size > self.budget_bytes:
                return
            self._outputs[key] = row.clone()
            self.used_bytes += size
