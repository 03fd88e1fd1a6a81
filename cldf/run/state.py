"""What a training run's checkpoint holds, and how it is put back.

Tensors go under prefixes: ``model.`` (adapters, heads, analytic-head statistics, buffers; no
frozen backbone), ``plugin.<Class>.`` (every plug-in with ``state_dict``: code vectors,
prototypes, edges, EMA shadows, skipped-batch counts), ``optimizer.<parameter>.`` (only for an
optimiser that lives across experiences), ``metric.`` (the R-matrix cells so far) and ``rng.``
(torch, NumPy and Python generators). What is not a tensor (adapter names, the Avalanche clock,
generator positions) goes to the JSON manifest. Restoring the generators last makes a resumed run
draw the same batches and the same random numbers as an uninterrupted one.
"""

from __future__ import annotations

import random
from collections import defaultdict
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch
from avalanche.core import SupervisedPlugin
from torch import Tensor, nn

from cldf.detector import Detector, learned_state_dict
from cldf.methods.registry import METHODS
from cldf.metrics.avalanche_metrics import DetectionPluginMetric
from cldf.recipes import STRATEGIES, Recipe
from cldf.run.checkpoint import CheckpointError


def sub_state(tensors: dict[str, Tensor], prefix: str) -> dict[str, Tensor]:
    """The tensors under ``prefix`` with the prefix removed."""
    return {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}


# ----------------------------------------------------------------------------- model
def detector_of(model: nn.Module) -> Detector:
    """The :class:`Detector` a model is built on (the model itself, or the one inside it)."""
    for module in model.modules():
        if isinstance(module, Detector):
            return module
    raise TypeError(f"{type(model).__name__} contains no cldf Detector")


def model_info(model: nn.Module) -> dict[str, Any]:
    """The model's structure beyond its tensors: adapters, class count, trainable parameters."""
    det = detector_of(model)
    return {
        "adapters": det.adapter_names, "frozen_adapters": sorted(det.frozen_adapters),
        "active_adapter": det.active_adapter, "num_classes": model.num_classes, "detector_classes": det.num_classes,
        "trainable": [name for name, p in model.named_parameters() if p.requires_grad],
    }


def restore_model(model: nn.Module, tensors: dict[str, Tensor], info: dict[str, Any], source: Path) -> None:
    """Rebuild adapters and heads as :func:`model_info` described them, then load the ``model.`` tensors."""
    det = detector_of(model)
    for name in info["adapters"]:
        if name not in det.adapter_names:
            det.add_adapter(name)
    model.grow_classes(info["num_classes"])
    det.grow_classes(info["detector_classes"])
    state = sub_state(tensors, "model.")
    missing = sorted(set(learned_state_dict(model)) - set(state))
    try:
        unexpected = model.load_state_dict(state, strict=False).unexpected_keys
    except RuntimeError as err:  # a tensor of another shape
        raise CheckpointError(f"{source}: tensors do not fit the {type(model).__name__} model: {err}") from err
    if unexpected or missing:
        raise CheckpointError(
            f"{source}: tensors do not fit the {type(model).__name__} model; "
            f"unexpected: {unexpected[:5]}, missing: {missing[:5]}"
        )
    det.set_adapter(info["active_adapter"])
    for name in info["frozen_adapters"]:
        det.freeze_adapter(name)
    trainable = set(info["trainable"])
    for name, p in model.named_parameters():
        p.requires_grad_(name in trainable)


# ----------------------------------------------------------------------------- random generators
def rng_state() -> tuple[dict[str, Tensor], dict[str, Any]]:
    """The torch (CPU and CUDA), NumPy and Python generator states: tensors and JSON."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    version, internal, gauss_next = random.getstate()
    tensors = {
        "rng.torch": torch.get_rng_state(),
        "rng.numpy": torch.from_numpy(keys.astype(np.int64)),
        "rng.python": torch.tensor(internal, dtype=torch.int64),
    }
    if torch.cuda.is_available():
        tensors.update({f"rng.cuda.{i}": s for i, s in enumerate(torch.cuda.get_rng_state_all())})
    return tensors, {"numpy": [kind, int(pos), int(has_gauss), float(cached)], "python": [version, gauss_next]}


def set_rng_state(tensors: dict[str, Tensor], info: dict[str, Any]) -> None:
    """Put back what :func:`rng_state` returned."""
    torch.set_rng_state(tensors["rng.torch"])
    kind, pos, has_gauss, cached = info["numpy"]
    np.random.set_state((kind, tensors["rng.numpy"].numpy().astype(np.uint32), pos, has_gauss, cached))
    version, gauss_next = info["python"]
    random.setstate((version, tuple(tensors["rng.python"].tolist()), gauss_next))
    cuda = sub_state(tensors, "rng.cuda.")
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([cuda[str(i)] for i in range(len(cuda))])


# ----------------------------------------------------------------------------- optimiser
def optimizer_tensors(optimizer: torch.optim.Optimizer, model: nn.Module) -> dict[str, Tensor]:
    """The optimiser's per-parameter state (moments, steps), keyed ``<parameter name>.<field>``."""
    names = {id(p): n for n, p in model.named_parameters()}
    return {
        f"{names[id(p)]}.{key}": value
        for group in optimizer.param_groups for p in group["params"] if id(p) in names
        for key, value in optimizer.state.get(p, {}).items() if isinstance(value, Tensor)
    }


