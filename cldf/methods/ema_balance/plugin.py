"""Avalanche plug-in for the EMA balance weighting (LLaCA): see :mod:`cldf.methods.ema_balance`."""

from __future__ import annotations

import copy
from contextlib import ExitStack
from typing import Optional

from avalanche.core import SupervisedPlugin
from avalanche.evaluation.metric_results import MetricValue
from torch import nn

from cldf.methods.ema_balance import EMABalance, EMABalanceConfig, select_parameters

AlphaStats = dict[int, dict[str, dict[str, Optional[float]]]]


class EMABalancePlugin(SupervisedPlugin, supports_distributed=True):
    """Keeps a float32 shadow of the model's trainable tensors, updated after every optimiser step.

    At the start of each experience the tracked tensors are the model's trainable parameters
    (filtered by ``config.include``); a tensor whose name and shape stay the same keeps its
    shadow. At the end of the experience the shadow is loaded into the model
    (``end_of_experience="swap"``) or used only while evaluating (``"shadow_eval"``).
    The alpha statistics of each experience go to the Avalanche loggers and to
    :meth:`alpha_stats`. List it before plug-ins that consolidate weights at the end of an
    experience (e.g. a slow/fast learner copying its fast adapter), so that they see the shadow.
    Only parameters are averaged; buffers such as BatchNorm running statistics stay as trained.
    """

    def __init__(self, config: Optional[EMABalanceConfig] = None) -> None:
        super().__init__()
        self.config = config or EMABalanceConfig()
        self.ema: Optional[EMABalance] = None
        self._stats: AlphaStats = {}
        self._eval_stack: Optional[ExitStack] = None

    def before_training_exp(self, strategy, **kwargs) -> None:
        named = select_parameters(strategy.model, self.config.include)
        if not named:
            raise ValueError(
                f"EMABalancePlugin: no trainable parameter of the model matches include={list(self.config.include)}"
            )
        if self.ema is None or not self._tracks(named):
            self.ema = EMABalance(named, self.config, carry_from=self.ema)
        self.ema.start_experience()

    def _tracks(self, named: list[tuple[str, nn.Parameter]]) -> bool:
        return [n for n, _ in named] == self.ema.names and all(
            p is q for (_, p), q in zip(named, self.ema.parameters)
        )

    def after_update(self, strategy, **kwargs) -> None:
        self.ema.step()

    def after_training_exp(self, strategy, **kwargs) -> None:
        exp_id = strategy.experience.current_experience
        stats = self.ema.alpha_stats()
        self._stats[exp_id] = stats
        self._publish(strategy, exp_id, stats)
        if self.config.end_of_experience == "swap":
            self.ema.copy_shadow_to()

    def _publish(self, strategy, exp_id: int, stats: dict[str, dict[str, Optional[float]]]) -> None:
        x_plot = strategy.clock.train_iterations
        for group, entry in stats.items():
            for key, value in entry.items():
                if value is not None:
                    name = f"EMABalance/{key}/train_phase/Exp{exp_id:03d}/{group}"
                    strategy.evaluator.publish_metric_value(MetricValue(self, name, value, x_plot))

    def before_eval(self, strategy, **kwargs) -> None:
        if self.config.end_of_experience == "shadow_eval" and self.ema is not None:
            self._eval_stack = ExitStack()
            self._eval_stack.enter_context(self.ema.using_shadow())

    def after_eval(self, strategy, **kwargs) -> None:
        if self._eval_stack is not None:
            self._eval_stack.close()
            self._eval_stack = None

    def alpha_stats(self) -> AlphaStats:
        """``{experience: {group: {tensors, updates, mean, min, max, fallback_share}}}`` (plain, JSON-ready)."""
        return copy.deepcopy(self._stats)


def make_plugin(config: EMABalanceConfig, detector: object, wrapped: bool) -> EMABalancePlugin:
    """The plug-in for a recipe's ``ema_balance`` section (it acts on whatever model trains)."""
    return EMABalancePlugin(config)
