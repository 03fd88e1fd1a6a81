"""The previous model's features Z_old for distillation (algorithms.md 2.5).

Two implementations, and a cache in front of either, of one small interface (``snapshot()``,
``__call__(x) -> Tensor``, ``state_dict()`` / ``load_state_dict()`` of tensors):

* :class:`FrozenModelCopy` - any ``nn.Module`` following the ``forward -> logits`` +
  ``last_features`` convention: a frozen deep copy of the whole model.
* :class:`cldf.detector.DetectorAdapterSnapshot` - a :class:`cldf.detector.Detector`: only the
  adapter is copied (into a frozen adapter), the backbone is shared.
* :class:`CachedPreviousFeatures` - either of them, computed once per distinct input per experience.
"""

from __future__ import annotations

import copy
from typing import Callable, Optional, Protocol

import torch
from torch import Tensor, nn

from cldf.digests import sample_keys


class PreviousFeatures(Protocol):
    """Features of the model as it was at the end of the previous experience."""

    @property
    def ready(self) -> bool: ...

    def snapshot(self) -> None: ...

    def __call__(self, x: Tensor, rows: Optional[int] = None) -> Tensor:
        """Features of the batch's first ``rows`` samples (all when ``None``)."""
        ...

    def state_dict(self) -> dict[str, Tensor]: ...

    def load_state_dict(self, state: dict[str, Tensor]) -> None: ...


def read_last_features(model: nn.Module) -> Tensor:
    """The features a model following the ``last_features`` convention kept from its forward."""
    features = getattr(model, "last_features", None)
    if features is None:
        raise AttributeError(
            f"{type(model).__name__} has no last_features after forward; the model must set "
            "`self.last_features` (B x d) in forward, or pass a feature reader"
        )
    return features


class FrozenModelCopy:
    """A frozen deep copy of ``model`` taken at :meth:`snapshot`, run in eval mode without grad."""

    def __init__(self, model: nn.Module,
                 read_features: Callable[[nn.Module], Tensor] = read_last_features) -> None:
        self.model = model
        self.read_features = read_features
        self.copy: Optional[nn.Module] = None

    @property
    def ready(self) -> bool:
        return self.copy is not None

    def snapshot(self) -> None:
        kept = self.model.__dict__.get("last_features")
        if kept is not None:  # a non-leaf tensor cannot be deep-copied
            self.model.last_features = None
        self.copy = copy.deepcopy(self.model)
        if kept is not None:
            self.model.last_features = kept
        self.copy.eval()
        for p in self.copy.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def __call__(self, x: Tensor, rows: Optional[int] = None) -> Tensor:
        if self.copy is None:
            raise RuntimeError("FrozenModelCopy: call snapshot() before asking for features")
        self.copy(x if rows is None else x[:rows])
        return self.read_features(self.copy)

    def state_dict(self) -> dict[str, Tensor]:
        return {} if self.copy is None else dict(self.copy.state_dict())

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        if not state:
            self.copy = None
            return
        self.snapshot()
        self.copy.load_state_dict(state)


class CachedPreviousFeatures:
    """The previous model's features, computed once per distinct input during an experience.

    The previous model is frozen and runs in eval mode, so Z_old is a fixed function of the
    input: from the second epoch on, a sample seen before (same bytes; no random augmentation)
    costs a hash instead of a pass. When any distilled sample of a batch is new, the whole batch
    goes through ``previous`` (reusing the training forward's prefix pass) and fills the cache.
    At most ``max_bytes`` of features are kept; :meth:`clear` drops them (at each snapshot, i.e.
    the end of an experience, and on loading state: nothing per image outlives an experience or
    enters a checkpoint). Only batches on the CPU are cached: hashing needs the bytes on the host,
    a copy and a synchronisation per step that an accelerator's pass does not need. Nor are
    those of a ``previous`` whose ``memoized`` is true (a detector adapter snapshot while the
    detector's frozen-pass memo keeps its outputs).
    """

    def __init__(self, previous: PreviousFeatures, max_bytes: int) -> None:
        self.previous = previous
        self.max_bytes = max_bytes
        self._features: dict[bytes, Tensor] = {}
        self._bytes = 0
        self.hits = self.misses = 0

    @property
    def ready(self) -> bool:
        return self.previous.ready

    def snapshot(self) -> None:
        self.clear()
        self.previous.snapshot()

    def clear(self) -> None:
        self._features.clear()
        self._bytes = 0

    def __call__(self, x: Tensor, rows: Optional[int] = None) -> Tensor:
        if x.device.type != "cpu" or getattr(self.previous, "memoized", False):
            return self.previous(x, rows=rows)
        keys = sample_keys(x if rows is None else x[:rows])
        if all(k in self._features for k in keys):
            self.hits += len(keys)
            return torch.stack([self._features[k] for k in keys])
        self.misses += len(keys)
        z = self.previous(x, rows=rows).detach()
        for key, row in zip(keys, z):
            size = row.numel() * row.element_size()
            if key not in self._features and self._bytes + size <= self.max_bytes:
                self._features[key] = row.clone()
                self._bytes += size
        return z

    def state_dict(self) -> dict[str, Tensor]:
        return self.previous.state_dict()

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        self.clear()
        self.previous.load_state_dict(state)
