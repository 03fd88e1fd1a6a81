"""One method's registry entry: what recipes, the strategy builder, cost accounting and
checkpoints need to know about it (:data:`cldf.methods.registry.METHODS` lists them all).

Avalanche-facing pieces are named as ``"module:attribute"`` and imported on use, so reading the
registry (parsing a recipe) imports neither Avalanche nor any method's plug-in.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any, Callable, Optional


def _always(config: Any) -> bool:
    return True


def _never(config: Any) -> bool:
    return False


@dataclass(frozen=True)
class MethodEntry:
    """A method as cldf wires it.

    ``section``: its recipe section (and config dataclass ``config``); ``keeps``: what it keeps
    between experiences, in words. It acts through ``plugin`` (``(config, detector, recipe) ->``
    an Avalanche plug-in) or through ``template`` (``(recipe, model, plugins, common) ->`` the
    Avalanche strategy) on the module ``model`` builds (``(detector, config) -> nn.Module``).
    ``predicts(config)``: whether it sets what the detector predicts (at most one method of a
    recipe may); ``resumable(config)``: whether a checkpoint holds all its state.
    """

    section: str
    config: type
    keeps: str
    plugin: Optional[str] = None
    template: Optional[str] = None
    model: Optional[str] = None
    predicts: Callable[[Any], bool] = _never
    resumable: Callable[[Any], bool] = _always

    def load(self, reference: str) -> Any:
        """The object a ``"module:attribute"`` field names."""
        module, _, attribute = reference.partition(":")
        return getattr(importlib.import_module(module), attribute)

