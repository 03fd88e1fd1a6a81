"""Avalanche strategy for the slow/fast learners (SAFE): see :mod:`cldf.methods.slow_fast`."""

from __future__ import annotations

import math
from typing import Any, Callable, Optional, Sequence, Union

import torch
from avalanche.benchmarks.scenarios.online import OnlineCLExperience
from avalanche.core import BasePlugin, SupervisedPlugin
from avalanche.evaluation.metric_results import MetricValue
from avalanche.evaluation.metric_utils import get_metric_name
from avalanche.training.plugins import EvaluationPlugin
from avalanche.training.plugins.evaluation import default_evaluator
from avalanche.training.templates import SupervisedTemplate
from avalanche.training.utils import _at_task_boundary
from torch import Tensor, nn
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR

from cldf.distributed import all_reduce_sum, shard_loader, world_size
from cldf.optimizers import new_optimizer
from cldf.methods.slow_fast import SlowFastConfig, SlowFastLearners
from cldf.avalanche.experience import experience_classes
from cldf.avalanche.experience_pass import ExperiencePass


class _StrategyHooks(SupervisedPlugin, supports_distributed=True):
    """Runs the strategy's end-of-experience work after the user's plug-ins (e.g. an EMA swap)
    and before the evaluator and periodic evaluation; sends the mean vote weight of the fast
    learner on each evaluated experience (``SlowFast/fast_weight``) to the loggers."""

    def __init__(self) -> None:
        super().__init__()
        self._fast_weight = [0.0, 0]  # sum of w_fast, samples

    def before_eval_exp(self, strategy: "SlowFastStrategy", **kwargs: Any) -> None:
        self._fast_weight = [0.0, 0]

    def after_eval_forward(self, strategy: "SlowFastStrategy", **kwargs: Any) -> None:
        w_fast = strategy.model.last_weights[1]
        self._fast_weight[0] += float(w_fast.sum())
        self._fast_weight[1] += len(w_fast)

    def after_eval_exp(self, strategy: "SlowFastStrategy", **kwargs: Any) -> None:
        total, count = self._fast_weight
        if count:
            name = get_metric_name("SlowFast/fast_weight", strategy, add_experience=True, add_task=False)
            strategy.evaluator.publish_metric_value(MetricValue(self, name, total / count, strategy.clock.train_iterations))

    def after_training_exp(self, strategy: "SlowFastStrategy", **kwargs: Any) -> None:
        strategy.finish_experience()


