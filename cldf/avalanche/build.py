"""Recipe -> Avalanche strategy, read from the method registry (:mod:`cldf.methods.registry`).

Every strategy gets the same detector, optimiser settings, speed settings and evaluator; methods
differ in the plug-ins they add (in registry order) or, for a method that brings one, the
template and the model it trains over the detector.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import torch
from avalanche.core import SupervisedPlugin
from avalanche.training import Cumulative, Naive
from avalanche.training.plugins import EvaluationPlugin
from avalanche.training.templates import SupervisedTemplate
from torch import nn

from cldf.avalanche.frozen_pass_memo import FrozenPassMemoPlugin
from cldf.avalanche.loss_scaling import LossScaling
from cldf.detector import Detector
from cldf.methods.registry import METHODS
from cldf.optimizers import new_optimizer
from cldf.recipes import STRATEGIES, Recipe, TrainingConfig
from cldf.speed import resolve_speed
from cldf.state_size import dataset_bytes


def make_optimizer(training: TrainingConfig, model: nn.Module) -> torch.optim.Optimizer:
    """The shared optimiser over the model's trainable parameters."""
    params = [p for p in model.parameters() if p.requires_grad]
    return new_optimizer(training.optimizer, params, training.lr, training.momentum, training.weight_decay)


def wraps_detector(recipe: Recipe) -> bool:
    """Whether a method of the recipe trains a model built over the detector (not the detector)."""
    return any(METHODS[section].model for section in recipe.methods)


def method_plugins(recipe: Recipe, detector: Detector) -> list[SupervisedPlugin]:
    """The plug-ins of the recipe's methods, in registry order."""
    wrapped = wraps_detector(recipe)
    return [entry.load(entry.plugin)(recipe.methods[section], detector, wrapped)
            for section, entry in METHODS.items() if section in recipe.methods and entry.plugin]


def model_for(recipe: Recipe, detector: Detector) -> nn.Module:
    """The module a recipe trains: the detector, or the model a method builds over it."""
    for section, config in recipe.methods.items():
        entry = METHODS[section]
        if entry.model:
            return entry.load(entry.model)(detector, config)
    return detector


class Joint(Cumulative):
    """Avalanche's cumulative training (after experience i the model has trained on all data of
    1..i, so the last row of R is the joint-training upper bound); keeps every past dataset."""

    def kept_bytes(self) -> int:
        return dataset_bytes(self.dataset)


def _naive(recipe: Recipe, model: nn.Module, plugins: list, common: dict) -> SupervisedTemplate:
    return Naive(model=model, optimizer=make_optimizer(recipe.training, model),
                 criterion=nn.CrossEntropyLoss(), plugins=plugins, **common)


def _joint(recipe: Recipe, model: nn.Module, plugins: list, common: dict) -> SupervisedTemplate:
    return Joint(model=model, optimizer=make_optimizer(recipe.training, model),
                 criterion=nn.CrossEntropyLoss(), plugins=plugins, **common)


Template = Callable[[Recipe, nn.Module, list, dict], SupervisedTemplate]
TEMPLATES: dict[str, Template] = {"naive": _naive, "joint": _joint}


def template_for(recipe: Recipe) -> Template:
    """The method's own template if one brings it, else the strategy's Avalanche template."""
    for section in recipe.methods:
        entry = METHODS[section]
        if entry.template:
            return entry.load(entry.template)
    return TEMPLATES[STRATEGIES[recipe.strategy].template]


def build_strategy(
    recipe: Recipe,
    detector: Detector,
    evaluator: EvaluationPlugin,
    plugins: Sequence[SupervisedPlugin] = (),
) -> SupervisedTemplate:
    """An Avalanche strategy for ``recipe`` on ``detector``, with extra ``plugins`` (progress, ...).

    The recipe's speed settings (:mod:`cldf.speed`) go to the detector's backbone passes; an fp16
    run adds loss scaling after every other plug-in."""
    t, kind = recipe.training, STRATEGIES[recipe.strategy]
    speed = resolve_speed(t, detector.device)
    detector.set_speed(speed.autocast_dtype, speed.channels_last)
    common: dict[str, Any] = dict(
        train_mb_size=t.batch_size, eval_mb_size=t.eval_batch_size, device=detector.device, evaluator=evaluator,
        train_epochs=t.epochs if kind.train_epochs is None else kind.train_epochs,
    )
    # on a GPU the frozen passes cost less than moving each image to the CPU to digest it
    memo = [FrozenPassMemoPlugin(detector, t.frozen_pass_memo_mb)] if detector.device.type == "cpu" else []
    all_plugins = [*memo, *method_plugins(recipe, detector), *plugins]
    if speed.scales_loss:
        all_plugins.append(LossScaling(detector.device))
    return template_for(recipe)(recipe, model_for(recipe, detector), all_plugins, common)
