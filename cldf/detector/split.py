"""Split a timm backbone into a frozen prefix (run once) and a tuned tail (one per adapter).

Adapters only live in the tail, so several adapters (slow, fast, none) share one pass through
the prefix: the merged slow/fast prediction costs one prefix plus one tail per adapter.
Families are described as data (``STAGE_LAYOUTS``); other timm models fall back to "the whole
network is the tail".
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, NamedTuple

import torch
from timm.models.convnext import ConvNeXt
from timm.models.efficientnet import EfficientNet
from timm.models.resnet import ResNet
from timm.models.vision_transformer import VisionTransformer
from torch import Tensor, nn


@dataclass(frozen=True)
class StageLayout:
    """How a family runs: ops before the stages, the stage modules, ops after them."""

    before: Callable[[nn.Module, Tensor], Tensor]
    stages: Callable[[nn.Module], list[str]]
    after: Callable[[nn.Module, Tensor], Tensor]
    after_modules: tuple[str, ...]


def _vit_before(m: nn.Module, x: Tensor) -> Tensor:
    return m.norm_pre(m.patch_drop(m._pos_embed(m.patch_embed(x))))


STAGE_LAYOUTS: dict[type, StageLayout] = {
    EfficientNet: StageLayout(
        before=lambda m, x: m.bn1(m.conv_stem(x)),
        stages=lambda m: [f"blocks.{i}" for i in range(len(m.blocks))],
        after=lambda m, x: m.forward_head(m.bn2(m.conv_head(x)), pre_logits=True),
        after_modules=("conv_head", "bn2"),
    ),
    VisionTransformer: StageLayout(
        before=_vit_before,
        stages=lambda m: [f"blocks.{i}" for i in range(len(m.blocks))],
        after=lambda m, x: m.forward_head(m.norm(x), pre_logits=True),
        after_modules=("norm", "fc_norm"),
    ),
    ResNet: StageLayout(
        before=lambda m, x: m.maxpool(m.act1(m.bn1(m.conv1(x)))),
        stages=lambda m: ["layer1", "layer2", "layer3", "layer4"],
        after=lambda m, x: m.forward_head(x, pre_logits=True),
        after_modules=(),
    ),
    ConvNeXt: StageLayout(
        before=lambda m, x: m.stem(x),
        stages=lambda m: [f"stages.{i}" for i in range(len(m.stages))],
        after=lambda m, x: m.forward_head(m.norm_pre(x), pre_logits=True),
        after_modules=("norm_pre", "head"),
    ),
}


def map_statistics(t: Tensor) -> Tensor:
    """Per-channel mean and (population) standard deviation of a feature map over its positions: B x 2C
    (B x C x H x W maps, or B x N x C token sequences)."""
    if t.dim() not in (3, 4):
        raise ValueError(f"map_statistics needs a B x C x H x W map or B x N x C tokens, got shape {tuple(t.shape)}")
    dims = (2, 3) if t.dim() == 4 else (1,)
    t = t.float()  # statistics of reduced-precision (autocast) maps in float32
    return torch.cat([t.mean(dims), t.std(dims, correction=0)], dim=1)  # 0 (not NaN) for 1 x 1 maps


class TailOutputs(NamedTuple):
    """One tail pass: pooled pre-logit features, and the per-stage map statistics (the tail's
    input, then each tuned stage's output; each ``B x 2C``, see :func:`map_statistics`)."""

    features: Tensor
    stage_statistics: list[Tensor]


def as_float32(out: Tensor | TailOutputs) -> Tensor | TailOutputs:
    """A tail's output in float32 (the same tensors when they already are)."""
    if isinstance(out, TailOutputs):
        return TailOutputs(out.features.float(), [s.float() for s in out.stage_statistics])
    return out.float()


class BackboneSplit:
    """The frozen prefix and the tuned tail of one timm model (``tuned_stages`` last stages)."""

    def __init__(self, model: nn.Module, tuned_stages: int) -> None:
        self.model = model
        self.layout = next((lay for cls, lay in STAGE_LAYOUTS.items() if isinstance(model, cls)), None)
        if self.layout is None:
            self.prefix_stages: list[str] = []
            self.tail_stages: list[str] = []
            self.tail_names: tuple[str, ...] = ("",)
            return
        stages = self.layout.stages(model)
        cut = max(len(stages) - tuned_stages, 0)
        self.prefix_stages, self.tail_stages = stages[:cut], stages[cut:]
        self.tail_names = tuple(self.tail_stages) + self.layout.after_modules

    def in_tail(self, module_name: str) -> bool:
        """Whether a module (by its name in the timm model) belongs to the tuned tail."""
        return any(module_name == t or module_name.startswith(t + ".") or t == "" for t in self.tail_names)

    def prefix_module_names(self) -> list[str]:
        """Names of every module of the shared prefix (containers included)."""
        return [name for name, _ in self.model.named_modules() if name and not self.in_tail(name)]

    def prefix(self, x: Tensor) -> Tensor:
        """Run the frozen prefix (identity for families without a layout)."""
        if self.layout is None:
            return x
        x = self.layout.before(self.model, x)
        for name in self.prefix_stages:
            x = self.model.get_submodule(name)(x)
        return x

    def tail(self, h: Tensor) -> Tensor:
        """Run the tuned tail from the prefix output to pooled pre-logit features."""
        if self.layout is None:
            return self.model.forward_head(self.model.forward_features(h), pre_logits=True)
        for name in self.tail_stages:
            h = self.model.get_submodule(name)(h)
        return self.layout.after(self.model, h)

    def tail_outputs(self, h: Tensor) -> TailOutputs:
        """:meth:`tail` that also returns the map statistics of its input and of each stage."""
        if self.layout is None:
            raise ValueError(f"stage statistics need a backbone family with stages "
                             f"({', '.join(c.__name__ for c in STAGE_LAYOUTS)}), got {type(self.model).__name__}")
        statistics = [map_statistics(h)]
        for name in self.tail_stages:
            h = self.model.get_submodule(name)(h)
            statistics.append(map_statistics(h))
        return TailOutputs(self.layout.after(self.model, h), statistics)
