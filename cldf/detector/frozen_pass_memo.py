"""The outputs of each image's frozen passes, computed once per experience.

The prefix before the tuned stages never changes and always runs in eval mode; so does the tail
of a frozen adapter (the slow learner once the fast one starts, NAPA-VQ's previous adapter, the
pretrained path a transfer loss reads). cldf's input transforms are deterministic, so an image
seen again within an experience (a later epoch, the end-of-experience pass of NAPA-VQ's
prototypes and the analytic heads) has the same outputs. :class:`FrozenPassMemo` keeps them,
keyed by the pass and a digest of the input image, up to a memory budget; the detector drops it
when the experience ends, so nothing per image outlives it.
"""

from __future__ import annotations

from collections import Counter
from typing import Callable, Hashable, Optional, Sequence

import torch
from torch import Tensor

from ..digests import sample_keys

Rows = list[Tensor]  # one pass's outputs for a batch: tensors with the batch as first dimension


class FrozenPassMemo:
    """Outputs of frozen passes by (pass, image digest), at most ``budget_bytes`` of them.

    A pass is named by a tuple ``owner``: a readable name first (``hits`` and ``misses`` count by
    it), then whatever changes whenever the pass's weights could (the detector adds the merged
    copy of a frozen adapter's tail, rebuilt on any change)."""

    def __init__(self, budget_bytes: int) -> None:
        self.budget_bytes = budget_bytes
        self.used_bytes = 0
        self.hits: Counter[str] = Counter()
        self.misses: Counter[str] = Counter()
        self._outputs: dict[tuple[tuple[Hashable, ...], bytes], Rows] = {}

    def digests(self, x: Tensor) -> list[bytes]:
        """The key of each image of a batch."""
        return sample_keys(x)

    def outputs(self, owner: tuple[Hashable, ...], keys: Sequence[bytes], compute: Callable[[Optional[Tensor]], Rows]) -> Rows:
        """``compute(None)`` (the whole batch), with the images seen before by ``owner`` taken from
        the memo: ``compute(index)`` then runs only the batch rows at ``index``. A batch with none
        of them is computed whole, exactly as without the memo."""
        missing = [i for i, key in enumerate(keys) if (owner, key) not in self._outputs]
        self.hits[owner[0]] += len(keys) - len(missing)
        self.misses[owner[0]] += len(missing)
        if len(missing) == len(keys):
            out = compute(None)
            self._keep(owner, keys, out)
            return out
        fresh: dict[bytes, Rows] = {}
        if missing:
            computed = compute(torch.as_tensor(missing))
            fresh = {keys[i]: [t[j] for t in computed] for j, i in enumerate(missing)}
            self._keep(owner, [keys[i] for i in missing], computed)
        rows = [fresh[key] if key in fresh else self._outputs[(owner, key)] for key in keys]
        return [torch.stack(column) for column in zip(*rows)]

    def _keep(self, owner: tuple[Hashable, ...], keys: Sequence[bytes], out: Rows) -> None:
        for j, key in enumerate(keys):
            if (owner, key) in self._outputs:  # the same image twice in one batch
                continue
            row = [t[j] for t in out]
            size = sum(t.numel() * t.element_size() for t in row)
            if self.used_bytes + size > self.budget_bytes:
                return
            self._outputs[(owner, key)] = [t.clone() for t in row]
            self.used_bytes += size
