"""A frozen copy of one of a detector's adapters, read through the shared backbone.

Methods that need the model as it was (distillation targets, a previous fast learner) keep only
the adapter: a few hundred kilobytes instead of a copy of the whole network.
"""

from __future__ import annotations

from typing import Optional

from torch import Tensor, nn


class DetectorAdapterSnapshot:
    """Copies a detector's adapter into a frozen adapter ``name`` and reads features through it.

    ``adapter=None`` snapshots whichever adapter is active at snapshot time; the slow/fast
    strategy passes ``"fast"``. Features come from ``det.multi_features`` with the frozen
    adapter: no gradient and eval-mode normalisation, so the snapshot's statistics never move.
    """

    def __init__(self, detector: nn.Module, adapter: Optional[str] = None,
                 name: str = "napa_prev") -> None:
        self.det = detector
        self.adapter = adapter
        self.name = name

    @property
    def ready(self) -> bool:
        return self.name in self.det.adapter_names

    @property
    def memoized(self) -> bool:
        """Whether the detector already keeps this snapshot's outputs per image (its frozen-pass
        memo): a cache in front of it would hold them twice."""
        return self.det.frozen_passes_memoized

    def snapshot(self) -> None:
        source = self.adapter or self.det.active_adapter
        if source == self.name:
            raise ValueError(f"DetectorAdapterSnapshot: cannot snapshot adapter {source!r} into itself")
        if self.ready:
            self.det.load_adapter_state(self.name, self.det.adapter_state(source))
        else:
            self.det.add_adapter(self.name, copy_from=source)
        self.det.freeze_adapter(self.name)

    def __call__(self, x: Tensor, rows: Optional[int] = None) -> Tensor:
        if not self.ready:
            raise RuntimeError("DetectorAdapterSnapshot: call snapshot() before asking for features")
        return self.det.multi_features(x, [self.name], rows=rows)[self.name]

    def state_dict(self) -> dict[str, Tensor]:
        return self.det.adapter_state(self.name) if self.ready else {}

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        if not state:
            return
        if not self.ready:
            self.det.add_adapter(self.name)
        self.det.freeze_adapter(self.name)
        self.det.load_adapter_state(self.name, state)