def load_optimizer_state(optimizer: torch.optim.Optimizer, model: nn.Module, tensors: dict[str, Tensor]) -> None:
    """Load :func:`optimizer_tensors` by parameter name; a parameter whose shape changed (a grown
    head) starts fresh, as Avalanche resets it when it grows."""
    saved: dict[str, dict[str, Tensor]] = defaultdict(dict)
    for key, value in tensors.items():
        name, field = key.rsplit(".", 1)
        saved[name][field] = value
    names = {id(p): n for n, p in model.named_parameters()}
    state = optimizer.state_dict()
    params = [p for group in optimizer.param_groups for p in group["params"]]
    state["state"] = {
        index: dict(fields) for index, p in enumerate(params)
        if (fields := saved.get(names.get(id(p), ""))) and all(v.dim() == 0 or v.shape == p.shape for v in fields.values())
    }
    optimizer.load_state_dict(state)


class OptimizerStateLoader(SupervisedPlugin, supports_distributed=True):
    """Loads saved optimiser state at the start of the first resumed experience, once Avalanche has
    set up the optimiser's parameters (it clears their state the first time it does)."""

    def __init__(self) -> None:
        super().__init__()
        self.pending: Optional[dict[str, Tensor]] = None

    def before_training_exp(self, strategy: Any, *args: Any, **kwargs: Any) -> None:
        if self.pending:
            load_optimizer_state(strategy.optimizer, strategy.model, self.pending)
        self.pending = None


# ----------------------------------------------------------------------------- whole run
def check_resumable(recipe: Recipe) -> None:
    """Refuse recipes whose methods keep state that cldf does not checkpoint (the registry says)."""
    blocking = [f"{section} ({type(config).__name__})" for section, config in recipe.methods.items()
                if not METHODS[section].resumable(config)]
    if not STRATEGIES[recipe.strategy].resumable:
        blocking.append(f"{recipe.strategy} (its template keeps every past dataset)")
    if blocking:
        raise CheckpointError(
            f"cannot resume: {', '.join(blocking)} keep state between experiences that cldf does not "
            "checkpoint; start a new run instead"
        )


def capture(strategy: Any, metric: DetectionPluginMetric, with_optimizer: bool) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """Tensors and JSON describing the run at an experience boundary."""
    rng_tensors, rng_info = rng_state()
    tensors = {f"model.{k}": v for k, v in learned_state_dict(strategy.model).items()}
    for plugin in strategy.plugins:
        if hasattr(plugin, "state_dict"):
            tensors.update({f"plugin.{type(plugin).__name__}.{k}": v for k, v in plugin.state_dict().items()})
    tensors.update({f"metric.{k}": v for k, v in metric.state_dict().items()})
    if with_optimizer:
        tensors.update({f"optimizer.{k}": v for k, v in optimizer_tensors(strategy.optimizer, strategy.model).items()})
    tensors.update(rng_tensors)
    clock = {k: v for k, v in vars(strategy.clock).items() if type(v) is int}
    return tensors, {"model": model_info(strategy.model), "clock": clock, "rng": rng_info}


def restore_learned(strategy: Any, tensors: dict[str, Tensor], info: dict[str, Any], source: Path) -> None:
    """Put back the model and every plug-in's state: all that prediction needs."""
    restore_model(strategy.model, tensors, info["model"], source)
    for plugin in strategy.plugins:
        if hasattr(plugin, "load_state_dict"):
            state = sub_state(tensors, f"plugin.{type(plugin).__name__}.")
            if not state:
                raise CheckpointError(f"{source}: no state for plug-in {type(plugin).__name__}")
            plugin.load_state_dict(state)


def restore(strategy: Any, recipe: Recipe, metric: DetectionPluginMetric, tensors: dict[str, Tensor],
            info: dict[str, Any], source: Path) -> None:
    """Put back what :func:`capture` saved; the optimiser state waits in an
    :class:`OptimizerStateLoader` plug-in of the strategy, if it has one."""
    check_resumable(recipe)
    restore_learned(strategy, tensors, info, source)
    for plugin in strategy.plugins:
        if isinstance(plugin, OptimizerStateLoader):
            plugin.pending = sub_state(tensors, "optimizer.")
    metric.load_state_dict(sub_state(tensors, "metric."))
    for key, value in info["clock"].items():
        setattr(strategy.clock, key, value)
    set_rng_state(tensors, info["rng"])
