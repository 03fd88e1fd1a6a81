"""Settings of the EMA balance weighting (LLaCA, algorithms.md section 3)."""

from __future__ import annotations

import math
from dataclasses import dataclass

MODES = ("fallback", "clip")
END_OF_EXPERIENCE = ("swap", "shadow_eval")
ON_MISSING_GRAD = ("skip", "error")


@dataclass(frozen=True)
class EMABalanceConfig:
    """How the balance weight ``alpha`` is computed and what happens at the end of an experience.

    ``alpha = scale * (1 + ||g_t||_1) / (||theta_t - theta*||_1 * ||g_t - g_{t-1}||_1)`` per tensor.

    - ``mode="fallback"`` (original): ``alpha`` outside the open interval (0, 1) (including a
      zero denominator) and the first step of an experience use ``fallback``.
    - ``mode="clip"``: ``alpha`` is clamped to ``[alpha_min, alpha_max]``; the first step of an
      experience still uses ``fallback``.
    - ``end_of_experience="swap"`` loads the shadow weights into the model for good;
      ``"shadow_eval"`` evaluates with the shadow and keeps the training weights.
    - ``include``: substrings of parameter names; a trainable tensor is tracked if its name
      contains any of them (empty = every trainable tensor).
    - ``on_missing_grad``: a tracked tensor without ``.grad`` at a step is skipped (its shadow is
      left alone and its next step counts as a first step) or raises an error.
    """

    scale: float = 2.0
    fallback: float = 0.01
    mode: str = "fallback"
    alpha_min: float = 0.001
    alpha_max: float = 0.1
    end_of_experience: str = "swap"
    include: tuple[str, ...] = ()
    on_missing_grad: str = "skip"

    def __post_init__(self) -> None:
        if not (math.isfinite(self.scale) and self.scale > 0):
            raise ValueError(f"ema_balance.scale={self.scale!r} must be a finite number > 0")
        if not 0 < self.fallback <= 1:
            raise ValueError(f"ema_balance.fallback={self.fallback!r} must be in (0, 1]")
        if self.mode not in MODES:
            raise ValueError(f"ema_balance.mode={self.mode!r}; valid: {', '.join(MODES)}")
        if not 0 < self.alpha_min <= 1:
            raise ValueError(f"ema_balance.alpha_min={self.alpha_min!r} must be in (0, 1]")
        if not self.alpha_min <= self.alpha_max <= 1:
            raise ValueError(
                f"ema_balance.alpha_max={self.alpha_max!r} must be in [alpha_min={self.alpha_min}, 1]"
            )
        if self.end_of_experience not in END_OF_EXPERIENCE:
            raise ValueError(
                f"ema_balance.end_of_experience={self.end_of_experience!r}; valid: {', '.join(END_OF_EXPERIENCE)}"
            )
        if isinstance(self.include, str) or not all(isinstance(s, str) and s for s in self.include):
            raise ValueError(
                f"ema_balance.include={self.include!r} must be a list of non-empty name substrings"
            )
        object.__setattr__(self, "include", tuple(self.include))
        if self.on_missing_grad not in ON_MISSING_GRAD:
            raise ValueError(
                f"ema_balance.on_missing_grad={self.on_missing_grad!r}; valid: {', '.join(ON_MISSING_GRAD)}"
            )
