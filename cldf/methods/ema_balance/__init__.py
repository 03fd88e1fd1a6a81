"""EMA balance weighting (LLaCA): a float32 shadow of the trainable weights with an adaptive rate."""

from cldf.methods.ema_balance.config import EMABalanceConfig
from cldf.methods.ema_balance.ema import EMABalance, balance_alpha, parameter_group, select_parameters
from cldf.methods.entry import MethodEntry

ENTRY = MethodEntry(
    "ema_balance", EMABalanceConfig, keeps="a float32 shadow of the trained tensors",
    plugin="cldf.methods.ema_balance.plugin:make_plugin",
    # with "swap" the shadow equals the weights at every experience boundary, so the shadow rebuilt
    # from restored weights is the one the run had; otherwise it is not in the checkpoint
    resumable=lambda config: config.end_of_experience == "swap",
)

__all__ = ["ENTRY", "EMABalance", "EMABalanceConfig", "balance_alpha", "parameter_group", "select_parameters"]
