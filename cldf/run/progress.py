"""Progress bars for long training: one bar per epoch over its mini-batches (tqdm)."""

from __future__ import annotations

from typing import Any, Optional

from avalanche.core import SupervisedPlugin
from tqdm.auto import tqdm


class EpochProgressPlugin(SupervisedPlugin, supports_distributed=True):
    """Shows ``exp i/T epoch e/E`` with a bar over the epoch's mini-batches and the running loss."""

    def __init__(self, num_experiences: int, names: Optional[list[str]] = None, enabled: bool = True) -> None:
        super().__init__()
        self.num_experiences = num_experiences
        self.names = names or []
        self.enabled = enabled
        self._bar: Optional[tqdm] = None

    def before_training_epoch(self, strategy: Any, *args: Any, **kwargs: Any) -> None:
        i = strategy.clock.train_exp_counter
        name = self.names[i] if i < len(self.names) else str(i)
        self._bar = tqdm(
            total=len(strategy.dataloader), leave=False, disable=not self.enabled, dynamic_ncols=True,
            desc=f"exp {i + 1}/{self.num_experiences} {name} epoch {strategy.clock.train_exp_epochs + 1}/{strategy.train_epochs}",
        )

    def after_training_iteration(self, strategy: Any, *args: Any, **kwargs: Any) -> None:
        if self._bar is not None:
            self._bar.update(1)
            self._bar.set_postfix(loss=f"{strategy.loss.item():.3f}", refresh=False)

    def after_training_epoch(self, strategy: Any, *args: Any, **kwargs: Any) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
