"""Recipe -> Avalanche strategy: one registry from strategy names to builders.

Every builder gets the same detector, optimiser settings and evaluator; the methods differ only
in the plug-ins (or the template, for the slow/fast learners) they add.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import torch
from avalanche.core import SupervisedPlugin
from avalanche.training import Cumulative, Naive
from avalanche.training.plugins import EvaluationPlugin, EWCPlugin, LwFPlugin, ReplayPlugin
from avalanche.training.templates import SupervisedTemplate
from torch import Tensor, nn

from .avalanche.ema_balance_plugin import EMABalancePlugin
from .avalanche.napa_vq_plugin import NAPAVQPlugin, default_previous
from .avalanche.slow_fast_strategy import SlowFastStrategy
from .config_io import ConfigError
from .detector import Detector
from .methods.slow_fast import SlowFastLearners
from .recipes import Recipe, TrainingConfig


def make_optimizer(training: TrainingConfig, model: nn.Module) -> torch.optim.Optimizer:
    """The shared optimiser over the model's trainable parameters."""
    params = [p for p in model.parameters() if p.requires_grad]
    if training.optimizer == "sgd":
        return torch.optim.SGD(params, lr=training.lr, momentum=training.momentum, weight_decay=training.weight_decay)
    return torch.optim.AdamW(params, lr=training.lr, weight_decay=training.weight_decay)


def method_plugins(recipe: Recipe, detector: Detector) -> list[SupervisedPlugin]:
    """The plug-ins a recipe's method sections ask for, in a fixed order."""
    m = recipe.methods
    plugins: list[SupervisedPlugin] = []
    if "lwf" in m:
        plugins.append(LwFPlugin(alpha=m["lwf"].alpha, temperature=m["lwf"].temperature))
    if "ewc" in m:
        plugins.append(EWCPlugin(ewc_lambda=m["ewc"].ewc_lambda))
    if "replay" in m:
        plugins.append(ReplayPlugin(mem_size=m["replay"].mem_size))
    if "napa_vq" in m:
        # on the slow/fast learners the eval forward gives the prediction's features (the slow
        # learner's with prediction=slow): NAPA-VQ's prototypes must come from the trained adapter
        features_of = _trained_adapter_features(detector) if "slow_fast" in m else None
        plugins.append(NAPAVQPlugin(
            m["napa_vq"], detector.num_features, previous=default_previous(detector), device=detector.device,
            features_of=features_of,
        ))
    if "ema_balance" in m:
        plugins.append(EMABalancePlugin(m["ema_balance"]))
    return plugins


def _trained_adapter_features(detector: Detector) -> Callable[[Tensor], Tensor]:
    """``x -> features`` of the detector's active adapter (the learner being trained)."""
    def features(x: Tensor) -> Tensor:
        name = detector.active_adapter
        return detector.multi_features(x, [name])[name]
    return features


def model_for(recipe: Recipe, detector: Detector) -> nn.Module:
    """The module a recipe trains: the detector, or the slow/fast learners on top of it."""
    if "slow_fast" in recipe.methods:
        return SlowFastLearners(detector, recipe.methods["slow_fast"])
    return detector


def build_strategy(
    recipe: Recipe,
    detector: Detector,
    evaluator: EvaluationPlugin,
    plugins: Sequence[SupervisedPlugin] = (),
) -> SupervisedTemplate:
    """An Avalanche strategy for ``recipe`` on ``detector``, with extra ``plugins`` (progress, ...)."""
    t = recipe.training
    common: dict[str, Any] = dict(
        train_mb_size=t.batch_size, train_epochs=t.epochs, eval_mb_size=t.eval_batch_size,
        device=detector.device, evaluator=evaluator,
    )
    builder = BUILDERS[recipe.strategy]
    return builder(recipe, detector, method_plugins(recipe, detector) + list(plugins), common)


def _naive(recipe: Recipe, detector: Detector, plugins: list, common: dict) -> SupervisedTemplate:
    return Naive(model=detector, optimizer=make_optimizer(recipe.training, detector),
                 criterion=nn.CrossEntropyLoss(), plugins=plugins, **common)


def _joint(recipe: Recipe, detector: Detector, plugins: list, common: dict) -> SupervisedTemplate:
    """Cumulative training: after experience i the model has trained on all data of 1..i,
    so the last row of R is the joint-training upper bound."""
    return Cumulative(model=detector, optimizer=make_optimizer(recipe.training, detector),
                      criterion=nn.CrossEntropyLoss(), plugins=plugins, **common)


def _slow_fast(recipe: Recipe, detector: Detector, plugins: list, common: dict) -> SupervisedTemplate:
    t = recipe.training
    if t.optimizer != "sgd":
        raise ConfigError(f"strategy {recipe.strategy!r} trains with its own SGD + cosine schedule; set training.optimizer: sgd")
    return SlowFastStrategy(model=model_for(recipe, detector), config=recipe.methods["slow_fast"],
                            lr=t.lr, momentum=t.momentum, weight_decay=t.weight_decay, plugins=plugins, **common)


def _frozen(recipe: Recipe, detector: Detector, plugins: list, common: dict) -> SupervisedTemplate:
    """No gradient step: the pretrained backbone untouched (the adapters keep their identity
    initialisation), the slow/fast analytic heads fitted on every experience's features; the
    reference for what training adds (as SimpleCIL and RanPAC are for pre-trained models)."""
    return _slow_fast(recipe, detector, plugins, {**common, "train_epochs": 0})


Builder = Callable[[Recipe, Detector, list, dict], SupervisedTemplate]
BUILDERS: dict[str, Builder] = {
    "naive": _naive, "lwf": _naive, "ewc": _naive, "replay": _naive,
    "napa_vq": _naive, "ema": _naive, "joint": _joint, "safe": _slow_fast, "cldf": _slow_fast,
    "frozen": _frozen,
}
