"""Loss scaling for fp16 training (``training.precision: fp16``, see :mod:`cldf.speed`), as a plug-in
any Avalanche template takes."""

from __future__ import annotations

from typing import Any, Optional

import torch
from avalanche.core import SupervisedPlugin
from torch import Tensor


class LossScaling(SupervisedPlugin, supports_distributed=True):
    """A :class:`torch.amp.GradScaler` around the strategy's update; list it last.

    Before ``backward`` the loss (every plug-in's terms added) is multiplied by the scale, so
    small fp16 gradients do not underflow. Before the template's update the scaler steps the
    strategy's optimiser (unscaling its gradients, skipping the step when one is not finite) and
    clears the gradients, which leaves the template's own ``optimizer.step()`` nothing to do;
    after the update the scale adapts. A batch without gradients (dropped by the non-finite loss
    guard) leaves the scale alone. A plug-in stepping its own optimiser on these gradients
    (NAPA-VQ's code vectors) does so through :func:`scaler_of` (``scaler.step(optimizer)``)
    in its ``after_update``. The scale is in the checkpoint (:meth:`state_dict`).
    """

    def __init__(self, device: torch.device | str = "cuda") -> None:
        super().__init__()
        self.scaler = torch.amp.GradScaler(torch.device(device).type)
        self._stepping = False

    def before_backward(self, strategy: Any, *args: Any, **kwargs: Any) -> None:
        strategy.loss = self.scaler.scale(strategy.loss)

    def before_update(self, strategy: Any, *args: Any, **kwargs: Any) -> None:
        optimizer = strategy.optimizer
        self._stepping = has_gradients(optimizer)  # none after a skipped batch (NonFiniteLossGuard)
        if self._stepping:
            self.scaler.step(optimizer)
            optimizer.zero_grad(set_to_none=True)

    def after_update(self, strategy: Any, *args: Any, **kwargs: Any) -> None:
        if self._stepping:
            self.scaler.update()

    def state_dict(self) -> dict[str, Tensor]:
        """The current scale and the count of steps since it last changed."""
        state = self.scaler.state_dict()
        return {"scale": torch.tensor(state["scale"], dtype=torch.float64),
                "growth_tracker": torch.tensor(state["_growth_tracker"], dtype=torch.int64)}

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        self.scaler.load_state_dict({**self.scaler.state_dict(), "scale": float(state["scale"]),
                                     "_growth_tracker": int(state["growth_tracker"])})


def has_gradients(optimizer: torch.optim.Optimizer) -> bool:
    """Whether any parameter of ``optimizer`` holds a gradient."""
    return any(p.grad is not None for group in optimizer.param_groups for p in group["params"])


def scaler_of(strategy: Any) -> Optional[torch.amp.GradScaler]:
    """The strategy's loss scaler (``None`` unless it trains in fp16)."""
    return next((p.scaler for p in strategy.plugins if isinstance(p, LossScaling)), None)
