"""EMA balance weighting (LLaCA): a float32 shadow of the trainable weights with an adaptive rate."""

from .config import EMABalanceConfig
from .ema import EMABalance, balance_alpha, parameter_group, select_parameters

__all__ = ["EMABalance", "EMABalanceConfig", "balance_alpha", "parameter_group", "select_parameters"]
