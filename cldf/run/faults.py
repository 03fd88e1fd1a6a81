"""A guard against NaN or infinite training losses, checked before they reach the weights."""

from __future__ import annotations

import warnings
from typing import Any, Sequence

import torch
from avalanche.core import SupervisedPlugin
from torch import Tensor

from cldf.recipes import NONFINITE_LOSS_POLICIES


class NonFiniteLossError(RuntimeError):
    """Training met a NaN or infinite loss; the weights were not updated with it."""


class NonFiniteLossGuard(SupervisedPlugin):
    """Checks the total loss before ``backward``: list it after every plug-in that adds loss terms.

    ``policy="error"`` raises :class:`NonFiniteLossError` naming the experience, epoch, iteration
    and the loss terms. ``policy="skip"`` replaces the loss by a constant zero, so no gradient
    reaches the weights and the optimiser leaves them alone, warns, and counts the batch in
    :attr:`skipped` (one count per experience).
    """

    def __init__(self, policy: str, experience_names: Sequence[str]) -> None:
        super().__init__()
        if policy not in NONFINITE_LOSS_POLICIES:
            raise ValueError(f"policy={policy!r}; valid: {', '.join(NONFINITE_LOSS_POLICIES)}")
        self.policy = policy
        self.names = list(experience_names)
        self.skipped = torch.zeros(len(self.names), dtype=torch.int64)

    def before_backward(self, strategy: Any, *args: Any, **kwargs: Any) -> None:
        loss = strategy.loss
        if bool(torch.isfinite(loss).all()):
            return
        message = f"non-finite loss at {self._where(strategy)}: {loss_terms(strategy)}"
        if self.policy == "error":
            raise NonFiniteLossError(f"{message}; training stopped before updating the weights with it")
        self.skipped[strategy.clock.train_exp_counter] += 1
        warnings.warn(f"skipped a batch: {message}", RuntimeWarning, stacklevel=2)
        strategy.loss = torch.zeros((), device=loss.device, requires_grad=True)

    def _where(self, strategy: Any) -> str:
        clock = strategy.clock
        i = clock.train_exp_counter
        return (
            f"experience {i + 1}/{len(self.names)} ({self.names[i]}), epoch {clock.train_exp_epochs + 1}, "
            f"iteration {clock.train_epoch_iterations + 1} (training step {clock.train_iterations + 1} of the run)"
        )

    def state_dict(self) -> dict[str, Tensor]:
        """The skipped-batch counts (for checkpoints)."""
        return {"skipped": self.skipped.clone()}

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        self.skipped = state["skipped"].clone()


@torch.no_grad()
def loss_terms(strategy: Any) -> str:
    """What made up the loss of the current batch: the total, the plain criterion on the outputs,
    how many outputs hold non-finite logits, and which plug-ins add their own terms."""
    output = strategy.mb_output
    criterion = float(strategy._criterion(output, strategy.mb_y))
    bad_rows = int((~torch.isfinite(output)).flatten(1).any(1).sum())
    adders = [
        type(p).__name__ for p in strategy.plugins
        if getattr(type(p), "before_backward", None) not in (None, SupervisedPlugin.before_backward)
        and not isinstance(p, NonFiniteLossGuard)
    ]
    return (
        f"total loss={float(strategy.loss.detach().sum())}, criterion on the outputs "
        f"({type(strategy._criterion).__name__})={criterion}, samples with non-finite logits: "
        f"{bad_rows}/{output.shape[0]}, plug-ins adding loss terms: {', '.join(adders) or 'none'}"
    )