class SlowFastStrategy(SupervisedTemplate):
    """Slow/fast PEFT learners with analytic prediction heads.

    ``model`` is a :class:`cldf.detector.Detector` (wrapped in
    :class:`~cldf.methods.slow_fast.SlowFastLearners`, which becomes ``strategy.model``) or an
    existing ``SlowFastLearners``. The first experience trains the ``slow`` adapter with
    cross-entropy + transfer loss (``first_train_epochs`` epochs, default ``train_epochs``);
    then it is frozen for good and the ``fast`` adapter, a copy of it, is trained on every later
    experience with cross-entropy + feature alignment + cross-classification, unless the
    prediction is the slow head's alone (then later experiences run no training step). After each
    experience one no-grad pass over its training data (eval transforms) updates the
    analytic heads (``chosen_regularisation`` records the ridge or shrinkage each fit chose). In
    eval mode the model returns the prediction ``SlowFastConfig.prediction`` sets (the slow
    head by default; the fast head or the entropy merge of both on request), so every
    evaluator and metric sees what the detector predicts.

    The optimiser (``optimizer``: SGD with momentum, SAFE's, or AdamW; rebuilt at each
    experience) sees only the adapter being trained and its cosine head; its learning rate
    follows a cosine decay over exactly the iterations of the experience. For online streams, use task boundaries (``access_task_boundaries=True``):
    phases switch and analytic heads are fitted once per origin experience (one extra pass
    over its data).
    """

    def __init__(
        self,
        *,
        model: Union[nn.Module, SlowFastLearners],
        config: Optional[SlowFastConfig] = None,
        lr: float = 0.01,
        optimizer: str = "sgd",
        momentum: float = 0.9,
        weight_decay: float = 5e-4,
        first_train_epochs: Optional[int] = None,
        criterion: nn.Module = nn.CrossEntropyLoss(),
        train_mb_size: int = 32,
        train_epochs: int = 1,
        eval_mb_size: Optional[int] = None,
        device: Union[str, torch.device, None] = None,
        plugins: Optional[Sequence[BasePlugin]] = None,
        evaluator: Union[EvaluationPlugin, Callable[[], EvaluationPlugin]] = default_evaluator,
        eval_every: int = -1,
        **kwargs: Any,
    ) -> None:
        if lr <= 0 or not 0 <= momentum < 1 or weight_decay < 0:
            raise ValueError(
                "SlowFastStrategy needs lr > 0, momentum in [0, 1), weight_decay >= 0; "
                f"got lr={lr}, momentum={momentum}, weight_decay={weight_decay}"
            )
        if first_train_epochs is not None and first_train_epochs < 1:
            raise ValueError(f"SlowFastStrategy first_train_epochs={first_train_epochs} must be >= 1 (or None)")
        learners = model if isinstance(model, SlowFastLearners) else SlowFastLearners(model, config)
        self.lr, self.momentum, self.weight_decay = lr, momentum, weight_decay
        self.optimizer_name = optimizer
        self.first_train_epochs = first_train_epochs
        self.later_train_epochs = train_epochs
        self.chosen_regularisation: list[dict[str, float]] = []
        self.experience_pass = ExperiencePass()
        self.scheduler: Optional[LambdaLR] = None
        self._chunks_done = 0
        super().__init__(
            model=learners,
            optimizer=self._new_optimizer(learners),
            criterion=criterion,
            train_mb_size=train_mb_size,
            train_epochs=train_epochs,
            eval_mb_size=eval_mb_size,
            device=device if device is not None else learners.detector.device,
            plugins=[*(plugins or []), _StrategyHooks()],
            evaluator=evaluator,
            eval_every=eval_every,
            **kwargs,
        )

    # ----------------------------------------------------------------- inspection
    @property
    def aggregation_weights(self) -> Optional[tuple[Tensor, Tensor]]:
        """Per-sample ``(w_slow, w_fast)`` of the last prediction (one-hot unless merged)."""
        return self.model.last_weights

    # ----------------------------------------------------------------- model and optimiser
    def _new_optimizer(self, learners: SlowFastLearners) -> Optimizer:
        return new_optimizer(self.optimizer_name, learners.trainable_parameters(), self.lr, self.momentum,
                             self.weight_decay)

    def model_adaptation(self, model: Optional[nn.Module] = None) -> nn.Module:
        model = super().model_adaptation(model)
        classes = experience_classes(self.experience)
        model.grow_classes(max(classes) + 1 if classes else 0)
        return model

    def check_model_and_optimizer(self, **kwargs: Any) -> None:
        """At each (origin) experience: grow the heads, then a fresh optimiser and schedule."""
        if _at_task_boundary(self.experience, before=True):
            self.model = self.model_adaptation()
            self.make_optimizer()

    def make_optimizer(self, **kwargs: Any) -> None:
        """The optimiser over the adapter being trained + its cosine head, with a cosine decay to 0."""
        self.optimizer = self._new_optimizer(self.model)
        total = self._planned_iterations()
        self.scheduler = LambdaLR(
            self.optimizer, lambda step: 0.5 * (1.0 + math.cos(math.pi * min(step, total) / total))
        )

    def _planned_iterations(self) -> int:
        per_pass = math.ceil(math.ceil(len(self.adapted_dataset) / world_size()) / self.train_mb_size)
        chunks = self.experience.sub_stream_length if isinstance(self.experience, OnlineCLExperience) else 1
        return max(1, self.train_epochs * per_pass * chunks)

    def _before_training_exp(self, **kwargs: Any) -> None:
        if isinstance(self.experience, OnlineCLExperience) and not self.experience.access_task_boundaries:
            raise ValueError(
                "SlowFastStrategy needs task boundaries in online streams (the slow learner trains on the "
                "whole first experience): split the stream with access_task_boundaries=True"
            )
        if isinstance(self.experience, OnlineCLExperience):
            self._chunks_done = 1 if self.experience.is_first_subexp else self._chunks_done + 1
        if _at_task_boundary(self.experience, before=True):
            self.model.begin_fast_experience()
        slow_phase = not bool(self.model.fast_started)
        first = slow_phase and self.first_train_epochs is not None
        self.train_epochs = self.first_train_epochs if first else self.later_train_epochs
        if not slow_phase and not self.model.fast_learner_predicts:
            self.train_epochs = 0  # a fast learner outside the prediction would be a cost with no effect
        super()._before_training_exp(**kwargs)

    def _after_training_exp(self, **kwargs: Any) -> None:
        # before the plug-ins' after_training_exp: they may join the end-of-experience pass,
        # which finish_experience (the last plug-in) runs
        self.experience_pass.will_run = self._ends_origin_experience()
        super()._after_training_exp(**kwargs)

    def optimizer_step(self) -> None:
        super().optimizer_step()
        self.scheduler.step()

    # ----------------------------------------------------------------- loss
    def criterion(self) -> Tensor:
        """Cross-entropy; while training, plus the method's terms for the learner being trained."""
        loss = self._criterion(self.mb_output, self.mb_y)
        if self.is_training:
            loss = loss + self.model.auxiliary_loss(self.mb_y)
        return loss

    # ----------------------------------------------------------------- end of experience
    def finish_experience(self) -> None:
        """Freeze slow / start fast after the first experience; refit both analytic heads.

        Runs once per (origin) experience, after the user's plug-ins' ``after_training_exp``.
        """
        if not self._ends_origin_experience():
            return
        experience = getattr(self.experience, "origin_experience", None) or self.experience
        if not bool(self.model.fast_started):
            self.model.start_fast_learner()
        self.model.mark_trained(torch.as_tensor(experience_classes(experience)))
        self.chosen_regularisation.append(self._fit_analytic_heads(experience.dataset.eval()))

    def _ends_origin_experience(self) -> bool:
        # Avalanche 0.6 flags ``is_last_subexp`` only when the last chunk is short, so count chunks.
        exp = self.experience
        if not isinstance(exp, OnlineCLExperience):
            return True
        return exp.is_last_subexp or self._chunks_done == exp.sub_stream_length

    @torch.no_grad()
    def _fit_analytic_heads(self, dataset: Any) -> dict[str, float]:
        # each process adds its contiguous block; the sums are all-reduced before the solve
        # the plug-ins that joined (cldf.avalanche.experience_pass) get the trained learner's features
        loader, first = shard_loader(dataset, self.eval_mb_size)
        self.model.begin_analytic_experience(first)
        self.experience_pass.begin()
        for batch in loader:
            targets = batch[1].to(self.device)
            self.experience_pass.add(self.model.accumulate_analytic(batch[0].to(self.device), targets), targets)
        chosen = self.model.finish_analytic_experience(all_reduce_sum)
        self.experience_pass.will_run = False
        self.experience_pass.finish()
        return chosen


def make_strategy(recipe: Any, model: SlowFastLearners, plugins: list, common: dict) -> SlowFastStrategy:
    """The strategy for a recipe with a ``slow_fast`` section (``common``: the shared template
    arguments); it trains with its own cosine schedule."""
    t = recipe.training
    return SlowFastStrategy(model=model, config=recipe.methods["slow_fast"], lr=t.lr, optimizer=t.optimizer,
                            momentum=t.momentum, weight_decay=t.weight_decay, plugins=plugins, **common)
